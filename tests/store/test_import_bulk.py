"""Issue #14: an orders file is placed whole (store.backorders.place_orders: inserts in
batches, each touched SKU allocated and projected once at the end) when that gives exactly
the store that placing its orders one after another gives, and one by one otherwise. Both
ways on copies of the small demo shop, row for row: lines, allocations, projected dates,
promises, stock, queue marks, follow-on marks, events."""

from __future__ import annotations

import csv
import random
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import store.imports as imports
from store import open_store
from store.schema import products, stock
from tests.pg import sqlite_url
from tests.store.store_dump import _dump

NOW = datetime.now(UTC).replace(microsecond=0)


async def _catalog(url: str) -> tuple[list[tuple[str, bool, int]], int]:
    s = await open_store(url)
    try:
        async with s.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        products.c.sku,
                        products.c.backorderable,
                        stock.c.on_hand - stock.c.allocated,
                    )
                    .select_from(products.outerjoin(stock, stock.c.sku == products.c.sku))
                    .where(products.c.active)
                    .order_by(products.c.sku)
                )
            ).all()
            from store.schema import customers

            top = await conn.scalar(
                select(customers.c.customer_id).order_by(customers.c.customer_id.desc())
            )
    finally:
        await s.close()
    return [(r[0], bool(r[1]), int(r[2] or 0)) for r in rows], int(top or 1)


def _write(path: Path, rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["order_number", "customer_id", "placed_at", "line_no", "sku", "qty", "priority"]
        )
        w.writerows(rows)


def _orders(
    seed: int, catalog: list[tuple[str, bool, int]], customers: int, *, jump: bool
) -> list[list[Any]]:
    rng = random.Random(seed)
    rows: list[list[Any]] = []
    at = NOW - timedelta(hours=2)
    in_stock = [s for s, _, on in catalog if on > 0]
    backorderable = {s: b for s, b, _ in catalog}
    budget = {s: max(0, on) for s, _, on in catalog}
    open_sku = next(s for s, b, _ in catalog if b and s not in in_stock)
    for i in range(40):
        at += timedelta(minutes=rng.choice((0, 0, 1, 2)))  # ties too: the line id decides
        placed = at - timedelta(days=400) if jump and i == 30 else at
        prio = 5 if jump and i == 20 else 0
        n = rng.choice((1, 1, 2, 3))
        customer = rng.randint(1, customers)
        skus = rng.sample([s for s, _, _ in catalog] + in_stock * 3, n)
        for no, sku in enumerate(dict.fromkeys(skus), start=1):
            qty = rng.randint(1, 4)
            if not backorderable[sku]:  # within what is free, or the file is refused
                qty = min(qty, budget[sku])
                if qty == 0:
                    sku, qty = open_sku, 1
                budget[sku] -= qty if sku != open_sku else 0
            rows.append(
                [
                    900_000 + i,
                    customer,
                    placed.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    no,
                    sku,
                    qty,
                    prio,
                ]
            )
    return rows


def _same(d: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    """The dump with this run's time stamps as one value, and the events the two ways log
    differently (one 'allocated' and one 'dates_projected' per SKU instead of per order) as
    their sums."""

    def v(x: Any) -> Any:
        return "now" if isinstance(x, datetime) and x >= NOW - timedelta(minutes=1) else x

    out: dict[str, Any] = {t: [tuple(v(x) for x in row) for row in rows] for t, rows in d.items()}
    kept: list[tuple[Any, ...]] = []
    allocated: Counter[str] = Counter()
    for row in d["events"]:
        _, at, kind, sku, *rest = row
        if kind == "allocated":
            import json

            allocated[sku] += json.loads(rest[-1])["qty"]
        elif kind != "dates_projected":
            kept.append((v(at), kind, sku, *rest))
    out["events"] = sorted(kept, key=repr)
    out["allocated"] = allocated
    # The projection's bookkeeping (generations, batches, time stamps) counts the requests
    # each way made; what must agree is that no queue owes a projection after either.
    out["sku_projections"] = sorted(row[0] for row in d.get("sku_projections", []) if row[2])
    return out


async def _import(
    template: Path, path: Path, csv_path: Path, *, one_by_one: bool
) -> dict[str, Any]:
    shutil.copyfile(template, path)
    s = await open_store(sqlite_url(path))
    try:
        async with s.begin() as conn:
            r = await imports.apply_file(conn, "orders", csv_path, one_by_one=one_by_one)
        with csv_path.open() as f:
            assert r.changed == len({row[0] for row in csv.reader(f) if row[0].isdigit()})
    finally:
        await s.close()
    return _same(await _dump(sqlite_url(path)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("jump", [False, True])
async def test_whole_file_is_the_same_store_as_one_by_one(
    demo_db_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, jump: bool
) -> None:
    catalog, customers = await _catalog(sqlite_url(demo_db_template))
    csv_path = tmp_path / "orders.csv"
    _write(csv_path, _orders(seed, catalog, customers, jump=jump))
    one_by_one = await _import(demo_db_template, tmp_path / "a.sqlite3", csv_path, one_by_one=True)
    calls: list[str] = []
    real = imports.place_order

    async def counted(*a: Any, **k: Any) -> Any:
        calls.append(a[1])
        return await real(*a, **k)

    monkeypatch.setattr(imports, "place_order", counted)
    whole = await _import(demo_db_template, tmp_path / "b.sqlite3", csv_path, one_by_one=False)
    # A line that jumps the queue (a priority, an older order) sends the file one by one.
    assert (len(calls) == 40) if jump else (calls == [])
    assert whole == one_by_one
    assert whole["allocated"] or seed  # the file meets free stock (seed 0 at least)


async def test_a_queue_of_two_priorities_counts_every_waiting_line_and_unit(
    demo_db_template: Path, tmp_path: Path
) -> None:
    """The file's lines join the back of a queue whose waiting lines have two ranks (a
    priority order ahead of the plain ones): place_orders counts the lines and units of both
    ranks ahead of them (their dates, their queue marks), as one by one does. The priority
    order takes all of the first open restock, so a count that missed it dates the new
    lines from that restock instead of the next."""
    from sqlalchemy import func

    from store.backorders import NewLine, place_order
    from store.schema import order_lines, restocks

    template = tmp_path / "template.sqlite3"
    shutil.copyfile(demo_db_template, template)
    s = await open_store(sqlite_url(template))
    try:
        async with s.begin() as conn:
            r = restocks.c
            rows = (
                await conn.execute(
                    select(r.sku, r.restock_id, r.expected_date, r.qty - r.qty_received)
                    .select_from(
                        restocks.join(products, products.c.sku == r.sku).outerjoin(
                            stock, stock.c.sku == r.sku
                        )
                    )
                    .where(
                        r.status == "open",
                        products.c.active,
                        products.c.backorderable,
                        func.coalesce(stock.c.on_hand - stock.c.allocated, 0) <= 0,
                    )
                    .order_by(r.sku, r.expected_date, r.restock_id)
                )
            ).all()
            by_sku: dict[str, list[Any]] = {}
            for row in rows:
                by_sku.setdefault(row[0], []).append(row)
            sku, (first, *_) = next((k, v) for k, v in by_sku.items() if len(v) >= 2)
            c = order_lines.c
            waiting = await conn.scalar(
                select(func.coalesce(func.sum(c.qty_waiting), 0)).where(
                    c.sku == sku, c.qty_waiting > 0
                )
            )
            # Ahead of every plain line, and enough to use up the first restock whatever
            # the queue held before.
            await place_order(
                conn,
                "899999",
                1,
                [NewLine(sku, int(first[3]) + 1)],
                placed_at=NOW - timedelta(days=3),
                priority=5,
            )
            ranks = await conn.scalar(
                select(func.count(func.distinct(c.queue_rank))).where(
                    c.sku == sku, c.qty_waiting > 0
                )
            )
    finally:
        await s.close()
    assert ranks == 2 and int(waiting) > 0  # the plain lines are there too
    csv_path = tmp_path / "orders.csv"
    placed = (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _write(csv_path, [[900_000 + i, 1, placed, 1, sku, 1, 0] for i in range(3)])
    one_by_one = await _import(template, tmp_path / "a.sqlite3", csv_path, one_by_one=True)
    whole = await _import(template, tmp_path / "b.sqlite3", csv_path, one_by_one=False)
    assert whole == one_by_one
    s = await open_store(sqlite_url(tmp_path / "b.sqlite3"))
    try:
        async with s.connect() as conn:
            from store.schema import orders

            dates = (
                await conn.scalars(
                    select(order_lines.c.waits_for_restock_id)
                    .join(orders, orders.c.order_id == order_lines.c.order_id)
                    .where(orders.c.order_number.in_(["900000", "900001", "900002"]))
                )
            ).all()
    finally:
        await s.close()
    # Behind the priority order's units: not the first restock's.
    assert first[1] not in dates and len(dates) == 3
