"""What several bot processes on one database share: the chats they answer (claims with a
lease), work only one of them does (the poller's lease), the send pace of the bot's token, and
the versions that tell a process its caches are old.

Every time here is the database's clock in seconds since the epoch (`db_clock`): the
processes may run on machines whose clocks differ, and a lease judged by each holder's own
clock would end at different instants for each. Each claim is one INSERT ... ON CONFLICT DO
UPDATE ... WHERE (the lease ran out, or it is the claimant's own) ... RETURNING: on
PostgreSQL the conflicting row is locked and the WHERE judged on its newest version, so of
two processes claiming the same chat at once exactly one gets it; SQLite has one writer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    cast,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import chat_claims, send_pace, store_versions, update_inbox, worker_leases

# IN lists and VALUES rows per statement.
_CHUNK = 500
# claim_chats looks at this many times the chats it wants.
_TRIES = 3


def db_clock(conn: AsyncConnection) -> ColumnElement[float]:
    """The database's clock now (not the transaction's start), in seconds since the epoch."""
    if conn.dialect.name == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()), Float(precision=53))
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float(precision=53))


async def database_time(conn: AsyncConnection) -> float:
    value = await conn.scalar(select(db_clock(conn)))
    assert value is not None
    return float(value)


def _insert(conn: AsyncConnection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --- chats ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    update_id: int
    chat_key: str


async def claim_chats(conn: AsyncConnection, worker: str, lease: float, limit: int) -> list[str]:
    """Claim for ``worker``, until ``lease`` seconds from now, up to ``limit`` chats that have
    unanswered updates and no living claim of another worker, those waiting longest first.
    Returns the chats claimed now."""
    if limit <= 0:
        return []
    now = db_clock(conn)
    # Candidates for a few tries: when processes claim at once they see the same oldest
    # chats, and the loser of one goes on to the next ones (what SKIP LOCKED does for rows
    # that exist; a chat's claim row may not exist yet).
    u, c = update_inbox.c, chat_claims.c
    free = (
        select(u.chat_key)
        .select_from(update_inbox.outerjoin(chat_claims, c.chat_key == u.chat_key))
        .where(
            u.answered_at.is_(None),
            u.chat_key.is_not(None),
            (c.chat_key.is_(None)) | (c.until < now) | (c.worker == worker),
        )
        .group_by(u.chat_key)
        .order_by(func.min(u.update_id))
        .limit(limit * _TRIES)
    )
    keys = [str(k) for k in (await conn.execute(free)).scalars()]
    taken: list[str] = []
    while keys and len(taken) < limit:
        part, keys = keys[: limit - len(taken)], keys[limit - len(taken) :]
        taken.extend(await _take(conn, chat_claims, chat_claims.c.chat_key, part, worker, lease))
    return taken


async def _take(
    conn: AsyncConnection,
    table: Any,
    key: Any,
    keys: Sequence[str],
    worker: str,
    lease: float,
) -> list[str]:
    now = db_clock(conn)
    statement = _insert(conn, table)
    statement = statement.on_conflict_do_update(
        index_elements=[key],
        set_={"worker": statement.excluded.worker, "until": statement.excluded.until},
        # Judged on the row as it is now (PostgreSQL locks it and reads its newest version):
        # another worker's claim is taken only once its lease has run out.
        where=(table.c.until < now) | (table.c.worker == worker),
    ).returning(key)
    taken: list[str] = []
    for start in range(0, len(keys), _CHUNK):
        rows = [
            {key.name: k, "worker": worker, "until": now + lease}
            for k in keys[start : start + _CHUNK]
        ]
        taken.extend(str(r[0]) for r in await conn.execute(statement.values(rows)))
    return taken


async def renew_chats(conn: AsyncConnection, worker: str, lease: float) -> set[str]:
    """Extend every claim ``worker`` holds to ``lease`` seconds from now; returns its chats
    (a chat missing from them was taken over: its lease had run out)."""
    c = chat_claims.c
    rows = await conn.execute(
        update(chat_claims)
        .where(c.worker == worker)
        .values(until=db_clock(conn) + lease)
        .returning(c.chat_key)
    )
    return {str(r[0]) for r in rows}


async def release_chats(conn: AsyncConnection, worker: str, keys: Collection[str]) -> int:
    """Give up ``worker``'s claims on ``keys`` (their updates it held are all answered)."""
    released = 0
    ordered = sorted(keys)
    for start in range(0, len(ordered), _CHUNK):
        result = await conn.execute(
            delete(chat_claims).where(
                chat_claims.c.worker == worker,
                chat_claims.c.chat_key.in_(ordered[start : start + _CHUNK]),
            )
        )
        released += result.rowcount
    return released


async def pending_of(conn: AsyncConnection, worker: str, limit: int) -> list[Pending]:
    """The unanswered updates of the chats ``worker`` holds, in update_id order."""
    u, c = update_inbox.c, chat_claims.c
    rows = await conn.execute(
        select(u.update_id, u.chat_key)
        .select_from(update_inbox.join(chat_claims, c.chat_key == u.chat_key))
        .where(u.answered_at.is_(None), c.worker == worker)
        .order_by(u.update_id)
        .limit(limit)
    )
    return [Pending(int(r.update_id), str(r.chat_key)) for r in rows]


async def payloads(conn: AsyncConnection, update_ids: Sequence[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for start in range(0, len(update_ids), _CHUNK):
        rows = await conn.execute(
            select(update_inbox.c.update_id, update_inbox.c.payload).where(
                update_inbox.c.update_id.in_(update_ids[start : start + _CHUNK])
            )
        )
        found.update((int(r.update_id), str(r.payload)) for r in rows)
    return found


async def unkeyed_updates(conn: AsyncConnection, limit: int = 1000) -> list[tuple[int, str]]:
    """Unanswered updates saved without a chat key (before the key existed)."""
    u = update_inbox.c
    rows = await conn.execute(
        select(u.update_id, u.payload)
        .where(u.answered_at.is_(None), u.chat_key.is_(None))
        .order_by(u.update_id)
        .limit(limit)
    )
    return [(int(r.update_id), str(r.payload)) for r in rows]


async def set_chat_keys(conn: AsyncConnection, keys: dict[int, str]) -> None:
    for update_id, key in keys.items():
        await conn.execute(
            update(update_inbox).where(update_inbox.c.update_id == update_id).values(chat_key=key)
        )


# --- one process at a time ---------------------------------------------------------------


async def take_lease(conn: AsyncConnection, name: str, worker: str, lease: float) -> bool:
    """Take or renew the lease ``name`` for ``worker`` until ``lease`` seconds from now: True
    when it is ``worker``'s (it was free, had run out, or was its own)."""
    w = worker_leases.c
    return bool(await _take(conn, worker_leases, w.name, [name], worker, lease))


async def renew_leases(
    conn: AsyncConnection, worker: str, names: Collection[str], lease: float
) -> set[str]:
    """Extend ``worker``'s leases among ``names`` to ``lease`` seconds from now; returns those
    it still held (a name missing was taken over: its lease had run out)."""
    if not names:
        return set()
    w = worker_leases.c
    rows = await conn.execute(
        update(worker_leases)
        .where(w.worker == worker, w.name.in_(sorted(names)))
        .values(until=db_clock(conn) + lease)
        .returning(w.name)
    )
    return {str(r[0]) for r in rows}


async def drop_lease(conn: AsyncConnection, name: str, worker: str) -> None:
    await conn.execute(
        delete(worker_leases).where(worker_leases.c.name == name, worker_leases.c.worker == worker)
    )


# --- the send pace -----------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    at: float  # the slot's start, database clock
    wait: float  # seconds from now (when handed out) until it


async def take_slots(conn: AsyncConnection, name: str, interval: float, count: int = 1) -> Slot:
    """Reserve ``count`` consecutive send slots of the pace ``name``, ``interval`` seconds
    apart, at the earliest after every slot handed out before (by any process) and not before
    now: slot i is ``at + i * interval``. One row per pace, moved by one statement, so two
    processes never get the same slot; an idle spell banks nothing."""
    now = db_clock(conn)
    p = send_pace.c
    statement = _insert(conn, send_pace)
    start = func.greatest if conn.dialect.name == "postgresql" else func.max
    row = (
        await conn.execute(
            statement.values(name=name, next_at=now + interval * count)
            .on_conflict_do_update(
                index_elements=[p.name],
                set_={"next_at": start(p.next_at, now) + interval * count},
            )
            .returning(p.next_at, now)
        )
    ).one()
    at = float(row[0]) - interval * count
    return Slot(at=at, wait=max(0.0, at - float(row[1])))


async def prune_pace(conn: AsyncConnection, older_than: float) -> int:
    """Delete paces whose next slot is more than ``older_than`` seconds past (idle chats)."""
    result = await conn.execute(
        delete(send_pace).where(send_pace.c.next_at < db_clock(conn) - older_than)
    )
    return result.rowcount


# --- versions ----------------------------------------------------------------------------


async def version_of(conn: AsyncConnection, name: str) -> int:
    """A counter the writers move (see store.schema.store_versions); 0 without a row."""
    value = await conn.scalar(select(store_versions.c.version).where(store_versions.c.name == name))
    return int(value or 0)
