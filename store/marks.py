"""Marks of the lines a change touched, and the cursors of the first pass: the follow-on work
(the delay policy, then the notice queueing) costs what the change changed, not a scan of every
waiting line.

A change calls ``mark_lines`` in its own transaction: one mark per stage (``STAGES``). Each
stage's batches take their own marks with ``take_marks`` (deleted in the batch's transaction,
so a batch that dies leaves them for the next one) and scan what no mark covers (``next_line_id``
of the stage's cursor row) in line_id ranges.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    literal,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeDecorator, TypeEngine

from store.db import Store
from store.schema import (
    follow_on_cursors,
    follow_on_marks,
    order_lines,
    orders,
    sku_projections,
    utcnow,
)

DELAY = "delay"
NOTICE = "notice"
# Every stage a change owes a look, in the order they run: the notices come after the policy,
# whose offers tell a line's new date themselves.
STAGES = (DELAY, NOTICE)
log = logging.getLogger(__name__)
# Ids bound per statement: SQLite's default limit of host parameters is 32,766 and
# PostgreSQL's 65,535; far below both.
CHUNK = 5000
# Batches sized by time (run_sized_batches with no fixed size): a batch of the follow-on work is one
# write transaction, and another writer (the bot) waits for it. The first batch takes the
# stage's least size; each next one as many lines as the last one's pace fits in
# BATCH_SECONDS (at most 1.5 times or half the last), never fewer than the least (what a
# caller counting batches, such as the bot's tick, can rely on) nor more than MAX_BATCH.
BATCH_SECONDS = 0.05
MAX_BATCH = 20_000
# SQLite's write lock between batches (run_sized_batches). Every writer of ours polls for it
# at least every 2 ms (store.db.WRITE_POLL_SECONDS): after each batch it is left free for
# TURN_FREE, so another process's writer waits at most one batch. A writer left to SQLite's
# own busy handler (a tool, a migration) looks again after sleeps of 1, 2, 5, 10, 15, 20, 25,
# 25, 25, 50, 50 and then 100 ms, and would rarely meet so short a gap: every WORK_SPAN of
# batches, the lock is left free for LOCK_FREE, longer than its sleeps up to 228 ms of
# waiting, and the WAL is checkpointed meanwhile. A pause of 60 ms every 120 ms of batches,
# for every writer alike, had been a third of a big change's time.
TURN_FREE = 0.003
WORK_SPAN = 1.0
LOCK_FREE = 0.06


class Batch(Protocol):
    @property
    def batches(self) -> int: ...

    @property
    def more(self) -> bool: ...  # the batch used its whole budget: there may be work left

    def __add__(self, other: Self) -> Self: ...


R = TypeVar("R", bound=Batch)


async def run_batches(
    store: Store,
    batch: Callable[[AsyncConnection], Coroutine[Any, Any, R]],
    total: R,
    *,
    max_batches: int | None = None,
    on_batch: Callable[[R], None] | None = None,
) -> R:
    """``batch(conn)`` again and again, each in its own short transaction, paced as
    ``run_sized_batches``, until one says there is nothing more (or ``max_batches``)."""
    return await run_sized_batches(
        store,
        lambda conn, _: batch(conn),
        total,
        least=1,
        size=1,
        max_batches=max_batches,
        on_batch=on_batch,
    )


async def run_sized_batches(
    store: Store,
    batch: Callable[[AsyncConnection, int], Coroutine[Any, Any, R]],
    total: R,
    *,
    least: int,
    size: int | None = None,
    max_batches: int | None = None,
    on_batch: Callable[[R], None] | None = None,
) -> R:
    """``batch(conn, limit)`` again and again, each in its own short transaction, until one
    says there is nothing more (or ``max_batches``); the sum of what they did, from
    ``total``. ``size``: every batch's limit; None: sized by time (BATCH_SECONDS), from
    ``least`` up."""
    # SQLite hands its write lock to no one in particular: a writer of another process that
    # waits polls it with sleeps of up to 100 ms, and batches run back to back took it first
    # every time (waits of 2 s behind batches of 20 ms). Every WORK_SPAN of batches, the lock
    # is left free for longer than such a waiter's sleeps. PostgreSQL queues lock waiters
    # itself.
    paced = store.engine.dialect.name == "sqlite"
    limit = size or least
    worked = 0.0
    # SQLite: the batches' commits leave the WAL alone (Store.run_batch). Past 1,000 WAL
    # pages every commit copied them back into the database and synced both files, 30-45 ms
    # of each batch of the 1M-order store. A passive checkpoint runs in each long pause
    # instead (it takes no write lock: other writers go on) and once more at the end, and
    # the batches wait for it: SQLite starts the WAL again from its beginning only when a
    # writer begins after a checkpoint has copied all of it. A checkpoint beside the next
    # batches never got there: on the 1M-order store the WAL grew to 178,000 pages (730 MB)
    # in one date change, every commit wrote to new space at its end and every read looked
    # through a longer index of it: the change took 9-18 s, and 7.5 s with the batches
    # waiting for the checkpoint (nobody linked: 4.8 s and 3.2 s).
    while max_batches is None or total.batches < max_batches:
        began = time.monotonic()
        run = await store.run_batch(partial(_sized, batch, limit))
        took = time.monotonic() - began
        total += run
        if on_batch is not None:
            on_batch(run)
        if not run.more:
            break
        if size is None:
            fits = round(limit * BATCH_SECONDS / max(took, 0.001))
            used = getattr(run, "used", None)
            if used is not None and used * 2 < limit:
                # A batch that used little of its limit (``used``: what it counts against it)
                # tells nothing of a full one's pace: it may make the next smaller, not larger.
                fits = min(fits, limit)
            # A pace from one batch's clock; a slow batch (a loaded machine, a writer that
            # was first) makes the next smaller, never below ``least``.
            fits = max(limit // 2, min(limit * 3 // 2, fits))
            limit = max(least, min(MAX_BATCH, fits))
        worked += took
        if paced and worked + took > WORK_SPAN:
            await asyncio.gather(_checkpoint(store), asyncio.sleep(LOCK_FREE))
            worked = 0.0
        elif paced:
            await asyncio.sleep(TURN_FREE)
    if paced and total.batches:
        await _checkpoint(store)
    return total


def _sized(
    batch: Callable[[AsyncConnection, int], Coroutine[Any, Any, R]],
    limit: int,
    conn: AsyncConnection,
) -> Coroutine[Any, Any, R]:
    return batch(conn, limit)


async def _checkpoint(store: Store) -> None:
    """A passive checkpoint of SQLite's WAL (what no reader still needs is copied back); a
    failure is left to the next one, or to any commit that checkpoints."""
    try:
        async with store.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
    except Exception:
        log.warning("a passive WAL checkpoint failed; the next one tries again", exc_info=True)


def insert_ignoring(conn: AsyncConnection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's own dialect (SQLite or
    PostgreSQL): a row whose key exists is skipped, and RETURNING leaves it out."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"ON CONFLICT DO NOTHING on {dialect}")


# Statements of the batches' hot path, built once (per dialect where they differ), their
# values bound as parameters: building a statement and working out its cache key cost more
# than SQLite's work on a batch's lines (5.6 ms of Python in each batch of a big date
# change, against 1.9 ms of SQLite, before the batches' statements were built once).
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def built_once(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """The statement ``build`` makes, built the first time ``key`` is asked for. The key
    names everything the statement's shape depends on (the dialect, a policy, a variant)."""
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = build()
    return statement


class _IdList(TypeDecorator[list[int]]):
    """A list of ids bound as one parameter: an integer array on PostgreSQL, a JSON array
    (for json_each) on SQLite."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(Integer))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Sequence[int] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return [int(i) for i in value]
        return json.dumps([int(i) for i in value])


def id_list(name: str | None = None, ids: Sequence[int] | None = None) -> BindParameter[Any]:
    """A parameter for ``in_list``: named (its ids given at execution) or holding ``ids``."""
    return bindparam(name, ids, type_=_IdList())


def in_list(dialect: str, column: ColumnElement[int], ids: BindParameter[Any]) -> Any:
    """``column`` is one of the ids of ``ids`` (an ``id_list``). The statement's text is the
    same for any list, so it is compiled and prepared once: an IN of ids, one parameter
    each, had SQLAlchemy coerce and render every id (a third of a big date change's Python)
    and the driver prepare a new statement for every new length."""
    if dialect == "postgresql":
        return column == any_(ids)
    return column.in_(select(literal_column("value")).select_from(func.json_each(ids)))


def filter_only(column: ColumnElement[str]) -> ColumnElement[str]:
    """``column`` to check the rows an ``in_list`` of their primary key found, never to find
    them: SQLite's planner, which cannot tell how long a JSON list is, searched an index for
    ``status = 'open'`` instead (1.3M offers of the 1M-order store, 110 ms for 12 of them).
    An expression is no index's column; PostgreSQL plans it as the column."""
    return column.concat("")


def in_ids(conn: AsyncConnection, column: ColumnElement[int], ids: Sequence[int]) -> Any:
    """``in_list`` with the ids bound now."""
    return in_list(conn.dialect.name, column, id_list(ids=ids))


async def mark_lines(
    conn: AsyncConnection, line_ids: Iterable[int], stages: Sequence[str] = STAGES
) -> None:
    """Mark lines for the follow-on work (every stage, or ``stages``); a line already marked
    stays one mark per stage."""
    ids = sorted(set(line_ids))
    stmt = insert_ignoring(conn, follow_on_marks)
    rows = [{"stage": stage, "line_id": i} for i in ids for stage in stages]
    for start in range(0, len(rows), CHUNK):
        await conn.execute(stmt, rows[start : start + CHUNK])


async def unmark_lines(conn: AsyncConnection, line_ids: Sequence[int], stage: str) -> None:
    """Delete the ``stage`` marks of ``line_ids`` (the caller looks at those lines now)."""
    statement = built_once(
        ("unmark lines", conn.dialect.name),
        lambda: delete(follow_on_marks).where(
            follow_on_marks.c.stage == bindparam("u_stage"),
            in_list(conn.dialect.name, follow_on_marks.c.line_id, id_list("u_ids")),
        ),
    )
    await conn.execute(statement, {"u_stage": stage, "u_ids": line_ids})


async def unmark_orders(conn: AsyncConnection, order_ids: Sequence[int], stage: str) -> None:
    """Delete the ``stage`` marks of every line of ``order_ids`` (the caller looks at those
    orders whole now)."""
    ol = order_lines.c
    statement = built_once(
        ("unmark orders", conn.dialect.name),
        lambda: delete(follow_on_marks).where(
            follow_on_marks.c.stage == bindparam("u_stage"),
            follow_on_marks.c.line_id.in_(
                select(ol.line_id).where(in_list(conn.dialect.name, ol.order_id, id_list("u_ids")))
            ),
        ),
    )
    await conn.execute(statement, {"u_stage": stage, "u_ids": order_ids})


async def mark_customer(conn: AsyncConnection, customer_id: int) -> None:
    """Mark every line of the customer's orders for the notices: a chat linked to them now
    hears what they were not told while they had none (store.outbox leaves it untold)."""
    ol = order_lines.c
    await conn.execute(
        insert_ignoring(conn, follow_on_marks).from_select(
            ["stage", "line_id"],
            select(literal(NOTICE, String(16)), ol.line_id).where(
                ol.order_id.in_(
                    select(orders.c.order_id).where(orders.c.customer_id == customer_id)
                )
            ),
        )
    )


async def take_marks(conn: AsyncConnection, limit: int, stage: str = DELAY) -> list[int]:
    """Up to ``limit`` lines marked for ``stage``, lowest first, their marks deleted in the
    caller's transaction: its commit is the work done, its rollback leaves them marked."""
    statement = built_once(("take marks", conn.dialect.name), _take_statement)
    async with planned_now(conn):
        taken = await conn.execute(statement, {"k_stage": stage, "k_limit": limit})
    return sorted(int(i) for i in taken.scalars())


@asynccontextmanager
async def planned_now(conn: AsyncConnection) -> AsyncIterator[None]:
    """On PostgreSQL, the statements run inside are planned for their parameters and the
    tables as they are now, never on a generic plan (PostgreSQL's choice after five runs of a
    prepared statement). The marks come 100,000s at once into a table often empty: a generic
    plan cached while it was empty read and sorted every mark of the stage again for each
    mark taken, and batches of 50 ms took 2-11 s until autovacuum's next ANALYZE of the
    table. Only around the reads of marks: planning every statement of a batch cost a third
    of its time."""
    custom = conn.dialect.name == "postgresql"
    if custom:
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    # Not in a finally: after an error the transaction takes no statement, and a SET LOCAL
    # ends with it anyway.
    yield
    if custom:
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = DEFAULT")


def _take_statement() -> Any:
    m = follow_on_marks.c
    first = (
        select(m.line_id)
        .where(m.stage == bindparam("k_stage"))
        .order_by(m.line_id)
        .limit(bindparam("k_limit"))
        .scalar_subquery()
    )
    return (
        delete(follow_on_marks)
        .where(m.stage == bindparam("k_stage"), m.line_id.in_(first))
        .returning(m.line_id)
    )


async def cursor_of(conn: AsyncConnection, name: str) -> int:
    """Where the stage's first pass stands (its next_line_id), without taking a turn."""
    c = follow_on_cursors.c
    return int(await conn.scalar(select(c.next_line_id).where(c.name == name)) or 0)


_TURN = (
    update(follow_on_cursors)
    .where(follow_on_cursors.c.name == bindparam("t_name"))
    .values(
        batches=follow_on_cursors.c.batches + 1,
        updated_at=bindparam("t_at", type_=follow_on_cursors.c.updated_at.type),
    )
    .returning(follow_on_cursors.c.next_line_id)
)


async def take_turn(conn: AsyncConnection, name: str = DELAY) -> int:
    """The cursor's next_line_id, after writing its row: the first statement of a batch, so
    that everything the batch reads afterwards is what the last batch of any process left
    (see store.schema.follow_on_cursors)."""
    row = (await conn.execute(_TURN, {"t_name": name, "t_at": utcnow()})).first()
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


async def lines_from(
    conn: AsyncConnection, start: int, limit: int, below: int | None = None
) -> list[int]:
    """The ids of up to ``limit`` lines from ``start`` on (and below ``below``), in order (the
    primary key's range)."""
    ol = order_lines.c
    q = select(ol.line_id).where(ol.line_id >= start)
    if below is not None:
        q = q.where(ol.line_id < below)
    rows = await conn.execute(q.order_by(ol.line_id).limit(limit))
    return [int(i) for i in rows.scalars()]


@dataclass(frozen=True)
class Pending:
    marked: int  # lines marked for the stage and not passed by it yet
    scan_next: int  # the first pass has looked at every line below this id
    scan_left: int  # lines at or above it
    lines: int  # lines in the store
    updated_at: datetime | None  # the policy's last batch


async def pending(conn: AsyncConnection, name: str = DELAY) -> Pending:
    """What the stage owes. The lines are counted by their ids (the primary key's last entry:
    lines are never deleted, and their ids are given in order), not by a count of the table:
    on the 1M-order store that count took 72 s of `backorder-admin status`. Ids a rolled-back
    insert used up (PostgreSQL's sequences) count as lines: a figure for a person to read."""
    ol = order_lines.c
    c = follow_on_cursors.c
    cur = (await conn.execute(select(c.next_line_id, c.updated_at).where(c.name == name))).first()
    start = int(cur.next_line_id) if cur is not None else 0
    m = follow_on_marks.c
    marked = await conn.scalar(select(func.count()).where(m.stage == name))
    top = int(await conn.scalar(select(func.max(ol.line_id))) or 0)
    return Pending(
        int(marked or 0),
        start,
        max(0, top - max(start, 1) + 1),
        top,
        cur.updated_at if cur is not None else None,
    )


@dataclass(frozen=True)
class PendingProjections:
    skus: int  # SKUs whose queue owes a projection
    lines_left: int  # their waiting lines the walks have not reached yet


async def pending_projections(conn: AsyncConnection) -> PendingProjections:
    """The projections the changes asked for and the batches have not finished
    (store.backorders.projection_batch): for each, the waiting lines past its cursor, a
    range of the queue index."""
    p = sku_projections.c
    ol = order_lines.c
    skus = left = 0
    for row in await conn.execute(
        select(p.sku, p.after_rank, p.after_at, p.after_line).where(p.pending.is_(True))
    ):
        skus += 1
        q = select(func.count()).where(ol.sku == row.sku, ol.qty_waiting > literal_column("0"))
        if row.after_line is not None:
            q = q.where(
                tuple_(ol.queue_rank, ol.queued_at, ol.line_id)
                > tuple_(
                    literal(row.after_rank, ol.queue_rank.type),
                    literal(row.after_at, ol.queued_at.type),
                    literal(row.after_line, ol.line_id.type),
                )
            )
        left += int(await conn.scalar(q) or 0)
    return PendingProjections(skus, left)
