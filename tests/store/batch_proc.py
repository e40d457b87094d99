"""A process that runs one stage's batches on a store, for the tests with real processes:
the projection's (store.backorders.run_projection) or a big receipt's allocation
(store.backorders.run_allocation). DB is a SQLite file's path or a database URL (PostgreSQL).

    python -m tests.store.batch_proc STAGE DB --batch N [--wait]
        (--wait: prints {"ready": true} and waits for a line on stdin) then runs the batches
        to the end.
    python -m tests.store.batch_proc STAGE DB --batch N --die-in-batch K
        commits K-1 batches, then is killed (SIGKILL, by itself) inside batch K, after the
        batch's writes and before its commit.

STAGE is `projection` or `allocation`. Prints one JSON line: what its batches did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

from store import open_store
from store.backorders import allocation_batch, projection_batch, run_allocation, run_projection
from store.db import Store


async def _run_projection(s: Store, batch: int) -> dict[str, int]:
    run = await run_projection(s, batch_size=batch)
    return {"lines": run.lines, "moved": run.moved, "batches": run.batches}


async def _run_allocation(s: Store, batch: int) -> dict[str, int]:
    run = await run_allocation(s, batch_size=batch)
    return {"lines": run.lines, "units": run.units, "batches": run.batches}


STAGES: dict[str, tuple[Any, Any]] = {
    "projection": (projection_batch, _run_projection),
    "allocation": (allocation_batch, _run_allocation),
}


async def main(args: argparse.Namespace) -> dict[str, int]:
    one_batch, run_all = STAGES[args.stage]
    url = args.db if "://" in args.db else f"sqlite+aiosqlite:///{args.db}"
    s = await open_store(url, migrate_schema=False)
    try:
        if args.die_in_batch:
            for _ in range(args.die_in_batch - 1):
                async with s.begin() as conn:
                    await one_batch(conn, limit=args.batch)
            async with s.begin() as conn:
                await one_batch(conn, limit=args.batch)
                print(json.dumps({"dying": args.die_in_batch}), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        if args.wait:
            print(json.dumps({"ready": True}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        result: dict[str, int] = await run_all(s, args.batch)
        return result
    finally:
        await s.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=sorted(STAGES))
    p.add_argument("db")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--die-in-batch", type=int, default=0)
    result = asyncio.run(main(p.parse_args()))
    print(json.dumps(result), flush=True)
    sys.exit(0)
