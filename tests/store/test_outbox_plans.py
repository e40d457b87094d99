"""How SQLite runs the notice queueing's writes on a big store: through the rows they touch,
never a scan of a whole table (the store has no statistics, so the planner goes by the shape
of the statement alone, on a small store as on the 1M-order one)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from store import Store
from store.outbox import QueueReport, claim_due, queue_notices
from tests.store.helpers import at, seed_catalog
from tests.store.test_outbox import LEASE, add_chat, add_order, day, move

pytestmark = pytest.mark.sqlite_only("SQLite's query plans")


async def test_a_batch_of_notices_reads_and_writes_only_its_orders_rows(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        for order_id in range(1, 41):
            customer = 1 + order_id % 5
            await add_order(conn, order_id, customer, lines=2)
        for customer in range(1, 6):
            await add_chat(conn, customer)
        await move(conn, [11, 12, 21], day(14), at(1))
    plans: dict[str, list[str]] = {}

    def explain(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            rows = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans[statement] = [str(r[-1]) for r in rows]

    assert store._inline_writer is not None  # a SQLite file: the batch thread's engine
    event.listen(store._inline_writer, "before_cursor_execute", explain)

    async def batch(conn: AsyncConnection) -> QueueReport:
        # The orders a batch's marks name, as store.delays.follow_on_batch asks for them (a
        # list bound as one parameter: json_each).
        return await queue_notices(conn, now=at(2), order_ids=[1, 2, 3], back_in_stock=False)

    report = await store.run_batch(batch)
    assert report == QueueReport(2, 3, 0)  # orders 1 and 2: three moved lines told
    [told] = [p for s, p in plans.items() if s.lstrip().startswith("UPDATE order_lines")]
    assert any(step.startswith("SEARCH order_lines") for step in told), told
    scans = {
        s.split()[0]: step
        for s, p in plans.items()
        for step in p
        if step.startswith(("SCAN order_lines", "SCAN orders", "SCAN outbox", "SCAN chats"))
    }
    assert scans == {}


async def test_an_unsent_notice_is_superseded_through_its_id_not_every_pending_one(
    store: Store,
) -> None:
    # After a big change the outbox holds every notice not sent yet (93,000 of the 1M-order
    # store's date change, sent at 30 a second): a search of the pending ones for the few a
    # batch merges read them all.
    assert await _notices_queued(store, 20) == QueueReport(20, 20, 0)
    async with store.begin() as conn:
        await move(conn, [11], day(9), at(3))
    plans: dict[str, list[str]] = {}

    def explain(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not many and statement.lstrip().upper().startswith(("UPDATE OUTBOX", "SELECT")):
            rows = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans[statement] = [str(r[-1]) for r in rows]

    assert store._inline_writer is not None
    event.listen(store._inline_writer, "before_cursor_execute", explain)

    async def batch(conn: AsyncConnection) -> QueueReport:
        return await queue_notices(conn, now=at(4), order_ids=[1], back_in_stock=False)

    report = await store.run_batch(batch)
    assert report == QueueReport(1, 1, 1)  # order 1's notice, its unsent one merged into it
    [superseded] = [p for s, p in plans.items() if s.lstrip().upper().startswith("UPDATE")]
    assert superseded[0] == "SEARCH outbox USING INTEGER PRIMARY KEY (rowid=?)", superseded
    # The unsent notices of the batch's customers are found through the index of the waiting
    # ones by customer, not by reading every pending notice of the store.
    [unsent] = [p for s, p in plans.items() if s.lstrip().startswith("SELECT outbox.outbox_id")]
    assert unsent[0] == "SEARCH outbox USING INDEX ix_outbox_pending_customer (customer_id=?)"


async def test_the_due_notices_are_read_in_order_from_the_index_of_the_waiting_ones(
    store: Store,
) -> None:
    # The sender's claim, every few seconds, on an outbox that keeps every notice ever sent
    # (1.5M rows on the 1M-order store): it reads the waiting ones in their order, from an
    # index that holds nothing else, and sorts nothing.
    assert await _notices_queued(store, 10) == QueueReport(10, 10, 0)
    plans: dict[str, list[str]] = {}

    def explain(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not many and statement.lstrip().startswith("SELECT outbox.outbox_id \nFROM outbox"):
            rows = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans[statement] = [str(r[-1]) for r in rows]

    assert store._inline_writer is not None
    event.listen(store._inline_writer, "before_cursor_execute", explain)
    claimed = await store.run_batch(
        lambda conn: claim_due(conn, worker="w", now=at(3), lease=LEASE, limit=4)
    )
    assert [c.payload["order_id"] for c in claimed] == [1, 2, 3, 4]
    [due] = plans.values()
    assert due == ["SEARCH outbox USING INDEX ix_outbox_pending_due (not_before<?)"], due


async def _notices_queued(store: Store, orders: int) -> QueueReport:
    """``orders`` orders of one line among five customers with chats, every line's date moved
    and the notices queued."""
    async with store.begin() as conn:
        await seed_catalog(conn)
        for order_id in range(1, orders + 1):
            await add_order(conn, order_id, 1 + order_id % 5, lines=1)
        for customer in range(1, 6):
            await add_chat(conn, customer)
        await move(conn, [i * 10 + 1 for i in range(1, orders + 1)], day(5), at(1))
        return await queue_notices(conn, now=at(2))
