from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from store import Store, open_store
from store.catalog import StockState, alternatives_in_stock, availability, find_products
from store.demo import fill_demo, is_empty
from store.queries import (
    LineState,
    OrderState,
    customer_of,
    lines_moved_since_told,
    order_of,
    orders_of,
)
from store.schema import order_lines, restock_date_changes, stock
from tests.store.conftest import copied_db

TODAY = date(2026, 3, 2)


async def test_small_demo_showcase(store: Store) -> None:
    async with store.connect() as conn:
        assert await is_empty(conn)
    summary = await fill_demo(store, "small", seed=7, today=TODAY)
    assert (summary.products, summary.customers, summary.orders) == (200, 500, 2000)
    async with store.connect() as conn:
        assert not await is_empty(conn)
        anna = await customer_of(conn, 1)
        assert anna is not None
        assert (anna.name, anna.email, anna.postcode, anna.language) == (
            "Anna Schmidt",
            "anna.schmidt@example.com",
            "10115",
            "de",
        )
        orders = await orders_of(conn, 1, language="de")
        assert [o.order_number for o in orders] == ["100003", "100002", "100001"]
        o1 = await order_of(conn, 1, "100001")
        assert o1 is not None and o1.state is OrderState.SHIPPED
        assert [(s.carrier, s.tracking_number) for s in o1.shipments] == [("DHL", "JD014600003828")]
        o2 = await order_of(conn, 1, "100002", language="de")
        assert o2 is not None
        ln = o2.lines[0]
        assert (ln.sku, ln.name, ln.state, ln.queue_position) == (
            "COF-0001",
            "Barista Pro Kaffeemaschine",
            LineState.WAITING,
            1,
        )
        assert ln.projected_date == TODAY + timedelta(
            days=24
        ) and ln.last_told_date == TODAY + timedelta(days=6)
        assert ln.waits_for is not None and ln.waits_for.restock_id == "PO-000001"
        o3 = await order_of(conn, 1, "100003")
        assert o3 is not None
        assert [(x.sku, x.state, x.projected_date) for x in o3.lines] == [
            ("PRM-0001", LineState.WAITING, None),
            ("KET-0001", LineState.READY, None),
        ]
        assert await order_of(conn, 2, "100001") is None  # someone else's
        moved = await lines_moved_since_told(conn, customer_id=1)
        assert [m.order_number for m in moved] == ["100002"]
        # John's 100005 and María's 100006 queue behind Anna for the 4 units, then the 10.
        o6 = await order_of(conn, 3, "100006")
        assert (
            o6 is not None
            and o6.lines[0].queue_position == 3
            and o6.lines[0].projected_date == TODAY + timedelta(days=24)
        )
        states = {sku: (await availability(conn, sku)) for sku in summary.showcase.values()}
        assert {k: v.state for k, v in states.items() if v} == {
            "KET-0001": StockState.IN_STOCK,
            "COF-0001": StockState.BACKORDER_DATED,
            "PRM-0001": StockState.BACKORDER_UNDATED,
            "BIK-0001": StockState.OUT_OF_STOCK,
            "SOF-0001": StockState.DISCONTINUED,
        }
        assert [p.sku for p in await alternatives_in_stock(conn, "SOF-0001", 1)] == ["SOF-0002"]
        assert (await conn.scalar(select(func.count()).select_from(restock_date_changes))) >= 2
        # Stock's allocated column equals the sum over lines.
        per_line = dict(
            (
                await conn.execute(
                    select(order_lines.c.sku, func.sum(order_lines.c.qty_allocated)).group_by(
                        order_lines.c.sku
                    )
                )
            ).all()
        )
        per_stock = dict((await conn.execute(select(stock.c.sku, stock.c.allocated))).all())
        assert all(per_stock[s] == per_line.get(s, 0) for s in per_stock)
        hits = await find_products(conn, "kaffemaschine barista", 3)
        assert hits[0].sku == "COF-0001"
        hits = await find_products(conn, "коляска городская", 3)
        assert hits[0].sku == "PRM-0001"


@pytest.fixture
def second_db_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Another empty store of this test's own, next to ``db_url``'s, on the same backend."""
    with copied_db(request, backend, "store") as url:
        yield url


async def test_demo_is_deterministic(store: Store, second_db_url: str) -> None:
    other = await open_store(second_db_url)
    try:
        dumps = []
        for s in (store, other):
            await fill_demo(s, "small", seed=3, today=TODAY)
            async with s.connect() as conn:
                rows = (
                    await conn.execute(
                        select(
                            order_lines.c.sku,
                            order_lines.c.qty_ordered,
                            order_lines.c.projected_date,
                        ).order_by(order_lines.c.line_id)
                    )
                ).all()
            dumps.append(rows)
    finally:
        await other.close()
    assert dumps[0] and dumps[0] == dumps[1]


async def test_after_the_demo_a_new_order_takes_the_next_ids(store: Store) -> None:
    """The demo writes its orders and lines with their ids; on PostgreSQL the sequences then
    stood at 1 and every new order failed with a duplicate key of pk_orders."""
    from store.backorders import NewLine, place_order

    summary = await fill_demo(store, "small", seed=7, today=TODAY)
    async with store.begin() as conn:
        placed = await place_order(
            conn, "900001", 1, [NewLine("COF-0001", 1), NewLine("KET-0001", 2)]
        )
        second = await place_order(conn, "900002", 2, [NewLine("PRM-0001", 1)])
        line_ids = (
            await conn.execute(
                select(order_lines.c.line_id)
                .where(order_lines.c.order_id.in_([placed.order_id, second.order_id]))
                .order_by(order_lines.c.line_id)
            )
        ).scalars()
        assert [placed.order_id, second.order_id] == [summary.orders + 1, summary.orders + 2]
        assert list(line_ids) == [summary.lines + 1, summary.lines + 2, summary.lines + 3]
