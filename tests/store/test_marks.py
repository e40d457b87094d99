"""Issue #14: each change marks exactly the lines it touched, in its own transaction; a line
marked twice is one mark; a batch of the policy takes the marks it works from."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from store import Store
from store.backorders import (
    NewLine,
    cancel_line,
    change_restock_date,
    place_order,
    receive_restock,
    ship,
)
from store.delays import delay_policy_batch
from store.marks import mark_lines, pending, take_marks
from store.schema import follow_on_marks
from tests.store.helpers import D1, restock, seed_catalog
from tests.store.policy_helpers import POLICY, T0


async def _marked(s: Store) -> list[int]:
    async with s.connect() as conn:
        return list(await conn.scalars(select(follow_on_marks.c.line_id).order_by("line_id")))


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
