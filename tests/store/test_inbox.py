"""store/inbox.py: fetched updates saved once, marked answered, replayed, pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from store import Store
from store.inbox import (
    InboxUpdate,
    Saved,
    count_updates,
    last_update_id,
    mark_answered,
    prune_answered,
    save_updates,
    unanswered_updates,
)
from store.schema import update_inbox

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=5)


def _json(update_id: int) -> str:
    return f'{{"update_id":{update_id},"message":{{"text":"m{update_id}"}}}}'


async def _rows(store: Store) -> list[tuple[int, str, datetime, datetime | None]]:
    async with store.connect() as conn:
        rows = await conn.execute(select(update_inbox).order_by(update_inbox.c.update_id))
        return [(r.update_id, r.payload, r.received_at, r.answered_at) for r in rows]


async def test_a_batch_is_saved_once_and_a_redelivery_is_told_apart(store: Store) -> None:
    async with store.begin() as conn:
        first = await save_updates(conn, [(11, _json(11)), (12, _json(12)), (13, _json(13))], T0)
    assert first == Saved(new=(11, 12, 13), unanswered=(), answered=())
    async with store.begin() as conn:
        await mark_answered(conn, [11], T1)
    # Telegram delivers the unconfirmed batch again, with one more update; the saved JSON and
    # receipt time of the known ones stay as they were.
    async with store.begin() as conn:
        again = await save_updates(
            conn,
            [(11, "changed"), (12, "changed"), (13, _json(13)), (14, _json(14))],
            T1,
        )
    assert again == Saved(new=(14,), unanswered=(12, 13), answered=(11,))
    assert await _rows(store) == [
        (11, _json(11), T0, T1),
        (12, _json(12), T0, None),
        (13, _json(13), T0, None),
        (14, _json(14), T1, None),
    ]


async def test_an_id_twice_in_one_batch_is_saved_once(store: Store) -> None:
    async with store.begin() as conn:
        saved = await save_updates(conn, [(5, _json(5)), (5, "second")], T0)
    assert saved == Saved(new=(5,), unanswered=(), answered=())
    assert await _rows(store) == [(5, _json(5), T0, None)]


async def test_marking_answered_keeps_the_first_time_and_skips_unknown_ids(store: Store) -> None:
    async with store.begin() as conn:
        await save_updates(conn, [(1, _json(1)), (2, _json(2))], T0)
        assert await mark_answered(conn, [1, 99], T0) == 1
        assert await mark_answered(conn, [1, 2], T1) == 1
    assert await _rows(store) == [(1, _json(1), T0, T0), (2, _json(2), T0, T1)]


async def test_unanswered_updates_come_in_id_order(store: Store) -> None:
    async with store.begin() as conn:
        await save_updates(conn, [(30, _json(30)), (10, _json(10))], T0)
        await save_updates(conn, [(20, _json(20)), (40, _json(40))], T0)
        await mark_answered(conn, [20], T1)
        assert await unanswered_updates(conn) == [
            InboxUpdate(10, _json(10)),
            InboxUpdate(30, _json(30)),
            InboxUpdate(40, _json(40)),
        ]
        assert await count_updates(conn) == (3, 1)


async def test_pruning_keeps_the_newest_answered_and_every_unanswered(store: Store) -> None:
    async with store.begin() as conn:
        await save_updates(conn, [(i, _json(i)) for i in range(1, 11)], T0)
        await mark_answered(conn, [1, 2, 4, 5, 7, 8, 9], T1)
        # Fewer answered rows than kept: nothing goes.
        assert await prune_answered(conn, keep=7) == 0
        assert await prune_answered(conn, keep=3) == 4
    assert [(r[0], r[3]) for r in await _rows(store)] == [
        (3, None),
        (6, None),
        (7, T1),
        (8, T1),
        (9, T1),
        (10, None),
    ]


async def test_the_last_update_id_saved_answered_or_not(store: Store) -> None:
    # What a new sandbox's update ids go past (run_bot.py): 0 for an empty inbox.
    async with store.connect() as conn:
        assert await last_update_id(conn) == 0
    async with store.begin() as conn:
        await save_updates(conn, [(41, _json(41)), (40, _json(40))], T0)
        await mark_answered(conn, [41], T1)
    async with store.connect() as conn:
        assert await last_update_id(conn) == 41
