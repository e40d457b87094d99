"""What the bot asks about customers and their orders. Every order query is scoped to the
customer in SQL: another customer's order and a missing one look the same."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from store.catalog import names_of, pick_name
from store.errors import NotFound, StoreError
from store.schema import (
    customers,
    order_lines,
    orders,
    products,
    queue_marks,
    restocks,
    shipment_lines,
    shipments,
    track_records,
    utcnow,
)


class LineState(StrEnum):
    WAITING = "waiting"  # nothing allocated or shipped yet
    PARTLY_READY = "partly_ready"  # some units allocated, the rest waiting
    READY = "ready"  # everything left is allocated, waiting to ship
    PARTLY_SHIPPED = "partly_shipped"  # some units shipped, the rest allocated or waiting
    SHIPPED = "shipped"
    CANCELLED = "cancelled"


class OrderState(StrEnum):
    OPEN = "open"  # nothing shipped yet, something not cancelled
    PARTLY_SHIPPED = "partly_shipped"
    SHIPPED = "shipped"  # every line shipped or cancelled, something shipped
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RestockRef:
    restock_id: str
    qty: int
    expected_date: date


@dataclass(frozen=True)
class OrderLine:
    line_id: int
    line_no: int
    sku: str
    name: str
    names: dict[str, str]
    qty_ordered: int
    qty_allocated: int
    qty_shipped: int
    qty_cancelled: int
    qty_waiting: int
    unit_price_minor: int
    currency: str
    state: LineState
    promised_date: date | None
    projected_date: date | None
    previous_projected_date: date | None
    last_told_date: date | None
    queue_position: int | None  # 1 = next to be served among the SKU's waiting lines
    waits_for: RestockRef | None
    delay_consent: str | None
    # The end of the range the supplier's track record supports (projected date + its p80
    # slip, store.insights); None: a single date (not enough history, or it is not late).
    eta_end: date | None = None

    @property
    def dated(self) -> bool:
        return self.projected_date is not None


@dataclass(frozen=True)
class Shipment:
    shipment_id: str
    carrier: str
    tracking_number: str | None
    shipped_on: date
    lines: tuple[tuple[int, int], ...]  # (line number, quantity)


@dataclass(frozen=True)
class Order:
    order_id: int
    order_number: str
    customer_id: int
    placed_at: datetime
    currency: str
    state: OrderState
    total_minor: int
    lines: tuple[OrderLine, ...]
    shipments: tuple[Shipment, ...]

    @property
    def is_open(self) -> bool:
        return any(ln.qty_waiting or ln.qty_allocated for ln in self.lines)


@dataclass(frozen=True)
class Customer:
    customer_id: int
    name: str
    email: str
    phone: str | None
    postcode: str | None
    language: str
    notify_delays: bool
    notify_back_in_stock: bool


@dataclass(frozen=True)
class MovedLine:
    line_id: int
    order_id: int
    order_number: str
    customer_id: int
    line_no: int
    sku: str
    name: str
    qty_waiting: int
    last_told_date: date | None
    projected_date: date | None
    promised_date: date | None
    projected_changed_at: datetime | None


def line_state(
    ordered: int, allocated: int, shipped: int, cancelled: int, waiting: int
) -> LineState:
    if cancelled == ordered:
        return LineState.CANCELLED
    if shipped and not (allocated or waiting):
        return LineState.SHIPPED
    if shipped:
        return LineState.PARTLY_SHIPPED
    if allocated and waiting:
        return LineState.PARTLY_READY
    if allocated:
        return LineState.READY
    return LineState.WAITING


def order_state(lines: Sequence[OrderLine]) -> OrderState:
    states = {ln.state for ln in lines}
    if states <= {LineState.CANCELLED}:
        return OrderState.CANCELLED
    if states <= {LineState.SHIPPED, LineState.CANCELLED}:
        return OrderState.SHIPPED
    if states & {LineState.SHIPPED, LineState.PARTLY_SHIPPED}:
        return OrderState.PARTLY_SHIPPED
    return OrderState.OPEN


async def customer_of(conn: AsyncConnection, customer_id: int) -> Customer | None:
    c = customers.c
    row = (
        await conn.execute(
            select(
                c.customer_id,
                c.name,
                c.email,
                c.phone,
                c.postcode,
                c.language,
                c.notify_delays,
                c.notify_back_in_stock,
            ).where(c.customer_id == customer_id)
        )
    ).first()
    return Customer(**row._mapping) if row else None


# The queue index is partial (qty_waiting > 0). A bound 0 is a parameter to PostgreSQL: a
# prepared statement's generic plan (asyncpg prepares every statement; PostgreSQL plans it
# generically after five runs) cannot prove the index's predicate from it and counts a line's
# place by a scan of every waiting line of the SKU, or of the table (10 ms to minutes on the
# 1M store). Written into the SQL, it is the index's own predicate on both backends.
_ZERO: ColumnElement[int] = literal_column("0", Integer)


def _queue_position() -> ColumnElement[int | None]:
    """A line's place among its SKU's waiting lines (1 = next to be served), None when not
    waiting: the waiting lines of the same SKU ahead of it in (queue_rank, queued_at,
    line_id) order, + 1. Counted when read, for the lines read (a stored place would shift
    for every line behind each one that leaves the queue): from the nearest queue mark at
    or before the line (its ``lines_before``) plus the waiting lines between the mark and
    the line, a range of at most MARK_EVERY entries of the queue index. Without a mark
    (none written yet) the count starts at the head of the queue.

    The range is counted per queue_rank, each part with queue_rank equal to one value or
    strictly between two: PostgreSQL (15) ends an index scan at a row comparison's bound
    only when its first column decides it, so ``(queue_rank, queued_at, line_id) < line``
    read every entry of the SKU after the line (same rank, later queued_at), up to the end
    of its queue: 1,390 pages for a line 1,300 places into the 100,000-line hot queue of
    the 1M store, against 8 with the rank fixed by equality (then the row comparison
    starts at queued_at, which decides it)."""
    ol = order_lines.c
    m = queue_marks.c
    ahead = order_lines.alias("ahead")
    a = ahead.c
    line_key = tuple_(ol.queue_rank, ol.queued_at, ol.line_id)
    mark_key = tuple_(m.queue_rank, m.queued_at, m.line_id)
    after_mark = tuple_(a.queued_at, a.line_id) >= tuple_(m.queued_at, m.line_id)
    before_line = tuple_(a.queued_at, a.line_id) < tuple_(ol.queued_at, ol.line_id)

    def count(sku: ColumnElement[str], *where: ColumnElement[bool]) -> ColumnElement[int]:
        return (
            select(func.count())
            .where(a.sku == sku, a.qty_waiting > _ZERO, *where)
            .correlate_except(ahead)
            .scalar_subquery()
        )

    same_rank = m.queue_rank == ol.queue_rank
    mark_first = m.queue_rank < ol.queue_rank  # a line of a lower priority than the mark
    between = (
        # The mark and the line in one rank (orders of one priority: the common case).
        count(m.sku, same_rank, a.queue_rank == m.queue_rank, after_mark, before_line)
        # Else the rest of the mark's rank, the ranks between, the head of the line's rank.
        + count(m.sku, mark_first, a.queue_rank == m.queue_rank, after_mark)
        + count(m.sku, mark_first, a.queue_rank > m.queue_rank, a.queue_rank < ol.queue_rank)
        + count(m.sku, mark_first, a.queue_rank == ol.queue_rank, before_line)
    )
    from_mark = (
        select(m.lines_before + between)
        .where(m.sku == ol.sku, mark_key <= line_key)
        .order_by(m.queue_rank.desc(), m.queued_at.desc(), m.line_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    from_head = count(ol.sku, a.queue_rank < ol.queue_rank) + count(
        ol.sku, a.queue_rank == ol.queue_rank, before_line
    )
    return case((ol.qty_waiting > 0, func.coalesce(from_mark, from_head) + 1), else_=None)


# Built once: building the alias and subqueries costs more than running them.
_QUEUE_POSITION = _queue_position().label("queue_position")


def _lines_query() -> Select[Any]:
    ol = order_lines.c
    return (
        select(
            ol.order_id,
            ol.line_id,
            ol.line_no,
            ol.sku,
            ol.qty_ordered,
            ol.qty_allocated,
            ol.qty_shipped,
            ol.qty_cancelled,
            ol.qty_waiting,
            ol.unit_price_minor,
            ol.promised_date,
            ol.projected_date,
            ol.previous_projected_date,
            ol.last_told_date,
            _QUEUE_POSITION,
            ol.delay_consent,
            products.c.name_en,
            products.c.name_de,
            products.c.name_es,
            products.c.name_ru,
            restocks.c.restock_id,
            restocks.c.qty.label("restock_qty"),
            restocks.c.expected_date,
            track_records.c.slip_p80.label("range_days"),
        )
        .select_from(
            order_lines.join(products, products.c.sku == ol.sku)
            .outerjoin(restocks, restocks.c.restock_id == ol.waits_for_restock_id)
            .outerjoin(
                track_records,
                and_(
                    track_records.c.scope == "supplier",
                    track_records.c.key == restocks.c.supplier_id,
                    track_records.c.enough.is_(true()),
                    track_records.c.slip_p80 > 0,
                ),
            )
        )
        .where(ol.order_id.in_(bindparam("order_ids", expanding=True)))
        .order_by(ol.order_id, ol.line_no)
    )


# Every order view runs these: built once, as building them costs more than running them.
_LINES = _lines_query()


async def _lines_by_order(
    conn: AsyncConnection, order_ids: list[int], currency: dict[int, str], language: str | None
) -> dict[int, list[OrderLine]]:
    rows = (await conn.execute(_LINES, {"order_ids": order_ids})).all()
    out: dict[int, list[OrderLine]] = defaultdict(list)
    for r in rows:
        names = names_of(r)
        waiting = int(r.qty_waiting)
        out[r.order_id].append(
            OrderLine(
                line_id=r.line_id,
                line_no=r.line_no,
                sku=r.sku,
                name=pick_name(names, language),
                names=names,
                qty_ordered=r.qty_ordered,
                qty_allocated=r.qty_allocated,
                qty_shipped=r.qty_shipped,
                qty_cancelled=r.qty_cancelled,
                qty_waiting=waiting,
                unit_price_minor=int(r.unit_price_minor),
                currency=currency[r.order_id],
                state=line_state(
                    r.qty_ordered, r.qty_allocated, r.qty_shipped, r.qty_cancelled, waiting
                ),
                promised_date=r.promised_date,
                projected_date=r.projected_date if waiting else None,
                previous_projected_date=r.previous_projected_date,
                last_told_date=r.last_told_date,
                queue_position=r.queue_position if waiting else None,
                # The date the projection gave the line (its restock's, as the projection
                # saw it): a date change is shown once its projection reached the line.
                waits_for=(
                    RestockRef(
                        r.restock_id, int(r.restock_qty), r.projected_date or r.expected_date
                    )
                    if waiting and r.restock_id is not None
                    else None
                ),
                delay_consent=r.delay_consent,
                eta_end=(
                    r.projected_date + timedelta(days=r.range_days)
                    if waiting and r.projected_date is not None and r.range_days
                    else None
                ),
            )
        )
    return out


_SHIPMENTS = (
    select(
        shipments.c.order_id,
        shipments.c.shipment_id,
        shipments.c.carrier,
        shipments.c.tracking_number,
        shipments.c.shipped_on,
        order_lines.c.line_no,
        shipment_lines.c.qty,
    )
    .select_from(
        shipments.join(
            shipment_lines, shipment_lines.c.shipment_id == shipments.c.shipment_id
        ).join(order_lines, order_lines.c.line_id == shipment_lines.c.line_id)
    )
    .where(shipments.c.order_id.in_(bindparam("order_ids", expanding=True)))
    .order_by(shipments.c.shipped_on, shipments.c.shipment_id, order_lines.c.line_no)
)


async def _shipments_by_order(
    conn: AsyncConnection, order_ids: list[int]
) -> dict[int, list[Shipment]]:
    rows = (await conn.execute(_SHIPMENTS, {"order_ids": order_ids})).all()
    grouped: dict[str, list[tuple[int, int]]] = defaultdict(list)
    heads: dict[str, tuple[int, str, str | None, date]] = {}
    for r in rows:
        heads[r.shipment_id] = (r.order_id, r.carrier, r.tracking_number, r.shipped_on)
        grouped[r.shipment_id].append((r.line_no, r.qty))
    out: dict[int, list[Shipment]] = defaultdict(list)
    for sid, (oid, carrier, tracking, shipped_on) in heads.items():
        out[oid].append(Shipment(sid, carrier, tracking, shipped_on, tuple(grouped[sid])))
    return out


async def _orders(
    conn: AsyncConnection, heads: Sequence[object], language: str | None
) -> list[Order]:
    if not heads:
        return []
    ids = [h.order_id for h in heads]  # type: ignore[attr-defined]
    currency = {h.order_id: h.currency for h in heads}  # type: ignore[attr-defined]
    lines = await _lines_by_order(conn, ids, currency, language)
    ships = await _shipments_by_order(conn, ids)
    result = []
    for h in heads:
        m = h._mapping  # type: ignore[attr-defined]
        ls = tuple(lines.get(m["order_id"], ()))
        result.append(
            Order(
                order_id=m["order_id"],
                order_number=m["order_number"],
                customer_id=m["customer_id"],
                placed_at=m["placed_at"],
                currency=m["currency"],
                state=order_state(ls),
                total_minor=sum(
                    ln.unit_price_minor * (ln.qty_ordered - ln.qty_cancelled) for ln in ls
                ),
                lines=ls,
                shipments=tuple(ships.get(m["order_id"], ())),
            )
        )
    return result


_ORDER_HEAD = (
    orders.c.order_id,
    orders.c.order_number,
    orders.c.customer_id,
    orders.c.placed_at,
    orders.c.currency,
)


_ORDERS_OF = (
    select(*_ORDER_HEAD)
    .where(orders.c.customer_id == bindparam("customer_id"))
    .order_by(orders.c.placed_at.desc(), orders.c.order_id.desc())
    .limit(bindparam("limit", type_=Integer))
)
_OPEN_ORDERS_OF = _ORDERS_OF.where(
    exists().where(
        order_lines.c.order_id == orders.c.order_id,
        or_(order_lines.c.qty_waiting > 0, order_lines.c.qty_allocated > 0),
    )
)


async def orders_of(
    conn: AsyncConnection,
    customer_id: int,
    open_only: bool = False,
    limit: int = 10,
    language: str | None = None,
) -> list[Order]:
    """The customer's orders, newest first, with lines, dates, queue places and shipments.
    ``open_only``: only orders with something still waiting or ready to ship."""
    query = _OPEN_ORDERS_OF if open_only else _ORDERS_OF
    params = {"customer_id": customer_id, "limit": max(1, min(limit, 100))}
    heads = (await conn.execute(query, params)).all()
    return await _orders(conn, heads, language)


# The customer is part of the key: another customer's order is not found, by the query.
_ORDER_BY_NUMBER = select(*_ORDER_HEAD).where(
    orders.c.order_number == bindparam("order_number"),
    orders.c.customer_id == bindparam("customer_id"),
)


async def order_of(
    conn: AsyncConnection, customer_id: int, order_number: str, language: str | None = None
) -> Order | None:
    """One order of this customer by number; None when missing or someone else's."""
    heads = (
        await conn.execute(
            _ORDER_BY_NUMBER, {"order_number": order_number.strip(), "customer_id": customer_id}
        )
    ).all()
    found = await _orders(conn, heads, language)
    return found[0] if found else None


async def lines_moved_since_told(
    conn: AsyncConnection,
    *,
    customer_id: int | None = None,
    changed_since: datetime | None = None,
    after_line_id: int = 0,
    limit: int = 500,
    language: str | None = None,
) -> list[MovedLine]:
    """Waiting lines whose projected date differs from the last date the customer was told,
    in line id order (page with ``after_line_id``). The scheduler narrows by
    ``changed_since``; the bot by ``customer_id``."""
    ol = order_lines.c
    q = (
        select(
            ol.line_id,
            ol.order_id,
            orders.c.order_number,
            orders.c.customer_id,
            ol.line_no,
            ol.sku,
            ol.qty_waiting,
            ol.last_told_date,
            ol.projected_date,
            ol.promised_date,
            ol.projected_changed_at,
            products.c.name_en,
            products.c.name_de,
            products.c.name_es,
            products.c.name_ru,
        )
        .select_from(
            order_lines.join(orders, orders.c.order_id == ol.order_id).join(
                products, products.c.sku == ol.sku
            )
        )
        .where(
            ol.qty_waiting > 0,
            ol.projected_date.is_distinct_from(ol.last_told_date),
            ol.line_id > after_line_id,
        )
        .order_by(ol.line_id)
        .limit(max(1, min(limit, 5000)))
    )
    if customer_id is not None:
        q = q.where(orders.c.customer_id == customer_id)
    if changed_since is not None:
        q = q.where(ol.projected_changed_at >= changed_since)
    rows = (await conn.execute(q)).all()
    return [
        MovedLine(
            line_id=r.line_id,
            order_id=r.order_id,
            order_number=r.order_number,
            customer_id=r.customer_id,
            line_no=r.line_no,
            sku=r.sku,
            name=pick_name(names_of(r), language),
            qty_waiting=r.qty_waiting,
            last_told_date=r.last_told_date,
            projected_date=r.projected_date,
            promised_date=r.promised_date,
            projected_changed_at=r.projected_changed_at,
        )
        for r in rows
    ]


async def mark_told(
    conn: AsyncConnection, line_ids: Sequence[int], told: dict[int, date | None] | None = None
) -> None:
    """Record that the customer now knows each line's date (the projected date, or the one
    given in ``told`` if a notice carried an older value)."""
    now = utcnow()
    for line_id in line_ids:
        value = told[line_id] if told and line_id in told else order_lines.c.projected_date
        await conn.execute(
            update(order_lines)
            .where(order_lines.c.line_id == line_id)
            .values(last_told_date=value, last_told_at=now)
        )


DELAY_CONSENTS = ("asked", "accepted", "declined")


async def set_delay_consent(
    conn: AsyncConnection, customer_id: int, line_id: int, consent: str
) -> None:
    """Record the customer's answer to a long delay, on their own line only."""
    if consent not in DELAY_CONSENTS:
        raise StoreError(f"unknown delay consent {consent!r}")
    owned = select(orders.c.order_id).where(orders.c.customer_id == customer_id)
    res = await conn.execute(
        update(order_lines)
        .where(order_lines.c.line_id == line_id, order_lines.c.order_id.in_(owned))
        .values(delay_consent=consent, delay_consent_at=utcnow())
    )
    if res.rowcount == 0:
        raise NotFound(f"no line {line_id} for this customer")
