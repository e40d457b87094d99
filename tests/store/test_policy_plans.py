"""How SQLite runs the delay policy's deadlines on a big store: the offers due read from the
index in the order they are decided, and closed through their primary key. The store has no
statistics, so the planner goes by the shape of the statement alone, on a small store as on
the 1M-order one, where 1.3M offers fall due the same day: sorted for every batch of a dozen,
and closed through a search of every open offer, they were decided at 21 a second."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from store import Store
from store.delays import DUE_WEIGHT, DelayRun, apply_delay_policy, delay_policy_batch
from store.schema import delay_offers
from tests.store.policy_helpers import D0, POLICY, T0, late_store

pytestmark = pytest.mark.sqlite_only("SQLite's query plans")


async def test_the_offers_due_are_read_in_order_and_closed_by_their_ids(store: Store) -> None:
    d = delay_offers.c
    async with store.begin() as conn:
        await late_store(conn, 40)
        await apply_delay_policy(conn, today=D0, now=T0, policy=POLICY)
        due = list(
            await conn.scalars(
                select(d.offer_id)
                .where(d.status == "open", d.consent_needed.is_(True))
                .order_by(d.offer_id)
            )
        )
        # Half of them reached their customer: those are cancelled, the rest go to agents.
        shown = due[::2]
        await conn.execute(update(delay_offers).where(d.offer_id.in_(shown)).values(shown_at=T0))
        [answer_by] = await conn.scalars(select(func.max(d.answer_by)).where(d.offer_id.in_(due)))
    assert len(due) == 20
    plans: dict[str, list[str]] = {}
    executed: list[str] = []

    def explain(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            rows = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans[statement] = [str(r[-1]) for r in rows]
            executed.append(statement)

    assert store._inline_writer is not None  # a SQLite file: the batch thread's engine
    event.listen(store._inline_writer, "before_cursor_execute", explain)

    async def batch(conn: AsyncConnection) -> DelayRun:
        return await delay_policy_batch(
            conn,
            today=answer_by + timedelta(days=1),
            now=T0 + timedelta(days=90),
            policy=POLICY,
            limit=len(due) * DUE_WEIGHT,  # every offer due in this one batch
        )

    run = await store.run_batch(batch)
    event.remove(store._inline_writer, "before_cursor_execute", explain)
    assert (run.cancelled, run.to_agents, run.closed) == (10, 10, 0)
    async with store.connect() as conn:
        outcome = dict(
            (r.offer_id, (r.status, r.answer))
            for r in await conn.execute(
                select(d.offer_id, d.status, d.answer).where(d.offer_id.in_(due))
            )
        )
    assert outcome == {
        i: ("cancelled", "no_answer") if i in shown else ("to_agents", "never_shown") for i in due
    }

    [read] = [p for s, p in plans.items() if "delay_offers.answer_by <" in s]
    assert read[0].startswith(
        "SEARCH delay_offers USING INDEX ix_delay_offers_status_answer_by_offer_id"
    ), read
    assert not any("B-TREE" in step for step in read), read  # no sort
    by_ids = {
        s.split()[1]: p for s, p in plans.items() if "json_each" in s and s.startswith("UPDATE")
    }
    # The offers to agents, then those cancelled, each in one statement, and their lines.
    assert len([s for s in executed if s.startswith("UPDATE delay_offers SET status")]) == 2
    for table, plan in by_ids.items():
        assert plan[0] == f"SEARCH {table} USING INTEGER PRIMARY KEY (rowid=?)", plan
    assert set(by_ids) >= {"delay_offers", "order_lines"}
