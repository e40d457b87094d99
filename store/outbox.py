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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from store.schema import (
    back_in_stock_subscriptions,
    chats,
    customers,
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

ORDER_UPDATE = "order_update"
BACK_IN_STOCK = "back_in_stock"
DELAY_OFFER = "delay_offer"
DELAY_CANCELLED = "delay_cancelled"


@dataclass(frozen=True)
class QueueReport:
    notices: int  # outbox rows written (order updates and back-in-stock)
    lines: int  # order lines those notices tell about
    no_chat: int  # of the notices, those for customers without a linked chat
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
    # Insert-or-ignore on the dedupe key, in each dialect's own words.
    if conn.dialect.name == "postgresql":
        return postgresql.insert(outbox).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return sqlite.insert(outbox).on_conflict_do_nothing(index_elements=["dedupe_key"])


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d is not None else None


def _key(kind: str, *parts: object) -> str:
    digest = hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:24]
    return f"{kind}:{parts[0]}:{digest}"


async def insert_notices(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> int:
    """Write outbox rows (dedupe_key, chat_id, customer_id, kind, payload dict, status,
    not_before); rows whose key exists are skipped. Returns how many were new."""
    now = utcnow()
    written = 0
    for part in _chunks(rows, CHUNK):
        values = [
            {
                "dedupe_key": r["dedupe_key"],
                "chat_id": r.get("chat_id") or 0,
                "customer_id": r.get("customer_id"),
                "kind": r["kind"],
                "payload": json.dumps(r["payload"], sort_keys=True, separators=(",", ":")),
                "status": r.get("status", "pending"),
                "attempts": 0,
                "not_before": r.get("not_before") or now,
                "created_at": now,
            }
            for r in part
        ]
        result = await conn.execute(_insert(conn), values)
        written += max(result.rowcount, 0)
    return written


def _moved_enough(old: date | None, new: date | None, threshold_days: int) -> bool:
    if old is None or new is None:
        return old is not new  # gaining or losing a date is always news
    return abs((new - old).days) >= threshold_days


async def queue_notices(
    conn: AsyncConnection, *, threshold_days: int = 1, now: datetime | None = None
) -> QueueReport:
    """Queue one notice per customer and order for everything that changed since the
    customer was last told, and one per "notify me" subscription whose product is back.
    Call it inside the transaction of the change."""
    now = now or utcnow()
    ol = order_lines.c
    candidates = (
        await conn.execute(
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
                ol.projected_changed_at,
                ol.told_ready_qty,
                ol.told_shipped_qty,
                ol.told_cancelled_qty,
                orders.c.order_number,
                orders.c.customer_id,
                chats.c.chat_id,
            )
            .select_from(
                order_lines.join(orders, orders.c.order_id == ol.order_id).outerjoin(
                    chats, chats.c.customer_id == orders.c.customer_id
                )
            )
            .where(
                or_(
                    (ol.qty_waiting > 0) & ol.projected_date.is_distinct_from(ol.last_told_date),
                    (ol.qty_allocated > 0)
                    & (ol.qty_allocated + ol.qty_shipped > ol.told_ready_qty),
                    ol.qty_shipped > ol.told_shipped_qty,
                    ol.qty_cancelled > ol.told_cancelled_qty,
                )
            )
            .order_by(ol.order_id, ol.line_no)
        )
    ).all()

    by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
    heads: dict[int, Any] = {}
    told: list[dict[str, Any]] = []
    shipped_lines: list[int] = []
    for r in candidates:
        entry: dict[str, Any] = {"line_id": r.line_id, "line_no": r.line_no, "sku": r.sku}
        moved = r.qty_waiting > 0 and _moved_enough(
            r.last_told_date, r.projected_date, threshold_days
        )
        if moved:
            entry["old"] = _iso(r.last_told_date)
            entry["new"] = _iso(r.projected_date)
            entry["waiting"] = r.qty_waiting
        ready = r.qty_allocated + r.qty_shipped - r.told_ready_qty
        if r.qty_allocated > 0 and ready > 0:
            entry["ready"] = min(ready, r.qty_allocated)
        if r.qty_shipped > r.told_shipped_qty:
            entry["shipped"] = r.qty_shipped - r.told_shipped_qty
            shipped_lines.append(r.line_id)
        if r.qty_cancelled > r.told_cancelled_qty:
            entry["cancelled"] = r.qty_cancelled - r.told_cancelled_qty
        news = len(entry) > 3
        if r.chat_id is None:
            # Nobody to tell yet: the lines stay untold, so the order view still shows the
            # change and the customer hears it once they link a chat.
            if news:
                entry["stamp"] = (
                    r.projected_changed_at.isoformat() if r.projected_changed_at else ""
                )
                by_order[r.order_id].append(entry)
                heads[r.order_id] = r
            continue
        told.append(
            {
                "b_line": r.line_id,
                # A move below the threshold is not told, so it keeps adding up.
                "b_date": r.projected_date if moved else r.last_told_date,
                "b_ready": r.qty_allocated + r.qty_shipped,
                "b_shipped": r.qty_shipped,
                "b_cancelled": r.qty_cancelled,
            }
        )
        if news:
            entry["stamp"] = r.projected_changed_at.isoformat() if r.projected_changed_at else ""
            by_order[r.order_id].append(entry)
            heads[r.order_id] = r

    if shipped_lines:
        await _attach_shipments(conn, by_order, shipped_lines)

    superseded = await _merge_undelivered(conn, by_order, heads, now)

    rows: list[dict[str, Any]] = []
    no_chat = 0
    for order_id, entries in by_order.items():
        head = heads[order_id]
        status = "pending" if head.chat_id is not None else "no_chat"
        key = _key(
            "order",
            order_id,
            # Stored once while unlinked; a linked chat gets its own notice for the change.
            *(("no_chat",) if status == "no_chat" else ()),
            *(
                (
                    e["line_id"],
                    e.get("old"),
                    e.get("new"),
                    e.get("stamp"),
                    e.get("ready"),
                    e.get("shipped"),
                    e.get("cancelled"),
                )
                for e in entries
            ),
        )
        for e in entries:
            e.pop("stamp", None)
        no_chat += status == "no_chat"
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
                "status": status,
                "not_before": now,
            }
        )
    written = await insert_notices(conn, rows)

    if told:
        await conn.execute(
            update(order_lines)
            .where(ol.line_id == bindparam("b_line"))
            .values(
                last_told_date=bindparam("b_date"),
                last_told_at=now,
                told_ready_qty=bindparam("b_ready"),
                told_shipped_qty=bindparam("b_shipped"),
                told_cancelled_qty=bindparam("b_cancelled"),
            ),
            told,
        )

    written += await _queue_back_in_stock(conn, now)
    return QueueReport(written, sum(len(v) for v in by_order.values()), no_chat, superseded)


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
            .where(shipment_lines.c.line_id.in_(part))
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
    """Fold an older notice about the same order that nobody has sent yet (quiet hours, a
    backlog) into the new one, so the customer hears one story: first date to latest."""
    customer_ids = sorted({heads[o].customer_id for o in by_order})
    if not customer_ids:
        return 0
    merged = 0
    for part in _chunks(customer_ids, IN_CHUNK):
        result = await conn.execute(
            update(outbox)
            .where(
                outbox.c.customer_id.in_(part),
                outbox.c.kind == ORDER_UPDATE,
                outbox.c.status == "pending",
                or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
                # Only orders in this change; checked again below on the payload.
            )
            .values(status="superseded", last_error="merged into a newer notice")
            .returning(outbox.c.outbox_id, outbox.c.payload)
        )
        back: list[int] = []
        for row in result.all():
            payload = json.loads(row.payload)
            entries = by_order.get(payload["order_id"])
            if entries is None:
                back.append(row.outbox_id)
                continue
            merged += 1
            _fold(payload["lines"], entries)
        if back:
            await conn.execute(
                update(outbox)
                .where(outbox.c.outbox_id.in_(back))
                .values(status="pending", last_error=None)
            )
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
    conn: AsyncConnection, *, worker: str, now: datetime, lease: timedelta, limit: int
) -> list[Claimed]:
    """Lease up to ``limit`` due notices to ``worker``. A notice whose lease ran out without
    being marked sent (its process died) is due again."""
    o = outbox.c
    due = (
        select(o.outbox_id)
        .where(
            o.status == "pending",
            o.not_before <= now,
            or_(o.claimed_until.is_(None), o.claimed_until < now),
        )
        .order_by(o.not_before, o.outbox_id)
        .limit(limit)
    )
    ids = [r.outbox_id for r in await conn.execute(due)]
    if not ids:
        return []
    token = f"{worker}@{now.isoformat()}"
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
) -> None:
    """Put notices back for later; ``refund_attempt``: the try did not count (a 429, a
    per-chat pause), so it does not bring the notice nearer to giving up."""
    if not outbox_ids:
        return
    o = outbox.c
    values: dict[str, Any] = {
        "not_before": not_before,
        "claimed_until": None,
        "claimed_by": None,
        "last_error": error,
    }
    if refund_attempt:
        values["attempts"] = o.attempts - 1
    for part in _chunks(list(outbox_ids), IN_CHUNK):
        await conn.execute(update(outbox).where(o.outbox_id.in_(part)).values(**values))


async def mark_unreachable(conn: AsyncConnection, customer_id: int, at: datetime) -> int:
    """The customer blocked the bot: remember it and close their waiting notices."""
    await conn.execute(
        update(customers).where(customers.c.customer_id == customer_id).values(unreachable_at=at)
    )
    result = await conn.execute(
        update(outbox)
        .where(outbox.c.customer_id == customer_id, outbox.c.status == "pending")
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
