# ruff: noqa: E501  (a hand-run script: long report lines, blocking file setup)
"""Notice benchmark: one restock's date change moves 100,000 waiting lines. Run by hand;
prints figures, asserts nothing.

    .venv/bin/python bench/bench_notices.py [--lines 100000] [--seconds 20]

Figures: the time to queue every notice (the date change and queue_notices in one
transaction); the delivered rate against the sandbox (its own thread and event loop, flood
limits on) at the default SEND_RATE_PER_SECOND=25 and at 1,000 per second, each measured over
about ``--seconds`` of sending, with the count of 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, update
from telegram import Bot
from telegram.request import HTTPXRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.app import build_application, tune_collector  # noqa: E402
from bot.notices import batch_limit, close, deliver_due, sends_in_flight  # noqa: E402
from bot.request import AiohttpRequest  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from sandbox import Limits, Sandbox  # noqa: E402
from sandbox._control import create_user  # noqa: E402
from sandbox.client import SandboxClient  # noqa: E402
from store import Store, open_store  # noqa: E402
from store.backorders import change_restock_date, project_dates  # noqa: E402
from store.master import ProductIn, add_restock, upsert_product, upsert_supplier  # noqa: E402
from store.outbox import outbox_counts, queue_notices  # noqa: E402
from store.schema import chats, customers, order_lines, orders  # noqa: E402

SKU = "HOT-0001"
RESTOCK = "PO-HOT-1"
TODAY = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # 11:00 in Berlin: outside quiet hours
CHAT_BASE = 10_000_000
LAYER = os.environ.get("REQUEST_LAYER", "aiohttp")
# A bot with a token needs a LINK_SECRET that passes store.links.secret_problem.
LINK_SECRET = "bench-link-secret-never-used-in-production"


async def build(store: Store, n: int) -> None:
    first = TODAY + timedelta(days=10)
    async with store.begin() as conn:
        await upsert_product(conn, ProductIn(SKU, "Hot Item", "hot", 1000, "EUR"))
        await upsert_supplier(conn, "SUP-HOT", "Hot Supplier")
        await add_restock(conn, RESTOCK, "SUP-HOT", SKU, n, first)
        for start in range(0, n, 5000):
            ids = range(start, min(n, start + 5000))
            await conn.execute(
                insert(customers),
                [
                    {
                        "customer_id": i + 1,
                        "name": f"C{i}",
                        "email": f"c{i}@example.com",
                        "created_at": NOW,
                    }
                    for i in ids
                ],
            )
            await conn.execute(
                insert(chats),
                [
                    {
                        "chat_id": CHAT_BASE + i,
                        "customer_id": i + 1,
                        "language": "en",
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for i in ids
                ],
            )
            await conn.execute(
                insert(orders),
                [
                    {
                        "order_id": i + 1,
                        "order_number": str(100001 + i),
                        "customer_id": i + 1,
                        "placed_at": NOW - timedelta(seconds=n - i),
                        "currency": "EUR",
                    }
                    for i in ids
                ],
            )
            await conn.execute(
                insert(order_lines),
                [
                    {
                        "order_id": i + 1,
                        "line_no": 1,
                        "sku": SKU,
                        "qty_ordered": 1,
                        "qty_waiting": 1,
                        "unit_price_minor": 1000,
                        "queued_at": NOW - timedelta(seconds=n - i),
                        "promised_date": TODAY + timedelta(days=90),
                    }
                    for i in ids
                ],
            )
        await project_dates(conn, SKU)
        await conn.execute(update(order_lines).values(last_told_date=order_lines.c.projected_date))


async def serve_sandbox(n: int) -> None:
    """The sandbox in its own process (as in production, Telegram is not in the bot's
    process): users for every chat, then the addresses on stdout, then serve until killed."""
    sandbox = Sandbox(limits=Limits())
    await sandbox.start()
    for i in range(n):
        create_user(sandbox._world, {"id": CHAT_BASE + i})
    print(
        json.dumps(
            {
                "url": sandbox.url,
                "api": sandbox.api_base,
                "file": sandbox.file_base,
                "token": sandbox.token,
            }
        ),
        flush=True,
    )
    await asyncio.Event().wait()


def cpu_seconds(pid: int) -> float:
    """A process's CPU time (user + system) from /proc; 0 where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sandbox(n: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-sandbox", str(n)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


async def ceiling(where: dict[str, str], n: int, seconds: float, layer: str) -> float:
    """sendMessage as fast as the request layer and the sandbox go: 64 concurrent sends."""
    request = (
        HTTPXRequest(connection_pool_size=128)
        if layer == "httpx"
        else AiohttpRequest(connection_pool_size=128)
    )
    bot = Bot(
        where["token"],
        base_url=where["api"],
        base_file_url=where["file"],
        request=request,
    )
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal sent
        i = k
        while time.perf_counter() < deadline:
            await bot.send_message(CHAT_BASE + i % n, "ceiling <b>probe</b>", parse_mode="HTML")
            sent += 1
            i += 64

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(64)))
    elapsed = time.perf_counter() - t0
    await bot.request.shutdown()
    return sent / elapsed


async def deliver(
    store: Store, where: dict[str, str], db_url: str, rate: float, seconds: float, lease: int
) -> tuple[int, float]:
    # NOTICE_BATCH_SIZE's default (500) at every rate, as far as the lease allows: about
    # ``seconds`` of sending.
    batch = 500
    settings = load_settings(
        {
            "BOT_TOKEN": where["token"],
            "LINK_SECRET": LINK_SECRET,
            "BOT_API_BASE_URL": where["api"],
            "BOT_API_FILE_URL": where["file"],
            "DATABASE_URL": db_url,
            "SEND_RATE_PER_SECOND": str(rate),
            "NOTICE_BATCH_SIZE": str(min(batch, 10_000)),
            "NOTICE_JOB_INTERVAL_SECONDS": "0",
            "LEASE_SECONDS": str(lease),
            "REQUEST_LAYER": LAYER,
        }
    )
    rounds = max(1, round(rate * seconds / batch_limit(settings)))
    app = build_application(settings, store, now=lambda: NOW)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        report = await deliver_due(app, max_rounds=rounds)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await close(app)
    print(report)
    print(f"sends in flight: {sends_in_flight(settings)}")
    print(
        f"bot process CPU while delivering: {cpu:.1f} s ({1000 * cpu / max(report.sent, 1):.2f} ms per sent notice)"
    )
    return report.sent, elapsed


async def main(n: int, seconds: float, rates: list[float], probe: bool, lease: int) -> None:
    tune_collector()  # as run_bot.py does: the sender runs in this process
    # Other work on the machine moves every figure: the load goes with them.
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}"
        store = await open_store(db_url)
        t0 = time.perf_counter()
        await build(store, n)
        print(f"built {n:,} waiting lines in {time.perf_counter() - t0:.1f} s")

        t0, c0 = time.perf_counter(), time.process_time()
        async with store.begin() as conn:
            await change_restock_date(conn, RESTOCK, TODAY + timedelta(days=24), "supplier delay")
            t1, c1 = time.perf_counter(), time.process_time()
            report = await queue_notices(conn, now=NOW)
        t2, c2 = time.perf_counter(), time.process_time()
        # CPU: this process's, both threads (the event loop and aiosqlite's, where SQLite runs).
        print(
            f"date change re-projected {n:,} lines in {t1 - t0:.2f} s (CPU {c1 - c0:.2f} s); queued {report.notices:,} notices"
            f" for {report.lines:,} lines in {t2 - t1:.2f} s (CPU {c2 - c1:.2f} s) (change + queue + commit {t2 - t0:.2f} s, CPU {c2 - c0:.2f} s)"
        )
        async with store.begin() as conn:
            again = await queue_notices(conn, now=NOW)
        print(f"queue again: {again.notices} new notices")

        proc, where = start_sandbox(n)  # Telegram's limits: 30/s in all, 1/s per chat
        try:
            async with SandboxClient(where["url"]) as tg:
                await tg.set_limits(enabled=False)
                for layer in ("aiohttp", "httpx") if probe else ():
                    top = await ceiling(where, n, 5.0, layer)
                    print(
                        f"sandbox ceiling (own process, 64 concurrent PTB sends over {layer}, limits off): {top:,.0f}/s"
                    )
                print(f"sender: REQUEST_LAYER={LAYER}")
                await tg.set_limits(enabled=True)
                # The sandbox allows Telegram's 30/s at the default rate, 10% above 1,000/s.
                for rate in rates:
                    global_limit = 30.0 if rate <= 25 else rate * 1.1
                    await tg.set_limits(global_per_sec=global_limit, global_burst=int(global_limit))
                    before = await tg.count_429()
                    sandbox_cpu = cpu_seconds(proc.pid)
                    sent, elapsed = await deliver(store, where, db_url, rate, seconds, lease)
                    sandbox_cpu = cpu_seconds(proc.pid) - sandbox_cpu
                    got = await tg.count_429() - before
                    print(
                        f"sandbox process CPU while delivering: {sandbox_cpu:.1f} s ({1000 * sandbox_cpu / max(sent, 1):.2f} ms per sent notice)"
                    )
                    print(
                        f"rate {rate:,.0f}/s (sandbox allows {global_limit:,.0f}/s): {sent:,} sent in {elapsed:.1f} s ="
                        f" {sent / elapsed:,.1f}/s ({100 * sent / elapsed / rate:.1f}% of the setting), 429s: {got}"
                    )
            async with store.connect() as conn:
                print("outbox:", await outbox_counts(conn))
            print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        finally:
            proc.kill()
            proc.wait()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rates", default="25,1000", help="sending rates to measure")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the sandbox ceiling")
    parser.add_argument(
        "--lease",
        type=int,
        default=600,
        help="LEASE_SECONDS (5 or more): leases are renewed every quarter of it while sending",
    )
    parser.add_argument("--serve-sandbox", type=int, metavar="USERS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sandbox is not None:
        asyncio.run(serve_sandbox(args.serve_sandbox))
    else:
        rates = [float(r) for r in args.rates.split(",") if r]
        asyncio.run(main(args.lines, args.seconds, rates, not args.no_ceiling, args.lease))
