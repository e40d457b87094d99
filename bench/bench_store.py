# ruff: noqa: E501, ASYNC240  (a hand-run script: long report lines, blocking file setup)
"""Store benchmark at 1,000,000 orders, on SQLite or PostgreSQL. Run by hand; prints figures,
asserts nothing.

    .venv/bin/python bench/bench_store.py [--size large] [--n 2000]
    .venv/bin/python bench/bench_store.py --postgresql postgresql+asyncpg://USER@HOST/postgres
    .venv/bin/python bench/bench_store.py --sqlite /tmp/large-passed.sqlite3  # a copy of it

The generated database is cached (SQLite: under bench/results/, gitignored; PostgreSQL: the
database bench_demo_SIZE on that server, built once by the demo builder); each run works on a
copy (a file copy, or CREATE DATABASE ... TEMPLATE) so receipts and re-projections start from
the same state. ``--sqlite FILE``: work on a copy of that SQLite store instead (e.g. a copy of
/work/stores/large-passed.sqlite3). ``--rounds N``: the reads N times, each round's p50 shown.
Besides wall time, the CPU time of this process per call (the client's share; PostgreSQL's own
CPU is in its server processes) and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from store import Store, open_store  # noqa: E402
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


def show(name: str, xs: list[float], cpu: list[float] | None = None) -> None:
    mean_cpu = f"   CPU here {sum(cpu) / len(cpu) * 1000:5.2f} ms/call" if cpu else ""
    print(
        f"{name:<28} p50 {pct(xs, 50):7.2f} ms   p99 {pct(xs, 99):7.2f} ms{mean_cpu}   (n={len(xs)})"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="large")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--postgresql", metavar="SERVER_URL", help="a server to build and run on")
    ap.add_argument(
        "--vacuum",
        action="store_true",
        help="PostgreSQL: VACUUM (ANALYZE) the copy first, as autovacuum does after a while",
    )
    ap.add_argument("--reads-only", action="store_true", help="skip the slip and the receipt")
    ap.add_argument("--sqlite", metavar="FILE", help="copy this SQLite store instead of the demo")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the reads")
    args = ap.parse_args()
    if args.postgresql:
        url = await _postgresql_copy(args.postgresql, args.size, vacuum=args.vacuum)
    elif args.sqlite:
        url = _sqlite_file_copy(Path(args.sqlite))
    else:
        url = await _sqlite_copy(args.size)
    await run(url, args)


async def _admin(server: str, *statements: str) -> list[object]:
    import asyncpg

    dsn = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetch(sql) for sql in statements]
    finally:
        await conn.close()


async def _postgresql_copy(server: str, size: str, *, vacuum: bool) -> str:
    cached, work = f"bench_demo_{size}", f"bench_work_{size}"
    [rows] = await _admin(server, f"SELECT 1 FROM pg_database WHERE datname = '{cached}'")
    if not rows:
        building = f"{cached}_building"
        await _admin(
            server, f'DROP DATABASE IF EXISTS "{building}"', f'CREATE DATABASE "{building}"'
        )
        t = time.perf_counter()
        url = make_url(server).set(database=building).render_as_string(hide_password=False)
        st = await open_store(url)
        summary = await fill_demo(st, size, seed=7, today=TODAY)
        await st.close()
        await _admin(server, f'ALTER DATABASE "{building}" RENAME TO "{cached}"')
        print(f"generated {summary} in {time.perf_counter() - t:.1f} s")
    await _admin(
        server,
        f'DROP DATABASE IF EXISTS "{work}" WITH (FORCE)',
        f'CREATE DATABASE "{work}" TEMPLATE "{cached}"',
    )
    work_server = make_url(server).set(database=work).render_as_string(hide_password=False)
    # Planner statistics, and with --vacuum the visibility map too: until a table's pages are
    # marked all-visible, an index-only scan (the queue-place count) visits the table for
    # every index entry. A fresh load has none marked; autovacuum marks them later.
    t = time.perf_counter()
    await _admin(work_server, "VACUUM (ANALYZE)" if vacuum else "ANALYZE")
    print(f"{'VACUUM (ANALYZE)' if vacuum else 'ANALYZE'} in {time.perf_counter() - t:.1f} s")
    return work_server


async def _sqlite_copy(size: str) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    cached = RESULTS / f"demo-{size}.sqlite3"
    if not cached.exists():
        tmp = RESULTS / f"demo-{size}.building.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        t = time.perf_counter()
        st = await open_store(f"sqlite+aiosqlite:///{tmp}")
        summary = await fill_demo(st, size, seed=7, today=TODAY)
        async with st.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        await st.close()
        tmp.rename(cached)
        print(f"generated {summary} in {time.perf_counter() - t:.1f} s")
    work = RESULTS / f"work-{size}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    shutil.copyfile(cached, work)
    return f"sqlite+aiosqlite:///{work}"


def _sqlite_file_copy(source: Path) -> str:
    work = source.with_name(f"{source.stem}-bench-work.sqlite3")
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    t = time.perf_counter()
    shutil.copyfile(source, work)
    print(f"copied {source} in {time.perf_counter() - t:.1f} s")
    return f"sqlite+aiosqlite:///{work}"


async def run(url: str, args: argparse.Namespace) -> None:
    store = await open_store(url)
    print(f"on {store.engine.dialect.name}")
    rng = random.Random(1)
    async with store.connect() as conn:
        n_orders = int(await conn.scalar(select(func.count()).select_from(orders)) or 0)
        n_cust = int(await conn.scalar(select(func.max(orders.c.customer_id))) or 1)
        print(
            f"orders {n_orders}, lines {await conn.scalar(select(func.count()).select_from(order_lines))}"
        )

        t_cust, t_one, t_search, c_cust, c_one = [], [], [], [], []
        print(f"round 1, load {os.getloadavg()[0]:.1f}:")
        for _ in range(args.n):
            cid = rng.randint(5, n_cust)
            t, c = time.perf_counter(), time.process_time()
            await orders_of(conn, cid, limit=10)
            t_cust.append(time.perf_counter() - t)
            c_cust.append(time.process_time() - c)
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
            t, c = time.perf_counter(), time.process_time()
            await order_of(conn, cid, number)
            t_one.append(time.perf_counter() - t)
            c_one.append(time.process_time() - c)
        t = time.perf_counter()
        index = await store.product_index()
        build = time.perf_counter() - t
        words = ["kettle", "kaffeemaschine", "cafetera", "коляска", "bike", "sofa nordic", "aurora 137",
                 "kettel", "kafemaschine", "stehlampe", "blendr", "tostadora riva", "диван", "KET-0042", "prm"]  # fmt: skip
        for i in range(args.n):
            t = time.perf_counter()
            await find_products(index, words[i % len(words)], 5)
            t_search.append(time.perf_counter() - t)
    show("orders_of (customer)", t_cust, c_cust)
    show("order_of (by number)", t_one, c_one)
    show("find_products (fuzzy)", t_search)
    print(f"{'product index build':<28} {build * 1000:7.1f} ms ({len(index)} products)")
    await _hot_line(store, args.n)
    for r in range(2, args.rounds + 1):
        rng = random.Random(r)
        t_cust, c_cust, t_one, c_one = [], [], [], []
        async with store.connect() as conn:
            for _ in range(args.n):
                cid = rng.randint(5, n_cust)
                t, c = time.perf_counter(), time.process_time()
                await orders_of(conn, cid, limit=10)
                t_cust.append(time.perf_counter() - t)
                c_cust.append(time.process_time() - c)
            for number, cid in numbers:
                t, c = time.perf_counter(), time.process_time()
                await order_of(conn, cid, number)
                t_one.append(time.perf_counter() - t)
                c_one.append(time.process_time() - c)
        print(f"round {r}, load {os.getloadavg()[0]:.1f}:")
        show("orders_of (customer)", t_cust, c_cust)
        show("order_of (by number)", t_one, c_one)
        await _hot_line(store, args.n)
    if args.reads_only:
        await store.close()
        return

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


async def _hot_line(store: Store, n: int) -> None:
    """The order view of two lines of the hot SKU's queue: the deepest (its place counted
    from the nearest queue mark: the case issue #15 measured at 8-10 ms on PostgreSQL) and
    the one 1,300 places in (a mark's range into the queue, 100,000 lines still behind it:
    the case PostgreSQL's row-comparison scan read to the end of the queue for)."""
    c = order_lines.c
    hot = (
        select(orders.c.order_number, orders.c.customer_id)
        .join(order_lines, c.order_id == orders.c.order_id)
        .where(c.sku == "KET-0002", c.qty_waiting > 0)
        .limit(1)
    )
    async with store.connect() as conn:
        rows = [
            (
                await conn.execute(
                    hot.order_by(c.queue_rank.desc(), c.queued_at.desc(), c.line_id.desc())
                )
            ).first(),
            (
                await conn.execute(hot.order_by(c.queue_rank, c.queued_at, c.line_id).offset(1300))
            ).first(),
        ]
        for row in rows:
            if row is None:
                continue
            times, cpu = [], []
            for _ in range(n):
                t, c0 = time.perf_counter(), time.process_time()
                order = await order_of(conn, row.customer_id, row.order_number)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c0)
            assert order is not None
            places = [ln.queue_position for ln in order.lines if ln.sku == "KET-0002"]
            show(f"order_of (hot, place {max(p or 0 for p in places)})", times, cpu)


if __name__ == "__main__":
    asyncio.run(main())
