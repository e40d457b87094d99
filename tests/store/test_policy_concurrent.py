"""Issue #14: any number of processes may run the delay policy at the same moment on one
store: no error, no offer made twice, no notice queued twice. Each store is a copy of one
file with 300 late lines; one process's run is the reference."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete

from store import open_store
from store.schema import follow_on_marks
from tests.store.policy_helpers import late_store, policy_state

ROOT = Path(__file__).resolve().parents[2]


async def _state(path: Path) -> dict[str, object]:
    s = await open_store(f"sqlite+aiosqlite:///{path}", migrate_schema=False)
    try:
        async with s.connect() as conn:
            return await policy_state(conn)
    finally:
        await s.close()


async def _run(paths: list[Path], *flags: str) -> list[dict[str, int]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.store.policy_proc",
            str(path),
            "--wait",
            *flags,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for path in paths
    ]
    # Every process has opened the store and waits before any starts: they start together.
    for p in procs:
        assert p.stdout is not None
        assert json.loads(await p.stdout.readline()) == {"ready": True}
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
    await asyncio.gather(*(p.stdin.drain() for p in procs if p.stdin is not None))
    results = []
    for p in procs:
        out, err = await p.communicate()
        assert p.returncode == 0, err.decode()
        assert b"Error" not in err, err.decode()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


@pytest.fixture
async def late_file(tmp_path: Path) -> Path:
    path = tmp_path / "late.sqlite3"
    s = await open_store(f"sqlite+aiosqlite:///{path}")
    async with s.begin() as conn:
        await late_store(conn, orders=250)
    await s.close()
    return path


async def _unmark(path: Path) -> None:
    s = await open_store(f"sqlite+aiosqlite:///{path}", migrate_schema=False)
    async with s.begin() as conn:
        await conn.execute(delete(follow_on_marks))
    await s.close()


@pytest.mark.parametrize(
    ("processes", "flags"),
    [(2, ("--batch", "40")), (4, ("--batch", "40")), (4, ("--batch", "40", "--no-turn"))],
    ids=["2", "4", "4-meeting-at-the-insert"],
)
async def test_concurrent_passes_make_each_offer_and_notice_once(
    late_file: Path, tmp_path: Path, processes: int, flags: tuple[str, ...]
) -> None:
    alone = tmp_path / "alone.sqlite3"
    shared = tmp_path / "shared.sqlite3"
    for path in (alone, shared):
        shutil.copy(late_file, path)
        if "--no-turn" in flags:
            # A store upgraded to the marks: none yet, the first pass scans from line 0. With
            # no write before the batch's reads (pysqlite begins at the first write), the
            # processes read the same lines and meet at the offers' insert.
            await _unmark(path)
    (reference,) = await _run([alone], "--batch", "40")
    results = await _run([shared] * processes, *flags)

    expected = await _state(alone)
    assert reference["offered"] == len(expected["offers"]) == 300  # type: ignore[arg-type]
    # The offers were shared out between the processes, none made twice.
    assert sum(r["offered"] for r in results) == reference["offered"]
    assert await _state(shared) == expected
