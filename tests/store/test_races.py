"""Check-then-write steps taken many at once, on separate connections, on both backends: each
limit holds exactly, and no step fails on a constraint (tests/store/races.py runs them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from store import Store
from store.backorders import NewLine, cancel_line, cancel_order, place_order, ship
from store.delays import next_order_number
from store.errors import Conflict
from store.schema import order_lines, stock
from tests.store.conftest import filled_db_url
from tests.store.races import (
    ALLOWANCE,
    LAST_UNIT,
    LINKED_CHAT,
    NOW,
    OLD_CHAT,
    at_once,
    bot_order,
    close_stores,
    escalate,
    failures,
    import_last_units,
    open_stores,
    order_last_unit,
    outcome,
    seed,
    wrong_proof,
)

TASKS = 32
# An order is some twenty statements, and the orders for one SKU run one after another.
ORDERS = 12


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from filled_db_url(request, backend, "races", seed)


@pytest.fixture
async def stores(db_url: str) -> AsyncIterator[list[Store]]:
    opened = await open_stores(db_url, 4)
    try:
        yield opened
    finally:
        await close_stores(opened)


async def test_a_chats_wrong_proofs_at_once_record_exactly_its_limit(
    stores: list[Store],
) -> None:
    results = await at_once(stores, TASKS, lambda conn, i: wrong_proof(conn, 77, f"{300000 + i}"))
    assert failures(results) == []
    assert results.count(True) == ALLOWANCE
    assert (await outcome(stores[0])).attempts_by_chat == {77: ALLOWANCE}


async def test_wrong_proofs_for_one_number_from_many_chats_record_exactly_its_allowance(
    stores: list[Store],
) -> None:
    # Past the allowance each proof waits after the last wrong one, and all come at NOW.
    results = await at_once(stores, TASKS, lambda conn, i: wrong_proof(conn, 500 + i, "100001"))
    assert failures(results) == []
    assert results.count(True) == ALLOWANCE
    assert (await outcome(stores[0])).attempts_by_number == {"100001": ALLOWANCE}


@pytest.mark.parametrize("orders", [2, ORDERS])
async def test_orders_for_the_last_units_at_once_give_each_once_and_queue_the_rest(
    stores: list[Store], orders: int
) -> None:
    # Every order wants one unit of both SKUs, half of them naming the SKUs the other way round.
    results = await at_once(
        stores, orders, lambda conn, i: order_last_unit(conn, f"{200000 + i}", i)
    )
    assert failures(results) == []
    assert 1 <= results.count(True) <= 2
    found = await outcome(stores[0])
    assert found.allocated == {sku: 1 for sku in LAST_UNIT}
    assert found.lines_allocated == {sku: 1 for sku in LAST_UNIT}
    assert found.lines_waiting == {sku: orders - 1 for sku in LAST_UNIT}


@pytest.mark.parametrize("files", [2, ORDERS])
async def test_imports_for_the_last_units_at_once_give_each_once_and_queue_the_rest(
    stores: list[Store], files: int
) -> None:
    # As two `import orders` at once: before the stock rows were held, two files both read
    # the last unit free on PostgreSQL and the second failed on ck_stock_allocated_within.
    results = await at_once(
        stores, files, lambda conn, i: import_last_units(conn, f"{210000 + i}", i)
    )
    assert failures(results) == []
    assert 1 <= sum(1 for got in results if got) <= 2
    assert sum(results) == len(LAST_UNIT)
    found = await outcome(stores[0])
    assert found.allocated == {sku: 1 for sku in LAST_UNIT}
    assert found.lines_allocated == {sku: 1 for sku in LAST_UNIT}
    assert found.lines_waiting == {sku: files - 1 for sku in LAST_UNIT}


async def test_order_numbers_the_bot_gives_at_once_are_all_different(
    stores: list[Store],
) -> None:
    # Past the largest number in the store, whoever gave it (the shop's import here).
    async with stores[0].begin() as conn:
        await place_order(conn, "100500", 1, [NewLine(LAST_UNIT[1], 1)], placed_at=NOW)
    results = await at_once(stores, ORDERS, bot_order)
    assert failures(results) == []
    expected = [str(100501 + k) for k in range(ORDERS)]
    assert sorted(results) == expected  # type: ignore[type-var]
    assert (await outcome(stores[0])).numbers == ["100500", *expected]
    async with stores[1].begin() as conn:
        await place_order(conn, "100900", 1, [NewLine(LAST_UNIT[1], 1)], placed_at=NOW)
        assert await next_order_number(conn) == "100901"
    async with stores[2].begin() as conn:
        assert await next_order_number(conn) == "100902"


async def test_escalations_at_once_keep_one_topic_per_customer(
    stores: list[Store],
) -> None:
    # Customer 1 writes from LINKED_CHAT now; OLD_CHAT, theirs before, escalates too.
    results = await at_once(stores, TASKS, escalate)
    assert failures(results) == []
    assert results.count(True) == 2  # one escalation of each chat
    found = await outcome(stores[0])
    # The customer's topic came over to their chat (its second escalation); the old chat,
    # no longer theirs, has a topic of its own.
    assert found.topics == [(LINKED_CHAT, 1, "waiting", 2), (OLD_CHAT, None, "waiting", 1)]
    assert found.escalation_rows == 3


async def test_cancels_of_one_line_at_once_cancel_it_once(stores: list[Store]) -> None:
    # Each cancel reads what is left to cancel and then subtracts it: read at once, two would
    # both subtract (qty_balance refuses the second on PostgreSQL, or it is counted twice).
    async with stores[0].begin() as conn:
        await place_order(conn, "400001", 2, [NewLine(LAST_UNIT[0], 3)])

    async def cancel(conn: AsyncConnection, i: int) -> int:
        if i % 2:
            return (await cancel_order(conn, "400001", customer_id=2)).cancelled_qty
        return (await cancel_line(conn, "400001", 1, customer_id=2)).cancelled_qty

    results = await at_once(stores, 8, cancel)
    assert failures(results) == []
    assert sorted(results) == [0] * 7 + [3]  # type: ignore[type-var]
    async with stores[0].connect() as conn:
        line = (
            await conn.execute(
                select(
                    order_lines.c.qty_cancelled,
                    order_lines.c.qty_waiting,
                    order_lines.c.qty_allocated,
                ).where(order_lines.c.sku == LAST_UNIT[0])
            )
        ).one()
        allocated = await conn.scalar(select(stock.c.allocated).where(stock.c.sku == LAST_UNIT[0]))
    assert tuple(line) == (3, 0, 0)
    assert allocated == 0


async def test_shipments_of_the_same_units_at_once_ship_them_once(stores: list[Store]) -> None:
    async with stores[0].begin() as conn:
        await place_order(conn, "400002", 3, [NewLine(LAST_UNIT[1], 1)])

    async def ship_it(conn: AsyncConnection, i: int) -> bool:
        try:
            await ship(
                conn,
                f"SH-{i}",
                "400002",
                carrier="DHL",
                tracking_number=None,
                shipped_on=NOW.date(),
            )
        except Conflict:
            return False
        return True

    results = await at_once(stores, 8, ship_it)
    assert failures(results) == []
    assert results.count(True) == 1
    async with stores[0].connect() as conn:
        on_hand, allocated = (
            await conn.execute(
                select(stock.c.on_hand, stock.c.allocated).where(stock.c.sku == LAST_UNIT[1])
            )
        ).one()
        shipped = await conn.scalar(
            select(order_lines.c.qty_shipped).where(order_lines.c.sku == LAST_UNIT[1])
        )
    assert (on_hand, allocated, shipped) == (0, 0, 1)
