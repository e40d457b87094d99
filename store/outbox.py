"""The outbox: notices the bot owes customers, queued in the transaction of the change that
caused them, claimed with a lease by whichever bot process delivers them.

Queueing compares each line with what its customer was last told (date, units ready, shipped,
cancelled), so it finds every change however it was made (import, admin command, receipt, a
press in the bot) and is idempotent: what is queued is marked told in the same transaction,
and the dedupe key names the change, so running it twice, or in two processes, queues nothing
new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.db import Store
from store.marks import (
    DELAY,
    NOTICE,
    advance,
    built_once,
    cursor_of,
    filter_only,
    id_list,
    in_ids,
    in_list,
    planned_now,
    run_sized_batches,
    take_turn,
    unmark_orders,
)
from store.schema import (
    UTCDateTime,
    back_in_stock_subscriptions,
    chats,
    customers,
    follow_on_marks,
    order_lines,
    orders,
    outbox,
    products,
    shipment_lines,
    shipments,
    stock,
    utcnow,
)

CHUNK = 5000
# SQLite allows 32766 bound parameters; PostgreSQL 65535. IN lists stay well below.
IN_CHUNK = 900
# Lines looked at per batch of the notice queueing (notice_batch), each batch one transaction:
# the least of the batches sized by time (store.marks.run_sized_batches).
NOTICE_BATCH = 500
# outbox.dedupe_key's length.
KEY_MAX = 200

ORDER_UPDATE = "order_update"
BACK_IN_STOCK = "back_in_stock"
DELAY_OFFER = "delay_offer"
DELAY_CANCELLED = "delay_cancelled"

# A literal, not a bound value: the outbox's indexes hold only the notices waiting
# (schema.outbox), and SQLite uses a partial index only for a WHERE it can see implies it.
PENDING: ColumnElement[str] = literal_column("'pending'", String)


@dataclass(frozen=True)
class QueueReport:
    notices: int  # outbox rows written (order updates and back-in-stock)
    lines: int  # order lines those notices tell about
    superseded: int  # older undelivered notices merged into new ones


@dataclass(frozen=True)
class Claimed:
    outbox_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    customer_id: int | None
    chat_id: int  # the chat linked now (0: none any more)
    language: str | None
    notify_delays: bool
    notify_back_in_stock: bool
    notify_shipping: bool
    unreachable: bool


def _insert(conn: AsyncConnection) -> Any:
    # The dialect's INSERT, which knows ON CONFLICT (on the dedupe key: insert-or-ignore).
    if conn.dialect.name == "postgresql":
        return postgresql.insert(outbox)
    return sqlite.insert(outbox)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# One JSON encoder for every payload (json.dumps with options builds a new one per call).
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

# The lines queue_notices marks told, with what they were told, for one UPDATE ... FROM.
# A temporary table of its own, created and dropped inside the caller's transaction.
_told = Table(
    "outbox_told_lines",
    MetaData(),
    Column("line_id", Integer, primary_key=True),
    Column("moved", Integer, nullable=False),  # 1: the date is told (moved past the threshold)
    Column("ready_qty", Integer, nullable=False),
    Column("shipped_qty", Integer, nullable=False),
    Column("cancelled_qty", Integer, nullable=False),
    prefixes=["TEMPORARY"],
)


# Notices on their way into the outbox (see insert_notices).
_new = Table(
    "outbox_new_notices",
    MetaData(),
    Column("seq", Integer, primary_key=True, autoincrement=True),  # the callers' order
    Column("dedupe_key", String(200), nullable=False),
    Column("chat_id", BigInteger, nullable=False),
    Column("customer_id", Integer),
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    prefixes=["TEMPORARY"],
)


async def _fill(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Insert plain rows (ints, strings, None: values no dialect converts) into a temporary
    table with the driver's executemany: SQLAlchemy's per-row parameter processing cost more
    than SQLite's insert (a second per 100,000 notices and their told marks)."""
    compiled = built_once(
        ("fill", table.name, conn.dialect.name, tuple(columns)),
        lambda: insert(table).compile(dialect=conn.dialect, column_keys=list(columns)),
    )
    sql = str(compiled)
    if compiled.positional:
        order = [columns.index(name) for name in compiled.positiontup or ()]
        if order != list(range(len(columns))):
            rows = [tuple(r[i] for i in order) for r in rows]
        params: list[Any] = rows
    else:
        params = [dict(zip(columns, r, strict=True)) for r in rows]
    for part in _chunks(params, CHUNK * 4):
        await conn.exec_driver_sql(sql, list(part))


def _stamp(changed_at: datetime | None) -> str:
    """The moment a line's date changed, as the key names it: the aware UTC ISO format."""
    if changed_at is None:
        return ""
    if changed_at.tzinfo is None:  # read as stored (UTC), past UTCDateTime's conversion
        return changed_at.isoformat() + "+00:00"
    return changed_at.astimezone(UTC).isoformat()


def _key(kind: str, *parts: object) -> str:
    digest = hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:24]
    return f"{kind}:{parts[0]}:{digest}"


def _order_key(order_id: int, entries: list[dict[str, Any]]) -> str:
    """The change an order notice tells, named in plain text: per line its id, old and new
    date, when the date changed, and the units ready, shipped, cancelled. Only a key too long
    for the column (many lines in one notice) is hashed."""
    fingerprint = ";".join(
        f"{e['line_id']},{e.get('old')},{e.get('new')},{e.get('stamp')},"
        f"{e.get('ready')},{e.get('shipped')},{e.get('cancelled')}"
        for e in entries
    )
    # "c": a chat's notice. Until 2026-12 a customer without a chat had one stored too
    # ("n"), which told nobody.
    head = f"order:{order_id}:c:"
    if len(head) + len(fingerprint) > KEY_MAX:
        fingerprint = "#" + hashlib.sha1(fingerprint.encode()).hexdigest()
    return head + fingerprint


async def line_span(
    conn: AsyncConnection, start: int, limit: int, below: int | None = None
) -> tuple[int, int]:
    """How many lines from ``start`` on (and below ``below``), at most ``limit``, and the id
    of the last of them: the next range of a first pass, read in the database (the ids
    themselves, fetched one row each, cost more than the batch's work on them)."""
    ol = order_lines.c
    q = select(ol.line_id.label("line_id")).where(ol.line_id >= start)
    if below is not None:
        q = q.where(ol.line_id < below)
    span = q.order_by(ol.line_id).limit(limit).subquery()
    count, last = (await conn.execute(select(func.count(), func.max(span.c.line_id)))).one()
    return int(count), int(last or 0)


_NEW_COLUMNS = ("dedupe_key", "chat_id", "customer_id", "kind", "payload", "status")
_CLEAR_NEW = delete(_new)


def _notices_in(conn: AsyncConnection) -> Any:
    """The temporary table's notices into the outbox, due at ``n_due``, made at ``n_now``;
    a key already there is skipped."""
    n = _new.c
    rows_in = (
        select(
            *(n[c] for c in _NEW_COLUMNS),
            literal(0, Integer),
            bindparam("n_due", type_=UTCDateTime()),
            bindparam("n_now", type_=UTCDateTime()),
        )
        .where(true())  # SQLite: without a WHERE, ON CONFLICT would parse as a join's ON
        .order_by(n.seq)
    )
    return (
        _insert(conn)
        .from_select([*_NEW_COLUMNS, "attempts", "not_before", "created_at"], rows_in)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )


async def insert_notices(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> int:
    """Write outbox rows (dedupe_key, chat_id, customer_id, kind, payload dict, status,
    not_before); rows whose key exists are skipped. Returns how many were new."""
    if not rows:
        return 0
    now = utcnow()
    # What rows share (the creation time, usually the due time) is bound once per statement,
    # not once per row: binding a datetime costs more than writing the row.
    by_due: dict[datetime, list[dict[str, Any]]] = {}
    for r in rows:
        due = r.get("not_before") or now
        if due in by_due:
            by_due[due].append(r)
        else:
            by_due[due] = [r]
    written = 0
    # Rows go through a temporary table into the outbox in one INSERT ... SELECT: what they
    # share (creation and due time) is bound once, not once per row (binding a datetime costs
    # more than writing the row).
    await conn.run_sync(_new.create)
    for due, group in by_due.items():
        await _fill(
            conn,
            _new,
            _NEW_COLUMNS,
            [
                (
                    r["dedupe_key"],
                    r.get("chat_id") or 0,
                    r.get("customer_id"),
                    r["kind"],
                    _encode(r["payload"]),
                    r.get("status", "pending"),
                )
                for r in group
            ],
        )
        moved_in = built_once(("notices in", conn.dialect.name), lambda: _notices_in(conn))
        result = await conn.execute(moved_in, {"n_due": due, "n_now": now})
        written += max(result.rowcount, 0)
        await conn.execute(_CLEAR_NEW)
    await conn.run_sync(_new.drop)
    return written


def _candidates(orders_where: ColumnElement[bool] | None) -> Any:
    """The lines with something their customer (who has a chat) was not told yet."""
    ol = order_lines.c
    changed = or_(
        (ol.qty_waiting > 0) & ol.projected_date.is_distinct_from(ol.last_told_date),
        (ol.qty_allocated > 0) & (ol.qty_allocated + ol.qty_shipped > ol.told_ready_qty),
        ol.qty_shipped > ol.told_shipped_qty,
        ol.qty_cancelled > ol.told_cancelled_qty,
    )
    if orders_where is not None:
        changed = orders_where & changed
    return (
        select(
            ol.line_id,
            ol.order_id,
            ol.line_no,
            ol.sku,
            ol.qty_waiting,
            ol.qty_allocated,
            ol.qty_shipped,
            ol.qty_cancelled,
            ol.projected_date,
            ol.last_told_date,
            # As stored (naive UTC): only its text goes into the key (_stamp), and
            # UTCDateTime's conversion per row cost more than the rest of the row.
            type_coerce(ol.projected_changed_at, DateTime()),
            ol.told_ready_qty,
            ol.told_shipped_qty,
            ol.told_cancelled_qty,
            orders.c.order_number,
            orders.c.customer_id,
            chats.c.chat_id,
        )
        .select_from(
            # A customer without a chat is told nothing: their lines stay untold, so the
            # order view still shows the change and they hear of it once they link a chat.
            # No row is stored for them (one per moved line of the 1M-order store's date
            # change, that nobody would ever read).
            order_lines.join(orders, orders.c.order_id == ol.order_id).join(
                chats, chats.c.customer_id == orders.c.customer_id
            )
        )
        .where(changed)
        .order_by(ol.order_id, ol.line_no)
    )


async def queue_notices(
    conn: AsyncConnection,
    *,
    threshold_days: int = 1,
    now: datetime | None = None,
    orders_where: ColumnElement[bool] | None = None,
    order_ids: Sequence[int] | None = None,
    back_in_stock: bool = True,
) -> QueueReport:
    """Queue one notice per customer with a chat and order for everything that changed since
    the customer was last told, and one per "notify me" subscription whose product is back.

    Without ``orders_where``, from scratch: every line of the store is looked at, in the
    caller's one transaction (a small store, a test, the reference the batches must equal).
    With it, only the orders it selects (a condition on order_lines.order_id), all lines of
    each: what ``notice_batch`` does for the orders its marks name; ``order_ids``, the same
    for a list of orders (its statement built once). ``back_in_stock`` False leaves the
    subscriptions to another call."""
    now = now or utcnow()
    if order_ids is not None:
        candidates_of = built_once(
            ("notice candidates", conn.dialect.name),
            lambda: _candidates(
                in_list(conn.dialect.name, order_lines.c.order_id, id_list("q_orders"))
            ),
        )
        candidates = (await conn.execute(candidates_of, {"q_orders": order_ids})).all()
    else:
        candidates = (await conn.execute(_candidates(orders_where))).all()

    by_order: dict[int, list[dict[str, Any]]] = {}
    heads: dict[int, Any] = {}
    told: list[tuple[int, int, int, int, int]] = []
    # The lines of one change share its moment: its text is made once.
    stamps: dict[datetime | None, str] = {}
    shipped_lines: list[int] = []
    for r in candidates:
        (
            line_id,
            order_id,
            line_no,
            sku,
            waiting,
            allocated,
            shipped,
            cancelled,
            projected,
            told_date,
            changed_at,
            told_ready,
            told_shipped,
            told_cancelled,
            _,
            _,
            _,
        ) = r
        entry: dict[str, Any] = {"line_id": line_id, "line_no": line_no, "sku": sku}
        moved = False
        if waiting > 0:
            if projected is None or told_date is None:
                moved = projected is not told_date  # gaining or losing a date is always news
            else:
                moved = abs((projected - told_date).days) >= threshold_days
        if moved:
            entry["old"] = told_date.isoformat() if told_date is not None else None
            entry["new"] = projected.isoformat() if projected is not None else None
            entry["waiting"] = waiting
        ready = allocated + shipped - told_ready
        if allocated > 0 and ready > 0:
            entry["ready"] = min(ready, allocated)
        if shipped > told_shipped:
            entry["shipped"] = shipped - told_shipped
            shipped_lines.append(line_id)
        if cancelled > told_cancelled:
            entry["cancelled"] = cancelled - told_cancelled
        # A move below the threshold is not told, so it keeps adding up.
        told.append((line_id, int(moved), allocated + shipped, shipped, cancelled))
        if len(entry) > 3:
            stamp = stamps.get(changed_at)
            if stamp is None:
                stamp = stamps[changed_at] = _stamp(changed_at)
            entry["stamp"] = stamp
            if order_id in by_order:
                by_order[order_id].append(entry)
            else:
                by_order[order_id] = [entry]
            heads[order_id] = r

    if shipped_lines:
        await _attach_shipments(conn, by_order, shipped_lines)

    superseded = await _merge_undelivered(conn, by_order, heads, now)

    rows: list[dict[str, Any]] = []
    for order_id, entries in by_order.items():
        head = heads[order_id]
        key = _order_key(order_id, entries)
        for e in entries:
            e.pop("stamp", None)
        rows.append(
            {
                "dedupe_key": key,
                "chat_id": head.chat_id,
                "customer_id": head.customer_id,
                "kind": ORDER_UPDATE,
                "payload": {
                    "order_id": order_id,
                    "order_number": head.order_number,
                    "lines": entries,
                },
                "status": "pending",
                "not_before": now,
            }
        )
    written = await insert_notices(conn, rows)

    if told:
        await _mark_told(conn, told, now)

    if back_in_stock:
        written += await _queue_back_in_stock(conn, now)
    return QueueReport(written, sum(len(v) for v in by_order.values()), superseded)


@dataclass(frozen=True)
class NoticeRun:
    notices: int  # outbox rows written
    lines: int  # lines looked at (marked or scanned)
    batches: int = 0
    more: bool = False  # the last batch used its whole budget: there may be work left
    superseded: int = 0

    def __add__(self, other: NoticeRun) -> NoticeRun:
        return NoticeRun(
            self.notices + other.notices,
            self.lines + other.lines,
            self.batches + other.batches,
            other.more,
            self.superseded + other.superseded,
        )


async def run_notices(
    store: Store,
    *,
    threshold_days: int = 1,
    now: datetime | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    on_batch: Callable[[NoticeRun], None] | None = None,
) -> NoticeRun:
    """The notice queueing in batches, each its own short transaction (``notice_batch``),
    until nothing is pending that the delay policy is done with (or ``max_batches``), then
    the "notify me" subscriptions. A crash between two batches loses nothing: what is left
    is still marked, or beyond the cursor."""
    now = now or utcnow()
    total = await run_sized_batches(
        store,
        lambda conn, limit: notice_batch(conn, threshold_days=threshold_days, now=now, limit=limit),
        NoticeRun(0, 0),
        least=NOTICE_BATCH,
        size=batch_size,
        max_batches=max_batches,
        on_batch=on_batch,
    )
    async with store.begin() as conn:
        more = await _queue_back_in_stock(conn, now)
    return total + NoticeRun(more, 0, 0, total.more)


async def notice_batch(
    conn: AsyncConnection, *, threshold_days: int = 1, now: datetime | None = None, limit: int
) -> NoticeRun:
    """One bounded step of the notice queueing, in the caller's transaction: the orders of up
    to ``limit`` lines marked for it, then of the lines its first pass has not looked at yet
    (line_id ranges from its cursor), each order whole, as ``queue_notices`` from scratch
    would queue them.

    Only lines the delay policy is done with: an order with a line the policy still owes a
    look (marked for it, or beyond its cursor) waits, since the policy's offer may tell the
    new date instead of a plain notice. The batches until ``more`` is False, after the
    policy's, end where queue_notices from scratch after the policy from scratch ends.

    Safe with any number of processes at once: the batch's first statement writes the
    stage's cursor row (store.marks.take_turn), which puts the batches of every process one
    after another (SQLite's write lock, PostgreSQL's row lock); the marks it takes are
    deleted in its transaction; the outbox's dedupe key skips a notice queued twice."""
    now = now or utcnow()
    start = await take_turn(conn, NOTICE)
    policy_below = await cursor_of(conn, DELAY)
    ol = order_lines.c
    m = follow_on_marks.c
    mine = order_lines.alias("mine")
    owed = follow_on_marks.alias("owed")

    # An order the policy still owes a look: a line of it marked for the policy or at or
    # beyond the policy's cursor.
    def policy_owes(*narrow: ColumnElement[bool]) -> ColumnElement[bool]:
        # ``narrow``: what else is known of the order. PostgreSQL made the NOT EXISTS an anti
        # join over a hash of every line of the store, built anew in every batch.
        return (
            select(mine.c.line_id)
            .where(
                mine.c.order_id == ol.order_id,
                *narrow,
                or_(
                    mine.c.line_id >= policy_below,
                    select(owed.c.line_id)
                    .where(owed.c.stage == DELAY, owed.c.line_id == mine.c.line_id)
                    .exists(),
                ),
            )
            .exists()
        )

    async with planned_now(conn):
        marked = (
            await conn.execute(
                select(m.line_id, ol.order_id)
                .select_from(follow_on_marks.join(order_lines, ol.line_id == m.line_id))
                .where(m.stage == NOTICE, m.line_id < policy_below, ~policy_owes())
                .order_by(m.line_id)
                .limit(limit)
            )
        ).all()
    budget = limit - len(marked)
    lines = len(marked)
    report = QueueReport(0, 0, 0)
    if marked:
        order_ids = sorted({int(r.order_id) for r in marked})
        # Every mark of these orders goes: their lines are all looked at below.
        for part in _chunks(order_ids, IN_CHUNK):
            await unmark_orders(conn, part, NOTICE)
        for part in _chunks(order_ids, IN_CHUNK):
            report = _sum(
                report,
                await queue_notices(
                    conn,
                    threshold_days=threshold_days,
                    now=now,
                    order_ids=part,
                    back_in_stock=False,
                ),
            )
    if budget > 0:
        count, last = await line_span(conn, start, budget, below=policy_below)
        if count:
            budget -= count
            lines += count
            # order_id + 0: a plain min(order_id) had PostgreSQL walk the order_id index
            # from its end, skipping every line outside the range, instead of reading the
            # range by line_id.
            first, last_order = (
                await conn.execute(
                    select(func.min(ol.order_id + 0), func.max(ol.order_id + 0)).where(
                        ol.line_id.between(start, last)
                    )
                )
            ).one()
            # The orders of the range, whole (lines of an order outside the range are looked
            # at again when their turn comes: what was told is not told twice). An order the
            # policy still owes a look is left to the marks its change left.
            report = _sum(
                report,
                await queue_notices(
                    conn,
                    threshold_days=threshold_days,
                    now=now,
                    # The range on every table that has it: PostgreSQL hashed all orders
                    # of the store, and every line, for a batch's few.
                    orders_where=ol.order_id.between(first, last_order)
                    & orders.c.order_id.between(first, last_order)
                    & ~policy_owes(mine.c.order_id.between(first, last_order)),
                    back_in_stock=False,
                ),
            )
            await advance(conn, last + 1, NOTICE)
    return NoticeRun(report.notices, lines, 1, budget <= 0, report.superseded)


def _sum(a: QueueReport, b: QueueReport) -> QueueReport:
    return QueueReport(a.notices + b.notices, a.lines + b.lines, a.superseded + b.superseded)


_TOLD = (
    update(order_lines)
    # The IN leads SQLite's planner from the few told lines to theirs: on the join alone it
    # read every line of the store for each batch (0.2 s a batch on the 1M store, 36 s of a
    # date change told to 50,000 linked customers).
    .where(
        order_lines.c.line_id == _told.c.line_id,
        order_lines.c.line_id.in_(select(_told.c.line_id)),
    )
    .values(
        last_told_date=case(
            (_told.c.moved == 1, order_lines.c.projected_date),
            else_=order_lines.c.last_told_date,
        ),
        last_told_at=bindparam("t_now", type_=UTCDateTime()),
        told_ready_qty=_told.c.ready_qty,
        told_shipped_qty=_told.c.shipped_qty,
        told_cancelled_qty=_told.c.cancelled_qty,
    )
)


async def _mark_told(
    conn: AsyncConnection, told: list[tuple[int, int, int, int, int]], now: datetime
) -> None:
    """Record what the queued notices tell, in one UPDATE ... FROM over a temporary table
    (the told units as read, not as they may be by now)."""
    await conn.run_sync(_told.create)
    names = ("line_id", "moved", "ready_qty", "shipped_qty", "cancelled_qty")
    await _fill(conn, _told, names, told)
    await conn.execute(_TOLD, {"t_now": now})
    await conn.run_sync(_told.drop)


async def _attach_shipments(
    conn: AsyncConnection, by_order: dict[int, list[dict[str, Any]]], line_ids: list[int]
) -> None:
    latest: dict[int, Any] = {}
    for part in _chunks(line_ids, IN_CHUNK):
        rows = await conn.execute(
            select(
                shipment_lines.c.line_id,
                shipments.c.carrier,
                shipments.c.tracking_number,
                shipments.c.shipped_on,
                shipments.c.created_at,
            )
            .select_from(
                shipment_lines.join(
                    shipments, shipments.c.shipment_id == shipment_lines.c.shipment_id
                )
            )
            .where(in_ids(conn, shipment_lines.c.line_id, part))
            .order_by(shipments.c.created_at)
        )
        for r in rows:
            latest[r.line_id] = r
    for entries in by_order.values():
        for e in entries:
            s = latest.get(e["line_id"]) if "shipped" in e else None
            if s is not None:
                e["carrier"] = s.carrier
                e["tracking"] = s.tracking_number
                e["shipped_on"] = s.shipped_on.isoformat()


async def _merge_undelivered(
    conn: AsyncConnection,
    by_order: dict[int, list[dict[str, Any]]],
    heads: dict[int, Any],
    now: datetime,
) -> int:
    """Fold an older notice about the same order that nobody has claimed yet (quiet hours, a
    backlog, a retry) into the new one, so the customer hears one story: first date to
    latest."""
    customer_ids = sorted({heads[o].customer_id for o in by_order})
    if not customer_ids:
        return 0

    # Only notices nobody has claimed. A claimed one may be on its way this moment: folded
    # into the new notice (a new key, its old one superseded), its change was told twice,
    # once by its sender and once in the new notice. Whether its lease ran out is not this
    # change's to judge: its holder renews it, and this clock may not be the holder's (an
    # admin on another machine, an import that held the database for longer than a lease).
    # One whose holder died is sent as it is once its lease runs out, then the new one.
    def unsent(status: ColumnElement[str]) -> tuple[ColumnElement[bool], ...]:
        return (
            outbox.c.kind == ORDER_UPDATE,
            status == PENDING,
            outbox.c.claimed_until.is_(None),
        )

    merged = 0
    for part in _chunks(customer_ids, IN_CHUNK):
        # Usually nothing of theirs is waiting: one look through the index of waiting
        # notices by customer. A look for any unsent notice of the store read past every
        # pending offer in the index of the due ones (8.6 ms a batch once a big change had
        # queued thousands). What is waiting is mostly about their other orders (a big
        # change tells a customer's orders in different batches): only the notices of these
        # orders are written, not every one superseded and then put back.
        waiting = built_once(
            ("unsent of", conn.dialect.name),
            lambda: select(outbox.c.outbox_id, outbox.c.payload).where(
                in_list(conn.dialect.name, outbox.c.customer_id, id_list("m_ids")),
                *unsent(outbox.c.status),
            ),
        )
        mine = [
            row.outbox_id
            for row in (await conn.execute(waiting, {"m_ids": part})).all()
            if json.loads(row.payload)["order_id"] in by_order
        ]
        if not mine:
            continue
        # Asked again in the statement: another process may have claimed one meanwhile.
        result = await conn.execute(
            update(outbox)
            .where(in_ids(conn, outbox.c.outbox_id, mine), *unsent(filter_only(outbox.c.status)))
            .values(status="superseded", last_error="merged into a newer notice")
            .returning(outbox.c.payload)
        )
        for row in result.all():
            payload = json.loads(row.payload)
            merged += 1
            _fold(payload["lines"], by_order[payload["order_id"]])
    return merged


def _fold(older: list[dict[str, Any]], newer: list[dict[str, Any]]) -> None:
    mine = {e["line_id"]: e for e in newer}
    for old in older:
        new = mine.get(old["line_id"])
        if new is None:
            newer.append(old)
            continue
        if "old" in old:
            new["old"] = old["old"]
            new.setdefault("new", old.get("new"))
            new.setdefault("waiting", old.get("waiting"))
        for field in ("ready", "shipped", "cancelled"):
            if field in old:
                new[field] = new.get(field, 0) + old[field]
        for field in ("carrier", "tracking", "shipped_on"):
            if field in old:
                new.setdefault(field, old[field])
    for e in newer:
        # A date that came back to where it was is no news any more.
        if "old" in e and e.get("old") == e.get("new"):
            for field in ("old", "new", "waiting"):
                e.pop(field, None)
    newer.sort(key=lambda e: e["line_no"])


async def _queue_back_in_stock(conn: AsyncConnection, now: datetime) -> int:
    s = back_in_stock_subscriptions.c
    rows = (
        await conn.execute(
            select(s.subscription_id, s.chat_id, s.customer_id, s.sku)
            .select_from(
                back_in_stock_subscriptions.join(stock, stock.c.sku == s.sku).join(
                    products, products.c.sku == s.sku
                )
            )
            .where(
                s.notified_at.is_(None),
                stock.c.on_hand - stock.c.allocated > 0,
                products.c.active.is_(True),
            )
        )
    ).all()
    if not rows:
        return 0
    written = await insert_notices(
        conn,
        [
            {
                "dedupe_key": _key("bis", r.subscription_id, now.isoformat()),
                "chat_id": r.chat_id,
                "customer_id": r.customer_id,
                "kind": BACK_IN_STOCK,
                "payload": {"sku": r.sku},
                "not_before": now,
            }
            for r in rows
        ],
    )
    for part in _chunks([r.subscription_id for r in rows], IN_CHUNK):
        await conn.execute(
            update(back_in_stock_subscriptions)
            .where(s.subscription_id.in_(part))
            .values(notified_at=now)
        )
    return written


# --- delivery side -----------------------------------------------------------------------


async def claim_due(
    conn: AsyncConnection,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    token: str | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due notices to ``worker``, under ``token`` (default: the worker
    and the time), which renew_claims checks. A notice whose lease ran out without being
    marked sent (its process died) is due again."""
    o = outbox.c
    due = (
        select(o.outbox_id)
        .where(
            o.status == PENDING,
            o.not_before <= now,
            or_(o.claimed_until.is_(None), o.claimed_until < now),
        )
        .order_by(o.not_before, o.outbox_id)
        .limit(limit)
        # Several processes share the work: each takes due rows no other claim is taking
        # (PostgreSQL; SQLite has one writer and no FOR UPDATE).
        .with_for_update(skip_locked=True)
    )
    ids = [r.outbox_id for r in await conn.execute(due)]
    if not ids:
        return []
    token = token or f"{worker}@{now.isoformat()}"
    await conn.execute(
        update(outbox)
        .where(
            o.outbox_id.in_(ids),
            o.status == "pending",
            or_(o.claimed_until.is_(None), o.claimed_until < now),
        )
        .values(claimed_by=token, claimed_until=now + lease, attempts=o.attempts + 1)
    )
    c = customers.c
    rows = (
        await conn.execute(
            select(
                o.outbox_id,
                o.kind,
                o.payload,
                o.attempts,
                o.customer_id,
                o.chat_id,
                chats.c.chat_id.label("linked_chat"),
                chats.c.language,
                c.language.label("customer_language"),
                c.notify_delays,
                c.notify_back_in_stock,
                c.notify_shipping,
                c.unreachable_at,
            )
            .select_from(
                outbox.outerjoin(customers, c.customer_id == o.customer_id).outerjoin(
                    chats, chats.c.customer_id == o.customer_id
                )
            )
            .where(o.outbox_id.in_(ids), o.claimed_by == token)
            .order_by(o.not_before, o.outbox_id)
        )
    ).all()
    result: list[Claimed] = []
    for r in rows:
        # A customer's notice follows their link (they may have moved to a new chat); a
        # subscription without a customer goes to the chat that asked.
        chat_id = r.linked_chat if r.customer_id is not None else r.chat_id
        result.append(
            Claimed(
                outbox_id=r.outbox_id,
                kind=r.kind,
                payload=json.loads(r.payload),
                attempts=r.attempts,
                customer_id=r.customer_id,
                chat_id=int(chat_id or 0),
                language=r.language or r.customer_language,
                notify_delays=bool(True if r.notify_delays is None else r.notify_delays),
                notify_back_in_stock=bool(
                    True if r.notify_back_in_stock is None else r.notify_back_in_stock
                ),
                notify_shipping=bool(True if r.notify_shipping is None else r.notify_shipping),
                unreachable=r.unreachable_at is not None,
            )
        )
    return result


async def renew_claims(
    conn: AsyncConnection, token: str, outbox_ids: Sequence[int], until: datetime
) -> set[int]:
    """Extend to ``until`` the lease on those of ``outbox_ids`` still pending under
    ``token``; returns them. The others are no longer the holder's to send: another process
    claimed them after the lease ran out, or they were closed (the customer blocked the
    bot). A lease that ran out but nobody took is the holder's again."""
    o = outbox.c
    held: set[int] = set()
    for part in _chunks(sorted(outbox_ids), IN_CHUNK):
        result = await conn.execute(
            update(outbox)
            .where(o.outbox_id.in_(part), o.claimed_by == token, o.status == "pending")
            .values(claimed_until=until)
            .returning(o.outbox_id)
        )
        held.update(int(r[0]) for r in result)
    return held


async def finish(
    conn: AsyncConnection,
    outbox_ids: Sequence[int],
    status: str,
    *,
    at: datetime | None = None,
    error: str | None = None,
) -> None:
    """Close notices: 'sent', 'skipped', 'failed', 'dead' or 'no_chat'."""
    if not outbox_ids:
        return
    values: dict[str, Any] = {"status": status, "claimed_until": None, "last_error": error}
    if status == "sent":
        values["sent_at"] = at or utcnow()
    for part in _chunks(list(outbox_ids), IN_CHUNK):
        await conn.execute(update(outbox).where(outbox.c.outbox_id.in_(part)).values(**values))


async def retry_later(
    conn: AsyncConnection,
    outbox_ids: Sequence[int],
    not_before: datetime,
    *,
    error: str | None = None,
    refund_attempt: bool = False,
    holder: str | None = None,
) -> None:
    """Put notices back for later; ``refund_attempt``: the try did not count (a 429, a
    per-chat pause), so it does not bring the notice nearer to giving up. ``holder``: only
    those still claimed under that token (one another process has taken since is theirs)."""
    if not outbox_ids:
        return
    o = outbox.c
    mine = () if holder is None else (o.claimed_by == holder,)
    values: dict[str, Any] = {
        "not_before": not_before,
        "claimed_until": None,
        "claimed_by": None,
        "last_error": error,
    }
    if refund_attempt:
        values["attempts"] = o.attempts - 1
    for part in _chunks(list(outbox_ids), IN_CHUNK):
        await conn.execute(update(outbox).where(o.outbox_id.in_(part), *mine).values(**values))


async def mark_unreachable(conn: AsyncConnection, customer_id: int, at: datetime) -> int:
    """The customer blocked the bot: remember it and close their waiting notices."""
    await conn.execute(
        update(customers).where(customers.c.customer_id == customer_id).values(unreachable_at=at)
    )
    result = await conn.execute(
        update(outbox)
        .where(outbox.c.customer_id == customer_id, outbox.c.status == PENDING)
        .values(status="dead", claimed_until=None, last_error="blocked by the user (403)")
    )
    return int(result.rowcount or 0)


async def set_reachable(conn: AsyncConnection, customer_id: int) -> None:
    await conn.execute(
        update(customers)
        .where(customers.c.customer_id == customer_id, customers.c.unreachable_at.is_not(None))
        .values(unreachable_at=None)
    )


async def outbox_counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
    return {str(r[0]): int(r[1]) for r in rows}


async def mark_cancellation_told(
    conn: AsyncConnection, order_number: str, customer_id: int, line_no: int | None = None
) -> None:
    """The customer cancelled (a line of) their order in the chat and was answered there:
    what was cancelled is told, so no "cancelled" notice repeats it. ``line_no`` None: the
    whole order. Scoped to the customer's own order."""
    ol = order_lines.c
    own = select(orders.c.order_id).where(
        orders.c.order_number == order_number, orders.c.customer_id == customer_id
    )
    query = update(order_lines).where(ol.order_id.in_(own.scalar_subquery()))
    if line_no is not None:
        query = query.where(ol.line_no == line_no)
    await conn.execute(query.values(told_cancelled_qty=ol.qty_cancelled))


async def reachable_again(conn: AsyncConnection, chat_id: int) -> bool:
    """A chat whose customer had blocked the bot wrote again: they can be reached. Returns
    whether anything changed (one indexed read when nothing did)."""
    customer_id = await conn.scalar(
        select(customers.c.customer_id)
        .select_from(customers.join(chats, chats.c.customer_id == customers.c.customer_id))
        .where(chats.c.chat_id == chat_id, customers.c.unreachable_at.is_not(None))
    )
    if customer_id is None:
        return False
    await set_reachable(conn, int(customer_id))
    return True


async def told_in_order_view(conn: AsyncConnection, customer_id: int, order_id: int) -> int:
    """The customer has just seen the whole order (the bot's order view): what it showed is
    told (units ready, shipped, cancelled; waiting lines' dates are queries.mark_told's), so
    the next queueing finds nothing to repeat; and a notice about this order nobody has
    claimed yet would only repeat it (quiet hours, a backlog): it is superseded. A claimed one
    may be on its way this moment and is left to its sender. The number superseded."""
    ol = order_lines.c
    owned = select(orders.c.order_id).where(
        orders.c.order_id == order_id, orders.c.customer_id == customer_id
    )
    await conn.execute(
        update(order_lines)
        .where(ol.order_id.in_(owned))
        .values(
            told_ready_qty=ol.qty_allocated + ol.qty_shipped,
            told_shipped_qty=ol.qty_shipped,
            told_cancelled_qty=ol.qty_cancelled,
        )
    )
    o = outbox.c
    waiting = await conn.execute(
        select(o.outbox_id, o.payload).where(
            o.customer_id == customer_id,
            o.status == PENDING,
            o.kind == ORDER_UPDATE,
            o.claimed_until.is_(None),
        )
    )
    repeats = [r.outbox_id for r in waiting if json.loads(r.payload)["order_id"] == order_id]
    if repeats:
        await conn.execute(
            update(outbox)
            .where(o.outbox_id.in_(repeats), o.status == "pending", o.claimed_until.is_(None))
            .values(status="superseded", last_error="shown in the order view")
        )
    return len(repeats)
