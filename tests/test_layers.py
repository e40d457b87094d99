"""The modules form layers: no import circle between the project's modules, counting imports
made at call time and those only for type checking too (a circle there is still two modules
that each need the other, and the next import at module level breaks the start)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "store", "shopapi", "sandbox")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in modules:
                    out.add(target)
                elif node.module in modules:
                    out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in modules)
    return out


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _circles(graph) == []


def test_a_circle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_looked_at(package: str) -> None:
    assert any(name.startswith(package) for name in _modules())


def test_no_asyncio_wait_for() -> None:
    """asyncio.timeout, never asyncio.wait_for: on Python 3.11 wait_for returns the awaited
    result when a cancellation comes as it completes, and a loop around it (a notification
    waking it as the bot stops) runs on with the stop's cancellation lost; CI once waited
    for such a shutdown until its watchdog ended the worker."""
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _modules().values()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute)
        and node.attr == "wait_for"
        and isinstance(node.value, ast.Name)
        and node.value.id == "asyncio"
    ]
    assert found == []


async def test_a_loop_waiting_under_asyncio_timeout_ends_on_a_cancel_that_meets_its_wake() -> None:
    import asyncio

    woken = asyncio.Event()
    rounds = 0

    async def forever() -> None:
        nonlocal rounds
        while True:
            try:
                async with asyncio.timeout(60):
                    await woken.wait()
            except TimeoutError:
                pass
            woken.clear()
            rounds += 1

    task = asyncio.create_task(forever())
    await asyncio.sleep(0)  # waiting now
    woken.set()
    task.cancel()  # in the same turn as the wake: 3.11's wait_for swallowed this one
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rounds == 0
