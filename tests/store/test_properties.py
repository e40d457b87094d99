# ruff: noqa: E501  (scenario tables read best unwrapped)
"""Property-based tests of the allocation and projection invariants (hypothesis), on both
backends: every example in a database of its own, a copy of a migrated template."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from store import backorders, open_store
from store.backorders import (
    NewLine,
    cancel_line,
    change_restock_date,
    place_order,
    receive_restock,
    set_stock,
    ship,
)
from store.errors import StoreError
from store.master import add_restock
from store.queries import _queue_position, order_of
from store.schema import order_lines, restocks, stock

from .conftest import copied_db
from .helpers import at, seed_catalog

SKU = "KET-0001"
BASE = date(2026, 2, 1)
# Examples per backend: PostgreSQL's share keeps the suite's time (each example there is a
# database of its own and every statement a round trip); the same rules run on both.
INVARIANT_EXAMPLES = {"sqlite": 25, "postgresql": 3}
REIMPORT_EXAMPLES = {"sqlite": 8, "postgresql": 1}

ops = st.lists(
    st.one_of(
        st.tuples(st.just("order"), st.integers(1, 4), st.integers(0, 1)),
        st.tuples(st.just("restock"), st.integers(1, 6), st.integers(0, 30)),
        st.tuples(st.just("receive"), st.integers(0, 9), st.integers(0, 8)),
        st.tuples(st.just("cancel"), st.integers(0, 19), st.just(0)),
        st.tuples(st.just("slip"), st.integers(0, 9), st.integers(-10, 20)),
        st.tuples(st.just("ship"), st.integers(0, 19), st.just(0)),
    ),
    min_size=1,
    max_size=12,
)


async def _queue(conn: AsyncConnection) -> list:
    c = order_lines.c
    return (
        await conn.execute(
            select(
                c.line_id,
                c.qty_ordered,
                c.qty_allocated,
                c.qty_shipped,
                c.qty_cancelled,
                c.qty_waiting,
                c.projected_date,
                # The place as readers get it: counted on the queue index, not stored.
                _queue_position().label("queue_position"),
            )
            .where(c.sku == SKU)
            .order_by(c.queue_rank, c.queued_at, c.line_id)
        )
    ).all()


async def _scenario(url: str, script: list[tuple[str, int, int]], initial: int) -> None:
    # Marks every other line, so that places are counted from marks, not only from the head.
    mark_every, backorders.MARK_EVERY = backorders.MARK_EVERY, 2
    try:
        await _run(url, script, initial)
    finally:
        backorders.MARK_EVERY = mark_every


async def _run(url: str, script: list[tuple[str, int, int]], initial: int) -> None:
    store = await open_store(url, migrate_schema=False)
    try:
        async with store.begin() as conn:
            await seed_catalog(conn, customers=2)
            await set_stock(conn, SKU, initial)
        received_total = 0
        orders: list[str] = []
        owner: dict[str, int] = {}
        restock_ids: list[str] = []
        for step, (kind, a, b) in enumerate(script):
            async with store.begin() as conn:
                try:
                    if kind == "order":
                        number = str(100_001 + len(orders))
                        await place_order(
                            conn,
                            number,
                            1 + step % 2,
                            [NewLine(SKU, a)],
                            placed_at=at(step),
                            priority=b,
                        )
                        orders.append(number)
                        owner[number] = 1 + step % 2
                    elif kind == "restock":
                        rid = f"PO-{len(restock_ids)}"
                        await add_restock(conn, rid, "SUP-1", SKU, a, BASE + timedelta(days=b))
                        restock_ids.append(rid)
                    elif kind == "receive" and restock_ids:
                        rid = restock_ids[a % len(restock_ids)]
                        before = await _queue(conn)
                        r = await receive_restock(conn, rid, b if b else None)
                        if r.changed:
                            received_total += r.qty
                            _assert_fcfs(before, await _queue(conn), r.qty - r.to_free_stock)
                    elif kind == "cancel" and orders:
                        number = orders[a % len(orders)]
                        before = await _queue(conn)
                        c = await cancel_line(conn, number, 1)
                        after = await _queue(conn)
                        # A cancelled line's units go to the next in line.
                        cancelled = {
                            x.line_id
                            for x, y in zip(before, after, strict=True)
                            if y.qty_cancelled > x.qty_cancelled
                        }
                        _assert_fcfs(
                            [x for x in before if x.line_id not in cancelled],
                            [y for y in after if y.line_id not in cancelled],
                            c.released,
                        )
                    elif kind == "slip" and restock_ids:
                        rid = restock_ids[a % len(restock_ids)]
                        await change_restock_date(conn, rid, BASE + timedelta(days=15 + b), "slip")
                    elif kind == "ship" and orders:
                        await ship(
                            conn,
                            f"S{step}",
                            orders[a % len(orders)],
                            carrier="DHL",
                            tracking_number=None,
                            shipped_on=BASE,
                        )
                except StoreError:
                    pass
            async with store.connect() as conn:
                await _check_invariants(conn, initial + received_total, owner)
    finally:
        await store.close()


def _assert_fcfs(before: list, after: list, given: int) -> None:
    """``given`` new units went to the waiting lines strictly in queue order."""
    left = given
    for x, y in zip(before, after, strict=True):
        got = y.qty_allocated - x.qty_allocated
        expected = min(left, x.qty_waiting)
        assert got == expected, (x, y, given)
        left -= expected
    assert left == 0 or not any(y.qty_waiting for y in after)


async def _check_invariants(conn: AsyncConnection, supplied: int, owner: dict[str, int]) -> None:
    rows = await _queue(conn)
    s = (
        await conn.execute(select(stock.c.on_hand, stock.c.allocated).where(stock.c.sku == SKU))
    ).one()
    allocated = sum(r.qty_allocated for r in rows)
    shipped = sum(r.qty_shipped for r in rows)
    # Never more allocated (or shipped) than ever arrived; the stock row agrees with the lines.
    assert allocated + shipped <= supplied
    assert s.allocated == allocated and s.on_hand == supplied - shipped
    for r in rows:
        assert r.qty_allocated + r.qty_shipped + r.qty_cancelled + r.qty_waiting == r.qty_ordered
    # Free stock only exists when nobody waits.
    waiting = [r for r in rows if r.qty_waiting > 0]
    if waiting:
        assert s.on_hand - s.allocated == 0
    # Projected dates never decrease along the queue; undated lines come last.
    dates = [r.projected_date for r in waiting]
    seen_none = False
    last = date.min
    for d in dates:
        if d is None:
            seen_none = True
            continue
        assert not seen_none and d >= last
        last = d
    assert [r.queue_position for r in waiting] == list(range(1, len(waiting) + 1))
    assert all(r.queue_position is None for r in rows if not r.qty_waiting)
    # The customer's view reads the same places (every order here has one line).
    place = {r.line_id: i for i, r in enumerate(waiting, start=1)}
    for number, customer in owner.items():
        order = await order_of(conn, customer, number)
        assert order is not None
        (line,) = order.lines
        assert line.queue_position == place.get(line.line_id), (number, line)
    # The last dated line is covered by the open restocks.
    open_qty = sum(
        q
        for (q,) in (
            await conn.execute(
                select(restocks.c.qty).where(restocks.c.sku == SKU, restocks.c.status == "open")
            )
        ).all()
    )
    dated_need = sum(r.qty_waiting for r in waiting if r.projected_date is not None)
    assert dated_need <= open_qty


def test_allocation_and_projection_invariants(backend: str, request: pytest.FixtureRequest) -> None:
    @settings(max_examples=INVARIANT_EXAMPLES[backend])
    @given(script=ops, initial=st.integers(0, 5))
    def example(script: list[tuple[str, int, int]], initial: int) -> None:
        with copied_db(request, backend, "store") as url:
            asyncio.run(_scenario(url, script, initial))

    example()


order_rows = st.lists(
    st.tuples(st.integers(1, 2), st.sampled_from(["KET-0001", "KET-0002"]), st.integers(1, 5)),
    min_size=1,
    max_size=12,
)


def test_reimport_changes_nothing(backend: str, request: pytest.FixtureRequest) -> None:
    # Each example runs the CLI twelve times.
    @settings(max_examples=REIMPORT_EXAMPLES[backend])
    @given(rows=order_rows, stock_qty=st.integers(0, 6))
    def example(rows: list[tuple[int, str, int]], stock_qty: int) -> None:
        with copied_db(request, backend, "store") as url:
            _reimport(url, rows, stock_qty)

    example()


def _reimport(url: str, rows: list[tuple[int, str, int]], stock_qty: int) -> None:
    from store.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = {
            "products": "sku,name_en,category,price_minor,currency\nKET-0001,Kettle,kettles,100,EUR\nKET-0002,Kettle 2,kettles,200,EUR\n",
            "suppliers": "supplier_id,name\nSUP-1,Acme\n",
            "stock": f"sku,on_hand\nKET-0001,{stock_qty}\n",
            "restocks": "restock_id,supplier_id,sku,qty,expected_date\nPO-1,SUP-1,KET-0001,4,2026-03-01\n",
            "customers": "customer_id,name,email\n1,A,a@x.example\n2,B,b@x.example\n",
            "orders": "order_number,customer_id,placed_at,line_no,sku,qty\n"
            + "".join(
                f"{100001 + i},{c},2026-01-01T10:{i:02d}:00Z,1,{sku},{q}\n"
                for i, (c, sku, q) in enumerate(rows)
            ),
        }
        for kind, text in files.items():
            (d / f"{kind}.csv").write_text(text)

        def load() -> None:
            for kind in files:
                assert main(["--db", url, "import", kind, str(d / f"{kind}.csv")]) == 0

        load()
        first = asyncio.run(_snapshot(url))
        load()
        assert asyncio.run(_snapshot(url)) == first


async def _snapshot(url: str) -> list:
    store = await open_store(url)
    try:
        async with store.connect() as conn:
            out = []
            for t in (order_lines, stock, restocks):
                cols = [c for c in t.c if not c.name.endswith("_at")]
                out.append(
                    (await conn.execute(select(*cols).order_by(*t.primary_key.columns))).all()
                )
            return out
    finally:
        await store.close()
