"""The check-then-write steps of tests/store/races.py taken by two processes at once, each
with many tasks, on both backends: the limits hold across processes as within one."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import open_store
from store.backorders import NewLine, place_order
from tests.store.conftest import filled_db_url
from tests.store.races import ALLOWANCE, LAST_UNIT, LINKED_CHAT, NOW, OLD_CHAT, outcome, seed

ROOT = Path(__file__).resolve().parents[2]
TASKS = 6  # of each step, in each process
TOP = "900000"  # the bot numbers its orders past it, clear of the others' numbers


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from filled_db_url(request, backend, "races", seed)


async def _run(url: str, bases: list[int]) -> list[dict[str, object]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.store.race_proc",
            url,
            "--base",
            str(base),
            "--tasks",
            str(TASKS),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for base in bases
    ]
    # Both have opened the store and wait: they start together.
    for p in procs:
        assert p.stdout is not None
        line = await p.stdout.readline()
        assert json.loads(line) == {"ready": True}, line
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        await p.stdin.drain()
    results = []
    for p in procs:
        out, err = await p.communicate()
        assert p.returncode == 0, err.decode()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


async def test_two_processes_taking_the_limited_steps_at_once_keep_every_limit(
    db_url: str,
) -> None:
    s = await open_store(db_url, migrate_schema=False)
    try:
        async with s.begin() as conn:
            await place_order(conn, TOP, 2, [NewLine(LAST_UNIT[0], 1)], placed_at=NOW)
        first, second = await _run(db_url, [10000, 20000])
        found = await outcome(s)
    finally:
        await s.close()
    for got in (first, second):
        assert [got[f"{step}_errors"] for step in ("chat_proofs", "number_proofs")] == [[], []]
        assert [got[f"{step}_errors"] for step in ("last_unit", "bot_orders", "escalations")] == [
            [],
            [],
            [],
        ]
    assert first["chat_proofs"] + second["chat_proofs"] == ALLOWANCE  # type: ignore[operator]
    assert first["number_proofs"] + second["number_proofs"] == ALLOWANCE  # type: ignore[operator]
    assert found.attempts_by_chat[77] == ALLOWANCE
    assert found.attempts_by_number["100001"] == ALLOWANCE
    # TOP took the one unit of LAST_UNIT[0]; LAST_UNIT[1]'s went to one of the orders.
    assert found.allocated == {LAST_UNIT[0]: 1, LAST_UNIT[1]: 1}
    assert found.lines_allocated == found.allocated
    assert found.lines_waiting == {
        LAST_UNIT[0]: 2 * TASKS * 2,  # the orders for the last units and the bot's orders
        LAST_UNIT[1]: 2 * TASKS - 1,
    }
    bot_numbers = sorted(first["bot_numbers"] + second["bot_numbers"])  # type: ignore[operator]
    assert bot_numbers == [str(int(TOP) + k) for k in range(1, 2 * TASKS + 1)]
    assert first["escalations"] + second["escalations"] == 2  # type: ignore[operator]
    assert found.topics == [(LINKED_CHAT, 1, "waiting", 2), (OLD_CHAT, None, "waiting", 1)]
