"""Marks of the lines a change touched, and the cursor of the first pass: the follow-on work
(the delay policy) costs what the change changed, not a scan of every waiting line.

A change calls ``mark_lines`` in its own transaction; the policy's batches take marks with
``take_marks`` (deleted in the batch's transaction, so a batch that dies leaves them for the
next one) and scan what no mark covers (``next_line_id`` of the cursor row) in line_id ranges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import follow_on_cursors, follow_on_marks, order_lines, utcnow

DELAY = "delay"
# Ids bound per statement: SQLite's default limit of host parameters is 32,766 and
# PostgreSQL's 65,535; far below both.
CHUNK = 5000


def insert_ignoring(conn: AsyncConnection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's own dialect (SQLite or
    PostgreSQL): a row whose key exists is skipped, and RETURNING leaves it out."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"ON CONFLICT DO NOTHING on {dialect}")


async def mark_lines(conn: AsyncConnection, line_ids: Iterable[int]) -> None:
    """Mark lines for the follow-on work; a line already marked stays one mark."""
    ids = sorted(set(line_ids))
    stmt = insert_ignoring(conn, follow_on_marks)
    for start in range(0, len(ids), CHUNK):
        await conn.execute(stmt, [{"line_id": i} for i in ids[start : start + CHUNK]])


async def take_marks(conn: AsyncConnection, limit: int) -> list[int]:
    """Up to ``limit`` marked lines, lowest first, deleted in the caller's transaction: its
    commit is the work done, its rollback leaves them marked."""
    m = follow_on_marks.c
    first = select(m.line_id).order_by(m.line_id).limit(limit).scalar_subquery()
    taken = await conn.execute(
        delete(follow_on_marks).where(m.line_id.in_(first)).returning(m.line_id)
    )
    return sorted(int(i) for i in taken.scalars())


async def take_turn(conn: AsyncConnection, name: str = DELAY) -> int:
    """The cursor's next_line_id, after writing its row: the first statement of a batch, so
    that everything the batch reads afterwards is what the last batch of any process left
    (see store.schema.follow_on_cursors)."""
    c = follow_on_cursors.c
    row = (
        await conn.execute(
            update(follow_on_cursors)
            .where(c.name == name)
            .values(batches=c.batches + 1, updated_at=utcnow())
            .returning(c.next_line_id)
        )
    ).first()
    if row is None:
        # A store made from the schema without its migrations: nothing was ever looked at.
        # Another process may be adding the row too; either way it is there after this.
        await conn.execute(
            insert_ignoring(conn, follow_on_cursors).values(
                name=name, next_line_id=0, updated_at=utcnow()
            )
        )
        return await take_turn(conn, name)
    return int(row.next_line_id)


async def advance(conn: AsyncConnection, to: int, name: str = DELAY) -> None:
    c = follow_on_cursors.c
    await conn.execute(
        update(follow_on_cursors).where(c.name == name, c.next_line_id < to).values(next_line_id=to)
    )


async def rescan(conn: AsyncConnection, name: str = DELAY) -> None:
    """Have the scan look at every line again, batch by batch: for what no mark tells, a
    change of the policy's own settings (DELAY_DEFAULT_SHIP_DAYS...) or lines written
    around the store's functions."""
    await take_turn(conn, name)
    c = follow_on_cursors.c
    await conn.execute(update(follow_on_cursors).where(c.name == name).values(next_line_id=0))


async def lines_from(conn: AsyncConnection, start: int, limit: int) -> list[int]:
    """The ids of up to ``limit`` lines from ``start`` on, in order (the primary key's range)."""
    ol = order_lines.c
    rows = await conn.execute(
        select(ol.line_id).where(ol.line_id >= start).order_by(ol.line_id).limit(limit)
    )
    return [int(i) for i in rows.scalars()]


@dataclass(frozen=True)
class Pending:
    marked: int  # lines marked and not passed yet
    scan_next: int  # the first pass has looked at every line below this id
    scan_left: int  # lines at or above it
    lines: int  # lines in the store
    updated_at: datetime | None  # the policy's last batch


async def pending(conn: AsyncConnection, name: str = DELAY) -> Pending:
    ol = order_lines.c
    c = follow_on_cursors.c
    cur = (await conn.execute(select(c.next_line_id, c.updated_at).where(c.name == name))).first()
    start = int(cur.next_line_id) if cur is not None else 0
    marked = await conn.scalar(select(func.count()).select_from(follow_on_marks))
    left = await conn.scalar(select(func.count()).where(ol.line_id >= start))
    total = await conn.scalar(select(func.count()).select_from(order_lines))
    return Pending(
        int(marked or 0),
        start,
        int(left or 0),
        int(total or 0),
        cur.updated_at if cur is not None else None,
    )
