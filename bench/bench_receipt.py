# ruff: noqa: E501  (a hand-run script: long report lines)
"""Issue #14: a big receipt on the 1M-order store (the hot SKU KET-0002's 10,000-unit restock,
about 7,000 waiting lines to fill): how long its own write transaction holds the lock, then
the allocation's batches (a newer checkout: run_allocation) and the projection's, measured
from outside (another process asks for the write lock, BEGIN IMMEDIATE then ROLLBACK, every
20 ms: its longest wait is the longest write transaction it met) and from inside (wall and
CPU seconds). Run by hand on a copy of a demo store; prints figures, asserts nothing.

    .venv/bin/python bench/bench_receipt.py STORE.sqlite3 [--code ROOT] [--work DIR]

--code is the checkout to measure (an older one gives the "before" figures:
`git archive main store | tar -x -C /tmp/before`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._probe import probed_worker  # noqa: E402
from bench.bench_import_orders import MIGRATE  # noqa: E402

WORK = """
import asyncio, sys, time
from store import open_store
from store.backorders import receive_restock, run_projection
async def go(db):
    s = await open_store(f"sqlite+aiosqlite:///{db}")
    print(f"@begin {time.time()}", flush=True)
    cpu, t = time.process_time(), time.perf_counter()
    async with s.begin() as conn:
        rec = await receive_restock(conn, "PO-029679")
    print(f"@receipt {time.time()}", flush=True)
    print(f"receipt: its transaction {(time.perf_counter() - t) * 1000:.0f} ms, {time.process_time() - cpu:.2f} s CPU; {len(rec.allocated)} lines, {sum(a.qty for a in rec.allocated)} units in it{'; the rest in batches' if getattr(rec, 'allocating', False) else ''}", flush=True)
    try:
        from store.backorders import run_allocation
    except ImportError:
        run_allocation = None
    if run_allocation is not None:
        cpu, t = time.process_time(), time.perf_counter()
        longest = [0.0]
        last = [time.perf_counter()]
        def seen(r):
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last[0])
            last[0] = now
        run = await run_allocation(s, on_batch=seen)
        print(f"allocation: {run.lines} lines, {run.units} units in {run.batches} batches, {(time.perf_counter() - t) * 1000:.0f} ms, {time.process_time() - cpu:.2f} s CPU; longest batch with its pause {longest[0] * 1000:.0f} ms", flush=True)
    print(f"@allocated {time.time()}", flush=True)  # at once, without the allocation's batches
    cpu, t = time.process_time(), time.perf_counter()
    run = await run_projection(s)
    print(f"projection: {run.lines} lines in {run.batches} batches, {(time.perf_counter() - t) * 1000:.0f} ms, {time.process_time() - cpu:.2f} s CPU", flush=True)
    print(f"@end {time.time()}", flush=True)
    await s.close()
asyncio.run(go(sys.argv[1]))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--code", type=Path, default=ROOT)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "receipt.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(args.store, db)
    os.chmod(db, 0o644)
    env = {**os.environ, "PYTHONPATH": str(args.code)}
    subprocess.run([sys.executable, "-c", MIGRATE, str(db)], cwd=args.code, env=env, check=True)
    (args.work / "receipt_work.py").write_text(WORK)
    print(f"code {args.code}; load {os.getloadavg()}")
    probed_worker(
        str(db),
        [sys.executable, str(args.work / "receipt_work.py"), str(db)],
        cwd=args.code,
        env=env,
        phases=(
            ("the receipt's transaction", "begin", "receipt"),
            ("the allocation's batches", "receipt", "allocated"),
            ("the projection's batches", "allocated", "end"),
        ),
    )
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
