# ruff: noqa: E501  (a hand-run script: long report lines)
"""Shopify webhook to the customer's notice: run by hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_shopify.py [--orders 1000] [--rate 20] [--tick 0.5]

A running bot (polling the sandbox, Telegram's flood limits on, its notice job every --tick
seconds) and the Shopify route (shopapi/shopify.py, with the admin commands' follow-on) on
127.0.0.1, over a SQLite store with one product in stock and --orders customers whose chats
are linked. For each customer, at --rate per second: orders/create, then
fulfillments/create (shipped with tracking). Measured: from the moment the fulfillment's POST
is sent (its arrival, on one machine) to the sandbox's log entry of the sendMessage that tells
that customer (the shipping notice): p50/p99/max; and each webhook's answer time by topic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.app import build_application  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from sandbox import Limits, Sandbox  # noqa: E402
from sandbox.client import SandboxClient  # noqa: E402
from shopapi.shopify import PATH, add_shopify_routes, signature, store_follow_on  # noqa: E402
from store import open_store  # noqa: E402
from store.backorders import set_stock  # noqa: E402
from store.chats import link_chat  # noqa: E402
from store.master import CustomerIn, ProductIn, upsert_customer, upsert_product  # noqa: E402

SKU = "SHOP-0001"
CHAT_BASE = 30_000_000
SECRET = "bench-shopify-secret"
LINK_SECRET = "bench-link-secret-never-used-in-production"


def order(i: int) -> dict[str, object]:
    return {
        "id": 5_000_000_000 + i,
        "name": f"#{700000 + i}",
        "order_number": 700000 + i,
        "email": f"c{i}@example.com",
        "created_at": "2026-11-20T19:00:00-05:00",
        "currency": "EUR",
        "customer": {"email": f"c{i}@example.com", "first_name": "C", "last_name": str(i)},
        "line_items": [{"id": 1, "sku": SKU, "quantity": 1, "price": "10.00"}],
    }


def fulfillment(i: int) -> dict[str, object]:
    return {
        "id": 9_000_000_000 + i,
        "order_id": 5_000_000_000 + i,
        "status": "success",
        "tracking_company": "DHL",
        "tracking_number": f"JD{i:08d}",
        "line_items": [{"id": 1, "sku": SKU, "quantity": 1}],
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run(n: int, rate: float, tick: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench_shopify_"))
    url = f"sqlite+aiosqlite:///{workdir}/shop.sqlite3"
    os.environ.update(DATABASE_URL=url, QUIET_HOURS="off")
    store = await open_store(url)
    async with store.begin() as conn:
        await upsert_product(conn, ProductIn(SKU, "Shop Item", "bench", 1000, "EUR"))
        await set_stock(conn, SKU, n)
        for i in range(n):
            await upsert_customer(conn, CustomerIn(i + 1, f"C {i}", f"c{i}@example.com"))
            await link_chat(conn, CHAT_BASE + i, i + 1)
    sandbox = Sandbox(limits=Limits())  # Telegram's flood limits
    await sandbox.start()
    async with SandboxClient(sandbox.url) as tg:
        await tg.bulk(
            users=[
                {"id": CHAT_BASE + i, "first_name": "C", "language_code": "en"} for i in range(n)
            ]
        )
    settings = load_settings(
        {
            "BOT_TOKEN": sandbox.token,
            "BOT_API_BASE_URL": sandbox.api_base,
            "BOT_API_FILE_URL": sandbox.file_base,
            "DATABASE_URL": url,
            "LINK_SECRET": LINK_SECRET,
            "QUIET_HOURS": "off",
            "NOTICE_JOB_INTERVAL_SECONDS": str(tick),
            "LOG_LEVEL": "WARNING",
        }
    )
    app = build_application(settings, store)
    await app.initialize()
    assert app.post_init is not None and app.updater is not None
    await app.post_init(app)
    await app.start()
    await app.updater.start_polling(poll_interval=0, timeout=1)

    web_app = web.Application()
    add_shopify_routes(web_app, store=store, secret=SECRET, follow_on=store_follow_on(store))
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook = f"http://127.0.0.1:{port}{PATH}"

    sent_at: dict[int, float] = {}
    answer: dict[str, list[float]] = {"orders/create": [], "fulfillments/create": []}
    failures: list[str] = []

    async with aiohttp.ClientSession() as http:

        async def post(topic: str, payload: dict[str, object], wid: str) -> float:
            raw = json.dumps(payload).encode()
            headers = {
                "X-Shopify-Topic": topic,
                "X-Shopify-Hmac-Sha256": signature(SECRET, raw),
                "X-Shopify-Webhook-Id": wid,
                "Content-Type": "application/json",
            }
            start = time.time()
            async with http.post(hook, data=raw, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    failures.append(f"{topic} {wid}: {r.status}")
            answer[topic].append(time.time() - start)
            return start

        async def one(i: int, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            await post("orders/create", order(i), f"o-{i}")
            sent_at[i] = await post("fulfillments/create", fulfillment(i), f"f-{i}")

        began = time.monotonic()
        await asyncio.gather(*(one(i, began + i / rate) for i in range(n)))
        posted = time.monotonic() - began

        # Wait for every customer's notice (or give up after a minute of nothing new).
        world = sandbox._world
        told: dict[int, float] = {}
        last_new = time.monotonic()
        while len(told) < n and time.monotonic() - last_new < 60:
            for call in world.calls:
                if call["method"] != "sendMessage" or not call["ok"]:
                    continue
                chat = int(call["params"].get("chat_id", 0)) - CHAT_BASE
                if 0 <= chat < n and chat not in told and call["time"] >= sent_at.get(chat, 1e18):
                    told[chat] = call["time"]
                    last_new = time.monotonic()
            await asyncio.sleep(0.2)

    latencies = [told[i] - sent_at[i] for i in told]
    print(
        f"bench_shopify: {n} customers, webhooks at {rate:g}/s (posted in {posted:.1f} s), notice job every {tick:g} s, Telegram's flood limits on, SQLite"
    )
    for topic, times in answer.items():
        print(
            f"  {topic}: answer p50 {pct(times, 50) * 1000:.1f} ms, p99 {pct(times, 99) * 1000:.1f} ms ({len(times)} sent)"
        )
    if latencies:
        print(
            f"  fulfillment webhook -> shipping notice sendMessage: {len(latencies)}/{n} told;"
            f" p50 {pct(latencies, 50):.2f} s, p99 {pct(latencies, 99):.2f} s,"
            f" max {max(latencies):.2f} s, mean {statistics.mean(latencies):.2f} s"
        )
    if failures:
        print(f"  {len(failures)} webhooks not answered 200, e.g. {failures[:3]}")
    await runner.cleanup()
    await app.updater.stop()
    await app.stop()
    await app.shutdown()
    assert app.post_shutdown is not None
    await app.post_shutdown(app)
    await sandbox.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--orders", type=int, default=1000)
    p.add_argument("--rate", type=float, default=20.0, help="customers per second")
    p.add_argument("--tick", type=float, default=0.5, help="NOTICE_JOB_INTERVAL_SECONDS")
    args = p.parse_args()
    asyncio.run(run(args.orders, args.rate, args.tick))


if __name__ == "__main__":
    main()
