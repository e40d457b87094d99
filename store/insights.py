"""What the store learns from its own history (#18): suppliers' track records, why lines wait.

Track records come from restocks received and their date histories. A delivery's slip is the
day it arrived (``received_at`` in the shop's zone) less the first date the supplier gave (the
oldest ``old_date`` of its date changes, else its expected date): late is positive, on time is
zero or less. Percentiles are by nearest rank over whole days, so p80 is a slip that at least
80% of the deliveries did not exceed: the end of the range the order view states
("expected 12-16 March" = projected date .. projected date + p80). Below ``min_deliveries`` a
record says "not enough history" and no range is stated. The delay policy never reads any of
this: the range is information, the projected date stays the promise.

Causes are derived per SKU and the restock its lines wait for (every waiting line of such a
pair has the same cause), and stored in ``wait_causes``, SKU range by SKU range: each range is
read without the write lock and written in a short transaction of its own (delete + insert of
its few rows), so a refresh of the 1M-order store never holds the lock for long.

The team's alerts (bot.ops) are conditions under a key (alert_conditions), recorded in
``ops_alerts`` by sync_alerts: told once while they hold (claim_untold), cleared when they end,
told again when they come back. The digest's figures (top_waiting_skus, activity) and its
chart's daily snapshots (snapshot_causes, cause_history) are read here too.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, literal, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from store.db import Store
from store.errors import NotFound
from store.marks import insert_ignoring
from store.schema import (
    cause_snapshots,
    delay_offers,
    ops_alerts,
    ops_state,
    order_lines,
    orders,
    outbox,
    products,
    reorder_points,
    restock_date_changes,
    restocks,
    stock,
    track_records,
    utcnow,
    wait_causes,
)

MIN_DELIVERIES = 5
# SKUs per batch of the causes' refresh: 500 SKUs of the 1M-order store are ~800 rows, written in
# tens of ms (2,000 a batch held the lock 421 ms once under load).
CAUSE_BATCH = 500
RECORD_BATCH = 500

NO_RESTOCK = "no_restock"
SUPPLIER_SLIP = "supplier_slip"
DEMAND_AHEAD = "demand_ahead"
NOT_BACKORDERABLE = "not_backorderable"
ON_SCHEDULE = "on_schedule"
CAUSES = (NO_RESTOCK, SUPPLIER_SLIP, DEMAND_AHEAD, NOT_BACKORDERABLE, ON_SCHEDULE)


@dataclass(frozen=True)
class Delivery:
    restock_id: str
    supplier_id: str
    sku: str
    first_date: date
    arrived_on: date
    slip_days: int
    moved: bool  # its date changed before it arrived
    lead_days: int  # from the purchase order (created_at) to arrival


@dataclass(frozen=True)
class TrackRecord:
    scope: str  # 'supplier' | 'sku'
    key: str
    deliveries: int
    on_time: int
    moved: int
    slip_median: int
    slip_p80: int
    slip_worst: int
    lead_median: int | None
    enough: bool

    @property
    def on_time_share(self) -> float:
        return self.on_time / self.deliveries if self.deliveries else 0.0

    @property
    def moved_share(self) -> float:
        return self.moved / self.deliveries if self.deliveries else 0.0


@dataclass(frozen=True)
class Records:
    suppliers: tuple[TrackRecord, ...]
    skus: tuple[TrackRecord, ...]


def nearest_rank(values: Sequence[int], share: float) -> int:
    """The smallest value that at least ``share`` of the values do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _first_date() -> Any:
    c = restock_date_changes.c
    return (
        select(c.old_date)
        .where(c.restock_id == restocks.c.restock_id)
        .order_by(c.changed_at, c.change_id)
        .limit(1)
        .scalar_subquery()
    )


async def deliveries(
    conn: AsyncConnection,
    zone: tzinfo = UTC,
    *,
    supplier_id: str | None = None,
    sku: str | None = None,
) -> list[Delivery]:
    """Every restock received, with its slip against the first date it was given."""
    r = restocks.c
    c = restock_date_changes.c
    moved = exists().where(c.restock_id == r.restock_id, c.changed_at < r.received_at)
    q = select(
        r.restock_id,
        r.supplier_id,
        r.sku,
        r.expected_date,
        r.received_at,
        r.created_at,
        _first_date().label("first_date"),
        moved.label("moved"),
    ).where(r.status == "received", r.received_at.is_not(None))
    if supplier_id is not None:
        q = q.where(r.supplier_id == supplier_id)
    if sku is not None:
        q = q.where(r.sku == sku)
    out = []
    for row in await conn.execute(q.order_by(r.restock_id)):
        first = row.first_date or row.expected_date
        if isinstance(first, str):  # SQLite gives a scalar subquery's date as text
            first = date.fromisoformat(first)
        arrived = row.received_at.astimezone(zone).date()
        out.append(
            Delivery(
                restock_id=row.restock_id,
                supplier_id=row.supplier_id,
                sku=row.sku,
                first_date=first,
                arrived_on=arrived,
                slip_days=(arrived - first).days,
                moved=bool(row.moved),
                lead_days=(arrived - row.created_at.astimezone(zone).date()).days,
            )
        )
    return out


def record_of(
    scope: str, key: str, items: Sequence[Delivery], min_deliveries: int = MIN_DELIVERIES
) -> TrackRecord:
    slips = [d.slip_days for d in items]
    leads = [d.lead_days for d in items if d.lead_days >= 0]
    return TrackRecord(
        scope=scope,
        key=key,
        deliveries=len(items),
        on_time=sum(1 for s in slips if s <= 0),
        moved=sum(1 for d in items if d.moved),
        slip_median=nearest_rank(slips, 0.5) if slips else 0,
        slip_p80=nearest_rank(slips, 0.8) if slips else 0,
        slip_worst=max(slips) if slips else 0,
        lead_median=nearest_rank(leads, 0.5) if leads else None,
        enough=len(items) >= min_deliveries,
    )


def records_of(items: Iterable[Delivery], min_deliveries: int = MIN_DELIVERIES) -> Records:
    by_supplier: dict[str, list[Delivery]] = defaultdict(list)
    by_sku: dict[str, list[Delivery]] = defaultdict(list)
    for d in items:
        by_supplier[d.supplier_id].append(d)
        by_sku[d.sku].append(d)
    return Records(
        suppliers=tuple(
            record_of("supplier", k, v, min_deliveries) for k, v in sorted(by_supplier.items())
        ),
        skus=tuple(record_of("sku", k, v, min_deliveries) for k, v in sorted(by_sku.items())),
    )


async def compute_records(
    conn: AsyncConnection, *, min_deliveries: int = MIN_DELIVERIES, zone: tzinfo = UTC
) -> Records:
    """Every supplier's and every SKU's record, from the deliveries (nothing written)."""
    return records_of(await deliveries(conn, zone), min_deliveries)


def _record_row(rec: TrackRecord, now: datetime) -> dict[str, Any]:
    return dict(
        scope=rec.scope,
        key=rec.key,
        deliveries=rec.deliveries,
        on_time=rec.on_time,
        moved=rec.moved,
        slip_median=rec.slip_median,
        slip_p80=rec.slip_p80,
        slip_worst=rec.slip_worst,
        lead_median=rec.lead_median,
        enough=rec.enough,
        computed_at=now,
    )


async def save_records(
    conn: AsyncConnection, records: Sequence[TrackRecord], now: datetime
) -> None:
    """Write these records in place of their keys' earlier ones."""
    t = track_records.c
    by_scope: dict[str, list[str]] = defaultdict(list)
    for rec in records:
        by_scope[rec.scope].append(rec.key)
    for scope, keys in by_scope.items():
        for i in range(0, len(keys), 500):
            await conn.execute(
                delete(track_records).where(t.scope == scope, t.key.in_(keys[i : i + 500]))
            )
    if records:
        # Ignoring a key written meanwhile: another process's refresh, of the same history.
        await conn.execute(
            insert_ignoring(conn, track_records), [_record_row(r, now) for r in records]
        )


async def drop_records_before(conn: AsyncConnection, when: datetime) -> int:
    """Drop records an earlier refresh wrote and the last one did not (no deliveries now)."""
    result = await conn.execute(delete(track_records).where(track_records.c.computed_at < when))
    return int(result.rowcount or 0)


@dataclass(frozen=True)
class RefreshRun:
    batches: int
    rows: int  # records written, or cause rows (SKU and restock pairs)
    lines: int  # waiting lines covered (causes)
    longest_write: float  # seconds of the longest write transaction (for the benchmark)
    writes: tuple[float, ...] = ()  # seconds of each write transaction, in order


async def refresh_records(
    store: Store,
    *,
    min_deliveries: int = MIN_DELIVERIES,
    zone: tzinfo = UTC,
    now: datetime | None = None,
    batch: int = RECORD_BATCH,
) -> RefreshRun:
    """Compute every record without the write lock, then write them in short batches."""
    now = now or utcnow()
    async with store.connect() as conn:
        recs = await compute_records(conn, min_deliveries=min_deliveries, zone=zone)
    rows = [*recs.suppliers, *recs.skus]
    writes: list[float] = []
    for i in range(0, max(len(rows), 1), batch):
        started = time.perf_counter()
        async with store.begin() as conn:
            await save_records(conn, rows[i : i + batch], now)
            if i + batch >= len(rows):
                await drop_records_before(conn, now)
        writes.append(time.perf_counter() - started)
    return RefreshRun(len(writes), len(rows), 0, max(writes), tuple(writes))


async def stored_records(conn: AsyncConnection, scope: str) -> list[TrackRecord]:
    t = track_records.c
    rows = await conn.execute(select(track_records).where(t.scope == scope).order_by(t.key))
    return [
        TrackRecord(
            scope=r.scope,
            key=r.key,
            deliveries=r.deliveries,
            on_time=r.on_time,
            moved=r.moved,
            slip_median=r.slip_median,
            slip_p80=r.slip_p80,
            slip_worst=r.slip_worst,
            lead_median=r.lead_median,
            enough=bool(r.enough),
        )
        for r in rows
    ]


async def range_days(conn: AsyncConnection, supplier_ids: Iterable[str]) -> dict[str, int]:
    """The days a range may add to a projected date for each supplier with enough history
    (its p80 slip, when late at all)."""
    ids = sorted(set(supplier_ids))
    if not ids:
        return {}
    t = track_records.c
    rows = await conn.execute(
        select(t.key, t.slip_p80).where(
            t.scope == "supplier", t.key.in_(ids), t.enough.is_(true()), t.slip_p80 > 0
        )
    )
    return {r.key: int(r.slip_p80) for r in rows}


async def line_range_days(conn: AsyncConnection, line_ids: Iterable[int]) -> dict[int, int]:
    """Per waiting line, the days of its range (its restock's supplier's p80 slip), for the
    lines whose supplier has enough history and slips at all."""
    ids = sorted(set(line_ids))
    if not ids:
        return {}
    ol = order_lines.c
    t = track_records.c
    out: dict[int, int] = {}
    for i in range(0, len(ids), 500):
        rows = await conn.execute(
            select(ol.line_id, t.slip_p80)
            .select_from(
                order_lines.join(restocks, restocks.c.restock_id == ol.waits_for_restock_id).join(
                    track_records,
                    and_(t.scope == "supplier", t.key == restocks.c.supplier_id),
                )
            )
            .where(ol.line_id.in_(ids[i : i + 500]), t.enough.is_(true()), t.slip_p80 > 0)
        )
        out.update({r.line_id: int(r.slip_p80) for r in rows})
    return out


# --- causes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CauseGroup:
    sku: str
    restock_id: str | None
    cause: str
    supplier_id: str | None
    lines: int
    units: int


def cause_of(
    *,
    sellable: bool,
    restock_id: str | None,
    first_open: str | None,
    slipped: bool,
) -> str:
    """Why a SKU's lines that wait for ``restock_id`` (None: no open restock covers them) wait.

    first_open: the SKU's first open restock in date order (None: it has none); slipped: the
    restock's expected date is later than the first date it was given."""
    if not sellable:
        return NOT_BACKORDERABLE
    if restock_id is None:
        return NO_RESTOCK if first_open is None else DEMAND_AHEAD
    if slipped:
        return SUPPLIER_SLIP
    if restock_id != first_open:
        return DEMAND_AHEAD
    return ON_SCHEDULE


async def derive_causes(conn: AsyncConnection, after: str, upto: str) -> list[CauseGroup]:
    """The causes of the waiting lines of SKUs in (after, upto], read only."""
    ol = order_lines.c
    r = restocks.c
    p = products.c
    groups = (
        await conn.execute(
            select(
                ol.sku,
                ol.waits_for_restock_id,
                func.count().label("lines"),
                func.sum(ol.qty_waiting).label("units"),
            )
            .where(ol.qty_waiting > 0, ol.sku > after, ol.sku <= upto)
            .group_by(ol.sku, ol.waits_for_restock_id)
            .order_by(ol.sku, ol.waits_for_restock_id)
        )
    ).all()
    if not groups:
        return []
    sellable = {
        row.sku: bool(row.active) and bool(row.backorderable)
        for row in await conn.execute(
            select(p.sku, p.active, p.backorderable).where(p.sku > after, p.sku <= upto)
        )
    }
    first_open: dict[str, str] = {}
    info: dict[str, tuple[str, bool]] = {}  # restock id -> (supplier, slipped)
    for row in await conn.execute(
        select(r.restock_id, r.sku, r.supplier_id, r.expected_date, _first_date().label("first"))
        .where(r.status == "open", r.sku > after, r.sku <= upto)
        .order_by(r.sku, r.expected_date, r.restock_id)
    ):
        first_open.setdefault(row.sku, row.restock_id)
        first = row.first
        if isinstance(first, str):
            first = date.fromisoformat(first)
        info[row.restock_id] = (row.supplier_id, first is not None and row.expected_date > first)
    # Lines may wait for a restock that is no longer open (received or cancelled, projection
    # not run yet): its supplier still says who they wait on.
    missing = {g.waits_for_restock_id for g in groups if g.waits_for_restock_id} - set(info)
    if missing:
        for gone in await conn.execute(
            select(r.restock_id, r.supplier_id).where(r.restock_id.in_(sorted(missing)))
        ):
            info[gone.restock_id] = (gone.supplier_id, False)
    out = []
    for g in groups:
        rid = g.waits_for_restock_id
        supplier, slipped = info.get(rid, (None, False)) if rid else (None, False)
        out.append(
            CauseGroup(
                sku=g.sku,
                restock_id=rid,
                cause=cause_of(
                    sellable=sellable.get(g.sku, False),
                    restock_id=rid,
                    first_open=first_open.get(g.sku),
                    slipped=slipped,
                ),
                supplier_id=supplier,
                lines=int(g.lines),
                units=int(g.units),
            )
        )
    return out


async def save_causes(
    conn: AsyncConnection, after: str, upto: str, groups: Sequence[CauseGroup], now: datetime
) -> None:
    """Replace the stored causes of SKUs in (after, upto] with ``groups``."""
    w = wait_causes.c
    await conn.execute(delete(wait_causes).where(w.sku > after, w.sku <= upto))
    if groups:
        # Ignoring a pair written meanwhile: another process's refresh of the same range.
        await conn.execute(
            insert_ignoring(conn, wait_causes),
            [
                dict(
                    sku=g.sku,
                    restock_key=g.restock_id or "",
                    cause=g.cause,
                    supplier_id=g.supplier_id,
                    lines=g.lines,
                    units=g.units,
                    computed_at=now,
                )
                for g in groups
            ],
        )


async def _sku_bound(conn: AsyncConnection, after: str, batch: int) -> str | None:
    """The last SKU of the next ``batch`` products after ``after`` (None: none left)."""
    p = products.c
    inner = select(p.sku).where(p.sku > after).order_by(p.sku).limit(batch).subquery()
    return await conn.scalar(select(func.max(inner.c.sku)))


async def refresh_causes(
    store: Store,
    *,
    batch: int = CAUSE_BATCH,
    now: datetime | None = None,
    on_batch: Callable[[int], Any] | None = None,
) -> RefreshRun:
    """Derive and store every waiting line's cause, ``batch`` SKUs at a time: each range is
    read outside the write lock and written in a transaction of its own."""
    now = now or utcnow()
    after = ""
    batches = rows = lines = 0
    writes: list[float] = []
    while True:
        async with store.connect() as conn:
            upto = await _sku_bound(conn, after, batch)
            if upto is None:
                break
            groups = await derive_causes(conn, after, upto)
        started = time.perf_counter()
        async with store.begin() as conn:
            await save_causes(conn, after, upto, groups, now)
        writes.append(time.perf_counter() - started)
        batches += 1
        rows += len(groups)
        lines += sum(g.lines for g in groups)
        if on_batch is not None:
            on_batch(len(groups))
        after = upto
    # Causes of SKUs no product row holds any more (none in practice): gone with the rest.
    async with store.begin() as conn:
        await conn.execute(delete(wait_causes).where(wait_causes.c.sku > after))
    return RefreshRun(batches, rows, lines, max(writes, default=0.0), tuple(writes))


@dataclass(frozen=True)
class CauseCount:
    cause: str
    lines: int
    units: int


async def cause_counts(conn: AsyncConnection) -> list[CauseCount]:
    """Waiting lines and units by cause, from the stored causes (every cause, zeros too)."""
    w = wait_causes.c
    found = {
        r.cause: (int(r.lines), int(r.units))
        for r in await conn.execute(
            select(
                w.cause, func.sum(w.lines).label("lines"), func.sum(w.units).label("units")
            ).group_by(w.cause)
        )
    }
    return [CauseCount(c, *found.get(c, (0, 0))) for c in CAUSES]


async def snapshot_causes(conn: AsyncConnection, day: date) -> list[CauseCount]:
    """Keep today's counts by cause (the digest's chart); a second snapshot of a day
    replaces the first."""
    counts = await cause_counts(conn)
    await conn.execute(delete(cause_snapshots).where(cause_snapshots.c.day == day))
    await conn.execute(
        insert_ignoring(conn, cause_snapshots),
        [dict(day=day, cause=c.cause, lines=c.lines, units=c.units) for c in counts],
    )
    return counts


async def cause_history(conn: AsyncConnection, since: date) -> dict[date, dict[str, int]]:
    """Waiting lines by cause per day from ``since`` on (days without a snapshot are left out)."""
    s = cause_snapshots.c
    out: dict[date, dict[str, int]] = defaultdict(dict)
    for r in await conn.execute(
        select(s.day, s.cause, s.lines).where(s.day >= since).order_by(s.day, s.cause)
    ):
        out[r.day][r.cause] = int(r.lines)
    return dict(out)


@dataclass(frozen=True)
class CauseRow:
    cause: str
    supplier_id: str | None  # None: lines waiting on no restock
    sku: str | None  # None in a total
    lines: int
    customers: int
    money_minor: int
    currency: str


def _waiting_with_cause() -> Any:
    ol = order_lines.c
    w = wait_causes.c
    return (
        order_lines.join(orders, orders.c.order_id == ol.order_id).join(
            wait_causes,
            and_(
                w.sku == ol.sku,
                w.restock_key == func.coalesce(ol.waits_for_restock_id, literal("")),
            ),
        ),
        ol.qty_waiting > 0,
    )


async def cause_report(conn: AsyncConnection, limit: int = 50) -> tuple[list[CauseRow], ...]:
    """Waiting lines, customers and money by cause (totals), then by cause, supplier and
    SKU (largest money first, ``limit`` rows), from the stored causes."""
    ol = order_lines.c
    w = wait_causes.c
    o = orders.c
    joined, waiting = _waiting_with_cause()
    money = func.sum(ol.qty_waiting * ol.unit_price_minor)
    totals = [
        CauseRow(r.cause, None, None, int(r.lines), int(r.customers), int(r.money), r.currency)
        for r in await conn.execute(
            select(
                w.cause,
                o.currency,
                func.count().label("lines"),
                func.count(func.distinct(o.customer_id)).label("customers"),
                money.label("money"),
            )
            .select_from(joined)
            .where(waiting)
            .group_by(w.cause, o.currency)
            .order_by(w.cause, o.currency)
        )
    ]
    detail = [
        CauseRow(
            r.cause, r.supplier_id, r.sku, int(r.lines), int(r.customers), int(r.money), r.currency
        )
        for r in await conn.execute(
            select(
                w.cause,
                w.supplier_id,
                ol.sku,
                o.currency,
                func.count().label("lines"),
                func.count(func.distinct(o.customer_id)).label("customers"),
                money.label("money"),
            )
            .select_from(joined)
            .where(waiting)
            .group_by(w.cause, w.supplier_id, ol.sku, o.currency)
            .order_by(money.desc(), ol.sku)
            .limit(limit)
        )
    ]
    return totals, detail


async def line_causes(conn: AsyncConnection, line_ids: Iterable[int]) -> dict[int, str]:
    """The stored cause of each of these lines that waits."""
    ids = sorted(set(line_ids))
    joined, waiting = _waiting_with_cause()
    out: dict[int, str] = {}
    for i in range(0, len(ids), 500):
        for r in await conn.execute(
            select(order_lines.c.line_id, wait_causes.c.cause)
            .select_from(joined)
            .where(waiting, order_lines.c.line_id.in_(ids[i : i + 500]))
        ):
            out[r.line_id] = r.cause
    return out


# --- the team's alerts -----------------------------------------------------------------------

DEMAND = "demand"  # waiting units of a SKU exceed its free stock and what is coming
REORDER = "reorder"  # free stock below the SKU's reorder point
SLIP_AGAIN = "slip_again"  # an open restock's date moved later a second time (or more)
CANCEL_SPIKE = "cancel_spike"  # delay cancellations of the last 7 days against the 4 before
ALERT_KINDS = (DEMAND, REORDER, SLIP_AGAIN, CANCEL_SPIKE)


@dataclass(frozen=True)
class AlertRules:
    default_reorder_point: int = 0  # 0: only SKUs with a point of their own
    spike_factor: float = 2.0  # last 7 days >= factor x the weekly mean of the 28 before
    spike_min: int = 3  # and at least this many


@dataclass(frozen=True)
class Condition:
    key: str
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Alert:
    key: str
    kind: str
    active: bool
    data: dict[str, Any]
    since: datetime
    told_at: datetime | None
    cleared_at: datetime | None


async def alert_conditions(
    conn: AsyncConnection, now: datetime, rules: AlertRules = AlertRules()
) -> list[Condition]:
    """Every condition that holds now, each under its key (waiting demand from the stored
    causes: refresh_causes first)."""
    out: list[Condition] = []
    w = wait_causes.c
    s = stock.c
    r = restocks.c
    waiting = select(w.sku, func.sum(w.units).label("units")).group_by(w.sku).subquery("waiting")
    coming = (
        select(r.sku, func.sum(r.qty - r.qty_received).label("units"))
        .where(r.status == "open")
        .group_by(r.sku)
        .subquery("coming")
    )
    free = func.coalesce(s.on_hand - s.allocated, 0)
    incoming = func.coalesce(coming.c.units, 0)
    for row in await conn.execute(
        select(waiting.c.sku, waiting.c.units, free.label("free"), incoming.label("coming"))
        .select_from(
            waiting.outerjoin(stock, s.sku == waiting.c.sku).outerjoin(
                coming, coming.c.sku == waiting.c.sku
            )
        )
        .where(waiting.c.units > free + incoming)
        .order_by(waiting.c.sku)
    ):
        out.append(
            Condition(
                f"{DEMAND}:{row.sku}",
                DEMAND,
                dict(
                    sku=row.sku, waiting=int(row.units), free=int(row.free), coming=int(row.coming)
                ),
            )
        )
    p = products.c
    rp = reorder_points.c
    point = func.coalesce(rp.point, rules.default_reorder_point)
    for low in await conn.execute(
        select(p.sku, free.label("free"), point.label("point"))
        .select_from(
            products.outerjoin(stock, s.sku == p.sku).outerjoin(reorder_points, rp.sku == p.sku)
        )
        .where(p.active.is_(true()), free < point)
        .order_by(p.sku)
    ):
        out.append(
            Condition(
                f"{REORDER}:{low.sku}",
                REORDER,
                dict(sku=low.sku, free=int(low.free), point=int(low.point)),
            )
        )
    c = restock_date_changes.c
    later = (
        select(c.restock_id, func.count().label("moves"))
        .where(c.new_date > c.old_date)
        .group_by(c.restock_id)
        .having(func.count() >= 2)
        .subquery("later")
    )
    for slip in await conn.execute(
        select(r.restock_id, r.supplier_id, r.sku, r.expected_date, later.c.moves)
        .select_from(restocks.join(later, later.c.restock_id == r.restock_id))
        .where(r.status == "open")
        .order_by(r.restock_id)
    ):
        out.append(
            Condition(
                f"{SLIP_AGAIN}:{slip.restock_id}:{slip.moves}",
                SLIP_AGAIN,
                dict(
                    restock_id=slip.restock_id,
                    supplier_id=slip.supplier_id,
                    sku=slip.sku,
                    expected=slip.expected_date.isoformat(),
                    moves=int(slip.moves),
                ),
            )
        )
    d = delay_offers.c
    week = now - timedelta(days=7)
    month = week - timedelta(days=28)
    cancelled = d.status == "cancelled"
    recent = await conn.scalar(
        select(func.count()).where(cancelled, d.answered_at >= week, d.answered_at < now)
    )
    before = await conn.scalar(
        select(func.count()).where(cancelled, d.answered_at >= month, d.answered_at < week)
    )
    recent, before = int(recent or 0), int(before or 0)
    if recent >= rules.spike_min and recent >= rules.spike_factor * before / 4:
        out.append(
            Condition(CANCEL_SPIKE, CANCEL_SPIKE, dict(last_7_days=recent, before_28_days=before))
        )
    return out


def _alert(row: Any) -> Alert:
    return Alert(
        key=row.key,
        kind=row.kind,
        active=bool(row.active),
        data=json.loads(row.data),
        since=row.since,
        told_at=row.told_at,
        cleared_at=row.cleared_at,
    )


async def sync_alerts(
    conn: AsyncConnection, conditions: Sequence[Condition], now: datetime
) -> tuple[int, int]:
    """Record what holds now: a new condition, or one that had ended and is back, is to be
    told (told_at NULL); one that still holds stays told; one that ended is cleared. Returns
    (new or back, cleared). Call it in a transaction of its own: the first statement writes."""
    a = ops_alerts.c
    known = {
        row.key: bool(row.active)
        for row in await conn.execute(select(a.key, a.active).where(a.active.is_(true())))
    }
    holding = {c.key for c in conditions}
    fresh = 0
    for cond in conditions:
        data = json.dumps(cond.data, sort_keys=True)
        if cond.key in known:
            await conn.execute(
                update(ops_alerts).where(a.key == cond.key).values(data=data, updated_at=now)
            )
            continue
        back = await conn.execute(
            update(ops_alerts)
            .where(a.key == cond.key)
            .values(
                active=True, data=data, since=now, told_at=None, cleared_at=None, updated_at=now
            )
        )
        if not back.rowcount:
            # Another process may record the same new condition at once: one row, one tell.
            await conn.execute(
                insert_ignoring(conn, ops_alerts).values(
                    key=cond.key, kind=cond.kind, active=True, data=data, since=now,
                    told_at=None, cleared_at=None, updated_at=now,
                )
            )  # fmt: skip
        fresh += 1
    ended = sorted(set(known) - holding)
    for i in range(0, len(ended), 500):
        await conn.execute(
            update(ops_alerts)
            .where(a.key.in_(ended[i : i + 500]))
            .values(active=False, cleared_at=now, updated_at=now)
        )
    return fresh, len(ended)


async def claim_untold(conn: AsyncConnection, now: datetime, limit: int = 50) -> list[Alert]:
    """Take the alerts not told yet (at most ``limit``, oldest first), marking them told: two
    processes never take the same one."""
    a = ops_alerts.c
    keys = [
        k
        for (k,) in await conn.execute(
            select(a.key)
            .where(a.active.is_(true()), a.told_at.is_(None))
            .order_by(a.since, a.key)
            .limit(limit)
        )
    ]
    if not keys:
        return []
    rows = await conn.execute(
        update(ops_alerts)
        .where(a.key.in_(keys), a.told_at.is_(None))
        .values(told_at=now)
        .returning(*ops_alerts.c)
    )
    return sorted((_alert(r) for r in rows), key=lambda x: (x.since, x.key))


async def alerts(
    conn: AsyncConnection, *, active_only: bool = False, limit: int = 200
) -> list[Alert]:
    a = ops_alerts.c
    q = select(ops_alerts).order_by(a.active.desc(), a.since.desc(), a.key).limit(limit)
    if active_only:
        q = q.where(a.active.is_(true()))
    return [_alert(r) for r in await conn.execute(q)]


async def set_reorder_point(conn: AsyncConnection, sku: str, point: int | None) -> None:
    """A SKU's own reorder point (None: back to the default)."""
    if await conn.scalar(select(products.c.sku).where(products.c.sku == sku)) is None:
        raise NotFound(f"unknown SKU {sku}")
    await conn.execute(delete(reorder_points).where(reorder_points.c.sku == sku))
    if point is not None:
        await conn.execute(insert(reorder_points).values(sku=sku, point=point))


# --- the digest's figures --------------------------------------------------------------------


@dataclass(frozen=True)
class SkuWaiting:
    sku: str
    name: str
    customers: int
    lines: int
    units: int


async def top_waiting_skus(conn: AsyncConnection, limit: int = 5) -> list[SkuWaiting]:
    """The SKUs the most customers wait for: the candidates come from the stored causes (the
    most lines), their customers are counted on the queue index of those SKUs alone."""
    w = wait_causes.c
    candidates = [
        r.sku
        for r in await conn.execute(
            select(w.sku).group_by(w.sku).order_by(func.sum(w.lines).desc(), w.sku).limit(limit * 4)
        )
    ]
    if not candidates:
        return []
    ol = order_lines.c
    rows = await conn.execute(
        select(
            ol.sku,
            products.c.name_en,
            func.count(func.distinct(orders.c.customer_id)).label("customers"),
            func.count().label("lines"),
            func.sum(ol.qty_waiting).label("units"),
        )
        .select_from(
            order_lines.join(orders, orders.c.order_id == ol.order_id).join(
                products, products.c.sku == ol.sku
            )
        )
        .where(ol.sku.in_(candidates), ol.qty_waiting > 0)
        .group_by(ol.sku, products.c.name_en)
    )
    found = [
        SkuWaiting(r.sku, r.name_en, int(r.customers), int(r.lines), int(r.units)) for r in rows
    ]
    return sorted(found, key=lambda s: (-s.customers, -s.units, s.sku))[:limit]


@dataclass(frozen=True)
class Activity:
    notices_sent: int
    kept_waiting: int
    cancelled: int
    alternative: int


async def activity(conn: AsyncConnection, since: datetime, until: datetime) -> Activity:
    """Notices sent and customers' answers to delay offers in [since, until)."""
    o = outbox.c
    sent = await conn.scalar(
        select(func.count()).where(o.status == "sent", o.sent_at >= since, o.sent_at < until)
    )
    d = delay_offers.c
    answered = and_(d.answered_at >= since, d.answered_at < until)
    counts: dict[str, int] = defaultdict(int)
    for r in await conn.execute(
        select(d.status, d.answer, func.count().label("n"))
        .where(answered, d.status.in_(["consented", "cancelled"]))
        .group_by(d.status, d.answer)
    ):
        if r.status == "consented":
            counts["kept"] += int(r.n)
        elif r.answer == "alternative":
            counts["alternative"] += int(r.n)
        else:
            counts["cancelled"] += int(r.n)
    return Activity(int(sent or 0), counts["kept"], counts["cancelled"], counts["alternative"])


async def claim_state(conn: AsyncConnection, name: str, value: str, now: datetime) -> bool:
    """Set a named value once: True for the one caller that set it (of any number at once),
    False when it was set already."""
    won = await conn.execute(
        insert_ignoring(conn, ops_state)
        .values(name=name, value=value, updated_at=now)
        .returning(ops_state.c.name)
    )
    return won.first() is not None


async def state_of(conn: AsyncConnection, name: str) -> str | None:
    return await conn.scalar(select(ops_state.c.value).where(ops_state.c.name == name))


async def drop_state(conn: AsyncConnection, name: str) -> None:
    await conn.execute(delete(ops_state).where(ops_state.c.name == name))
