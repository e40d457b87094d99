# ruff: noqa: E501  (a hand-run script: long report lines)
"""Issue #14: how long `import orders` holds its own write transaction, measured from outside
(another process asks for the write lock, BEGIN IMMEDIATE then ROLLBACK, every 20 ms: its
longest wait is the longest write transaction it met) and from inside (the transaction, its
commit, the CPU seconds). The file is parsed before the transaction, as the CLI does. Run by
hand on a copy of a demo store; prints figures, asserts nothing.

    .venv/bin/python bench/bench_import_orders.py STORE.sqlite3 [--orders 2000] [--one-by-one]
        [--code ROOT] [--profile] [--work DIR]

--code is the checkout to measure (an older one gives the "before" figures:
`git archive main store | tar -x -C /tmp/before`). --profile prints the top of a profile of
store.backorders instead of probing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._probe import lock_probe  # noqa: E402
from bench.bench_follow_on import orders_file  # noqa: E402

WORK = """
import asyncio, cProfile, pstats, sys, time
from pathlib import Path
from store import open_store
from store.imports import apply_file, parse_file
async def go(db, csv_path, one_by_one, profile):
    s = await open_store(f"sqlite+aiosqlite:///{db}")
    parsed = parse_file("orders", Path(csv_path))  # before the transaction, as the CLI
    extra = {}
    cpu, t = time.process_time(), time.perf_counter()
    try:  # the store read for the file before the transaction, as the CLI (a newer checkout)
        from store.imports import prepare_orders
        async with s.connect() as rc:
            extra["prepared"] = await prepare_orders(rc, parsed)
        print(f"prepared before the transaction: {(time.perf_counter() - t) * 1000:.0f} ms, {time.process_time() - cpu:.2f} s CPU", flush=True)
    except ImportError:
        pass
    prof = cProfile.Profile()
    print(f"@begin {time.time()}", flush=True)
    cpu = time.process_time()
    t = time.perf_counter()
    async with s.begin() as conn:
        if profile:
            prof.enable()
        r = await apply_file(conn, "orders", Path(csv_path), parsed=parsed, one_by_one=one_by_one, **extra)
        prof.disable()
        c = time.perf_counter()
        cpu_in = time.process_time() - cpu
    done = time.perf_counter()
    print(f"@end {time.time()}", flush=True)
    print(f"{r.rows} rows, {r.changed} orders ({'one by one' if one_by_one else 'whole file'}): the transaction {(done - t) * 1000:.0f} ms, its commit {(done - c) * 1000:.0f} ms, {time.process_time() - cpu:.2f} s CPU ({cpu_in:.2f} s before the commit)", flush=True)
    await s.close()
    if profile:
        pstats.Stats(prof).sort_stats("cumulative").print_stats("store/(backorders|marks|imports)", 14)
asyncio.run(go(sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"))
"""


MIGRATE = """
import asyncio, sys
from store import open_store
async def go(db):
    await (await open_store(f"sqlite+aiosqlite:///{db}")).close()
asyncio.run(go(sys.argv[1]))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--one-by-one", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--code", type=Path, default=ROOT)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "import-orders.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(args.store, db)
    os.chmod(db, 0o644)
    csv_path = args.work / f"orders-{args.orders}.csv"
    orders_file(db, csv_path, args.orders)
    (args.work / "import_work.py").write_text(WORK)
    # The copy migrated before the probe starts: an old store's migration holds the write
    # lock for seconds as the worker opens it, and the probe's wait then ran on into the
    # import's and was counted as neither (it was asked before the import began).
    subprocess.run(
        [sys.executable, "-c", MIGRATE, str(db)],
        cwd=args.code,
        env={**os.environ, "PYTHONPATH": str(args.code)},
        check=True,
    )
    argv = [str(args.work / "import_work.py"), str(db), str(csv_path)]
    argv += [str(int(args.one_by_one)), str(int(args.profile))]
    stop = mp.Event()
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    prober = None if args.profile else mp.Process(target=lock_probe, args=(str(db), stop, q))
    print(f"code {args.code}; load {os.getloadavg()}")
    if prober:
        prober.start()
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=args.code,
        env={**os.environ, "PYTHONPATH": str(args.code)},
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - t
    span = (0.0, 0.0)
    for line in (done.stdout + done.stderr).strip().splitlines():
        if line.startswith("@begin "):
            span = (float(line.split()[1]), span[1])
        elif line.startswith("@end "):
            span = (span[0], float(line.split()[1]))
        else:
            print(f"  | {line[:200]}")
    print(f"  wall {took:.1f} s (the worker, with opening the store), exit {done.returncode}")
    if prober:
        stop.set()
        asked = q.get()
        prober.join()
        during = sorted(w for at, w in asked if span[0] - 0.05 <= at <= span[1])
        if during:
            print(
                f"  probe: longest BEGIN IMMEDIATE wait during the import {during[-1] * 1000:.0f} ms ({len(during)} waits)"
            )
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
