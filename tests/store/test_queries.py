"""The place a customer reads for a waiting line (store.queries), counted from the nearest
queue mark rank by rank: every path of the count, on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select

from store import Store, backorders
from store.backorders import NewLine, place_order, set_stock
from store.queries import _queue_position, order_of, orders_of
from store.schema import order_lines, queue_marks
from tests.store.helpers import at, seed_catalog

SKU = "KET-0001"
# (priority, minute placed): the queue is ordered by priority (highest first), then time,
# then line id. Several priorities in a row put a mark of one rank right before lines of
# the next ranks; equal minutes leave the order to the line id; KET-0002's lines between
# them must not count.
ORDERS = [
    (0, 1), (3, 2), (1, 3), (0, 3), (2, 4), (1, 4), (0, 5), (5, 6),
    (1, 7), (2, 7), (0, 8), (0, 8), (1, 9), (0, 10),
]  # fmt: skip


@pytest.fixture
def mark_every(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(backorders, "MARK_EVERY", 3)
    return 3


async def _places(store: Store) -> tuple[list[int], dict[int, int | None]]:
    """The waiting lines of SKU in queue order, and each line's place as counted."""
    c = order_lines.c
    async with store.connect() as conn:
        queue = list(
            await conn.scalars(
                select(c.line_id)
                .where(c.sku == SKU, c.qty_waiting > 0)
                .order_by(c.queue_rank, c.queued_at, c.line_id)
            )
        )
        counted = dict(
            (await conn.execute(select(c.line_id, _queue_position()).where(c.sku == SKU))).all()
        )
    return queue, counted


async def test_a_line_s_place_counts_every_waiting_line_ahead_across_priorities(
    store: Store, mark_every: int
) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn, customers=2)
        await set_stock(conn, SKU, 0)
        await set_stock(conn, "KET-0002", 0)
        for n, (priority, minute) in enumerate(ORDERS):
            lines = [NewLine(SKU, 1)] if n % 3 else [NewLine("KET-0002", 1), NewLine(SKU, 2)]
            await place_order(
                conn, str(100_001 + n), 1 + n % 2, lines, placed_at=at(minute), priority=priority
            )
    async with store.connect() as conn:
        marks = (await conn.execute(select(queue_marks).where(queue_marks.c.sku == SKU))).all()
    # Marks of four ranks: counts start at a mark of a higher priority than the line.
    assert len({m.queue_rank for m in marks}) == 4
    assert [m.lines_before for m in marks] == [0, 3, 6, 9, 12]

    queue, counted = await _places(store)
    assert len(queue) == len(ORDERS)
    expected = {line: place for place, line in enumerate(queue, start=1)}
    assert {line: counted[line] for line in queue} == expected
    # The customer's views read the same places.
    async with store.connect() as conn:
        for n in range(len(ORDERS)):
            customer = 1 + n % 2
            order = await order_of(conn, customer, str(100_001 + n))
            assert order is not None
            (line,) = [ln for ln in order.lines if ln.sku == SKU]
            assert line.queue_position == expected[line.line_id]
        listed = {
            ln.line_id: ln.queue_position
            for customer in (1, 2)
            for order in await orders_of(conn, customer, limit=100)
            for ln in order.lines
            if ln.sku == SKU
        }
    assert listed == expected

    # Without marks (none written yet) the count starts at the head of the queue.
    async with store.begin() as conn:
        await conn.execute(delete(queue_marks))
    _, counted = await _places(store)
    assert {line: counted[line] for line in queue} == expected


async def test_a_line_no_longer_waiting_has_no_place(store: Store, mark_every: int) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn, customers=2)
        await set_stock(conn, SKU, 1)
        for n in range(4):
            await place_order(conn, str(100_001 + n), 1, [NewLine(SKU, 1)], placed_at=at(n))
    async with store.connect() as conn:
        views = [await order_of(conn, 1, str(100_001 + n)) for n in range(4)]
    # The first order took the free unit; the other three wait, 1-2-3.
    assert [v.lines[0].queue_position for v in views if v] == [None, 1, 2, 3]
