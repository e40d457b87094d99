# ruff: noqa: ASYNC220, ASYNC240  (a hand-run script: a server process, blocking file setup)
"""The shop API under load: create 10,000 orders through ``POST /api/orders`` in batches of
100 against a copy of the 1M-order store, with the API in its own process (``python -m
shopapi``), as a shop system would. Reports orders/s and the latency per request (p50, p99,
max). Run by hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_api.py [--store /tmp/bench-large.sqlite3] [--orders 10000]
                                        [--batch 100] [--concurrency 1] [--first-pass skip|run]

The store is COPIED to a scratch file first (the original is never opened for writing).
Opening the copy migrates it; a store from before migration 0010 then owes the delay policy's
first pass over every line (minutes on 1M orders, paid once by whichever command or request
comes first: bench/bench_follow_on.py measures it). ``--first-pass skip`` (the default) takes
it as done on the copy (the cursor past the last line); the notices the copy owes (a store no
bot has run on) are queued before the clock starts, and that time is printed apart. The figures
are then the API's own path: validation, the transaction, and the follow-on work after it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402

from bot.settings import load_settings  # noqa: E402
from shopapi.server import follow_on_settings  # noqa: E402
from store import open_store  # noqa: E402
from store.cli import follow_on  # noqa: E402
from store.schema import customers, follow_on_cursors, order_lines, products  # noqa: E402

TOKEN = "bench-api-token-0123456789abcdefghijklmnop"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _prepare(url: str, first_pass: str) -> tuple[list[int], list[str]]:
    store = await open_store(url)  # migrates the copy
    try:
        async with store.begin() as conn:
            if first_pass == "skip":
                last = await conn.scalar(select(func.max(order_lines.c.line_id)))
                await conn.execute(
                    update(follow_on_cursors).values(next_line_id=int(last or 0) + 1)
                )
            cids = list(await conn.scalars(select(customers.c.customer_id).limit(50_000)))
            skus = list(
                await conn.scalars(
                    select(products.c.sku).where(products.c.active, products.c.backorderable)
                )
            )
        # What the store owed before the bench (a copy of a store no bot has run on: notices
        # for every line never told), paid here once and reported apart.
        began = time.perf_counter()
        run, queued = await follow_on(store, follow_on_settings(load_settings({})), show=False)
        print(
            f"the copy's own follow-on before the bench: {time.perf_counter() - began:.1f} s"
            f" ({run.lines:,} lines looked at, {queued.notices:,} notices queued)",
            flush=True,
        )
        return cids, skus
    finally:
        await store.close()


def _batches(n: int, size: int, cids: list[int], skus: list[str]) -> list[dict]:
    rnd = random.Random(7)
    out = []
    base = 8_000_000_000
    for start in range(0, n, size):
        placed = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        out.append(
            {
                "orders": [
                    {
                        "order_number": str(base + i),
                        "customer_id": rnd.choice(cids),
                        "placed_at": placed,
                        "lines": [
                            {"sku": sku, "qty": rnd.randint(1, 3)}
                            for sku in rnd.sample(skus, rnd.choice((1, 1, 2, 3)))
                        ],
                    }
                    for i in range(start, min(n, start + size))
                ]
            }
        )
    return out


async def _run(args: argparse.Namespace) -> None:
    scratch = Path(args.scratch)
    print(f"copying {args.store} to {scratch} ...", flush=True)
    shutil.copyfile(args.store, scratch)
    for suffix in ("-wal", "-shm"):
        if Path(args.store + suffix).exists():
            shutil.copyfile(args.store + suffix, str(scratch) + suffix)
    url = f"sqlite+aiosqlite:///{scratch}"
    t = time.perf_counter()
    cids, skus = await _prepare(url, args.first_pass)
    print(f"migrated and prepared in {time.perf_counter() - t:.1f} s ({len(skus)} SKUs)")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "API_PORT": str(port),
        "API_TOKENS": f"bench:{TOKEN}",
        "API_RATE_PER_SECOND": "100000",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "-m", "shopapi"], cwd=ROOT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                try:
                    async with session.get(base + "/api/openapi.json") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            batches = _batches(args.orders, args.batch, cids, skus)
            latencies: list[float] = []
            follow_ons: list[float] = []
            created = 0
            queue = list(batches)

            async def worker() -> None:
                nonlocal created
                while queue:
                    body = queue.pop(0)
                    began = time.perf_counter()
                    async with session.post(base + "/api/orders", json=body, headers=headers) as r:
                        answer = await r.json()
                    latencies.append(time.perf_counter() - began)
                    timing = dict(
                        part.strip().split(";dur=")
                        for part in r.headers.get("Server-Timing", "").split(",")
                        if ";dur=" in part
                    )
                    follow_ons.append(float(timing.get("follow-on", "nan")) / 1000)
                    if r.status != 200:
                        raise SystemExit(f"HTTP {r.status}: {answer}")
                    created += answer["changed"]

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            took = time.perf_counter() - began
        q = statistics.quantiles(latencies, n=100)
        print(
            f"{created:,} orders created in {len(latencies)} requests of {args.batch}"
            f" (concurrency {args.concurrency}): {took:.1f} s, {created / took:,.0f} orders/s;"
            f" per request p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms,"
            f" max {max(latencies) * 1000:.0f} ms"
        )
        f = statistics.quantiles(follow_ons, n=100)
        print(
            f"of which the follow-on work (delay policy, notices): p50 {f[49] * 1000:.0f} ms,"
            f" p99 {f[98] * 1000:.0f} ms, {sum(follow_ons) / sum(latencies):.0%} of the time"
        )
        print(f"load average: {os.getloadavg()}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(str(scratch) + suffix).unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--store", default="/tmp/bench-large.sqlite3")
    p.add_argument("--scratch", default="/tmp/bench-api-scratch.sqlite3")
    p.add_argument("--orders", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--first-pass", choices=["skip", "run"], default="skip")
    p.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = p.parse_args()
    if Path(args.scratch).resolve() == Path(args.store).resolve():
        raise SystemExit("--scratch must not be the original store")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
