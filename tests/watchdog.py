"""A hung test ends the run's worker with every stack written down, instead of holding CI until
its own limit with nothing to show.

A test (its setup and teardown included) still running after ``TEST_HANG_SECONDS`` (default
600: the slowest test took 170 s at a load of 17 on two cores) is taken for hung: every
thread's stack and every unfinished asyncio task's stack go to ``hung-<worker>.txt`` in the
run's base temporary directory, and the process exits at once. Under pytest-xdist the
controller reports the worker crashed while running that test (the test fails) and starts
another; at the end of the run the dumps are printed in the summary. Without xdist the run
ends there, with exit status 70 and the dump in the base temporary directory.

One run of the suite hung 23 minutes this way (a tests/bot/test_fuzz.py regression on
PostgreSQL under a load of 10-17: the bot kept renewing its lease, its connections idle, so
something waited in Python).

Wired in by tests/conftest.py, which imports the hooks."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import threading
from collections.abc import Generator
from pathlib import Path

import pytest

HANG_SECONDS = float(os.environ.get("TEST_HANG_SECONDS") or 600)
# What a worker exits with when a test hung (EX_SOFTWARE).
HUNG_EXIT = 70


def _dump_file(config: pytest.Config) -> Path:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    # A worker's base temporary directory is popen-gwN under the run's.
    run = base.parent if worker != "main" else base
    return Path(run) / f"hung-{worker}.txt"


def _hung(config: pytest.Config, nodeid: str) -> None:
    path = _dump_file(config)
    with path.open("w") as out:
        out.write(f"{nodeid} still running after {HANG_SECONDS:.0f} s: taken for hung.\n\n")
        out.write("Threads:\n")
        out.flush()
        faulthandler.dump_traceback(file=out, all_threads=True)
        out.write("\nUnfinished asyncio tasks:\n")
        for task in [o for o in gc.get_objects() if isinstance(o, asyncio.Task)]:
            if not task.done():
                out.write(f"\n{task!r}\n")
                task.print_stack(file=out)
    os._exit(HUNG_EXIT)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    timer = threading.Timer(HANG_SECONDS, _hung, args=(item.config, item.nodeid))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    base = terminalreporter.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    for path in sorted(Path(base).glob("hung-*.txt")):
        terminalreporter.section(f"hung test ({path.name})")
        terminalreporter.write(path.read_text())
