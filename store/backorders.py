"""The domain rules: orders, allocation, receipts, cancellations, shipping, projected dates.

Every function is one step inside the caller's transaction. Re-running a step with the same
id (order number, restock id, shipment id) leaves the store as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    DateTime,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.errors import Conflict, NotFound, StoreError
from store.events import log_event, log_events
from store.marks import (
    CHUNK,
    STAGES,
    built_once,
    id_list,
    in_ids,
    in_list,
    insert_ignoring,
    mark_lines,
)
from store.schema import (
    customers,
    events,
    follow_on_marks,
    order_lines,
    orders,
    products,
    queue_marks,
    restock_date_changes,
    restocks,
    shipment_lines,
    shipments,
    sku_allocations,
    sku_projections,
    stock,
    utcnow,
)

BATCH = 2000
# Every MARK_EVERY-th waiting line of a SKU is a queue mark (see store.queries): a reader
# counts at most this many index entries to place a line.
MARK_EVERY = 500


@dataclass(frozen=True)
class NewLine:
    sku: str
    qty: int
    unit_price_minor: int | None = None  # None: the catalog price


@dataclass(frozen=True)
class MovedLine:
    line_id: int
    order_id: int
    old_date: date | None
    new_date: date | None


@dataclass(frozen=True)
class Projection:
    sku: str
    waiting_lines: int
    undated_lines: int
    moved: tuple[MovedLine, ...]
    # The queue's rest (past the lines walked in the change's transaction, counted in
    # waiting_lines) is left to the projection's batches (run_projection).
    pending: bool = False


@dataclass(frozen=True)
class Allocation:
    line_id: int
    qty: int


@dataclass(frozen=True)
class PlacedOrder:
    order_id: int
    order_number: str
    created: bool
    allocated: tuple[Allocation, ...]


@dataclass(frozen=True)
class Receipt:
    restock_id: str
    sku: str
    changed: bool
    qty: int
    allocated: tuple[Allocation, ...]
    to_free_stock: int
    projection: Projection | None
    # Units and lines were left to the allocation's batches (run_allocation): to_free_stock
    # is then not known yet (0).
    allocating: bool = False


@dataclass(frozen=True)
class Cancellation:
    changed: bool
    cancelled_qty: int
    released: int
    reallocated: tuple[Allocation, ...]
    projections: tuple[Projection, ...]


@dataclass(frozen=True)
class Shipped:
    shipment_id: str
    changed: bool
    lines: tuple[Allocation, ...]


# --- stock -------------------------------------------------------------------------------


async def _ensure_stock_row(conn: AsyncConnection, sku: str) -> None:
    # One statement: two transactions adding the row at once both succeed.
    await conn.execute(
        insert_ignoring(conn, stock).values(sku=sku, on_hand=0, allocated=0, updated_at=utcnow())
    )


async def _lock_stock(conn: AsyncConnection, skus: Sequence[str]) -> None:
    """Hold the stock rows of ``skus`` (made if missing) until the transaction ends, in SKU
    order, so that two transactions locking the same SKUs wait for each other instead of
    deadlocking. On PostgreSQL whoever allocates a SKU's free units holds its row first:
    the rest read what it left (READ COMMITTED would let two both read the last unit as free,
    and the second fail on ck_stock_allocated_within). Nothing on SQLite, whose write
    transactions run one at a time."""
    for sku in sorted(set(skus)):
        await _ensure_stock_row(conn, sku)
    await conn.execute(
        select(stock.c.sku)
        .where(stock.c.sku.in_(sorted(set(skus))))
        .order_by(stock.c.sku)
        .with_for_update()
    )


_STOCK = select(stock.c.on_hand, stock.c.allocated).where(stock.c.sku == bindparam("s_sku"))
_STOCK_LOCKED = _STOCK.with_for_update()


async def free_stock(conn: AsyncConnection, sku: str, *, lock: bool = False) -> int:
    """Units of ``sku`` on hand and not allocated; ``lock``: holding the stock row (see
    _lock_stock), for a caller that allocates them."""
    row = (await conn.execute(_STOCK_LOCKED if lock else _STOCK, {"s_sku": sku})).first()
    return 0 if row is None else int(row.on_hand - row.allocated)


async def set_stock(conn: AsyncConnection, sku: str, on_hand: int) -> tuple[Allocation, ...]:
    """Set the units on hand (a stock count). Units beyond what is already allocated go to
    waiting lines first: the first INLINE_ALLOCATION lines here, the rest in the allocation's
    batches as after a receipt (see _give_out). Returns the allocations made here."""
    if on_hand < 0:
        raise StoreError("stock on hand cannot be negative")
    await _require_product(conn, sku)
    await _ensure_stock_row(conn, sku)
    allocated = await conn.scalar(select(stock.c.allocated).where(stock.c.sku == sku))
    if on_hand < int(allocated or 0):
        raise Conflict(f"{sku}: {on_hand} on hand is less than the {allocated} units allocated")
    current = await conn.scalar(select(stock.c.on_hand).where(stock.c.sku == sku))
    if current == on_hand:
        return ()

    async def count() -> None:
        await conn.execute(
            update(stock).where(stock.c.sku == sku).values(on_hand=on_hand, updated_at=utcnow())
        )
        await log_event(conn, "stock_set", sku=sku, on_hand=on_hand, was=current)

    result, _ = await _give_out(conn, sku, count)
    await _project_now(conn, sku)
    return result


async def allocate_waiting(conn: AsyncConnection, sku: str) -> tuple[Allocation, ...]:
    """Give free stock of ``sku`` to waiting lines, first come first served, partial fills
    allowed. Nothing while a big receipt's allocation of the SKU is under way
    (sku_allocations): its batches give the free units out in queue order."""
    if await _allocation_owed(conn, sku):
        return ()
    return (await _allocate(conn, sku, None))[0]


async def _allocate(
    conn: AsyncConnection, sku: str, limit: int | None
) -> tuple[tuple[Allocation, ...], bool]:
    """allocate_waiting's walk from the head of the queue, at most ``limit`` lines (None: no
    limit), holding the stock row (the free units read under it are given once). Returns the
    allocations and whether nothing is left to give: no unit free, or no line waiting."""
    free = await free_stock(conn, sku, lock=True)
    done: list[Allocation] = []
    last: tuple[int, datetime, int] | None = None
    while free > 0:
        want = BATCH if limit is None else min(BATCH, limit - len(done))
        if want <= 0:
            return tuple(done), False
        q = (
            select(
                order_lines.c.line_id,
                order_lines.c.qty_waiting,
                order_lines.c.queue_rank,
                order_lines.c.queued_at,
            )
            .where(order_lines.c.sku == sku, order_lines.c.qty_waiting > 0)
            .order_by(order_lines.c.queue_rank, order_lines.c.queued_at, order_lines.c.line_id)
            .limit(want)
        )
        if last is not None:
            q = q.where(_after(last))
        rows = (await conn.execute(q)).all()
        if not rows:
            break
        batch: list[Allocation] = []
        for r in rows:
            give = min(free, int(r.qty_waiting))
            batch.append(Allocation(int(r.line_id), give))
            free -= give
            if free == 0:
                break
        await _apply_allocations(conn, sku, batch)
        done.extend(batch)
        if len(rows) < want:
            break  # the queue's last waiting line
        last_row = rows[-1]
        last = (int(last_row.queue_rank), last_row.queued_at, int(last_row.line_id))
    return tuple(done), True


# --- a big receipt's (or stock count's) allocation in batches -------------------------------
#
# A receipt or a stock count gives its units to the first INLINE_ALLOCATION waiting lines in
# its own transaction (_give_out; a small one, the common case, is done when it commits). When
# units are left and lines still wait, the SKU's sku_allocations row stays, and
# ``allocation_batch`` goes on from the head of the queue in batches, each its own short
# transaction: the free units and the waiting lines are the durable state, so a crash between
# two batches loses nothing and gives nothing twice. Meanwhile other changes (an order, a
# cancellation) leave the SKU's free units to the batches (queue order first), and new lines
# join the back of the queue dated as by the projection (free units count as the first
# restock's).

# Lines a receipt or a stock count allocates in its own transaction; beyond them the batches
# go on.
INLINE_ALLOCATION = 500
# Lines one batch of ``run_allocation`` allocates (each batch one transaction).
ALLOCATION_BATCH = 500


@dataclass(frozen=True)
class AllocationRun:
    lines: int  # lines given units
    units: int
    batches: int = 0
    more: bool = False  # a batch claimed a SKU: there may be work left
    finished: int = 0  # SKUs whose allocation ended

    def __add__(self, other: AllocationRun) -> AllocationRun:
        return AllocationRun(
            self.lines + other.lines,
            self.units + other.units,
            self.batches + other.batches,
            other.more,
            self.finished + other.finished,
        )


def _allocations_upsert(conn: AsyncConnection) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(sku_allocations)


async def _owe_allocation(conn: AsyncConnection, sku: str) -> None:
    """The SKU's allocation row, made or held (an upsert that writes it: on PostgreSQL it
    waits for a batch in flight, so a row that batch deletes is made again here). A receipt's
    first lock, before the projection row, as a batch takes them."""
    ins = _allocations_upsert(conn)
    await conn.execute(
        ins.values(sku=sku, requested_at=utcnow(), batches=0).on_conflict_do_update(
            index_elements=[sku_allocations.c.sku],
            set_={"batches": sku_allocations.c.batches},
        )
    )


async def _give_out(
    conn: AsyncConnection, sku: str, write: Callable[[], Awaitable[None]]
) -> tuple[tuple[Allocation, ...], bool]:
    """A change that puts units of ``sku`` on hand (a receipt, a stock count): ``write`` books
    them, the first INLINE_ALLOCATION waiting lines are given units here, and the SKU's
    sku_allocations row owes the rest to allocation_batch (it goes when nothing is left to
    give). The allocation's row is taken first, then the projection's, as allocation_batch
    takes them. Returns the allocations made here and whether the allocation is done."""
    await _owe_allocation(conn, sku)
    await request_projection(conn, [sku])
    await write()
    allocs, finished = await _allocate(conn, sku, INLINE_ALLOCATION)
    if finished:
        await conn.execute(delete(sku_allocations).where(sku_allocations.c.sku == sku))
    return allocs, finished


async def _allocation_owed(conn: AsyncConnection, sku: str) -> bool:
    a = sku_allocations.c
    return await conn.scalar(select(a.sku).where(a.sku == sku)) is not None


async def allocations_owed(conn: AsyncConnection) -> tuple[int, int]:
    """The SKUs whose receipt's units are still being given out, and their free units."""
    a = sku_allocations.c
    row = (
        await conn.execute(
            select(
                func.count(), func.coalesce(func.sum(stock.c.on_hand - stock.c.allocated), 0)
            ).select_from(sku_allocations.outerjoin(stock, stock.c.sku == a.sku))
        )
    ).one()
    return int(row[0]), int(row[1])


async def allocation_batch(
    conn: AsyncConnection, *, limit: int = ALLOCATION_BATCH, sku: str | None = None
) -> AllocationRun:
    """One bounded step of the allocations the receipts left, in the caller's transaction:
    the SKU waiting longest (or ``sku``) claimed, its next ``limit`` waiting lines given free
    units. ``more`` is False when no SKU was owed (or free to claim)."""
    a = sku_allocations.c
    pick = select(a.sku).order_by(a.requested_at, a.sku).limit(1)
    if sku is not None:
        pick = pick.where(a.sku == sku)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    claimed = await conn.scalar(pick)
    if claimed is None:
        return AllocationRun(0, 0)
    # The allocation moves the dates of the lines behind: the queue owes a projection.
    await request_projection(conn, [claimed])
    allocs, finished = await _allocate(conn, claimed, limit)
    if finished:
        await conn.execute(delete(sku_allocations).where(a.sku == claimed))
    else:
        await conn.execute(
            update(sku_allocations).where(a.sku == claimed).values(batches=a.batches + 1)
        )
    return AllocationRun(len(allocs), sum(x.qty for x in allocs), 1, True, int(finished))


async def run_allocation(
    store: Any,
    *,
    batch_size: int = ALLOCATION_BATCH,
    max_batches: int | None = None,
    on_batch: Callable[[AllocationRun], None] | None = None,
) -> AllocationRun:
    """The allocations big receipts left, in batches each in its own short transaction, until
    none is owed (or ``max_batches``). Any number of processes may run it at once. Run before
    the projection (run_projection), which the allocation asks for."""
    from store.marks import run_batches

    return await run_batches(
        store,
        lambda conn: allocation_batch(conn, limit=batch_size),
        AllocationRun(0, 0),
        max_batches=max_batches,
        on_batch=on_batch,
    )


def _after(last: tuple[int, datetime, int]) -> ColumnElement[bool]:
    # Keyset paging over the queue index: no OFFSET, no re-reading earlier lines.
    rank, at, line_id = last
    c = order_lines.c
    return (c.queue_rank > rank) | (
        (c.queue_rank == rank)
        & ((c.queued_at > at) | ((c.queued_at == at) & (c.line_id > line_id)))
    )


async def _apply_allocations(conn: AsyncConnection, sku: str, allocs: Sequence[Allocation]) -> None:
    if not allocs:
        return
    c = order_lines.c
    stmt = (
        update(order_lines)
        .where(c.line_id == bindparam("b_line"))
        .values(
            qty_allocated=c.qty_allocated + bindparam("b_qty"),
            qty_waiting=c.qty_waiting - bindparam("b_qty"),
        )
    )
    await conn.execute(stmt, [{"b_line": a.line_id, "b_qty": a.qty} for a in allocs])
    await mark_lines(conn, (a.line_id for a in allocs))
    total = sum(a.qty for a in allocs)
    await conn.execute(
        update(stock)
        .where(stock.c.sku == sku)
        .values(allocated=stock.c.allocated + total, updated_at=utcnow())
    )
    # Lines that stopped waiting leave the queue.
    await conn.execute(
        update(order_lines)
        .where(c.line_id.in_([a.line_id for a in allocs]), c.qty_waiting == 0)
        .values(waits_for_restock_id=None)
    )
    await log_event(conn, "allocated", sku=sku, qty=total, lines=len(allocs))


# --- projected dates ---------------------------------------------------------------------


async def project_dates(conn: AsyncConnection, sku: str, *, requeue: bool = True) -> Projection:
    """Recompute projected date and awaited restock of every waiting line of ``sku``, and
    record the lines whose date moved.

    A line's date is the expected date of the open restock whose cumulative quantity covers
    the line's last unit in the queue; past the last open restock it is undated.

    The queue is walked inside the database, on the queue index alone (it carries every
    column read here): running sums of the waiting quantities are matched against the open
    restocks' cumulative ranges, and one set-based UPDATE ... FROM writes only the lines that
    changed: those whose date moved (returned) and those whose date is right but whose
    awaited restock changed.

    A line's place in the queue is not stored (a receipt would shift every line behind the
    filled ones): readers count it on the queue index from the nearest queue mark, and the
    SKU's marks are rewritten here (a few rows). ``requeue=False`` is for callers that
    changed only restocks (a date, a cancellation): no line joined, left or moved in the
    queue, so the marks are still right.
    """
    c = order_lines.c
    free = await free_stock(conn, sku)
    now = utcnow()
    # One walk of the queue writes both kinds of change (a walk took ~0.7 s per 100,000
    # waiting lines): a moved date keeps the old one as previous and stamps the change; a
    # line whose date is right but whose awaited restock changed gets only the restock.
    returned = await _write_projection(conn, _projection(sku, free), now)
    # Every line written here: a moved date or a new awaited restock is what the follow-on
    # work looks at again (store.marks).
    await mark_lines(conn, (int(r[0]) for r in returned))
    if requeue:
        await mark_queues(conn, sku)
    stamp = now.astimezone(UTC).replace(tzinfo=None)
    moved = [
        MovedLine(int(r[0]), int(r[1]), r[2], r[3])
        for r in sorted((r for r in returned if r[6] == stamp), key=lambda r: (r[4], r[5], r[0]))
    ]
    counts = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((c.projected_date.is_(None), 1), else_=0)), 0),
            ).where(c.sku == sku, c.qty_waiting > 0)
        )
    ).one()
    if moved:
        await log_event(
            conn,
            "dates_projected",
            sku=sku,
            moved=len(moved),
            sample=[[m.line_id, m.old_date, m.new_date] for m in moved[:50]],
        )
    return Projection(sku, int(counts[0]), int(counts[1]), tuple(moved))


async def mark_queues(conn: AsyncConnection, sku: str | None = None) -> None:
    """Rewrite the queue marks of ``sku`` (None: of every SKU): every MARK_EVERY-th waiting
    line in queue order with the number of waiting lines ahead of it, one pass over the
    queue index."""
    c = order_lines.c
    queue_order = (c.queue_rank, c.queued_at, c.line_id)
    ahead = func.row_number().over(
        partition_by=None if sku is not None else c.sku, order_by=queue_order
    )
    waiting = select(c.sku, *queue_order, (ahead - 1).label("lines_before")).where(
        c.qty_waiting > 0
    )
    wipe = delete(queue_marks)
    if sku is not None:
        waiting = waiting.where(c.sku == sku)
        wipe = wipe.where(queue_marks.c.sku == sku)
    await conn.execute(wipe)
    q = waiting.subquery("queue").c
    await conn.execute(
        insert(queue_marks).from_select(
            ["sku", "queue_rank", "queued_at", "line_id", "lines_before"],
            select(q.sku, q.queue_rank, q.queued_at, q.line_id, q.lines_before).where(
                q.lines_before % MARK_EVERY == 0
            ),
        )
    )


async def _write_projection(conn: AsyncConnection, changed: CTE, now: datetime) -> list[Any]:
    """Write the lines of a projection (``_projection``'s columns): a moved date keeps the old
    one as previous and stamps the change; a line whose date is right but whose awaited restock
    changed gets only the restock. Returns (line_id, order_id, previous date, date, queue_rank,
    queued_at, changed_at, sku) of every line written."""
    c = order_lines.c
    return list(
        (
            await conn.execute(
                update(order_lines)
                .add_cte(changed)
                .where(c.line_id == changed.c.line_id)
                .values(
                    # Right-hand sides see the row as it was: the old date becomes the previous.
                    previous_projected_date=case(
                        (changed.c.moved == 1, c.projected_date), else_=c.previous_projected_date
                    ),
                    projected_date=changed.c.new_date,
                    projected_changed_at=case(
                        (changed.c.moved == 1, now), else_=c.projected_changed_at
                    ),
                    waits_for_restock_id=changed.c.new_restock,
                )
                .returning(
                    c.line_id,
                    c.order_id,
                    c.previous_projected_date,
                    c.projected_date,
                    c.queue_rank,
                    # As stored (naive UTC; the order is the same): UTCDateTime's conversion
                    # per row is not needed to sort, nor to see which rows this call stamped.
                    type_coerce(c.queued_at, DateTime()),
                    type_coerce(c.projected_changed_at, DateTime()),
                    c.sku,
                )
            )
        ).all()
    )


def _projection(sku: str, free: int) -> CTE:
    """Waiting lines of ``sku`` with the restock (id, date) that covers their last unit,
    NULLs past the last open restock: the lines whose date moved (``moved`` 1) or whose date
    is right but whose awaited restock changed (``moved`` 0).

    Restock k covers the units (lo_k, hi_k] of the queue, hi_k = free + the open quantity of
    restocks 1..k in date order; a line whose running need falls in that range waits for it
    (units within the free stock count as the first restock's). Everything read from
    order_lines is in the queue index."""
    c = order_lines.c
    r = restocks.c
    left = r.qty - r.qty_received
    in_date_order = (r.expected_date, r.restock_id)
    hi = literal(free, BigInteger) + func.sum(left).over(order_by=in_date_order, rows=(None, 0))
    bounds = (
        select(
            r.restock_id.label("restock_id"),
            r.expected_date.label("expected_date"),
            hi.label("hi"),
            case(
                (func.row_number().over(order_by=in_date_order) == 1, None), else_=hi - left
            ).label("lo"),
        )
        .where(r.sku == sku, r.status == "open")
        .subquery("bounds")
    )
    queue_order = (c.queue_rank, c.queued_at, c.line_id)
    queue = (
        select(
            c.line_id.label("line_id"),
            c.projected_date.label("projected_date"),
            c.waits_for_restock_id.label("waits_for_restock_id"),
            func.sum(c.qty_waiting).over(order_by=queue_order, rows=(None, 0)).label("need"),
        )
        .where(c.sku == sku, c.qty_waiting > 0)
        .subquery("queue")
    )
    date_moved = queue.c.projected_date.is_distinct_from(bounds.c.expected_date)
    return (
        select(
            queue.c.line_id,
            bounds.c.restock_id.label("new_restock"),
            bounds.c.expected_date.label("new_date"),
            case((date_moved, 1), else_=0).label("moved"),
        )
        .select_from(
            queue.outerjoin(
                bounds,
                (queue.c.need <= bounds.c.hi)
                & (bounds.c.lo.is_(None) | (queue.c.need > bounds.c.lo)),
            )
        )
        .where(date_moved | queue.c.waits_for_restock_id.is_distinct_from(bounds.c.restock_id))
        # Materialized, so the database filters the queue (on the index) before it joins
        # order_lines to update, instead of fetching every queued row first.
        .cte("proj")
        .prefix_with("MATERIALIZED")
    )


# --- the projection in batches ------------------------------------------------------------
#
# A change to a SKU's restocks, free stock or queue (a date change, a receipt, a cancelled
# restock or line, an allocation, a line joining ahead of others) does not project the SKU's
# whole queue in its own transaction: it records that the queue owes a projection
# (``request_projection``: the SKU's row of sku_projections, its generation bumped and its
# cursor back at the head of the queue), projects the head of the queue itself (at most
# INLINE_LINES lines, so a short queue, the common case, is done when the change commits) and
# leaves the rest to ``projection_batch``: bounded steps, each its own transaction, walking
# the queue in order from the durable cursor (the queue key of the last line reached, with
# the waiting units and lines up to it). A line's date depends only on the waiting units
# ahead of it and the open restocks, so a walk from the head after the last change ends with
# exactly what ``project_dates`` from scratch writes; a change arriving mid-walk puts the
# cursor back at the head (the lines walked may be wrong now), and the walk starts again.
# New lines joining the back of a queue change nobody's date: theirs is found when they are
# written (from the units ahead of them), and a walk under way reaches them and finds them
# right. Readers between batches see each line's last projected date: the new one once the
# walk has reached it, the one before until then; never one no projection decided.

# Lines of the queue a change projects in its own transaction; beyond them the batches go on.
INLINE_LINES = 500
# Lines of one queue walked per batch of ``run_projection`` (each batch one transaction).
PROJECTION_BATCH = 500


@dataclass(frozen=True)
class ProjectionRun:
    lines: int  # waiting lines walked
    moved: int  # of them, lines whose date moved
    batches: int = 0
    more: bool = False  # a batch claimed a SKU: there may be work left
    finished: int = 0  # SKUs whose walk ended
    seconds: float = 0.0  # the longest batch (its statements, not its commit)
    # One batch's lines written and left unmarked (projection_batch with mark False); not
    # summed.
    written: tuple[int, ...] = ()

    def __add__(self, other: ProjectionRun) -> ProjectionRun:
        return ProjectionRun(
            self.lines + other.lines,
            self.moved + other.moved,
            self.batches + other.batches,
            other.more,
            self.finished + other.finished,
            max(self.seconds, other.seconds),
        )


@dataclass(frozen=True)
class _Walk:
    sku: str
    lines: int
    undated: int
    moved: list[tuple[int, date | None, date | None, tuple[int, datetime, int]]]
    done: bool
    seconds: float
    stalled: bool = False  # the first line to write was locked by another transaction
    written: tuple[int, ...] = ()  # lines whose date or awaited restock was written


def _upsert(conn: AsyncConnection) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(sku_projections)
    if dialect == "sqlite":
        return sqlite.insert(sku_projections)
    raise NotImplementedError(f"ON CONFLICT DO UPDATE on {dialect}")


def _fresh(sku: str, now: datetime, pending: bool) -> dict[str, Any]:
    return {
        "sku": sku,
        "generation": 1 if pending else 0,
        "pending": pending,
        "after_rank": None,
        "after_at": None,
        "after_line": None,
        "need_before": 0,
        "lines_before": 0,
        "moved": 0,
        "batches": 0,
        "requested_at": now,
        "updated_at": now,
    }


async def request_projection(conn: AsyncConnection, skus: Iterable[str]) -> None:
    """Record in the caller's transaction that the queues of ``skus`` owe a projection from
    their head: the generation bumped, the cursor reset. Rows in SKU order, the first thing a
    change writes for them (see hold_projection)."""
    now = utcnow()
    rows = [_fresh(s, now, True) for s in sorted(set(skus))]
    if not rows:
        return
    p = sku_projections.c
    ins = _upsert(conn)
    stmt = ins.on_conflict_do_update(
        index_elements=[p.sku],
        set_={
            "generation": p.generation + 1,
            "pending": True,
            "after_rank": None,
            "after_at": None,
            "after_line": None,
            "need_before": 0,
            "lines_before": 0,
            "moved": 0,
            "requested_at": ins.excluded.requested_at,
            "updated_at": ins.excluded.updated_at,
        },
    )
    await conn.execute(stmt, rows)


async def restart_walks(conn: AsyncConnection, skus: Sequence[str]) -> None:
    """Put the cursor of the walks under way of ``skus`` back at the head of their queues
    (the caller changed the queue: the units ahead of the cursor are not what it counted),
    asking nothing of the SKUs with no walk under way."""
    p = sku_projections.c
    for part in _chunks(sorted(set(skus))):
        await conn.execute(
            update(sku_projections)
            .where(p.sku.in_(part), p.pending.is_(True))
            .values(
                generation=p.generation + 1,
                after_rank=None,
                after_at=None,
                after_line=None,
                need_before=0,
                lines_before=0,
                updated_at=utcnow(),
            )
        )


async def hold_projection(conn: AsyncConnection, skus: Iterable[str]) -> None:
    """Hold the projection rows of ``skus`` (made if missing) until the caller's transaction
    ends, without asking for a walk: a change that may only append to a queue takes them
    first, so that on PostgreSQL a batch walking the SKU and a change to it take turns (the
    change waits for the batch in flight, a batch skips the SKU while the change holds it) and
    every change takes them before any stock row or line. Nothing to wait for on SQLite,
    whose write transactions run one at a time; the same statement serves both."""
    now = utcnow()
    rows = [_fresh(s, now, False) for s in sorted(set(skus))]
    if not rows:
        return
    p = sku_projections.c
    ins = _upsert(conn)
    await conn.execute(
        ins.on_conflict_do_update(index_elements=[p.sku], set_={"sku": ins.excluded.sku}), rows
    )


def _queue_key() -> Any:
    c = order_lines.c
    return tuple_(c.queue_rank, c.queued_at, c.line_id)


def _key_value(key: tuple[int, datetime, int]) -> Any:
    c = order_lines.c
    return tuple_(
        literal(key[0], c.queue_rank.type),
        literal(key[1], c.queued_at.type),
        literal(key[2], c.line_id.type),
    )


async def _claim(conn: AsyncConnection, sku: str | None) -> Any:
    """The first statement of a batch: a write (SQLite's write lock taken before anything is
    read), the pending row of ``sku`` or the one asked for longest ago. On PostgreSQL rows
    held by another batch or a change in flight are skipped: two processes walk two SKUs."""
    claim = built_once(
        ("claim", conn.dialect.name, sku is None), lambda: _claim_statement(conn, sku is None)
    )
    values: dict[str, Any] = {"c_at": utcnow()}
    if sku is not None:
        values["c_sku"] = sku
    return (await conn.execute(claim, values)).first()


def _claim_statement(conn: AsyncConnection, any_sku: bool) -> Any:
    p = sku_projections.c
    pick = select(p.sku).where(p.pending.is_(True))
    if not any_sku:
        pick = pick.where(p.sku == bindparam("c_sku"))
    pick = pick.order_by(p.requested_at, p.sku).limit(1)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        update(sku_projections)
        .where(p.sku == pick.scalar_subquery(), p.pending.is_(True))
        .values(batches=p.batches + 1, updated_at=bindparam("c_at", type_=p.updated_at.type))
        .returning(
            p.sku,
            p.generation,
            p.after_rank,
            p.after_at,
            p.after_line,
            p.need_before,
            p.lines_before,
            p.moved,
        )
    )


# The least page of a walk's read once it is near its most lines to write: the lines after
# them may stay put (a queue's head), and are walked on in the same batch.
WALK_PAGE_LEAST = 100


def _key_of(prefix: str) -> Any:
    """A queue key (queue_rank, queued_at, line_id) as three parameters (``_key_params``)."""
    c = order_lines.c
    return tuple_(
        bindparam(f"{prefix}_rank", type_=c.queue_rank.type),
        bindparam(f"{prefix}_at", type_=c.queued_at.type),
        bindparam(f"{prefix}_line", type_=c.line_id.type),
    )


def _key_params(prefix: str, key: tuple[int, datetime, int]) -> dict[str, Any]:
    return {f"{prefix}_rank": key[0], f"{prefix}_at": key[1], f"{prefix}_line": key[2]}


# A walk's statements, built once (see store.marks.built_once).
_COVER = (
    select(
        restocks.c.restock_id, restocks.c.expected_date, restocks.c.qty - restocks.c.qty_received
    )
    .where(restocks.c.sku == bindparam("w_sku"), restocks.c.status == "open")
    .order_by(restocks.c.expected_date, restocks.c.restock_id)
)
_QUEUE_HEAD = (
    select(
        order_lines.c.line_id,
        order_lines.c.qty_waiting,
        order_lines.c.projected_date,
        order_lines.c.waits_for_restock_id,
        order_lines.c.queue_rank,
        order_lines.c.queued_at,
    )
    .where(order_lines.c.sku == bindparam("w_sku"), order_lines.c.qty_waiting > literal_column("0"))
    .order_by(order_lines.c.queue_rank, order_lines.c.queued_at, order_lines.c.line_id)
    .limit(bindparam("w_limit"))
)
_QUEUE_ON = _QUEUE_HEAD.where(_queue_key() > _key_of("w_after"))
_REHOME = (
    update(order_lines)
    .where(order_lines.c.line_id == bindparam("b_line"))
    .values(waits_for_restock_id=bindparam("b_restock"))
)
_QUEUE_MARKS = insert(queue_marks)


def _wipe_statement(after: bool, upto: bool) -> Any:
    """The queue marks of a stretch walked: past ``q_after`` (``after``), up to ``q_upto``
    (``upto``; else to the back of the queue)."""

    def build() -> Any:
        m = queue_marks.c
        key = tuple_(m.queue_rank, m.queued_at, m.line_id)
        wipe = delete(queue_marks).where(m.sku == bindparam("q_sku"))
        if after:
            wipe = wipe.where(key > _key_of("q_after"))
        if upto:
            wipe = wipe.where(key <= _key_of("q_upto"))
        return wipe

    return built_once(("wipe queue marks", after, upto), build)


def _walk_cursor(**cursor: Any) -> Any:
    p = sku_projections.c
    return (
        update(sku_projections)
        .where(p.sku == bindparam("p_sku"))
        .values(moved=p.moved + bindparam("p_moved", type_=p.moved.type), **cursor)
    )


_WALK_DONE = _walk_cursor(
    pending=False, after_rank=None, after_at=None, after_line=None, need_before=0, lines_before=0
)
_WALK_ON = _walk_cursor(
    after_rank=bindparam("p_rank", type_=sku_projections.c.after_rank.type),
    after_at=bindparam("p_at", type_=sku_projections.c.after_at.type),
    after_line=bindparam("p_line", type_=sku_projections.c.after_line.type),
    need_before=bindparam("p_need", type_=sku_projections.c.need_before.type),
    lines_before=bindparam("p_ahead", type_=sku_projections.c.lines_before.type),
)


def _move_statement(conn: AsyncConnection) -> Any:
    c = order_lines.c
    return (
        update(order_lines)
        .where(in_list(conn.dialect.name, c.line_id, id_list("b_lines")))
        .values(
            # The right-hand side sees the row as it was: the old date becomes the previous.
            previous_projected_date=c.projected_date,
            projected_date=bindparam("b_date", type_=c.projected_date.type),
            projected_changed_at=bindparam("b_now", type_=c.projected_changed_at.type),
            waits_for_restock_id=bindparam("b_restock", type_=c.waits_for_restock_id.type),
        )
    )


async def _walk(
    conn: AsyncConnection,
    row: Any,
    limit: int,
    *,
    mark: bool = True,
    most_written: int | None = None,
) -> _Walk:
    """One step of a claimed walk: up to ``limit`` waiting lines from the cursor, each given
    the open restock that covers its last unit (project_dates's rule), the lines whose date or
    restock changed written and marked, the queue marks of the stretch rewritten, the cursor
    moved on (or the walk ended at the back of the queue). ``mark`` False: the lines written
    are left unmarked, for the caller to pass on (``_Walk.written``) in its transaction.
    ``most_written``: the walk stops before a line to write past that many (at least one
    line is walked)."""
    began = time.monotonic()
    sku = row.sku
    c = order_lines.c
    bounds = await _bounds(conn, sku)
    after = None
    if row.after_line is not None:
        after = (int(row.after_rank), row.after_at, int(row.after_line))
    need = int(row.need_before)
    ahead = int(row.lines_before)
    at = 0  # bounds[at] is the first restock whose range may still cover the running need
    moved: list[dict[str, Any]] = []
    moved_info: list[tuple[int, date | None, date | None, tuple[int, datetime, int]]] = []
    rehomed: list[dict[str, Any]] = []
    qmarks: list[dict[str, Any]] = []
    undated = 0
    cut = False
    lines: list[Any] = []  # the lines walked, in queue order
    exhausted = False  # the back of the queue was reached
    page_after = after
    # The lines are read a page at a time, no more than the lines left to write: read all
    # at once (``limit``, twice what may be written), every line of a queue that moves whole
    # (a big date change) was read twice, once by the batch that stopped before it.
    while not (cut or exhausted) and len(lines) < limit:
        so_far = len(moved) + len(rehomed)
        if most_written is not None and so_far >= most_written:
            break  # what follows is the next batch's, whether it moves or not
        page_size = limit - len(lines)
        if most_written is not None:
            page_size = min(page_size, max(most_written - so_far, WALK_PAGE_LEAST))
        params: dict[str, Any] = {"w_sku": sku, "w_limit": page_size}
        if page_after is None:
            page = (await conn.execute(_QUEUE_HEAD, params)).all()
        else:
            params.update(_key_params("w_after", page_after))
            page = (await conn.execute(_QUEUE_ON, params)).all()
        exhausted = len(page) < page_size
        for ln in page:
            after_line = need + int(ln.qty_waiting)
            covers = at
            while covers < len(bounds) and bounds[covers][0] < after_line:
                covers += 1
            rid, when = (
                (bounds[covers][1], bounds[covers][2]) if covers < len(bounds) else (None, None)
            )
            if (
                most_written is not None
                and len(moved) + len(rehomed) >= most_written
                and (when != ln.projected_date or rid != ln.waits_for_restock_id)
            ):
                cut = True  # the next batch goes on from this line
                break
            lines.append(ln)
            need, at = after_line, covers
            key = (int(ln.queue_rank), ln.queued_at, int(ln.line_id))
            if ahead % MARK_EVERY == 0:
                qmarks.append(
                    {
                        "sku": sku,
                        "queue_rank": key[0],
                        "queued_at": key[1],
                        "line_id": key[2],
                        "lines_before": ahead,
                    }
                )
            ahead += 1
            undated += when is None
            if when != ln.projected_date:
                moved.append({"b_line": key[2], "b_date": when, "b_restock": rid})
                moved_info.append((key[2], ln.projected_date, when, key))
            elif rid != ln.waits_for_restock_id:
                rehomed.append({"b_line": key[2], "b_restock": rid})
        if lines:
            page_after = (int(lines[-1].queue_rank), lines[-1].queued_at, int(lines[-1].line_id))
    done = not cut and exhausted
    last = (
        (int(lines[-1].queue_rank), lines[-1].queued_at, int(lines[-1].line_id)) if lines else None
    )
    if conn.dialect.name == "postgresql" and (moved or rehomed):
        # Never wait for a line's lock while holding the SKU's row (a change holding the line
        # may be waiting for the row): the walk stops before the first line it cannot lock,
        # and a later batch goes on from there.
        want = sorted(d["b_line"] for d in (*moved, *rehomed))
        got = set(
            (
                await conn.execute(
                    select(c.line_id)
                    .where(c.line_id.in_(want))
                    .order_by(c.line_id)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if len(got) < len(want):
            locked = set(want) - got
            stop = next(i for i, ln in enumerate(lines) if int(ln.line_id) in locked)
            kept = {int(ln.line_id) for ln in lines[:stop]}
            moved = [d for d in moved if d["b_line"] in kept]
            moved_info = [m for m in moved_info if m[0] in kept]
            rehomed = [d for d in rehomed if d["b_line"] in kept]
            qmarks = [m for m in qmarks if m["line_id"] in kept]
            need = int(row.need_before) + sum(int(ln.qty_waiting) for ln in lines[:stop])
            ahead = int(row.lines_before) + stop
            lines = lines[:stop]
            done = False
            last = (
                (int(lines[-1].queue_rank), lines[-1].queued_at, int(lines[-1].line_id))
                if lines
                else after
            )
    now = utcnow()
    # One UPDATE per new (date, restock), the lines' ids in a list: the lines a change moves
    # mostly share both. Row by row, SQLAlchemy's parameter processing (a timestamp per row)
    # cost more than SQLite's update.
    by_date: dict[tuple[date | None, str | None], list[int]] = {}
    for d in moved:
        by_date.setdefault((d["b_date"], d["b_restock"]), []).append(d["b_line"])
    move = built_once(("walk move", conn.dialect.name), lambda: _move_statement(conn))
    for (when, rid), ids in by_date.items():
        for at in range(0, len(ids), CHUNK):
            await conn.execute(
                move,
                {"b_lines": ids[at : at + CHUNK], "b_date": when, "b_now": now, "b_restock": rid},
            )
    if rehomed:
        await conn.execute(_REHOME, rehomed)
    # Every line written: a moved date or a new awaited restock is what the follow-on work
    # looks at again (store.marks).
    written = tuple(sorted(d["b_line"] for d in (*moved, *rehomed)))
    if mark:
        await mark_lines(conn, written)
    # The queue marks of the stretch walked, counted on from the cursor; at the back of the
    # queue, every mark beyond it goes too.
    if done or last != after:
        upto = None if done else last
        wipe: dict[str, Any] = {"q_sku": sku}
        if after is not None:
            wipe.update(_key_params("q_after", after))
        if upto is not None:
            wipe.update(_key_params("q_upto", upto))
        await conn.execute(_wipe_statement(after is not None, upto is not None), wipe)
    if qmarks:
        await conn.execute(_QUEUE_MARKS, qmarks)
    if done:
        await conn.execute(_WALK_DONE, {"p_sku": sku, "p_moved": len(moved)})
    else:
        await conn.execute(
            _WALK_ON,
            {
                "p_sku": sku,
                "p_moved": len(moved),
                "p_rank": None if last is None else last[0],
                "p_at": None if last is None else last[1],
                "p_line": None if last is None else last[2],
                "p_need": need,
                "p_ahead": ahead,
            },
        )
    if moved_info:
        await log_event(
            conn,
            "dates_projected",
            sku=sku,
            moved=len(moved_info),
            sample=[[i, old, new] for i, old, new, _ in moved_info[:50]],
        )
    stalled = not done and not lines
    return _Walk(
        sku, len(lines), undated, moved_info, done, time.monotonic() - began, stalled, written
    )


async def projection_batch(
    conn: AsyncConnection,
    *,
    limit: int = PROJECTION_BATCH,
    sku: str | None = None,
    mark: bool = True,
    most_written: int | None = None,
) -> ProjectionRun:
    """One bounded step of the projection, in the caller's transaction: the SKU waiting
    longest for its projection (or ``sku``) claimed, up to ``limit`` of its waiting lines
    walked from its cursor; when its walk ends below ``limit``, the next SKU waiting claimed
    and walked on with what is left of it (not with ``sku``). ``more`` is False when no SKU
    was pending (or free to claim). ``mark`` False: the lines written are not marked for the
    follow-on work but returned (``written``): the caller does that work, or marks them, in
    the same transaction (store.delays.follow_on_batch). ``most_written``: at most that many
    lines written (the walk stops before the next one to write)."""
    # Many short queues change at once (the policy's cancellations on a deadline day: 9,072
    # SKUs, 26 lines each): one SKU a batch spent more on the batches' commits and turns
    # than on the walks (37 s for 234,710 lines).
    lines = moved = finished = claimed = 0
    seconds = 0.0
    written: list[int] = []
    while True:
        row = await _claim(conn, sku)
        if row is None:
            more = False
            break
        claimed = 1
        left = None if most_written is None else most_written - len(written)
        w = await _walk(conn, row, limit - lines, mark=mark, most_written=left)
        lines += w.lines
        moved += len(w.moved)
        finished += int(w.done)
        seconds += w.seconds
        written.extend(w.written)
        # A stalled walk ends the run: the next run (the next tick, the next command) goes on.
        more = not w.stalled
        if w.stalled or not w.done or sku is not None or lines >= limit:
            break
        if most_written is not None and len(written) >= most_written:
            break
    return ProjectionRun(lines, moved, claimed, more, finished, seconds, tuple(written))


async def run_projection(
    store: Any,
    *,
    batch_size: int = PROJECTION_BATCH,
    max_batches: int | None = None,
    on_batch: Callable[[ProjectionRun], None] | None = None,
) -> ProjectionRun:
    """The projections the changes so far owe, in batches each in its own short transaction,
    until none is pending (or ``max_batches``). Any number of processes may run it at once;
    a crash between two batches leaves the cursor where the last commit put it."""
    from store.marks import run_batches

    return await run_batches(
        store,
        lambda conn: projection_batch(conn, limit=batch_size),
        ProjectionRun(0, 0),
        max_batches=max_batches,
        on_batch=on_batch,
    )


async def _project_now(conn: AsyncConnection, sku: str) -> Projection:
    """A change's projection of ``sku``, asked for already (request_projection, the change's
    first write): the head of its queue (INLINE_LINES lines) walked in the caller's
    transaction; a longer queue's rest is left to the batches. The moved lines and counts
    are those of the lines walked here."""
    row = await _claim(conn, sku)
    if row is None:  # asked for by the caller, so only a caller that did not ask
        await request_projection(conn, [sku])
        row = await _claim(conn, sku)
    w = await _walk(conn, row, INLINE_LINES)
    order_of: dict[int, int] = {}
    ids = [m[0] for m in w.moved]
    for part in _chunks(ids):
        for lr in await conn.execute(
            select(order_lines.c.line_id, order_lines.c.order_id).where(
                order_lines.c.line_id.in_(part)
            )
        ):
            order_of[int(lr[0])] = int(lr[1])
    moved = tuple(MovedLine(i, order_of[i], old, new) for i, old, new, _ in w.moved)
    return Projection(sku, w.lines, w.undated, moved, pending=not w.done)


# --- orders ------------------------------------------------------------------------------


async def _require_product(conn: AsyncConnection, sku: str) -> Any:
    row = (
        await conn.execute(
            select(
                products.c.sku,
                products.c.price_minor,
                products.c.currency,
                products.c.active,
                products.c.backorderable,
            ).where(products.c.sku == sku)
        )
    ).first()
    if row is None:
        raise NotFound(f"unknown SKU {sku}")
    return row


async def place_order(
    conn: AsyncConnection,
    order_number: str,
    customer_id: int,
    lines: Sequence[NewLine],
    *,
    placed_at: datetime | None = None,
    priority: int = 0,
) -> PlacedOrder:
    """Take an order: free stock is allocated at once, the rest of each line waits in the
    SKU's queue. Placing the same order number again with the same content changes nothing."""
    if not order_number.isdigit():
        raise StoreError(f"order number must be digits: {order_number!r}")
    if not lines:
        raise StoreError("an order needs at least one line")
    placed_at = placed_at or utcnow()
    existing = (
        await conn.execute(
            select(orders.c.order_id, orders.c.customer_id).where(
                orders.c.order_number == order_number
            )
        )
    ).first()
    if existing is not None:
        have = (
            await conn.execute(
                select(order_lines.c.sku, order_lines.c.qty_ordered)
                .where(order_lines.c.order_id == existing.order_id)
                .order_by(order_lines.c.line_no)
            )
        ).all()
        if existing.customer_id == customer_id and [(r.sku, r.qty_ordered) for r in have] == [
            (ln.sku, ln.qty) for ln in lines
        ]:
            return PlacedOrder(int(existing.order_id), order_number, False, ())
        raise Conflict(f"order {order_number} exists with different content")
    if (
        await conn.scalar(
            select(customers.c.customer_id).where(customers.c.customer_id == customer_id)
        )
        is None
    ):
        raise NotFound(f"unknown customer {customer_id}")

    prods = {}
    for ln in lines:
        if ln.qty <= 0:
            raise StoreError(f"{ln.sku}: quantity must be positive")
        p = await _require_product(conn, ln.sku)
        if not p.active:
            raise StoreError(f"{ln.sku} is discontinued")
        prods[ln.sku] = p
    currencies = {p.currency for p in prods.values()}
    if len(currencies) != 1:
        raise StoreError("all lines of an order must be in one currency")
    # The projection rows first, every change's first lock (see hold_projection); then the
    # stock rows, held from here to the commit: the free units checked below and allocated at
    # the end are not given to another order in between.
    await hold_projection(conn, list(prods))
    await _lock_stock(conn, list(prods))
    c = order_lines.c
    tails: dict[str, tuple[int, datetime]] = {}
    for sku in prods:
        tail = (
            await conn.execute(
                select(c.queue_rank, c.queued_at)
                .where(c.sku == sku, c.qty_waiting > literal_column("0"))
                .order_by(c.queue_rank.desc(), c.queued_at.desc(), c.line_id.desc())
                .limit(1)
            )
        ).first()
        if tail is not None:
            tails[sku] = (int(tail.queue_rank), tail.queued_at)
    for sku in prods:
        if not prods[sku].backorderable:
            want = sum(ln.qty for ln in lines if ln.sku == sku)
            if await free_stock(conn, sku) < want:
                raise StoreError(f"{sku} is out of stock and not sold on backorder")

    order_id = (
        await conn.execute(
            insert(orders)
            .values(
                order_number=order_number,
                customer_id=customer_id,
                placed_at=placed_at,
                priority=priority,
                currency=currencies.pop(),
            )
            .returning(orders.c.order_id)
        )
    ).scalar_one()
    line_ids: list[int] = []
    for no, ln in enumerate(lines, start=1):
        price = (
            ln.unit_price_minor
            if ln.unit_price_minor is not None
            else int(prods[ln.sku].price_minor)
        )
        line_id = (
            await conn.execute(
                insert(order_lines)
                .values(
                    order_id=order_id,
                    line_no=no,
                    sku=ln.sku,
                    qty_ordered=ln.qty,
                    qty_waiting=ln.qty,
                    unit_price_minor=price,
                    queue_rank=-priority,
                    queued_at=placed_at,
                )
                .returning(order_lines.c.line_id)
            )
        ).scalar_one()
        line_ids.append(int(line_id))
    await mark_lines(conn, line_ids)
    await log_event(
        conn, "order_placed", order_id=order_id, customer_id=customer_id, order_number=order_number
    )

    allocated: list[Allocation] = []
    key = (-priority, placed_at if placed_at.tzinfo else placed_at.replace(tzinfo=UTC))
    for sku in dict.fromkeys(ln.sku for ln in lines):
        allocs = await allocate_waiting(conn, sku)
        allocated.extend(allocs)
        # A line joining the back of the queue moves nobody's date: its own is found from the
        # units ahead of it. One that took free units or jumped the queue (a priority order)
        # changed the places behind it: the queue owes a projection.
        behind = allocs or (sku in tails and key < tails[sku])
        if behind:
            await request_projection(conn, [sku])
        mine = [i for i, ln in zip(line_ids, lines, strict=True) if ln.sku == sku]
        await _date_new_lines(conn, sku, mine, queue_mark=not behind)
        if behind:
            await _project_now(conn, sku)
    # What the customer is told at order time is the promise; later moves compare with it.
    await conn.execute(
        update(order_lines)
        .where(order_lines.c.order_id == order_id)
        .values(
            promised_date=order_lines.c.projected_date,
            last_told_date=order_lines.c.projected_date,
            last_told_at=utcnow(),
            # Units reserved at once were part of the order confirmation, not later news.
            told_ready_qty=order_lines.c.qty_allocated,
        )
    )
    return PlacedOrder(int(order_id), order_number, True, tuple(allocated))


async def _bounds(conn: AsyncConnection, sku: str) -> list[tuple[int, str, date]]:
    """The open restocks of ``sku`` in date order, each with the queue's units it covers up
    to (free stock first, then each restock's open quantity: project_dates's rule)."""
    cover = await free_stock(conn, sku)
    bounds: list[tuple[int, str, date]] = []
    for rr in await conn.execute(_COVER, {"w_sku": sku}):
        cover += int(rr[2])
        bounds.append((cover, rr[0], rr[1]))
    return bounds


async def _date_new_lines(
    conn: AsyncConnection, sku: str, line_ids: Sequence[int], *, queue_mark: bool
) -> None:
    """The projected dates of new lines of ``sku`` still waiting, each from the waiting units
    ahead of it in the queue and the open restocks (project_dates's rule and writes: the
    covering restock's date, stamped as a change from none), whatever a walk of the queue has
    reached: the date the walk would give. ``queue_mark``: the lines joined the back of the
    queue, and one of them that falls on a MARK_EVERY-th place gets its queue mark."""
    c = order_lines.c
    bounds = await _bounds(conn, sku)
    now = utcnow()
    moved: list[list[Any]] = []
    for line_id in line_ids:
        ln = (
            await conn.execute(
                select(c.qty_waiting, c.queue_rank, c.queued_at, c.projected_date).where(
                    c.line_id == line_id
                )
            )
        ).one()
        if ln.qty_waiting <= 0:
            continue
        key = (int(ln.queue_rank), ln.queued_at, line_id)
        ahead_lines, ahead_units = (
            await conn.execute(
                select(func.count(), func.coalesce(func.sum(c.qty_waiting), 0)).where(
                    c.sku == sku,
                    c.qty_waiting > literal_column("0"),
                    _queue_key() < _key_value(key),
                )
            )
        ).one()
        need = int(ahead_units) + int(ln.qty_waiting)
        found = next(((rid, when) for hi, rid, when in bounds if hi >= need), None)
        if queue_mark and int(ahead_lines) % MARK_EVERY == 0:
            await conn.execute(
                insert(queue_marks).values(
                    sku=sku,
                    queue_rank=key[0],
                    queued_at=key[1],
                    line_id=line_id,
                    lines_before=int(ahead_lines),
                )
            )
        if found is None or found[1] == ln.projected_date:
            continue
        await conn.execute(
            update(order_lines)
            .where(c.line_id == line_id)
            .values(
                previous_projected_date=c.projected_date,
                projected_date=found[1],
                projected_changed_at=now,
                waits_for_restock_id=found[0],
            )
        )
        moved.append([line_id, ln.projected_date, found[1]])
    if moved:
        await log_event(conn, "dates_projected", sku=sku, moved=len(moved), sample=moved[:50])


# --- restocks ----------------------------------------------------------------------------


async def _restock(conn: AsyncConnection, restock_id: str) -> Any:
    row = (
        await conn.execute(
            select(
                restocks.c.restock_id,
                restocks.c.sku,
                restocks.c.qty,
                restocks.c.expected_date,
                restocks.c.status,
                restocks.c.qty_received,
            ).where(restocks.c.restock_id == restock_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"unknown restock {restock_id}")
    return row


async def receive_restock(
    conn: AsyncConnection, restock_id: str, qty: int | None = None
) -> Receipt:
    """Book a restock as received (``qty`` units, default the quantity ordered): waiting
    lines are filled first come first served, the rest becomes free stock."""
    r = await _restock(conn, restock_id)
    if r.status == "received":
        return Receipt(restock_id, r.sku, False, int(r.qty_received), (), 0, None)
    if r.status == "cancelled":
        raise Conflict(f"restock {restock_id} is cancelled")
    got = int(r.qty if qty is None else qty)
    if got < 0:
        raise StoreError("received quantity cannot be negative")

    async def book() -> None:
        now = utcnow()
        await conn.execute(
            update(restocks)
            .where(restocks.c.restock_id == restock_id)
            .values(status="received", qty_received=got, received_at=now, updated_at=now)
        )
        await _ensure_stock_row(conn, r.sku)
        await conn.execute(
            update(stock)
            .where(stock.c.sku == r.sku)
            .values(on_hand=stock.c.on_hand + got, updated_at=now)
        )
        await log_event(conn, "restock_received", sku=r.sku, restock_id=restock_id, qty=got)

    # The projection of the queue behind the lines given units goes on in the projection's
    # batches when it is longer than INLINE_LINES.
    allocs, finished = await _give_out(conn, r.sku, book)
    proj = await _project_now(conn, r.sku)
    left = got - sum(a.qty for a in allocs)
    return Receipt(
        restock_id, r.sku, True, got, allocs, left if finished else 0, proj, not finished
    )


async def change_restock_date(
    conn: AsyncConnection, restock_id: str, new_date: date, reason: str
) -> Projection | None:
    """Move an open restock's expected date, keeping the change and its reason. None if the
    date is already ``new_date``."""
    if not reason.strip():
        raise StoreError("a date change needs a reason")
    r = await _restock(conn, restock_id)
    if r.status != "open":
        raise Conflict(f"restock {restock_id} is {r.status}")
    if r.expected_date == new_date:
        return None
    await request_projection(conn, [r.sku])
    now = utcnow()
    await conn.execute(
        update(restocks)
        .where(restocks.c.restock_id == restock_id)
        .values(expected_date=new_date, updated_at=now)
    )
    await conn.execute(
        insert(restock_date_changes).values(
            restock_id=restock_id,
            old_date=r.expected_date,
            new_date=new_date,
            reason=reason.strip(),
            changed_at=now,
        )
    )
    await log_event(
        conn,
        "restock_date_changed",
        sku=r.sku,
        restock_id=restock_id,
        old=r.expected_date,
        new=new_date,
        reason=reason,
    )
    return await _project_now(conn, r.sku)


async def cancel_restock(
    conn: AsyncConnection, restock_id: str, reason: str = ""
) -> Projection | None:
    r = await _restock(conn, restock_id)
    if r.status == "cancelled":
        return None
    if r.status != "open":
        raise Conflict(f"restock {restock_id} is {r.status}")
    await request_projection(conn, [r.sku])
    await conn.execute(
        update(restocks)
        .where(restocks.c.restock_id == restock_id)
        .values(status="cancelled", updated_at=utcnow())
    )
    await log_event(conn, "restock_cancelled", sku=r.sku, restock_id=restock_id, reason=reason)
    return await _project_now(conn, r.sku)


# --- cancelling and shipping -------------------------------------------------------------


async def _order_row(conn: AsyncConnection, order_number: str, customer_id: int | None) -> Any:
    q = select(orders.c.order_id, orders.c.customer_id).where(orders.c.order_number == order_number)
    if customer_id is not None:
        q = q.where(orders.c.customer_id == customer_id)
    row = (await conn.execute(q)).first()
    if row is None:
        raise NotFound(f"no order {order_number}")
    return row


async def _cancel_lines(
    conn: AsyncConnection, rows: Sequence[Any], reason: str, *, project: bool = True
) -> Cancellation:
    """Cancel what is left of ``rows`` (read under their locks), in a few statements however
    many: their allocations pass on to the next waiting lines of each SKU once, after all of
    them (first come, first served with partial fills: the same lines get the same units as
    one line after another would give them). ``project``: the head of each SKU's queue is
    walked now (_project_now); else all of it is left to the projection's batches."""
    c = order_lines.c
    left = [r for r in rows if _left_of(r) > 0]
    released_by_sku: dict[str, int] = {}
    for r in left:
        released_by_sku[r.sku] = released_by_sku.get(r.sku, 0) + int(r.qty_allocated)
    if left:
        ids = [int(r.line_id) for r in left]
        await conn.execute(
            update(order_lines)
            .where(in_ids(conn, c.line_id, ids))
            .values(
                qty_cancelled=c.qty_cancelled + c.qty_waiting + c.qty_allocated,
                qty_waiting=0,
                qty_allocated=0,
                waits_for_restock_id=None,
            )
        )
        await mark_lines(conn, ids)
        await log_events(
            conn,
            "line_cancelled",
            [
                {
                    "sku": r.sku,
                    "order_id": r.order_id,
                    "line_id": r.line_id,
                    "qty": _left_of(r),
                    "reason": reason,
                }
                for r in left
            ],
        )
    total = sum(_left_of(r) for r in left)
    realloc: list[Allocation] = []
    projs: list[Projection] = []
    for sku, released in sorted(released_by_sku.items()):
        if released:
            await conn.execute(
                update(stock)
                .where(stock.c.sku == sku)
                .values(allocated=stock.c.allocated - released, updated_at=utcnow())
            )
            realloc.extend(await allocate_waiting(conn, sku))
        if project:
            projs.append(await _project_now(conn, sku))
    return Cancellation(
        total > 0, total, sum(released_by_sku.values()), tuple(realloc), tuple(projs)
    )


def _left_of(line: Any) -> int:
    """What a cancellation of the line (read as _LINE_COLS) takes: its units not shipped."""
    return int(line.qty_waiting) + int(line.qty_allocated)


async def _ask_before_cancel(conn: AsyncConnection, which: ColumnElement[bool]) -> None:
    """The projection of the SKUs of the lines about to be cancelled, asked for before the
    lines are locked: the projection row is every change's first lock (see hold_projection).
    Only lines with something left to cancel: a repeated cancel changes nothing."""
    c = order_lines.c
    skus = await conn.scalars(
        select(c.sku).where(which, (c.qty_waiting > 0) | (c.qty_allocated > 0)).distinct()
    )
    await request_projection(conn, list(skus))


_LINE_COLS = (
    order_lines.c.line_id,
    order_lines.c.order_id,
    order_lines.c.sku,
    order_lines.c.qty_waiting,
    order_lines.c.qty_allocated,
)


async def cancel_line(
    conn: AsyncConnection,
    order_number: str,
    line_no: int,
    *,
    customer_id: int | None = None,
    reason: str = "",
) -> Cancellation:
    """Cancel what is not shipped of one line; its allocation passes to the next waiting
    line. ``customer_id`` scopes the change to that customer's order (None: an operator)."""
    o = await _order_row(conn, order_number, customer_id)
    await _ask_before_cancel(
        conn, (order_lines.c.order_id == o.order_id) & (order_lines.c.line_no == line_no)
    )
    rows = (
        await conn.execute(
            select(*_LINE_COLS)
            .where(order_lines.c.order_id == o.order_id, order_lines.c.line_no == line_no)
            .with_for_update()  # what is left to cancel, read under the line's lock
        )
    ).all()
    if not rows:
        raise NotFound(f"order {order_number} has no line {line_no}")
    return await _cancel_lines(conn, rows, reason)


async def cancel_lines(
    conn: AsyncConnection, line_ids: Sequence[int], *, reason: str
) -> dict[int, int]:
    """Cancel what is not shipped of each of ``line_ids``, lines of any orders (the delay
    policy's deadlines, a batch of them at once), as ``cancel_line`` one after another would;
    the units cancelled, by line (0: nothing was left). The projection of their SKUs is asked
    for and left to its batches: a batch's lines are of many SKUs (18 in 20 on the 1M-order
    store), and walking the head of each queue now cost 2.5 ms a SKU."""
    c = order_lines.c
    which = in_ids(conn, c.line_id, sorted(set(line_ids)))
    await _ask_before_cancel(conn, which)
    rows = (
        await conn.execute(
            select(*_LINE_COLS)
            .where(which)
            .order_by(c.line_id)
            .with_for_update()  # in line order, as cancel_order takes an order's lines
        )
    ).all()
    await _cancel_lines(conn, rows, reason, project=False)
    return {int(r.line_id): _left_of(r) for r in rows}


async def cancel_order(
    conn: AsyncConnection, order_number: str, *, customer_id: int | None = None, reason: str = ""
) -> Cancellation:
    o = await _order_row(conn, order_number, customer_id)
    await _ask_before_cancel(conn, order_lines.c.order_id == o.order_id)
    rows = (
        await conn.execute(
            select(*_LINE_COLS)
            .where(order_lines.c.order_id == o.order_id)
            .order_by(order_lines.c.line_no)
            .with_for_update()  # lines locked in line order: two cancels take turns
        )
    ).all()
    result = await _cancel_lines(conn, rows, reason)
    if result.changed:
        await conn.execute(
            update(orders).where(orders.c.order_id == o.order_id).values(cancelled_at=utcnow())
        )
    return result


async def ship(
    conn: AsyncConnection,
    shipment_id: str,
    order_number: str,
    *,
    carrier: str,
    tracking_number: str | None,
    shipped_on: date,
    lines: dict[int, int] | None = None,
) -> Shipped:
    """Ship allocated units of an order (``lines``: line number -> quantity; default all
    allocated units). The same shipment id again changes nothing."""
    o = await _order_row(conn, order_number, None)
    existing = (
        await conn.execute(
            select(shipments.c.order_id).where(shipments.c.shipment_id == shipment_id)
        )
    ).first()
    if existing is not None:
        if existing.order_id != o.order_id:
            raise Conflict(f"shipment {shipment_id} belongs to another order")
        got = (
            await conn.execute(
                select(shipment_lines.c.line_id, shipment_lines.c.qty).where(
                    shipment_lines.c.shipment_id == shipment_id
                )
            )
        ).all()
        return Shipped(
            shipment_id, False, tuple(Allocation(int(r.line_id), int(r.qty)) for r in got)
        )
    c = order_lines.c
    rows = (
        await conn.execute(
            select(c.line_id, c.line_no, c.sku, c.qty_allocated)
            .where(c.order_id == o.order_id)
            .order_by(c.line_no)
            .with_for_update()  # two shipments of the same units take turns
        )
    ).all()
    by_no = {int(r.line_no): r for r in rows}
    plan: list[tuple[int, str, int]] = []
    if lines is None:
        plan = [(int(r.line_id), r.sku, int(r.qty_allocated)) for r in rows if r.qty_allocated > 0]
    else:
        for no, qty in lines.items():
            r = by_no.get(no)
            if r is None:
                raise NotFound(f"order {order_number} has no line {no}")
            if qty <= 0:
                raise StoreError("shipped quantity must be positive")
            if qty > r.qty_allocated:
                raise Conflict(f"line {no} has only {r.qty_allocated} allocated, cannot ship {qty}")
            plan.append((int(r.line_id), r.sku, qty))
    if not plan:
        raise Conflict(f"order {order_number} has nothing allocated to ship")
    now = utcnow()
    await conn.execute(
        insert(shipments).values(
            shipment_id=shipment_id,
            order_id=o.order_id,
            carrier=carrier,
            tracking_number=tracking_number,
            shipped_on=shipped_on,
            created_at=now,
        )
    )
    await mark_lines(conn, (line_id for line_id, _, _ in plan))
    for line_id, sku, qty in plan:
        await conn.execute(
            insert(shipment_lines).values(shipment_id=shipment_id, line_id=line_id, qty=qty)
        )
        await conn.execute(
            update(order_lines)
            .where(c.line_id == line_id)
            .values(qty_allocated=c.qty_allocated - qty, qty_shipped=c.qty_shipped + qty)
        )
        await conn.execute(
            update(stock)
            .where(stock.c.sku == sku)
            .values(
                on_hand=stock.c.on_hand - qty, allocated=stock.c.allocated - qty, updated_at=now
            )
        )
    await log_event(
        conn,
        "shipped",
        order_id=o.order_id,
        customer_id=o.customer_id,
        shipment_id=shipment_id,
        carrier=carrier,
        tracking=tracking_number,
    )
    return Shipped(shipment_id, True, tuple(Allocation(li, q) for li, _, q in plan))


# --- a file of orders ----------------------------------------------------------------------


@dataclass(frozen=True)
class OrderIn:
    order_number: str
    customer_id: int
    lines: tuple[NewLine, ...]
    placed_at: datetime
    priority: int = 0


def _chunks(items: Sequence[Any], size: int = 5000) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass(frozen=True)
class _Product:
    price_minor: int
    currency: str
    active: bool
    backorderable: bool


@dataclass
class _Queues:
    """What placing a file reads of its SKUs, and decides from: each SKU's product, stock,
    open restocks and waiting queue, and ``seen``, the row that tells whether any of them
    changed since (``_check_rows``)."""

    seen: dict[str, tuple[Any, ...]]
    prods: dict[str, _Product]
    stocked: dict[str, tuple[int, int]]  # (on_hand, allocated) of the SKUs with a stock row
    tail: dict[str, tuple[int, datetime]]  # the last waiting line's (queue_rank, queued_at)
    queued: dict[str, tuple[int, int]]  # waiting lines and units
    opens: dict[str, list[tuple[str, date, int]]]  # open restocks in date order, units left

    def merged(self, other: _Queues, skus: Sequence[str]) -> _Queues:
        """These, with what ``other`` read of ``skus`` instead."""
        again = set(skus)

        def pick(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in mine.items() if k not in again}
            out.update((k, v) for k, v in theirs.items() if k in again)
            return out

        return _Queues(
            pick(self.seen, other.seen),
            pick(self.prods, other.prods),
            pick(self.stocked, other.stocked),
            pick(self.tail, other.tail),
            pick(self.queued, other.queued),
            pick(self.opens, other.opens),
        )


@dataclass(frozen=True)
class _Decision:
    """How a file's lines are placed: the SKUs whose new lines are dated and given free units
    here (``direct``: no free stock; ``simple``: free stock and no waiting line), the others
    (``rest``: allocated and projected after the insert), the waiting lines ahead of the new
    ones per SKU, and each new line's (order index, line no) free units and restock."""

    direct: list[str]
    simple: list[str]
    rest: list[str]
    ahead: dict[str, int]
    dated: dict[tuple[int, int], tuple[str, date] | None]
    given: dict[tuple[int, int], int]


class _DriverInsert:
    """An INSERT for the driver's executemany, and the conversion of each value as SQLAlchemy
    binds it: rows converted before the write lock go to the driver as they are inside it
    (SQLAlchemy's processing of a 2,000-order file's parameters was about 50 ms of CPU under
    the lock)."""

    def __init__(
        self, dialect: Any, table: Table, columns: Sequence[str], *, ignore: bool = False
    ) -> None:
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)})"
            f" VALUES ({', '.join(':' + col for col in columns)})"
            + (" ON CONFLICT DO NOTHING" if ignore else "")
        )
        compiled = text(sql).compile(dialect=dialect)  # the driver's parameter style
        assert list(compiled.positiontup or ()) == list(columns), compiled.positiontup
        self.sql = str(compiled)
        self._convert = [
            table.c[col].type.dialect_impl(dialect).bind_processor(dialect) for col in columns
        ]

    def row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(v if f is None else f(v) for f, v in zip(self._convert, values, strict=True))

    def value(self, at: int, value: Any) -> Any:
        f = self._convert[at]
        return value if f is None else f(value)

    def as_is(self, *at: int) -> bool:
        """Whether the values at these places go to the driver unconverted."""
        return all(self._convert[i] is None for i in at)


class _NewRow(NamedTuple):
    order_at: int  # the order's index in the file
    line_no: int
    sku: str
    qty_allocated: int
    qty_waiting: int
    queue_rank: int
    queued_at: datetime
    projected_date: date | None


# Every column place_orders writes of a new line but its order's id and the two time stamps
# of the write (written last: they are known only under the write lock).
_LINE_COLUMNS = (
    "line_no",
    "sku",
    "qty_ordered",
    "qty_allocated",
    "qty_waiting",
    "unit_price_minor",
    "queue_rank",
    "queued_at",
    "waits_for_restock_id",
    "projected_date",
    "promised_date",
    "last_told_date",
    "told_ready_qty",
)


@dataclass(frozen=True)
class _Rows:
    """A decided file's new rows, converted for the driver before the write lock."""

    orders: _DriverInsert
    order_rows: list[tuple[Any, ...]]
    lines: _DriverInsert
    line_rows: list[tuple[Any, ...]]  # _LINE_COLUMNS' values
    new: list[_NewRow]
    placed: _DriverInsert  # each order's 'order_placed' event
    marks: _DriverInsert


def _rows(dialect: Any, new: Sequence[OrderIn], prods: dict[str, _Product], d: _Decision) -> _Rows:
    """The rows of ``new`` placed as ``d`` decided: what log_event, _dated_line and the
    one-by-one path write, field for field."""
    orders_in = _DriverInsert(
        dialect, orders, ("order_number", "customer_id", "placed_at", "priority", "currency")
    )
    lines_in = _DriverInsert(
        dialect, order_lines, ("order_id", *_LINE_COLUMNS, "projected_changed_at", "last_told_at")
    )
    order_rows = [
        orders_in.row(
            (o.order_number, o.customer_id, o.placed_at, o.priority, prods[o.lines[0].sku].currency)
        )
        for o in new
    ]
    line_rows: list[tuple[Any, ...]] = []
    rows: list[_NewRow] = []
    for i, o in enumerate(new):
        for no, ln in enumerate(o.lines, start=1):
            given = d.given.get((i, no), 0)
            restock_id, when = d.dated.get((i, no)) or (None, None)
            price = ln.unit_price_minor
            values = (
                no,
                ln.sku,
                ln.qty,
                given,
                ln.qty - given,
                prods[ln.sku].price_minor if price is None else price,
                -o.priority,
                o.placed_at,
                restock_id,
                when,
                # What the customer is told at order time is the promise; units reserved at
                # once were part of the order confirmation, not later news.
                when,
                when,
                given,
            )
            # Converted as the insert binds them, the order's id (None here) first.
            line_rows.append(lines_in.row((None, *values, None, None))[1:-2])
            rows.append(
                _NewRow(i, no, ln.sku, given, ln.qty - given, -o.priority, o.placed_at, when)
            )
    placed = _DriverInsert(dialect, events, ("at", "kind", "order_id", "customer_id", "data"))
    # Written under the lock as they come (ids, numbers, strings), but for the time stamps.
    assert lines_in.as_is(0) and placed.as_is(1, 2, 3, 4)
    return _Rows(
        orders_in,
        order_rows,
        lines_in,
        line_rows,
        rows,
        placed,
        _DriverInsert(dialect, follow_on_marks, ("stage", "line_id"), ignore=True),
    )


@dataclass(frozen=True)
class OrdersPlan:
    """A file's placing decided from reads alone (``plan_orders``), before the write
    transaction; ``place_orders`` checks in it that nothing it read has moved."""

    new: tuple[OrderIn, ...]
    skus: list[str]
    queues: _Queues
    decision: _Decision
    rows: _Rows


def _check_query(skus: Sequence[str]) -> Any:
    """Per SKU, everything a file's placing read of it that another change could move: the
    product, the stock row, the projection's generation (bumped by every change to the SKU's
    restocks, free stock or queue but a line joining its back: request_projection) and the
    last waiting line (which such a line changes), and whether a receipt's allocation is
    under way (sku_allocations). Equal rows, equal decisions."""
    p = products.c
    c = order_lines.c
    last = (
        select(c.line_id)
        .where(c.sku == p.sku, c.qty_waiting > literal_column("0"))  # the partial queue index
        .order_by(c.queue_rank.desc(), c.queued_at.desc(), c.line_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(
            p.sku,
            p.price_minor,
            p.currency,
            p.active,
            p.backorderable,
            stock.c.on_hand,
            stock.c.allocated,
            func.coalesce(sku_projections.c.generation, 0),
            last,
            sku_allocations.c.sku,
        )
        .select_from(
            products.outerjoin(stock, stock.c.sku == p.sku)
            .outerjoin(sku_projections, sku_projections.c.sku == p.sku)
            .outerjoin(sku_allocations, sku_allocations.c.sku == p.sku)
        )
        .where(p.sku.in_(skus))
    )


async def _check_rows(conn: AsyncConnection, skus: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    seen: dict[str, tuple[Any, ...]] = {}
    for part in _chunks(list(skus)):
        for row in await conn.execute(_check_query(part)):
            seen[row[0]] = tuple(row[1:])
    return seen


async def _read_queues(conn: AsyncConnection, skus: Sequence[str]) -> _Queues:
    """The state of ``skus`` that a file's placing decides from. The check rows are read
    first: what is read after them is at least as new, so when the rows read again under the
    write lock are equal, nothing read here has moved since."""
    q = _Queues(await _check_rows(conn, skus), {}, {}, {}, {}, {})
    for sku, row in q.seen.items():
        q.prods[sku] = _Product(int(row[0]), row[1], bool(row[2]), bool(row[3]))
        if row[4] is not None:
            q.stocked[sku] = (int(row[4]), int(row[5]))
    c = order_lines.c
    rs = restocks.c
    waiting = c.qty_waiting > literal_column("0")  # a literal: the queue index is partial
    for part in _chunks(list(skus)):
        # Each SKU's queue as it is, in one pass over the queue index: its tail, waiting
        # lines and units.
        for tr in await conn.execute(
            select(
                c.sku, c.queue_rank, func.max(c.queued_at), func.count(), func.sum(c.qty_waiting)
            )
            .where(c.sku.in_(part), waiting)
            .group_by(c.sku, c.queue_rank)
        ):
            key = (int(tr[1]), tr[2] if tr[2].tzinfo else tr[2].replace(tzinfo=UTC))
            if tr[0] not in q.tail or key > q.tail[tr[0]]:
                q.tail[tr[0]] = key
            n, u = q.queued.get(tr[0], (0, 0))
            q.queued[tr[0]] = (n + int(tr[3]), u + int(tr[4] or 0))
        for rr in await conn.execute(
            select(rs.sku, rs.restock_id, rs.expected_date, rs.qty - rs.qty_received)
            .where(rs.sku.in_(part), rs.status == "open")
            .order_by(rs.sku, rs.expected_date, rs.restock_id)
        ):
            q.opens.setdefault(rr[0], []).append((rr[1], rr[2], int(rr[3])))
    return q


def _decide(new: Sequence[OrderIn], skus: Sequence[str], q: _Queues) -> _Decision | None:
    """place_orders's rule on the state ``q``: None when the file is not placed whole."""
    stocked, queued = q.stocked, q.queued
    tail = dict(q.tail)
    free = {s: max(0, on - al) for s, (on, al) in stocked.items()}
    for sku, (_, units) in queued.items():
        if sku in free:
            free[sku] = max(0, free[sku] - units)  # the store's waiting lines first
    for o in new:
        ps = [q.prods.get(ln.sku) for ln in o.lines]
        if any(p is None or not p.active for p in ps) or len({p and p.currency for p in ps}) != 1:
            return None
        key = (-o.priority, o.placed_at.astimezone(UTC))
        for sku in dict.fromkeys(ln.sku for ln in o.lines):
            if sku in tail and key < tail[sku]:
                return None  # joins ahead of a waiting line
            tail[sku] = key
            want = sum(ln.qty for ln in o.lines if ln.sku == sku)
            if not q.prods[sku].backorderable and free.get(sku, 0) < want:
                return None
        for ln in o.lines:
            give = min(free.get(ln.sku, 0), ln.qty)
            if give:
                free[ln.sku] -= give

    # A SKU with no free stock allocates nothing: its new lines only join the back of its
    # queue, so nobody else's date changes and theirs are found here, from the units waiting
    # ahead of them and the open restocks (project_dates's rule), and written with the lines.
    # A SKU with free stock and no line waiting ("simple") gives its free units to its new
    # lines in file order (the queue's order: each joins the back), here too, as
    # allocate_waiting would; the rest of them wait, dated from the restocks alone (no free
    # unit is left once a line waits). A SKU with free stock and waiting lines (free units
    # the store has not given out) is allocated and projected after the insert, as before.
    # A SKU whose receipt's allocation is under way (sku_allocations) keeps its free units
    # for the batches, in queue order: its new lines join the back of the queue and are dated
    # from the units ahead of them, the free units counting as the first restock's (the
    # projection's rule).
    owed = {s for s, row in q.seen.items() if row[8] is not None}
    direct = [
        s for s in skus if stocked.get(s, (0, 0))[0] <= stocked.get(s, (0, 0))[1] or s in owed
    ]
    no_free = set(direct)
    simple = [s for s in skus if s not in no_free and s in stocked and s not in queued]
    left = {s: stocked[s][0] - stocked[s][1] for s in simple}
    bounds: dict[str, list[tuple[int, str, date]]] = {}
    for s in (*direct, *simple):
        cover = 0 if s in left else stocked.get(s, (0, 0))[0] - stocked.get(s, (0, 0))[1]
        bounds[s] = []
        for rid, when, units in q.opens.get(s, []):
            cover += units
            bounds[s].append((cover, rid, when))
    need = {s: queued.get(s, (0, 0))[1] for s in bounds}
    ahead = {s: queued.get(s, (0, 0))[0] for s in bounds}
    dated: dict[tuple[int, int], tuple[str, date] | None] = {}
    given: dict[tuple[int, int], int] = {}
    for i, o in enumerate(new):
        for no, ln in enumerate(o.lines, start=1):
            if ln.sku not in need:
                continue
            wait = ln.qty
            if ln.sku in left:
                given[(i, no)] = give = min(left[ln.sku], ln.qty)
                left[ln.sku] -= give
                wait -= give
                if wait == 0:
                    continue
            need[ln.sku] += wait
            # The first restock whose cumulative units cover the line's last unit.
            dated[(i, no)] = next(
                ((rid, when) for hi, rid, when in bounds[ln.sku] if hi >= need[ln.sku]), None
            )
    rest = [s for s in skus if s not in bounds]
    return _Decision(direct, simple, rest, ahead, dated, given)


async def plan_orders(
    conn: AsyncConnection, new: Sequence[OrderIn], *, hold: bool = False
) -> OrdersPlan | None:
    """Decide how ``place_orders`` places a file, from reads alone: run before the write
    transaction (on any connection), it keeps the reads and the deciding out of the write
    lock, and place_orders(conn, new, plan) then checks that nothing read has moved (or
    decides again for the SKUs that did). None: the file is not placed whole (see
    place_orders). ``hold``: inside place_orders's transaction, the SKUs held before they are
    read (_hold_file_skus)."""
    numbers = [o.order_number for o in new]
    skus = list(dict.fromkeys(ln.sku for o in new for ln in o.lines))
    cids = list({o.customer_id for o in new})
    if len(set(numbers)) != len(numbers) or any(
        not o.order_number.isdigit() or not o.lines or any(ln.qty <= 0 for ln in o.lines)
        for o in new
    ):
        return None
    if await _any_order(conn, numbers):
        return None  # a re-import: compared order by order
    known: set[int] = set()
    for part in _chunks(cids):
        known.update(
            await conn.scalars(
                select(customers.c.customer_id).where(customers.c.customer_id.in_(part))
            )
        )
    # Customers are never deleted: one known now is known under the write lock.
    if any(o.customer_id not in known for o in new):
        return None
    if hold:
        await _hold_file_skus(conn, skus)
    queues = await _read_queues(conn, skus)
    decision = _decide(new, skus, queues)
    if decision is None:
        return None
    rows = _rows(conn.dialect, new, queues.prods, decision)
    return OrdersPlan(tuple(new), skus, queues, decision, rows)


async def _any_order(conn: AsyncConnection, numbers: Sequence[str]) -> bool:
    for part in _chunks(numbers):
        if (
            await conn.execute(select(orders.c.order_id).where(orders.c.order_number.in_(part)))
        ).first():
            return True
    return False


async def _hold_file_skus(conn: AsyncConnection, skus: Sequence[str]) -> None:
    """On PostgreSQL, the file's projection rows (every change's first lock, see
    hold_projection) and then its stock rows, in SKU order, held until the commit: another
    import or order reads what this one left of the free units, instead of both reading them
    free at READ COMMITTED and the second failing on ck_stock_allocated_within; and no change
    to these SKUs commits between the check and the insert. SQLite's write transactions run
    one at a time."""
    if conn.dialect.name == "sqlite":
        return
    await hold_projection(conn, skus)
    for part in _chunks(sorted(skus)):
        await conn.execute(
            select(stock.c.sku).where(stock.c.sku.in_(part)).order_by(stock.c.sku).with_for_update()
        )


async def place_orders(
    conn: AsyncConnection, new: Sequence[OrderIn], plan: OrdersPlan | None = None
) -> int | None:
    """Place a file's orders as ``place_order`` one after another would, with each touched
    SKU allocated and projected once at the end instead of once per order: the number of
    orders created, or None (nothing written) when that would not give exactly the same
    store, and the caller places them one by one.

    The same, because every new line joins the end of its SKU's queue: its key (priority,
    placed_at) is at or past every waiting line's before it, the store's and the file's.
    Then an order's allocation and projected date do not change when a later one joins, and
    one greedy allocation over the final queue is the sequence of per-order ones. Anything
    else (a line that jumps the queue, an order that exists, a refused order) returns None:
    the one-by-one path gives its own result or error.

    ``plan``: ``plan_orders(conn, new)``, read before this transaction (its orders are the
    ones placed). Here only the SKUs' check rows are read again (one indexed row each); the
    SKUs whose row moved are read and decided again, so the result is the same as without a
    plan."""
    if not new:
        return 0
    if plan is None:
        plan = await plan_orders(conn, new, hold=True)
        if plan is None:
            return None
    else:
        if await _any_order(conn, [o.order_number for o in new]):
            return None
        await _hold_file_skus(conn, plan.skus)
        seen = await _check_rows(conn, plan.skus)
        moved = [s for s in plan.skus if seen.get(s) != plan.queues.seen.get(s)]
        if moved:
            queues = plan.queues.merged(await _read_queues(conn, moved), moved)
            decision = _decide(plan.new, plan.skus, queues)
            if decision is None:
                return None
            rows = _rows(conn.dialect, plan.new, queues.prods, decision)
            plan = OrdersPlan(plan.new, plan.skus, queues, decision, rows)
    return await _insert_planned(conn, plan)


async def _insert_planned(conn: AsyncConnection, plan: OrdersPlan) -> int:
    new, skus, stocked, d, rows = (
        plan.new,
        plan.skus,
        plan.queues.stocked,
        plan.decision,
        plan.rows,
    )
    c = order_lines.c
    now = utcnow()
    # Plain executemany, then the ids read back past the highest before (this transaction's
    # and, on PostgreSQL, any committed since: kept by key): RETURNING in parameter order made
    # SQLite run one INSERT per row, and a key list of 2,000 was bound value by value.
    orders_before = await conn.scalar(select(func.max(orders.c.order_id))) or 0
    lines_before = await conn.scalar(select(func.max(c.line_id))) or 0
    for part in _chunks(rows.order_rows):
        await conn.exec_driver_sql(rows.orders.sql, list(part))
    wanted = {o.order_number for o in new}
    id_of: dict[str, int] = {}
    for got in await conn.execute(
        select(orders.c.order_number, orders.c.order_id).where(orders.c.order_id > orders_before)
    ):
        if got[0] in wanted:
            id_of[got[0]] = int(got[1])
    order_ids = [id_of[o.order_number] for o in new]
    stamp = rows.lines.value(-1, now)
    for part in _chunks(list(zip(rows.new, rows.line_rows, strict=True))):
        await conn.exec_driver_sql(
            rows.lines.sql,
            [
                (order_ids[r.order_at], *values, None if r.projected_date is None else stamp, stamp)
                for r, values in part
            ],
        )
    mine = set(order_ids)
    line_of: dict[tuple[int, int], int] = {}
    for lr in await conn.execute(
        select(c.order_id, c.line_no, c.line_id).where(c.line_id > lines_before)
    ):
        if lr[0] in mine:
            line_of[(int(lr[0]), int(lr[1]))] = int(lr[2])
    line_ids = [line_of[(order_ids[r.order_at], r.line_no)] for r in rows.new]
    # mark_lines's rows: every stage of every new line.
    marks = [(stage, i) for i in sorted(line_ids) for stage in STAGES]
    for part in _chunks(marks):
        await conn.exec_driver_sql(rows.marks.sql, list(part))
    await _join_queues(conn, rows.new, line_ids, [*d.direct, *d.simple], dict(d.ahead), now)
    gave: dict[str, list[int]] = {}
    for r in rows.new:
        if r.qty_allocated:
            gave.setdefault(r.sku, []).append(r.qty_allocated)
    if gave:
        await conn.execute(
            update(stock)
            .where(stock.c.sku == bindparam("b_sku"))
            .values(allocated=stock.c.allocated + bindparam("b_qty"), updated_at=now),
            [{"b_sku": sku, "b_qty": sum(q)} for sku, q in gave.items()],
        )
        await conn.execute(
            insert(events),
            [
                {
                    "at": now,
                    "kind": "allocated",
                    "sku": sku,
                    "order_id": None,
                    "line_id": None,
                    "restock_id": None,
                    "customer_id": None,
                    "data": json.dumps({"lines": len(q), "qty": sum(q)}, sort_keys=True),
                }
                for sku, q in gave.items()
            ],
        )
    # Each order's 'order_placed' event, log_event's row.
    at = rows.placed.value(0, now)
    for part in _chunks(list(zip(new, order_ids, strict=True))):
        await conn.exec_driver_sql(
            rows.placed.sql,
            [
                (
                    at,
                    "order_placed",
                    oid,
                    o.customer_id,
                    json.dumps({"order_number": o.order_number}),
                )
                for o, oid in part
            ],
        )
    missing = [s for s in skus if s not in stocked]
    if missing:
        await conn.execute(
            insert(stock),
            [{"sku": s, "on_hand": 0, "allocated": 0, "updated_at": now} for s in missing],
        )
    if not d.rest:
        # Every line was written with its date and promise: no second pass over the rows
        # (it rewrote each new line, 2,667 of them, inside the write lock).
        return len(new)
    for sku in d.rest:
        await allocate_waiting(conn, sku)
    # Projected from scratch below; a walk under way of one of them counted the units ahead
    # of its cursor before these were allocated: it starts again from the head.
    await restart_walks(conn, d.rest)
    for part in _chunks(d.rest, 500):
        await _project_many(conn, list(part))
    for part in _chunks(order_ids):
        await conn.execute(
            update(order_lines)
            .where(c.order_id.in_(part), c.sku.in_(d.rest))
            .values(
                promised_date=c.projected_date,
                last_told_date=c.projected_date,
                last_told_at=utcnow(),
                told_ready_qty=c.qty_allocated,
            )
        )
    return len(new)


def _dated_line(found: tuple[str, date] | None, now: datetime) -> dict[str, Any]:
    """A new line's projection columns, as project_dates writes them to a line that joined
    undated: its restock and date, the change stamped when it got one; what the customer is
    told at order time is the promise."""
    restock_id, when = found if found is not None else (None, None)
    return {
        "waits_for_restock_id": restock_id,
        "projected_date": when,
        "projected_changed_at": now if when is not None else None,
        "promised_date": when,
        "last_told_date": when,
        "last_told_at": now,
        "told_ready_qty": 0,
    }


async def _join_queues(
    conn: AsyncConnection,
    rows: list[_NewRow],
    line_ids: list[int],
    direct: list[str],
    ahead: dict[str, int],
    now: datetime,
) -> None:
    """The queue marks of the lines that joined the back of their SKU's queue (every
    MARK_EVERY-th waiting line, counted on from the lines already waiting), and each SKU's
    'dates_projected' event, as mark_queues and project_dates write them."""
    marks: list[dict[str, Any]] = []
    moved: dict[str, list[list[Any]]] = {}
    for row, line_id in zip(rows, line_ids, strict=True):
        sku = row.sku
        if sku not in ahead or row.qty_waiting == 0:
            continue
        if ahead[sku] % MARK_EVERY == 0:
            marks.append(
                {
                    "sku": sku,
                    "queue_rank": row.queue_rank,
                    "queued_at": row.queued_at,
                    "line_id": line_id,
                    "lines_before": ahead[sku],
                }
            )
        ahead[sku] += 1
        if row.projected_date is not None:
            moved.setdefault(sku, []).append([line_id, None, row.projected_date])
    if marks:
        await conn.execute(insert(queue_marks), marks)
    logged = [
        {
            "at": now,
            "kind": "dates_projected",
            "sku": sku,
            "order_id": None,
            "line_id": None,
            "restock_id": None,
            "customer_id": None,
            "data": json.dumps(
                {"moved": len(moved[sku]), "sample": moved[sku][:50]}, default=str, sort_keys=True
            ),
        }
        for sku in direct
        if sku in moved
    ]
    if logged:
        await conn.execute(insert(events), logged)


async def _project_many(conn: AsyncConnection, skus: list[str]) -> None:
    """``project_dates(conn, sku)`` for each of ``skus``, in three statements for all of them
    (the same rule and writes, each SKU's windows apart): the update of the lines that
    changed, their marks, and the SKUs' queue marks; a 'dates_projected' event per SKU whose
    lines moved, as project_dates logs it."""
    c = order_lines.c
    r = restocks.c
    now = utcnow()
    left = r.qty - r.qty_received
    in_date_order = (r.expected_date, r.restock_id)
    free = func.coalesce(stock.c.on_hand - stock.c.allocated, 0)
    hi = free + func.sum(left).over(partition_by=r.sku, order_by=in_date_order, rows=(None, 0))
    bounds = (
        select(
            r.sku.label("sku"),
            r.restock_id.label("restock_id"),
            r.expected_date.label("expected_date"),
            hi.label("hi"),
            case(
                (
                    func.row_number().over(partition_by=r.sku, order_by=in_date_order) == 1,
                    None,
                ),
                else_=hi - left,
            ).label("lo"),
        )
        .select_from(restocks.outerjoin(stock, stock.c.sku == r.sku))
        .where(r.sku.in_(skus), r.status == "open")
        .subquery("bounds")
    )
    queue_order = (c.queue_rank, c.queued_at, c.line_id)
    queue = (
        select(
            c.sku.label("sku"),
            c.line_id.label("line_id"),
            c.projected_date.label("projected_date"),
            c.waits_for_restock_id.label("waits_for_restock_id"),
            func.sum(c.qty_waiting)
            .over(partition_by=c.sku, order_by=queue_order, rows=(None, 0))
            .label("need"),
        )
        .where(c.sku.in_(skus), c.qty_waiting > 0)
        .subquery("queue")
    )
    date_moved = queue.c.projected_date.is_distinct_from(bounds.c.expected_date)
    changed = (
        select(
            queue.c.line_id,
            bounds.c.restock_id.label("new_restock"),
            bounds.c.expected_date.label("new_date"),
            case((date_moved, 1), else_=0).label("moved"),
        )
        .select_from(
            queue.outerjoin(
                bounds,
                (bounds.c.sku == queue.c.sku)
                & (queue.c.need <= bounds.c.hi)
                & (bounds.c.lo.is_(None) | (queue.c.need > bounds.c.lo)),
            )
        )
        .where(date_moved | queue.c.waits_for_restock_id.is_distinct_from(bounds.c.restock_id))
        .cte("proj")
        .prefix_with("MATERIALIZED")
    )
    returned = await _write_projection(conn, changed, now)
    await mark_lines(conn, (int(row[0]) for row in returned))
    await mark_queues_of(conn, skus)
    stamp = now.astimezone(UTC).replace(tzinfo=None)
    moved: dict[str, list[Any]] = {}
    for row in sorted(
        (row for row in returned if row[6] == stamp), key=lambda row: (row[4], row[5], row[0])
    ):
        moved.setdefault(row[7], []).append(row)
    for sku in skus:
        if sku in moved:
            await log_event(
                conn,
                "dates_projected",
                sku=sku,
                moved=len(moved[sku]),
                sample=[[int(m[0]), m[2], m[3]] for m in moved[sku][:50]],
            )


async def mark_queues_of(conn: AsyncConnection, skus: Sequence[str]) -> None:
    """``mark_queues(conn, sku)`` for each of ``skus``, in two statements."""
    c = order_lines.c
    queue_order = (c.queue_rank, c.queued_at, c.line_id)
    ahead = func.row_number().over(partition_by=c.sku, order_by=queue_order)
    waiting = select(c.sku, *queue_order, (ahead - 1).label("lines_before")).where(
        c.qty_waiting > 0, c.sku.in_(skus)
    )
    await conn.execute(delete(queue_marks).where(queue_marks.c.sku.in_(skus)))
    q = waiting.subquery("queue").c
    await conn.execute(
        insert(queue_marks).from_select(
            ["sku", "queue_rank", "queued_at", "line_id", "lines_before"],
            select(q.sku, q.queue_rank, q.queued_at, q.line_id, q.lines_before).where(
                q.lines_before % MARK_EVERY == 0
            ),
        )
    )
