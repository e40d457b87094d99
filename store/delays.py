"""Long delays under the US FTC Mail, Internet, or Telephone Order Merchandise Rule
(16 CFR Part 435): the delay-option offer, consent, and cancellation when consent is missing.

A line is delayed when it cannot ship by the date promised at order time (or, with no
promise, within ``default_ship_days`` of the order). The first definite delay of up to
``silent_consent_days`` needs no answer: silence is consent. A longer or unknown delay, and
every further delay, needs the customer's explicit "keep waiting" by the answer-by day; without
it the line is cancelled (or handed to the agents, by policy). Every offer and answer is a
row of ``delay_offers``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from store.backorders import cancel_line, cancel_order
from store.errors import NotFound
from store.outbox import DELAY_CANCELLED, DELAY_OFFER, IN_CHUNK, insert_notices
from store.schema import chats, delay_offers, order_lines, orders, utcnow

OPEN = ("open", "consented")


@dataclass(frozen=True)
class DelayPolicy:
    silent_consent_days: int = 30
    default_ship_days: int = 30
    min_answer_days: int = 7
    no_answer_action: Literal["cancel", "agents"] = "cancel"


@dataclass(frozen=True)
class DelayRun:
    offered: int
    cancelled: int
    to_agents: int
    closed: int


@dataclass(frozen=True)
class Offer:
    offer_id: int
    line_id: int
    order_id: int
    order_number: str
    customer_id: int
    seq: int
    line_no: int
    sku: str
    qty_waiting: int
    unit_price_minor: int
    currency: str
    promised_date: date
    revised_date: date | None
    projected_date: date | None
    consent_needed: bool
    answer_by: date | None
    status: str
    answer: str | None
    latest: bool  # no newer offer for the line
    open_lines_in_order: int  # lines of the order still waiting or ready


def promise_of(promised: date | None, placed_at: datetime, default_ship_days: int) -> date:
    return promised or (placed_at.date() + timedelta(days=default_ship_days))


def is_delayed(projected: date | None, promise: date) -> bool:
    return projected is None or projected > promise


async def apply_delay_policy(
    conn: AsyncConnection, *, today: date, now: datetime | None = None, policy: DelayPolicy
) -> DelayRun:
    """One pass: close offers whose answer-by day passed without consent, then offer the
    options to every line newly delayed or delayed again. Idempotent for the same day."""
    now = now or utcnow()
    cancelled, to_agents, closed = await _enforce_deadlines(conn, today, now, policy)
    offered = await _offer_new(conn, today, now, policy)
    return DelayRun(offered, cancelled, to_agents, closed)


async def _offer_new(conn: AsyncConnection, today: date, now: datetime, policy: DelayPolicy) -> int:
    ol = order_lines.c
    d = delay_offers.c
    latest_seq = (
        select(d.line_id, func.max(d.seq).label("seq")).group_by(d.line_id).subquery("latest_seq")
    )
    latest = delay_offers.alias("latest")
    rows = (
        await conn.execute(
            select(
                ol.line_id,
                ol.order_id,
                ol.promised_date,
                ol.projected_date,
                orders.c.placed_at,
                orders.c.customer_id,
                chats.c.chat_id,
                latest.c.offer_id,
                latest.c.seq,
                latest.c.revised_date,
                latest.c.status,
            )
            .select_from(
                order_lines.join(orders, orders.c.order_id == ol.order_id)
                .outerjoin(chats, chats.c.customer_id == orders.c.customer_id)
                .outerjoin(latest_seq, latest_seq.c.line_id == ol.line_id)
                .outerjoin(
                    latest,
                    (latest.c.line_id == ol.line_id) & (latest.c.seq == latest_seq.c.seq),
                )
            )
            .where(ol.qty_waiting > 0)
            .where(
                (ol.projected_date.is_(None))
                | (ol.promised_date.is_(None))
                | (ol.projected_date > ol.promised_date)
            )
        )
    ).all()
    new_offers: list[dict[str, Any]] = []
    supersede: list[int] = []
    for r in rows:
        promise = promise_of(r.promised_date, r.placed_at, policy.default_ship_days)
        if not is_delayed(r.projected_date, promise):
            continue
        if r.offer_id is None:
            seq = 1
            definite_short = (
                r.projected_date is not None
                and (r.projected_date - promise).days <= policy.silent_consent_days
            )
            consent_needed = not definite_short
        else:
            if r.status not in OPEN or r.revised_date is None:
                # Cancelled, with the agents, or consent to wait with no date given.
                continue
            if r.projected_date is not None and r.projected_date <= r.revised_date:
                continue
            seq = r.seq + 1
            consent_needed = True
            if r.status == "open":
                supersede.append(r.offer_id)
        answer_by = None
        if consent_needed:
            floor = today + timedelta(days=policy.min_answer_days)
            answer_by = r.projected_date if r.projected_date is not None else max(promise, floor)
            answer_by = max(answer_by, floor)
        new_offers.append(
            {
                "line_id": r.line_id,
                "order_id": r.order_id,
                "customer_id": r.customer_id,
                "seq": seq,
                "promised_date": promise,
                "revised_date": r.projected_date,
                "consent_needed": consent_needed,
                "answer_by": answer_by,
                "buttons": "[]",
                "offered_at": now,
                "status": "open",
                "chat_id": r.chat_id,
            }
        )
    if supersede:
        await conn.execute(
            update(delay_offers).where(d.offer_id.in_(supersede)).values(status="superseded")
        )
    if not new_offers:
        return 0
    chat_ids = [offer.pop("chat_id") for offer in new_offers]
    # One INSERT ... RETURNING for many rows (SQLAlchemy's insertmanyvalues), the ids in the
    # rows' order: one statement per offer cost 0.9 ms each, and a store's first pass can
    # offer to a million late lines in this one transaction.
    offer_ids = (
        await conn.execute(
            delay_offers.insert().returning(d.offer_id, sort_by_parameter_order=True), new_offers
        )
    ).scalars()
    notices: list[dict[str, Any]] = []
    reached: list[int] = []
    for offer, offer_id, chat_id in zip(new_offers, offer_ids, chat_ids, strict=True):
        if chat_id is not None:
            reached.append(offer["line_id"])
        notices.append(
            {
                "dedupe_key": f"delay:{offer_id}",
                "chat_id": chat_id,
                "customer_id": offer["customer_id"],
                "kind": DELAY_OFFER,
                "payload": {"offer_id": offer_id},
                "status": "pending" if chat_id is not None else "no_chat",
                "not_before": now,
            }
        )
    await insert_notices(conn, notices)
    # The offer tells the new date; a plain date-change notice about it would repeat it. A
    # customer without a chat is told nothing yet (the outbox's rule): their lines stay
    # untold, so the order view shows the move and they hear of it once they link a chat.
    for start in range(0, len(reached), IN_CHUNK):
        await conn.execute(
            update(order_lines)
            .where(ol.line_id.in_(reached[start : start + IN_CHUNK]))
            .values(last_told_date=ol.projected_date, last_told_at=now)
        )
    return len(new_offers)


async def _enforce_deadlines(
    conn: AsyncConnection, today: date, now: datetime, policy: DelayPolicy
) -> tuple[int, int, int]:
    d = delay_offers.c
    ol = order_lines.c
    due = (
        await conn.execute(
            select(
                d.offer_id,
                d.line_id,
                d.customer_id,
                ol.line_no,
                ol.qty_waiting,
                ol.projected_date,
                d.promised_date,
                orders.c.order_number,
                chats.c.chat_id,
                d.shown_at,
            )
            .select_from(
                delay_offers.join(order_lines, ol.line_id == d.line_id)
                .join(orders, orders.c.order_id == d.order_id)
                .outerjoin(chats, chats.c.customer_id == d.customer_id)
            )
            .where(d.status == "open", d.consent_needed.is_(True), d.answer_by < today)
            .order_by(d.offer_id)
        )
    ).all()
    cancelled = to_agents = closed = 0
    notices: list[dict[str, Any]] = []
    for r in due:
        if r.qty_waiting == 0 or not is_delayed(r.projected_date, r.promised_date):
            # It shipped, was filled or cancelled in the meantime, or its date came back
            # within the promise: nothing left to decide, and nothing to cancel.
            await _close(conn, r.offer_id, "closed", None, now, "policy", None)
            closed += 1
            continue
        if r.shown_at is None:
            # The offer never reached the customer (no chat, blocked, undeliverable): their
            # silence is not consent to anything, so people must reach them another way.
            await _close(conn, r.offer_id, "to_agents", "never_shown", now, "policy", None)
            to_agents += 1
            continue
        if policy.no_answer_action == "agents":
            await _close(conn, r.offer_id, "to_agents", "no_answer", now, "policy", None)
            to_agents += 1
            continue
        result = await cancel_line(
            conn, r.order_number, r.line_no, reason="delay: no consent by the answer-by day"
        )
        if r.chat_id is not None:
            # Without a chat the cancellation stays untold, like any change (see _offer_new).
            await _told_cancelled(conn, [r.line_id])
        await _close(
            conn,
            r.offer_id,
            "cancelled",
            "no_answer",
            now,
            "policy",
            {"cancelled_qty": result.cancelled_qty},
        )
        cancelled += 1
        notices.append(
            {
                "dedupe_key": f"delaycancel:{r.offer_id}",
                "chat_id": r.chat_id,
                "customer_id": r.customer_id,
                "kind": DELAY_CANCELLED,
                "payload": {"offer_id": r.offer_id, "qty": result.cancelled_qty},
                "status": "pending" if r.chat_id is not None else "no_chat",
                "not_before": now,
            }
        )
    await insert_notices(conn, notices)
    return cancelled, to_agents, closed


async def _told_cancelled(conn: AsyncConnection, line_ids: list[int]) -> None:
    ol = order_lines.c
    await conn.execute(
        update(order_lines)
        .where(ol.line_id.in_(line_ids))
        .values(
            told_cancelled_qty=ol.qty_cancelled,
            told_ready_qty=ol.qty_allocated + ol.qty_shipped,
        )
    )


async def _close(
    conn: AsyncConnection,
    offer_id: int,
    status: str,
    answer: str | None,
    now: datetime,
    channel: str,
    detail: dict[str, Any] | None,
) -> None:
    await conn.execute(
        update(delay_offers)
        .where(delay_offers.c.offer_id == offer_id)
        .values(
            status=status,
            answer=answer,
            answered_at=now,
            answer_channel=channel,
            answer_detail=json.dumps(detail, sort_keys=True) if detail else None,
        )
    )


# --- the customer's side -----------------------------------------------------------------


async def offer_for(conn: AsyncConnection, offer_id: int, customer_id: int) -> Offer | None:
    """The offer, only if it is this customer's; None otherwise (whatever the reason)."""
    d = delay_offers.c
    ol = order_lines.c
    row = (
        await conn.execute(
            select(
                d.offer_id,
                d.line_id,
                d.order_id,
                orders.c.order_number,
                d.customer_id,
                d.seq,
                ol.line_no,
                ol.sku,
                ol.qty_waiting,
                ol.unit_price_minor,
                orders.c.currency,
                d.promised_date,
                d.revised_date,
                ol.projected_date,
                d.consent_needed,
                d.answer_by,
                d.status,
                d.answer,
            )
            .select_from(
                delay_offers.join(order_lines, ol.line_id == d.line_id).join(
                    orders, orders.c.order_id == d.order_id
                )
            )
            .where(d.offer_id == offer_id, orders.c.customer_id == customer_id)
        )
    ).first()
    if row is None:
        return None
    newest = await conn.scalar(select(func.max(d.seq)).where(d.line_id == row.line_id))
    open_lines = await conn.scalar(
        select(func.count()).where(
            ol.order_id == row.order_id, (ol.qty_waiting > 0) | (ol.qty_allocated > 0)
        )
    )
    return Offer(
        **{k: row._mapping[k] for k in row._mapping},
        latest=newest == row.seq,
        open_lines_in_order=int(open_lines or 0),
    )


def still_current(offer: Offer) -> bool:
    """Whether a press on this offer may still change anything."""
    return (
        offer.latest
        and offer.status in OPEN
        and offer.qty_waiting > 0
        and is_delayed(offer.projected_date, offer.promised_date)
    )


async def record_shown(
    conn: AsyncConnection,
    offer_id: int,
    *,
    text: str,
    buttons: list[str],
    channel: str,
    at: datetime,
) -> None:
    await conn.execute(
        update(delay_offers)
        .where(delay_offers.c.offer_id == offer_id)
        .values(shown_text=text, buttons=json.dumps(buttons), channel=channel, shown_at=at)
    )


async def answer_keep(conn: AsyncConnection, offer: Offer, now: datetime, channel: str) -> None:
    await _close(conn, offer.offer_id, "consented", "keep", now, channel, None)
    await conn.execute(
        update(order_lines)
        .where(order_lines.c.line_id == offer.line_id)
        .values(delay_consent="accepted", delay_consent_at=now)
    )


async def answer_cancel(
    conn: AsyncConnection, offer: Offer, now: datetime, channel: str, *, whole_order: bool
) -> int:
    """Cancel the line (or its whole order) for the customer; returns the units cancelled
    and closes every open offer they cover."""
    reason = "delay: customer cancelled"
    if whole_order:
        result = await cancel_order(
            conn, offer.order_number, customer_id=offer.customer_id, reason=reason
        )
        lines = [
            int(r.line_id)
            for r in await conn.execute(
                select(order_lines.c.line_id).where(order_lines.c.order_id == offer.order_id)
            )
        ]
    else:
        result = await cancel_line(
            conn, offer.order_number, offer.line_no, customer_id=offer.customer_id, reason=reason
        )
        lines = [offer.line_id]
    await _told_cancelled(conn, lines)
    answer = "cancel_order" if whole_order else "cancel_line"
    await _close(
        conn, offer.offer_id, "cancelled", answer, now, channel, {"qty": result.cancelled_qty}
    )
    await conn.execute(
        update(delay_offers)
        .where(
            delay_offers.c.line_id.in_(lines),
            delay_offers.c.status.in_(OPEN),
            delay_offers.c.offer_id != offer.offer_id,
        )
        .values(status="closed", answer=answer, answered_at=now, answer_channel=channel)
    )
    await conn.execute(
        update(order_lines)
        .where(order_lines.c.line_id.in_(lines))
        .values(delay_consent="declined", delay_consent_at=now)
    )
    return result.cancelled_qty


async def answer_alternative(
    conn: AsyncConnection,
    offer: Offer,
    now: datetime,
    channel: str,
    *,
    alt_sku: str,
    new_order_number: str | None,
    to_agents: bool,
) -> None:
    status = "to_agents" if to_agents else "cancelled"
    await _close(
        conn,
        offer.offer_id,
        status,
        "alternative",
        now,
        channel,
        {"sku": alt_sku, "new_order": new_order_number},
    )


async def next_order_number(conn: AsyncConnection) -> str:
    """A fresh order number for an order the bot places itself (an alternative)."""
    numbers = [
        r.order_number
        for r in await conn.execute(
            select(orders.c.order_number)
            .order_by(func.length(orders.c.order_number).desc(), orders.c.order_number.desc())
            .limit(1)
        )
    ]
    if not numbers:
        return "100001"
    return str(int(numbers[0]) + 1)


@dataclass(frozen=True)
class ConsentReport:
    awaiting: int
    consented: int
    cancelled_for_delay: int
    to_agents: int


async def consent_report(conn: AsyncConnection) -> ConsentReport:
    d = delay_offers.c
    rows = await conn.execute(
        select(d.status, d.consent_needed, d.answer, func.count()).group_by(
            d.status, d.consent_needed, d.answer
        )
    )
    awaiting = consented = cancelled = agents = 0
    for status, needed, answer, n in rows:
        if status == "open" and needed:
            awaiting += n
        elif status == "consented" or (status == "open" and not needed):
            consented += n
        elif status == "cancelled" and answer != "alternative":
            cancelled += n
        elif status == "to_agents":
            agents += n
    return ConsentReport(awaiting, consented, cancelled, agents)


async def delay_lines(conn: AsyncConnection, status: str, limit: int = 50) -> list[Any]:
    """Offers for the admin report: 'awaiting', 'consented' or 'cancelled'."""
    d = delay_offers.c
    q = (
        select(
            orders.c.order_number,
            order_lines.c.line_no,
            order_lines.c.sku,
            d.promised_date,
            d.revised_date,
            d.answer_by,
            d.answer,
            d.answered_at,
            d.answer_channel,
        )
        .select_from(
            delay_offers.join(order_lines, order_lines.c.line_id == d.line_id).join(
                orders, orders.c.order_id == d.order_id
            )
        )
        .order_by(d.offer_id)
        .limit(limit)
    )
    if status == "awaiting":
        q = q.where(d.status == "open", d.consent_needed.is_(True))
    elif status == "consented":
        q = q.where(
            (d.status == "consented") | ((d.status == "open") & d.consent_needed.is_(False))
        )
    else:
        q = q.where(d.status == "cancelled", d.answer != "alternative")
    return list((await conn.execute(q)).all())


__all__ = [
    "ConsentReport",
    "DelayPolicy",
    "DelayRun",
    "NotFound",
    "Offer",
    "answer_alternative",
    "answer_cancel",
    "answer_keep",
    "apply_delay_policy",
    "consent_report",
    "delay_lines",
    "is_delayed",
    "next_order_number",
    "offer_for",
    "promise_of",
    "record_shown",
    "still_current",
]
