# ruff: noqa: ASYNC220, ASYNC240  (a hand-run script: server processes, blocking file setup)
"""The shop API under load, with the bot serving its customers meanwhile: create 10,000 orders
through ``POST /api/orders`` in batches of 100 against a copy of the 1M-order store, with the
API in its own process (``python -m shopapi``), as a shop system would; at the same time the
real bot (``run_bot.py``, its notice job on: bench_admin_stream's) serves --rate updates/s of
bench_e2e.py's realistic mix through the sandbox (``python -m sandbox --no-limits``) on the
same copy, with bench_e2e's driver. Run by hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_api.py [--store /tmp/bench-large.sqlite3] [--orders 10000]
                                        [--batch 100] [--rate 100] [--seconds 20]

Reports the API's orders/s and latency per request (p50, p99, max; the follow-on work's share
from Server-Timing), and the bot's reply latency while the import runs (p50/p95/p99 from an
update's availability to the bot's first reply call for its chat, as bench_e2e measures it),
its unanswered updates and its apologies (error.j2 in any language) and the failures in its
log; first, for comparison, the bot alone at --rate for --seconds (0: skip). The machine's load
average before and after.

The store is COPIED to a scratch file first (the original is never opened for writing).
Opening the copy migrates it; a store from before migration 0010 then owes the delay policy's
first pass over every line (minutes on 1M orders, paid once by whichever command or request
comes first: bench/bench_follow_on.py measures it). ``--first-pass skip`` (the default) takes
it as done on the copy (the delay policy's and the notices' cursors past the last line). Then
1,000 chats are linked to customers and 1,000 are strangers (bench_e2e's split); the notices
that owes (linking marks a customer's lines) are queued before the clock starts, that time
printed apart, and the bot delivers them during its warm-up (quiet hours off). The API's orders
go to customers no bench chat is linked to, so no notice of theirs can pass for a reply; the
notices the bot did send into the bench's chats during the import are counted and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402

from bench._common import (  # noqa: E402
    LANGS,
    LINKED_BASE,
    RESULTS,
    STRANGER_BASE,
    TEXTS,
    Driver,
    Phase,
    Proc,
    apology_openings,
    drain,
    enqueue,
    free_port,
    link_chats,
    owed_told,
    pct,
    start_bot,
    start_sandbox,
    wait_ready,
)
from bot.settings import load_settings  # noqa: E402
from sandbox.client import SandboxClient  # noqa: E402
from shopapi.server import follow_on_settings  # noqa: E402
from store import open_store  # noqa: E402
from store.cli import follow_on  # noqa: E402
from store.schema import customers, follow_on_cursors, order_lines, products  # noqa: E402

TOKEN = "bench-api-token-0123456789abcdefghijklmnop"
CHATS = 2_000  # half linked to customers, half strangers (bench_e2e's split)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def _prepare(url: str, first_pass: str, linked: int) -> tuple[list[int], list[str]]:
    store = await open_store(url)
    try:
        async with store.begin() as conn:
            if first_pass == "skip":
                last = await conn.scalar(select(func.max(order_lines.c.line_id)))
                await conn.execute(
                    update(follow_on_cursors).values(next_line_id=int(last or 0) + 1)
                )
            # Customers no bench chat is linked to (those are among the first `linked`).
            cids = list(
                await conn.scalars(
                    select(customers.c.customer_id)
                    .where(customers.c.customer_id > linked)
                    .limit(50_000)
                )
            )
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


def _bot_line(phase: Phase, sorry: int) -> str:
    return (
        f"{len(phase.sent):,} updates: p50 {pct(phase.latencies, 0.5):.0f} ms,"
        f" p95 {pct(phase.latencies, 0.95):.0f} ms, p99 {pct(phase.latencies, 0.99):.0f} ms,"
        f" {phase.missing} unanswered, {sorry} apologies"
    )


def _told_meanwhile(db: Path, since: datetime, until: datetime) -> int:
    """Notices the bot sent into the bench's chats in a window: each would pass for a reply."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT sent_at FROM outbox WHERE status = 'sent' AND chat_id >= ?", (LINKED_BASE,)
        ).fetchall()
    finally:
        conn.close()
    told = 0
    for (sent_at,) in rows:
        at = datetime.fromisoformat(str(sent_at))
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        told += since <= at <= until
    return told


async def _import(
    base: str, batches: list[dict[str, Any]], done: asyncio.Event
) -> tuple[int, float, list[float], list[float]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    follow_ons: list[float] = []
    created = 0
    try:
        async with aiohttp.ClientSession() as session:
            began = time.perf_counter()
            for body in batches:
                sent = time.perf_counter()
                async with session.post(base + "/api/orders", json=body, headers=headers) as r:
                    answer = await r.json()
                latencies.append(time.perf_counter() - sent)
                timing = dict(
                    part.strip().split(";dur=")
                    for part in r.headers.get("Server-Timing", "").split(",")
                    if ";dur=" in part
                )
                follow_ons.append(float(timing.get("follow-on", "nan")) / 1000)
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status}: {answer}")
                created += answer["changed"]
            took = time.perf_counter() - began
    finally:
        done.set()
    return created, took, latencies, follow_ons


async def _api_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(3000):
            if server.poll() is not None:
                raise SystemExit("the API ended early")
            try:
                async with session.get(base + "/api/openapi.json") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the API did not start in time")


async def _run(args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The bot as in the shop's day (its start passes our environment on): its
    # notice job delivers now, whatever the hour the bench runs at.
    os.environ["QUIET_HOURS"] = "off"
    print(f"load average before: {_load()}", flush=True)
    scratch = Path(args.scratch)
    print(f"copying {args.store} to {scratch} ...", flush=True)
    shutil.copyfile(args.store, scratch)
    for suffix in ("-wal", "-shm"):
        if Path(args.store + suffix).exists():
            shutil.copyfile(args.store + suffix, str(scratch) + suffix)
    url = f"sqlite+aiosqlite:///{scratch}"
    t = time.perf_counter()
    numbers = await link_chats(scratch, CHATS // 2)  # opening the copy migrates it
    chats = [LINKED_BASE + i for i in range(len(numbers))] + [
        STRANGER_BASE + i for i in range(CHATS - len(numbers))
    ]
    random.Random(3).shuffle(chats)
    cids, skus = await _prepare(url, args.first_pass, CHATS // 2)
    print(
        f"migrated and prepared in {time.perf_counter() - t:.1f} s ({len(skus)} SKUs,"
        f" {len(numbers):,} linked chats, {CHATS - len(numbers):,} strangers)",
        flush=True,
    )
    batches = _batches(args.orders, args.batch, cids, skus)
    apologies = apology_openings()
    sandbox_port, api_port = free_port(), free_port()
    sandbox = start_sandbox(sandbox_port, RESULTS / "api-sandbox.log")
    bot_log = RESULTS / "api-bot.log"
    bot: Proc | None = None
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "API_PORT": str(api_port),
        "API_TOKENS": f"bench:{TOKEN}",
        "API_RATE_PER_SECOND": "100000",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "-m", "shopapi"], cwd=ROOT, env=env)
    try:
        base = f"http://127.0.0.1:{api_port}"
        async with SandboxClient(f"http://127.0.0.1:{sandbox_port}", timeout=120) as client:
            for _ in range(100):
                try:
                    await client.stats()
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            await client.bulk(
                users=[
                    {"id": c, "first_name": f"C{c}", "language_code": LANGS[c % 4]} for c in chats
                ]
            )
            bot = start_bot(sandbox_port, scratch, bot_log)
            await wait_ready(client, bot, within=600)
            await _api_ready(base, server)
            # Warm-up: every chat says hello once (a bot message to press on); the notices
            # the copy owed to the linked chats go out meanwhile.
            t = time.perf_counter()
            await enqueue(
                client,
                [{"user_id": c, "text": TEXTS[LANGS[c % 4]][4]} for c in chats],
                Phase("warm-up", None),
            )
            await drain(client, 0)
            left = await owed_told(scratch)
            await drain(client, 0)
            print(
                f"bot warmed up in {time.perf_counter() - t:.1f} s"
                f" ({left} notices to the bench's chats still pending)",
                flush=True,
            )
            driver = Driver(client, chats, numbers)
            if args.seconds > 0:
                alone = Phase("alone", args.rate, since_seq=(await client.stats())["calls"])
                await driver.offer(alone, args.rate, args.seconds)
                sorry = await driver.finish(alone, apologies)
                said = _bot_line(alone, sorry)
                print(
                    f"bot alone at {args.rate:g}/s for {args.seconds:g} s: {said} (load {_load()})",
                    flush=True,
                )
            print(f"load average as the import starts: {_load()}", flush=True)
            meanwhile = Phase("import", args.rate, since_seq=(await client.stats())["calls"])
            window_start = datetime.now(UTC)
            done = asyncio.Event()
            imported, _ = await asyncio.gather(
                _import(base, batches, done), driver.offer(meanwhile, args.rate, done)
            )
            load_after = _load()
            sorry = await driver.finish(meanwhile, apologies)
            window_end = datetime.now(UTC)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if bot is not None:
            bot.stop()
        sandbox.stop()
    created, took, latencies, follow_ons = imported
    print(
        f"API: {created:,} orders created in {len(latencies)} requests of {args.batch}:"
        f" {took:.1f} s, {created / took:,.1f} orders/s; per request p50 {pct(latencies, 0.5):.0f}"
        f" ms, p99 {pct(latencies, 0.99):.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    print(
        f"  of which the follow-on work (delay policy, notices): p50 {pct(follow_ons, 0.5):.0f}"
        f" ms, p99 {pct(follow_ons, 0.99):.0f} ms, {sum(follow_ons) / sum(latencies):.0%} of"
        " the time"
    )
    failures = [
        line
        for line in bot_log.read_text(errors="replace").splitlines()
        if " failed" in line or "database is locked" in line
    ]
    print(f"bot meanwhile at {args.rate:g}/s: {_bot_line(meanwhile, sorry)}")
    print(
        f"  {_told_meanwhile(scratch, window_start, window_end)} notices sent into the bench's"
        f" chats meanwhile; {len(failures)} lines of its log say 'failed' or 'database is locked'"
    )
    for line in failures[:5]:
        print(f"  log: {line[:200]}")
    print(f"load average after the import: {load_after}; now: {_load()}")
    if not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(str(scratch) + suffix).unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--store", default="/tmp/bench-large.sqlite3")
    p.add_argument("--scratch", default="/tmp/bench-api-scratch.sqlite3")
    p.add_argument("--orders", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rate", type=float, default=100, help="the bot's updates/s")
    p.add_argument(
        "--seconds", type=float, default=20, help="the bot alone first, for comparison (0: skip)"
    )
    p.add_argument("--first-pass", choices=["skip", "run"], default="skip")
    p.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = p.parse_args()
    if Path(args.scratch).resolve() == Path(args.store).resolve():
        raise SystemExit("--scratch must not be the original store")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
