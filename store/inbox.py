"""The update inbox: the updates the bot has fetched from Telegram and whether each is answered.

The bot saves a fetched batch before Telegram hears that it arrived, and marks updates answered
once handled; after a crash it replays what is saved and not answered. Telegram delivers the
last unconfirmed batch again after a restart (at most one getUpdates answer, up to 100
updates), so answered rows are kept for a while, to recognise it, and then pruned.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import UTCDateTime, update_inbox

# Far more than one re-delivered batch (<= 100), few enough to cost nothing.
KEEP_ANSWERED = 1000

# SQLite binds at most 999 parameters per statement in old builds; a batch is <= 100 updates.
_CHUNK = 500


@dataclass(frozen=True)
class Saved:
    """What saving a batch found: ids saved now, and ids that were there already."""

    new: tuple[int, ...]
    unanswered: tuple[int, ...]  # saved earlier, not answered yet
    answered: tuple[int, ...]  # saved earlier and answered


@dataclass(frozen=True)
class InboxUpdate:
    update_id: int
    payload: str  # the update's JSON


def _insert(conn: AsyncConnection) -> Any:
    # The dialect's INSERT, which knows ON CONFLICT DO NOTHING.
    if conn.dialect.name == "postgresql":
        return postgresql.insert(update_inbox)
    return sqlite.insert(update_inbox)


async def save_updates(
    conn: AsyncConnection,
    updates: Sequence[tuple[int, str]],
    now: datetime,
    chat_keys: Mapping[int, str] | None = None,
) -> Saved:
    """Save (update_id, JSON) pairs, skipping ids already saved; every id lands in one of
    the three groups of the answer, each in the order given. ``chat_keys``: what orders each
    update (chat_claims), for processes that share the bot.

    Race-free: two receivers saving the same update (a poller taken over, a webhook sent
    again) insert it once, by ON CONFLICT DO NOTHING on the key; the one whose insert did
    nothing finds it saved."""
    ids = [update_id for update_id, _ in updates]
    fresh: dict[int, str] = {}
    for update_id, payload in updates:
        fresh.setdefault(update_id, payload)
    inserted: set[int] = set()
    keys = chat_keys or {}
    rows = [
        {
            "update_id": update_id,
            "payload": payload,
            "received_at": now,
            "chat_key": keys.get(update_id),
        }
        for update_id, payload in fresh.items()
    ]
    for start in range(0, len(rows), _CHUNK):
        part = rows[start : start + _CHUNK]
        statement = (
            _insert(conn)
            .values(part)
            .on_conflict_do_nothing(index_elements=[update_inbox.c.update_id])
            .returning(update_inbox.c.update_id)
        )
        inserted.update(int(r[0]) for r in await conn.execute(statement))
    present: dict[int, bool] = {}
    older = [i for i in fresh if i not in inserted]
    for start in range(0, len(older), _CHUNK):
        found = await conn.execute(
            select(update_inbox.c.update_id, update_inbox.c.answered_at.is_not(None)).where(
                update_inbox.c.update_id.in_(older[start : start + _CHUNK])
            )
        )
        present.update((int(update_id), bool(answered)) for update_id, answered in found)
    return Saved(
        new=tuple(i for i in fresh if i in inserted),
        unanswered=tuple(i for i in ids if i in present and not present[i]),
        answered=tuple(i for i in ids if present.get(i)),
    )


# Built once: the bot marks a few updates at a time, as soon as they are answered, and
# building this statement cost as much as running it (220 -> 108 us per one-id mark).
_MARK = (
    update(update_inbox)
    .where(
        update_inbox.c.update_id.in_(bindparam("ids", expanding=True)),
        update_inbox.c.answered_at.is_(None),
    )
    .values(answered_at=bindparam("at", type_=UTCDateTime()))
)


async def mark_answered(conn: AsyncConnection, update_ids: Collection[int], now: datetime) -> int:
    """Mark saved updates answered (a second mark keeps the first time); returns how many rows
    were marked now."""
    ids = sorted(update_ids)
    marked = 0
    for start in range(0, len(ids), _CHUNK):
        result = await conn.execute(_MARK, {"ids": ids[start : start + _CHUNK], "at": now})
        marked += result.rowcount
    return marked


async def unanswered_updates(conn: AsyncConnection) -> list[InboxUpdate]:
    """Every saved update not answered yet, in update_id order (Telegram's order)."""
    rows = await conn.execute(
        select(update_inbox.c.update_id, update_inbox.c.payload)
        .where(update_inbox.c.answered_at.is_(None))
        .order_by(update_inbox.c.update_id)
    )
    return [InboxUpdate(int(update_id), payload) for update_id, payload in rows]


async def count_updates(conn: AsyncConnection) -> tuple[int, int]:
    """(unanswered, answered) rows."""
    answered = func.count(update_inbox.c.answered_at)
    row = (await conn.execute(select(func.count() - answered, answered))).one()
    return int(row[0]), int(row[1])


async def prune_answered(conn: AsyncConnection, keep: int = KEEP_ANSWERED) -> int:
    """Delete answered rows but the ``keep`` newest (by update_id); unanswered rows stay.
    Returns how many were deleted."""
    if keep < 1:
        raise ValueError("keep at least one answered row: it is what a re-delivery is told by")
    answered = update_inbox.c.answered_at.is_not(None)
    oldest_kept = (
        select(update_inbox.c.update_id)
        .where(answered)
        .order_by(update_inbox.c.update_id.desc())
        .limit(1)
        .offset(keep - 1)
        .scalar_subquery()
    )
    # Fewer than `keep` answered rows: the subquery is NULL and the comparison deletes nothing.
    result = await conn.execute(
        delete(update_inbox).where(answered, update_inbox.c.update_id < oldest_kept)
    )
    return result.rowcount


async def last_update_id(conn: AsyncConnection) -> int:
    """The highest update id saved (0: none)."""
    last = await conn.scalar(select(func.max(update_inbox.c.update_id)))
    return int(last or 0)
