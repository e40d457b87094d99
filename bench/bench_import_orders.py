# ruff: noqa: E501  (a hand-run script: long report lines)
"""Issue #14: how long `import orders` holds its own write transaction, and where the time goes
(the top of a profile of store.backorders). Run by hand on a copy of a demo store; prints
figures, asserts nothing.

    .venv/bin/python bench/bench_import_orders.py STORE.sqlite3 [--orders 2000] [--one-by-one]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_follow_on import orders_file  # noqa: E402
from store import open_store  # noqa: E402
from store.imports import apply_file  # noqa: E402


async def run(db: Path, csv_path: Path, one_by_one: bool, profile: bool) -> None:
    s = await open_store(f"sqlite+aiosqlite:///{db}")
    prof = cProfile.Profile()
    try:
        t = time.perf_counter()
        async with s.begin() as conn:
            if profile:
                prof.enable()
            r = await apply_file(conn, "orders", csv_path, one_by_one=one_by_one)
            prof.disable()
        took = time.perf_counter() - t
    finally:
        await s.close()
    print(
        f"{r.rows} rows, {r.changed} orders: the transaction {took:.2f} s ({'one by one' if one_by_one else 'whole file'})"
    )
    if profile:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(
            "store/(backorders|marks|imports)", 14
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--one-by-one", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "import-orders.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(args.store, db)
    csv_path = args.work / f"orders-{args.orders}.csv"
    orders_file(db, csv_path, args.orders)
    asyncio.run(run(db, csv_path, args.one_by_one, args.profile))


if __name__ == "__main__":
    main()
