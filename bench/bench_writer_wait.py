# ruff: noqa: ASYNC110  (a hand-run script: it polls for the other process's start)
"""How long the bot's small writes wait for SQLite's write lock while another process runs
follow-on batches (issue #14). Run by hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_writer_wait.py [--seconds 20] [--rate 200] [--hold 0.03]

An "admin" process runs store.marks.run_batches with batches that each hold the write lock
for --hold seconds (inserts into a ballast table), as `backorder-admin` does with the
follow-on; meanwhile this process writes a chat's miss (Store.begin_small, as an update's
handler does) --rate times a second, each as its own task, and measures each write from its
start to its commit, and the event loop's lag. Run it from an older checkout (its store/db.py
is what is measured) to get the "before" figure.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from store.chats import record_miss, touch_chat  # noqa: E402
from store.db import Store, open_store  # noqa: E402
from store.marks import run_batches  # noqa: E402


@dataclass
class Run:
    batches: int
    more: bool

    def __add__(self, other: Run) -> Run:
        return Run(self.batches + other.batches, other.more)


def admin(url: str, hold: float, seconds: float, started: mp.Event) -> None:  # type: ignore[valid-type]
    async def go() -> None:
        store = await open_store(url, migrate_schema=False)
        until = time.monotonic() + seconds

        async def batch(conn: object) -> Run:
            end = time.monotonic() + hold
            while time.monotonic() < end:
                await conn.execute(text("INSERT INTO ballast VALUES (randomblob(200))"))  # type: ignore[attr-defined]
            return Run(1, time.monotonic() < until)

        started.set()  # type: ignore[attr-defined]
        done = await run_batches(store, batch, Run(0, True))
        print(f"admin: {done.batches} batches of {hold * 1e3:.0f} ms", flush=True)
        await store.close()

    asyncio.run(go())


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * q))] * 1e3 if v else float("nan")


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="writer-wait-"))
    url = f"sqlite+aiosqlite:///{folder / 'w.sqlite3'}"
    store: Store = await open_store(url)
    async with store.begin() as conn:
        await conn.execute(text("CREATE TABLE ballast (b BLOB)"))
        for chat in range(1000):
            await touch_chat(conn, chat)
    started = mp.Event()
    other = mp.Process(target=admin, args=(url, args.hold, args.seconds, started))
    other.start()
    while not started.is_set():
        await asyncio.sleep(0.01)
    waits: list[float] = []
    lags: list[float] = []
    failed = 0

    async def write(chat: int) -> None:
        nonlocal failed
        t = time.perf_counter()
        try:
            async with store.begin_small(counted=False) as conn:
                await record_miss(conn, chat)
        except Exception:
            failed += 1
            return
        waits.append(time.perf_counter() - t)

    cpu = time.process_time()
    began = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    n = 0
    while time.monotonic() - began < args.seconds:
        due = int((time.monotonic() - began) * args.rate)
        while n < due:
            tasks.append(asyncio.create_task(write(n % 1000)))
            n += 1
        t = time.monotonic()
        await asyncio.sleep(0.005)
        lags.append(time.monotonic() - t - 0.005)
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu
    other.join()
    await store.close()
    print(
        f"{n} small writes at {args.rate:g}/s for {args.seconds:g} s next to batches of"
        f" {args.hold * 1e3:.0f} ms: p50 {pct(waits, 0.5):.1f} ms, p99 {pct(waits, 0.99):.1f} ms,"
        f" max {pct(waits, 1.0):.1f} ms, {failed} failed; loop lag p99 {pct(lags, 0.99):.1f} ms;"
        f" this process's CPU {cpu:.2f} s ({cpu / max(1, n) * 1e3:.2f} ms a write)"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--hold", type=float, default=0.03)
    asyncio.run(main(ap.parse_args()))
