from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from store import Store
from store.backorders import (
    NewLine,
    cancel_line,
    cancel_lines,
    cancel_order,
    cancel_restock,
    change_restock_date,
    free_stock,
    place_order,
    receive_restock,
    set_stock,
    ship,
)
from store.catalog import StockState, alternatives_in_stock, availability
from store.errors import Conflict, NotFound, StoreError
from store.queries import LineState, OrderState, lines_moved_since_told, mark_told, order_of
from store.schema import events, follow_on_marks, order_lines, restock_date_changes, stock
from store.schema import orders as orders_table

from .helpers import D1, D2, at, restock, seed_catalog


async def _line(store: Store, number: str, cust: int, no: int = 1):
    async with store.connect() as conn:
        order = await order_of(conn, cust, number)
    assert order is not None
    return order.lines[no - 1]


async def test_place_order_allocates_free_stock_then_waits(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await set_stock(conn, "KET-0001", 3)
        placed = await place_order(conn, "100001", 1, [NewLine("KET-0001", 5)], placed_at=at(0))
        assert [a.qty for a in placed.allocated] == [3]
        assert await free_stock(conn, "KET-0001") == 0
        again = await place_order(conn, "100001", 1, [NewLine("KET-0001", 5)], placed_at=at(0))
        assert again.created is False
        with pytest.raises(Conflict):
            await place_order(conn, "100001", 1, [NewLine("KET-0001", 4)])
        with pytest.raises(NotFound):
            await place_order(conn, "100002", 1, [NewLine("NOP-0000", 1)])
        with pytest.raises(StoreError, match="discontinued"):
            await place_order(conn, "100003", 1, [NewLine("SOF-0001", 1)])
        with pytest.raises(StoreError, match="not sold on backorder"):
            await place_order(conn, "100004", 1, [NewLine("BIK-0001", 1)])
    line = await _line(store, "100001", 1)
    assert (line.qty_allocated, line.qty_waiting, line.state) == (3, 2, LineState.PARTLY_READY)
    assert line.projected_date is None and line.queue_position == 1 and line.waits_for is None


async def test_projection_queue_and_dates(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await restock(conn, "PO-1", 3, D1)
        await restock(conn, "PO-2", 4, D2)
        for i, qty in enumerate([2, 1, 3, 2], start=1):
            await place_order(conn, f"10000{i}", i, [NewLine("KET-0001", qty)], placed_at=at(i))
    got = [await _line(store, f"10000{i}", i) for i in range(1, 5)]
    assert [ln.projected_date for ln in got] == [D1, D1, D2, None]
    assert [ln.queue_position for ln in got] == [1, 2, 3, 4]
    assert got[2].waits_for is not None and got[2].waits_for.restock_id == "PO-2"
    assert got[2].waits_for.qty == 4 and got[2].waits_for.expected_date == D2
    assert [ln.promised_date for ln in got] == [D1, D1, D2, None]

    async with store.begin() as conn:
        proj = await change_restock_date(conn, "PO-1", date(2026, 2, 15), "supplier late")
        assert proj is not None
        assert [(m.old_date, m.new_date) for m in proj.moved] == [(D1, date(2026, 2, 15))] * 2
        assert await change_restock_date(conn, "PO-1", date(2026, 2, 15), "again") is None
        hist = (
            await conn.execute(
                select(restock_date_changes.c.old_date, restock_date_changes.c.reason)
            )
        ).all()
        assert [tuple(h) for h in hist] == [(D1, "supplier late")]
        moved = await lines_moved_since_told(conn)
        assert [m.order_number for m in moved] == ["100001", "100002"]
        await mark_told(conn, [m.line_id for m in moved])
        assert await lines_moved_since_told(conn) == []
        with pytest.raises(StoreError, match="reason"):
            await change_restock_date(conn, "PO-1", D1, " ")


async def test_receive_restock_fcfs_partial_and_free(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await restock(conn, "PO-1", 4, D1)
        await place_order(conn, "100001", 1, [NewLine("KET-0001", 2)], placed_at=at(1))
        await place_order(conn, "100002", 2, [NewLine("KET-0001", 3)], placed_at=at(2))
        # Priority jumps the queue.
        await place_order(conn, "100003", 3, [NewLine("KET-0001", 1)], placed_at=at(3), priority=5)
        r = await receive_restock(conn, "PO-1", 6)
        assert r.changed and r.qty == 6 and r.to_free_stock == 0
        assert [a.qty for a in r.allocated] == [1, 2, 3]
        again = await receive_restock(conn, "PO-1")
        assert again.changed is False and again.allocated == ()
    async with store.begin() as conn:
        await restock(conn, "PO-2", 10, D2)
        await place_order(conn, "100004", 4, [NewLine("KET-0001", 4)], placed_at=at(4))
        r2 = await receive_restock(conn, "PO-2")
        assert [a.qty for a in r2.allocated] == [4] and r2.to_free_stock == 6
        assert await free_stock(conn, "KET-0001") == 6
        a = await availability(conn, "KET-0001")
        assert a is not None and (a.state, a.free_qty) == (StockState.IN_STOCK, 6)
    ln = await _line(store, "100002", 2)
    assert (ln.state, ln.qty_allocated, ln.queue_position) == (LineState.READY, 3, None)


async def test_cancel_line_passes_allocation_on(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await set_stock(conn, "KET-0001", 2)
        await place_order(conn, "100001", 1, [NewLine("KET-0001", 2)], placed_at=at(1))
        await place_order(
            conn, "100002", 2, [NewLine("KET-0001", 1), NewLine("KET-0002", 1)], placed_at=at(2)
        )
        with pytest.raises(NotFound):
            await cancel_line(conn, "100001", 1, customer_id=2)  # not theirs
        c = await cancel_line(conn, "100001", 1, customer_id=1, reason="changed mind")
        assert (c.changed, c.cancelled_qty, c.released) == (True, 2, 2)
        assert [a.qty for a in c.reallocated] == [1]
        assert (await cancel_line(conn, "100001", 1)).changed is False
        assert await free_stock(conn, "KET-0001") == 1
        c2 = await cancel_order(conn, "100002", customer_id=2)
        assert c2.cancelled_qty == 2 and c2.released == 1
        assert await free_stock(conn, "KET-0001") == 2
    async with store.connect() as conn:
        o = await order_of(conn, 2, "100002")
        assert o is not None and o.state is OrderState.CANCELLED
        kinds = (
            await conn.execute(select(func.count()).where(events.c.kind == "line_cancelled"))
        ).scalar()
        assert kinds == 3


class _Undo(Exception):
    pass


async def _after_cancels(conn: AsyncConnection) -> dict[str, Any]:
    ol = order_lines.c
    return {
        "lines": (
            await conn.execute(
                select(
                    ol.line_id,
                    ol.qty_waiting,
                    ol.qty_allocated,
                    ol.qty_cancelled,
                    ol.waits_for_restock_id,
                ).order_by(ol.line_id)
            )
        ).all(),
        "stock": (
            await conn.execute(
                select(stock.c.sku, stock.c.on_hand, stock.c.allocated).order_by(stock.c.sku)
            )
        ).all(),
        "marks": (await conn.execute(select(follow_on_marks).order_by(*follow_on_marks.c))).all(),
        "cancelled": (
            await conn.execute(
                select(events.c.line_id, events.c.data)
                .where(events.c.kind == "line_cancelled")
                .order_by(events.c.line_id)
            )
        ).all(),
    }


async def test_lines_of_many_orders_cancelled_at_once_end_as_one_after_another(
    store: Store,
) -> None:
    """store.backorders.cancel_lines (the delay policy's deadlines) leaves the store as
    cancel_line for each line in turn: the same units cancelled, and the allocations passed
    on first come, first served to the same lines, though each cancel_line passed them on
    (to a line cancelled next, in turn) and cancel_lines once after all of them."""
    async with store.begin() as conn:
        await seed_catalog(conn)
        await set_stock(conn, "KET-0001", 4)
        await restock(conn, "PO-1", 10, D1)
        await restock(conn, "PO-2", 10, D1, "KET-0002")
        orders = [
            ("100001", [NewLine("KET-0001", 2)]),  # allocated
            ("100002", [NewLine("KET-0001", 3)]),  # 2 allocated, 1 waiting
            ("100003", [NewLine("KET-0001", 1)]),  # waiting
            ("100004", [NewLine("KET-0002", 1), NewLine("KET-0001", 2)]),  # waiting
            ("100005", [NewLine("KET-0001", 2)]),  # waiting
        ]
        for i, (number, lines) in enumerate(orders):
            await place_order(conn, number, 1 + i % 5, lines, placed_at=at(i))
        await cancel_line(conn, "100003", 1)  # nothing left to cancel below
        ol = order_lines.c
        ids = {
            (r.order_number, r.line_no): r.line_id
            for r in await conn.execute(
                select(orders_table.c.order_number, ol.line_no, ol.line_id).join(orders_table)
            )
        }
    picked = [("100002", 1), ("100001", 1), ("100004", 1), ("100004", 2), ("100003", 1)]
    with pytest.raises(_Undo):
        async with store.begin() as conn:
            one_by_one = {
                ids[p]: (await cancel_line(conn, *p, reason="deadline")).cancelled_qty
                for p in picked
            }
            after_each = await _after_cancels(conn)
            raise _Undo
    async with store.begin() as conn:
        together = await cancel_lines(conn, [ids[p] for p in picked], reason="deadline")
        after_all = await _after_cancels(conn)
    assert (
        together == one_by_one == {ids[p]: q for p, q in zip(picked, [3, 2, 1, 2, 0], strict=True)}
    )
    assert after_all == after_each
    # The units 100001 and 100002 held went to 100005, the first line left waiting.
    assert [
        (r.qty_waiting, r.qty_allocated)
        for r in after_all["lines"]
        if r.line_id == ids[("100005", 1)]
    ] == [(0, 2)]


async def test_cancel_restock_undates_lines(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await restock(conn, "PO-1", 5, D1)
        await place_order(conn, "100001", 1, [NewLine("KET-0001", 2)], placed_at=at(1))
        proj = await cancel_restock(conn, "PO-1", "supplier gone")
        assert proj is not None and [(m.old_date, m.new_date) for m in proj.moved] == [(D1, None)]
        assert await cancel_restock(conn, "PO-1") is None
        with pytest.raises(Conflict):
            await receive_restock(conn, "PO-1")
        a = await availability(conn, "KET-0001")
        assert a is not None and a.state is StockState.BACKORDER_UNDATED and a.waiting_qty == 2


async def test_ship_and_tracking(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await set_stock(conn, "KET-0001", 3)
        await place_order(conn, "100001", 1, [NewLine("KET-0001", 3)], placed_at=at(1))
        with pytest.raises(Conflict):
            await ship(
                conn,
                "S1",
                "100001",
                carrier="DHL",
                tracking_number="T",
                shipped_on=D1,
                lines={1: 4},
            )
        s = await ship(
            conn, "S1", "100001", carrier="DHL", tracking_number="JD01", shipped_on=D1, lines={1: 2}
        )
        assert s.changed and s.lines[0].qty == 2
        assert (
            await ship(conn, "S1", "100001", carrier="DHL", tracking_number="JD01", shipped_on=D1)
        ).changed is False
        await ship(conn, "S2", "100001", carrier="UPS", tracking_number="1Z", shipped_on=D2)
        with pytest.raises(Conflict, match="nothing allocated"):
            await ship(conn, "S3", "100001", carrier="UPS", tracking_number="1Z", shipped_on=D2)
    async with store.connect() as conn:
        o = await order_of(conn, 1, "100001")
        assert o is not None and o.state is OrderState.SHIPPED
        assert [(s.carrier, s.tracking_number, s.lines) for s in o.shipments] == [
            ("DHL", "JD01", ((1, 2),)),
            ("UPS", "1Z", ((1, 1),)),
        ]
        assert await free_stock(conn, "KET-0001") == 0


async def test_five_availability_states_and_alternatives(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await set_stock(conn, "KET-0002", 4)
        await restock(conn, "PO-1", 5, D1)
        a = {
            s: await availability(conn, s) for s in ["KET-0001", "KET-0002", "BIK-0001", "SOF-0001"]
        }
        assert {k: v.state for k, v in a.items() if v} == {
            "KET-0001": StockState.BACKORDER_DATED,
            "KET-0002": StockState.IN_STOCK,
            "BIK-0001": StockState.OUT_OF_STOCK,
            "SOF-0001": StockState.DISCONTINUED,
        }
        assert a["KET-0001"] is not None and a["KET-0001"].next_date == D1
        assert await availability(conn, "NOP-0000") is None
        alts = await alternatives_in_stock(conn, "KET-0001", 3, language="de")
        assert [p.sku for p in alts] == ["KET-0002"]
        await place_order(conn, "100001", 1, [NewLine("KET-0001", 5)], placed_at=at(1))
        undated = await availability(conn, "KET-0001")
        assert undated is not None and undated.state is StockState.BACKORDER_UNDATED
