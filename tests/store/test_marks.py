"""Issue #14: each change marks exactly the lines it touched, in its own transaction; a line
marked twice is one mark; a batch of the policy takes the marks it works from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

import store.marks as marks
from store import Store
from store.backorders import (
    NewLine,
    cancel_line,
    change_restock_date,
    place_order,
    receive_restock,
    ship,
)
from store.chats import link_chat
from store.delays import delay_policy_batch, run_delay_policy
from store.marks import DELAY, NOTICE, mark_lines, pending, take_marks
from store.outbox import notice_batch
from store.schema import follow_on_marks, order_lines, outbox
from tests.store.helpers import D1, restock, seed_catalog
from tests.store.policy_helpers import POLICY, T0


async def _marked(s: Store) -> list[int]:
    """The lines marked, the same for every stage."""
    m = follow_on_marks.c
    async with s.connect() as conn:
        by_stage = [
            list(await conn.scalars(select(m.line_id).where(m.stage == stage).order_by("line_id")))
            for stage in (DELAY, NOTICE)
        ]
    assert by_stage[0] == by_stage[1]
    return by_stage[0]


async def _clear(s: Store) -> None:
    async with s.begin() as conn:
        await conn.execute(delete(follow_on_marks))


async def test_each_change_marks_the_lines_it_touched(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await restock(conn, "R-1", 3, D1)
        await restock(conn, "R-2", 5, D1, sku="KET-0002")
    async with store.begin() as conn:
        for n in range(4):  # lines 1-4 wait for KET-0001; line 5 (order 100004) for KET-0002
            lines = [NewLine("KET-0001", 1)] + ([NewLine("KET-0002", 1)] if n == 3 else [])
            await place_order(conn, str(100_001 + n), 1 + n, lines, placed_at=T0)
    assert await _marked(store) == [1, 2, 3, 4, 5]

    await _clear(store)
    async with store.begin() as conn:
        await change_restock_date(conn, "R-2", D1 + timedelta(days=9), "slip")
    assert await _marked(store) == [5]  # KET-0002's one line moved

    await _clear(store)
    async with store.begin() as conn:
        # R-1 covers lines 1-3; line 4 waits for nothing: its date does not move.
        await change_restock_date(conn, "R-1", D1 + timedelta(days=3), "slip")
    assert await _marked(store) == [1, 2, 3]

    await _clear(store)
    async with store.begin() as conn:
        # Line 1 cancelled; line 4 moves up into R-1's units and gets a date.
        await cancel_line(conn, "100001", 1)
    assert await _marked(store) == [1, 4]

    await _clear(store)
    async with store.begin() as conn:
        await receive_restock(conn, "R-1")  # lines 2-4 filled
    assert await _marked(store) == [2, 3, 4]

    await _clear(store)
    async with store.begin() as conn:
        await ship(conn, "S-1", "100002", carrier="DHL", tracking_number=None, shipped_on=D1)
    assert await _marked(store) == [2]


async def test_a_mark_twice_is_one_mark_and_a_batch_takes_them(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await place_order(conn, "100001", 1, [NewLine("KET-0001", 1)], placed_at=T0)
        await place_order(conn, "100002", 2, [NewLine("KET-0001", 1)], placed_at=T0)
    async with store.begin() as conn:
        await mark_lines(conn, [1, 1, 2])
        await mark_lines(conn, [2])
    assert await _marked(store) == [1, 2]
    async with store.begin() as conn:
        assert await take_marks(conn, 1) == [1]
        await conn.rollback()  # a batch that dies leaves its marks
    assert await _marked(store) == [1, 2]
    async with store.begin() as conn:
        run = await delay_policy_batch(conn, today=D1, policy=POLICY, limit=1)
        left = await pending(conn)
    assert (run.lines, run.more, left.marked) == (1, True, 1)


async def test_marks_are_taken_with_a_plan_for_the_table_as_it_is_now(store: Store) -> None:
    """On PostgreSQL the statement that takes marks is never run on a generic plan: one
    cached while the table was empty (PostgreSQL's choice after five runs) read and sorted
    every mark again for each mark taken once a change had marked 100,000s of lines."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's plan cache")
    async with store.begin() as conn:
        await seed_catalog(conn)
        for n in range(1, 5):
            await place_order(conn, str(100_000 + n), 1, [NewLine("KET-0001", 1)], placed_at=T0)
        await conn.execute(delete(follow_on_marks))
    async with store.begin() as conn:
        # One connection, one transaction: the driver's prepared statement is reused.
        for _ in range(8):
            assert await take_marks(conn, 2) == []
        await mark_lines(conn, [1, 2, 3, 4])
        assert await take_marks(conn, 2) == [1, 2]
        assert await take_marks(conn, 2) == [3, 4]
        plans = (
            await conn.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE 'DELETE FROM follow_on_marks%RETURNING%'"
                )
            )
        ).all()
    assert [tuple(p) for p in plans] == [(0, 10)]


async def test_the_notices_take_their_own_marks_whole_orders_after_the_policy(
    store: Store,
) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await restock(conn, "R-1", 9, D1)
        await link_chat(conn, 1001, 1)
        # Lines 1-2: customer 1's order of two lines; line 3: customer 2's (no chat).
        two = [NewLine("KET-0001", 1), NewLine("KET-0001", 2)]
        await place_order(conn, "100001", 1, two, placed_at=T0)
        await place_order(conn, "100002", 2, [NewLine("KET-0001", 1)], placed_at=T0)
    await run_delay_policy(store, today=D1, now=T0, policy=POLICY)
    async with store.begin() as conn:
        await notice_batch(conn, now=T0, limit=10)  # placed and told: nothing to tell
    assert await _marked(store) == []
    async with store.begin() as conn:
        await change_restock_date(conn, "R-1", D1 + timedelta(days=3), "slip")
    assert await _marked(store) == [1, 2, 3]
    async with store.begin() as conn:
        # The policy has not looked at the lines yet: the notices wait for it.
        run = await notice_batch(conn, now=T0, limit=1)
        assert (run.lines, run.notices, run.more) == (0, 0, False)
        await take_marks(conn, 10)  # the policy's batch (nothing is late: no offer)
    async with store.begin() as conn:
        # One mark taken, its order whole: lines 1 and 2 in one notice.
        run = await notice_batch(conn, now=T0, limit=1)
        left = await pending(conn, NOTICE)
    assert (run.lines, run.notices, run.more, left.marked) == (1, 1, True, 1)
    async with store.begin() as conn:
        run = await notice_batch(conn, now=T0, limit=1)
    assert (run.lines, run.notices, run.more) == (1, 0, True)  # customer 2's, without a chat
    async with store.connect() as conn:
        told = (
            await conn.execute(
                select(order_lines.c.line_id, order_lines.c.last_told_date).order_by("line_id")
            )
        ).all()
        keys = list(await conn.scalars(select(outbox.c.status).order_by(outbox.c.outbox_id)))
    assert [tuple(r) for r in told] == [
        (1, D1 + timedelta(days=3)),
        (2, D1 + timedelta(days=3)),
        (3, D1),  # untold while there is no chat to tell it to
    ]
    assert keys == ["pending"]  # nothing stored for the customer without a chat

    # Customer 2 links a chat: their lines are marked for the notices (not for the policy).
    async with store.begin() as conn:
        await link_chat(conn, 1002, 2)
    m = follow_on_marks.c
    async with store.connect() as conn:
        marks = (await conn.execute(select(m.stage, m.line_id))).all()
    assert [tuple(r) for r in marks] == [(NOTICE, 3)]
    async with store.begin() as conn:
        run = await notice_batch(conn, now=T0, limit=5)
    assert (run.lines, run.notices, run.more) == (1, 1, False)


@dataclass(frozen=True)
class _Wrote:
    batches: int
    more: bool

    def __add__(self, other: _Wrote) -> _Wrote:
        return _Wrote(self.batches + other.batches, other.more)


async def test_batches_leave_the_wal_to_their_pauses_and_the_end(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a batch's commit does not checkpoint the WAL (a commit past 1,000 WAL pages
    copied them back and synced, the loop waiting): the pauses between batches and the end of
    the run do, and a transaction of anyone else checkpoints as before."""
    if store.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's WAL")
    async with store.begin() as conn:
        await seed_catalog(conn)
    monkeypatch.setattr(marks, "WORK_SPAN", 0.0)  # a pause after every batch
    monkeypatch.setattr(marks, "LOCK_FREE", 0.0)
    checkpoints = 0
    real = marks._checkpoint

    async def counted(s: Store) -> None:
        nonlocal checkpoints
        checkpoints += 1
        await real(s)

    monkeypatch.setattr(marks, "_checkpoint", counted)
    settings: list[int] = []

    async def batch(conn: AsyncConnection, _: int) -> _Wrote:
        settings.append(int(await conn.scalar(text("PRAGMA wal_autocheckpoint"))))
        await conn.execute(text("UPDATE products SET name_en = name_en || 'x'"))
        return _Wrote(1, len(settings) < 4)

    run = await marks.run_sized_batches(store, batch, _Wrote(0, False), least=1, size=1)
    assert (run.batches, settings, checkpoints) == (4, [0, 0, 0, 0], 4)  # 3 pauses, the end
    async with store.connect() as conn:
        _, log, done = (await conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))).one()
        assert log > 0 and done == log  # every frame copied back already
    async with store.begin() as conn:
        assert await conn.scalar(text("PRAGMA wal_autocheckpoint")) == 1000
