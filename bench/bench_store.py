# ruff: noqa: E501, ASYNC240  (a hand-run script: long report lines, blocking file setup)
"""Store benchmark at 1,000,000 orders on SQLite. Run by hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_store.py [--size large] [--n 2000]

The generated database is cached under bench/results/ (gitignored); each run works on a
copy so receipts and re-projections start from the same state.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from store import open_store  # noqa: E402
from store.backorders import change_restock_date, receive_restock  # noqa: E402
from store.catalog import find_products  # noqa: E402
from store.demo import fill_demo  # noqa: E402
from store.queries import order_of, orders_of  # noqa: E402
from store.schema import order_lines, orders, restocks  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TODAY = date(2026, 1, 15)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] * 1000


def show(name: str, xs: list[float]) -> None:
    print(f"{name:<28} p50 {pct(xs, 50):7.2f} ms   p99 {pct(xs, 99):7.2f} ms   (n={len(xs)})")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="large")
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    cached = RESULTS / f"demo-{args.size}.sqlite3"
    if not cached.exists():
        tmp = RESULTS / f"demo-{args.size}.building.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        t = time.perf_counter()
        st = await open_store(f"sqlite+aiosqlite:///{tmp}")
        summary = await fill_demo(st, args.size, seed=7, today=TODAY)
        async with st.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        await st.close()
        tmp.rename(cached)
        print(f"generated {summary} in {time.perf_counter() - t:.1f} s")
    work = RESULTS / f"work-{args.size}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    shutil.copyfile(cached, work)

    store = await open_store(f"sqlite+aiosqlite:///{work}")
    rng = random.Random(1)
    async with store.connect() as conn:
        n_orders = int(await conn.scalar(select(func.count()).select_from(orders)) or 0)
        n_cust = int(await conn.scalar(select(func.max(orders.c.customer_id))) or 1)
        print(
            f"orders {n_orders}, lines {await conn.scalar(select(func.count()).select_from(order_lines))}"
        )

        t_cust, t_one, t_search = [], [], []
        for _ in range(args.n):
            cid = rng.randint(5, n_cust)
            t = time.perf_counter()
            await orders_of(conn, cid, limit=10)
            t_cust.append(time.perf_counter() - t)
        numbers = []
        for _ in range(args.n):
            o = rng.randint(1, n_orders)
            numbers.append(
                (
                    str(100_000 + o),
                    int(
                        await conn.scalar(
                            select(orders.c.customer_id).where(orders.c.order_id == o)
                        )
                        or 0
                    ),
                )
            )
        for number, cid in numbers:
            t = time.perf_counter()
            await order_of(conn, cid, number)
            t_one.append(time.perf_counter() - t)
        t = time.perf_counter()
        index = await store.product_index()
        build = time.perf_counter() - t
        words = ["kettle", "kaffeemaschine", "cafetera", "коляска", "bike", "sofa nordic", "aurora 137",
                 "kettel", "kafemaschine", "stehlampe", "blendr", "tostadora riva", "диван", "KET-0042", "prm"]  # fmt: skip
        for i in range(args.n):
            t = time.perf_counter()
            await find_products(index, words[i % len(words)], 5)
            t_search.append(time.perf_counter() - t)
    show("orders_of (customer)", t_cust)
    show("order_of (by number)", t_one)
    show("find_products (fuzzy)", t_search)
    print(f"{'product index build':<28} {build * 1000:7.1f} ms ({len(index)} products)")

    async with store.connect() as conn:
        hot_waiting = await conn.scalar(
            select(func.count()).where(
                order_lines.c.sku == "KET-0002", order_lines.c.qty_waiting > 0
            )
        )
        first = (await conn.execute(select(restocks.c.restock_id, restocks.c.qty, restocks.c.expected_date).where(restocks.c.sku == "KET-0002", restocks.c.status == "open").order_by(restocks.c.expected_date))).all()  # fmt: skip
    print(
        f"hot SKU KET-0002: {hot_waiting} waiting lines, open restocks {[(r.restock_id, r.qty) for r in first]}"
    )
    big = next(r for r in first if r.qty == 10_000)
    t = time.perf_counter()
    async with store.begin() as conn:
        proj = await change_restock_date(
            conn, big.restock_id, big.expected_date + timedelta(days=9), "bench slip"
        )
    dt = time.perf_counter() - t
    assert proj is not None
    print(
        f"{'re-project (date slip)':<28} {dt * 1000:7.1f} ms  ({proj.waiting_lines} waiting lines, {len(proj.moved)} moved)"
    )
    t = time.perf_counter()
    async with store.begin() as conn:
        rec = await receive_restock(conn, big.restock_id)
    dt = time.perf_counter() - t
    print(
        f"{'receive 10,000-unit restock':<28} {dt * 1000:7.1f} ms  ({len(rec.allocated)} lines filled, re-projected {rec.projection.waiting_lines if rec.projection else 0})"
    )
    await store.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'peak RSS':<28} {rss:7.1f} MB")


if __name__ == "__main__":
    asyncio.run(main())
