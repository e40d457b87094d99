"""What several processes' sharing costs per call on PostgreSQL (#15). Run by hand; prints
figures, asserts nothing.

    bash scripts/pg_throwaway.sh .venv/bin/python bench/bench_shared.py [--n 2000]
    .venv/bin/python bench/bench_shared.py --postgresql postgresql+asyncpg://USER@HOST/postgres

- product_index: a product question's look at the catalog, reading the version row at every
  call (as before the catalog's notifications) and while a listener hears them (now);
- a reply's slot of its chat's pace (bot.shared.ChatPace): one upsert of send_pace.
Each with wall and CPU time (time.process_time: the machine is shared) per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.shared import ChatPace, SharedInbox  # noqa: E402
from store import open_store  # noqa: E402
from store.demo import fill_demo  # noqa: E402


async def timed(label: str, n: int, call: object) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await call(i)  # type: ignore[operator]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<48} {wall / n * 1e3:7.3f} ms wall  {cpu / n * 1e3:7.3f} ms CPU per call")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgresql", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    if not args.postgresql:
        sys.exit("needs PostgreSQL: --postgresql URL or TEST_DATABASE_URL")
    store = await open_store(args.postgresql)
    try:
        await fill_demo(store, "small")
        await store.product_index()

        async def question(_i: int) -> None:
            await store.product_index()

        await timed("product_index, version read at every call", args.n, question)
        inbox = SharedInbox(store, lambda: datetime.now(UTC), worker="bench", lease=60, max_chats=1)
        listener = asyncio.create_task(inbox._listen())
        while not store.catalog_listening:  # noqa: ASYNC110 (a flag the listener sets)
            await asyncio.sleep(0.01)
        await store.product_index()
        await timed("product_index, listening to the catalog", args.n, question)
        listener.cancel()

        pace = ChatPace(store, 0.0001, burst=2)

        async def reply(i: int) -> None:
            await pace.slot(1_000_000 + i % 500)

        await timed("a reply's chat slot (ChatPace.slot)", args.n, reply)
    finally:
        await store.close()
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
