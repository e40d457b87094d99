"""Handoffs to people: one support topic per customer chat, its escalations, relayed messages.

Several bot processes may act on the same customer at once, so every transition is a
conditional UPDATE (or an INSERT guarded by a UNIQUE constraint) whose row count says who won;
the loser re-reads and follows the winner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from store.chats import touch_chat
from store.schema import (
    chats,
    customers,
    handoff_escalations,
    handoff_messages,
    handoffs,
    orders,
    restock_date_changes,
)

STATES = ("waiting", "answered", "closed")
REASONS = ("asked", "misunderstood", "delay_policy", "agent_pulled")
ENDED_BY = ("agent", "idle", "customer", "failed")


@dataclass(frozen=True)
class Handoff:
    handoff_id: int
    chat_id: int  # the customer's private chat
    support_chat_id: int
    thread_id: int | None  # the forum topic; None until the topic is created
    card_message_id: int | None
    state: str
    reason: str  # why the current (or last) escalation started
    customer_name: str  # as Telegram shows the customer
    username: str | None
    telegram_language: str | None
    escalations: int
    opened_at: datetime
    last_activity_at: datetime
    answered_at: datetime | None  # first agent answer of the current escalation
    no_answer_due_at: datetime | None
    no_answer_told_at: datetime | None
    closed_at: datetime | None
    customer_blocked: bool

    @property
    def active(self) -> bool:
        return self.state != "closed"


@dataclass(frozen=True)
class Escalation:
    escalation_id: int
    reason: str
    started_at: datetime
    ended_at: datetime | None
    ended_by: str | None
    agent_name: str | None


@dataclass(frozen=True)
class Claim:
    """The outcome of asking for a person."""

    handoff: Handoff
    started: bool  # False: an escalation was already running, nothing changed
    needs_topic: bool  # this caller won the escalation and no topic exists yet: create it


@dataclass(frozen=True)
class DateChange:
    old_date: date
    new_date: date
    changed_at: datetime


_COLS = tuple(getattr(handoffs.c, f) for f in Handoff.__dataclass_fields__)


def _handoff(row: object) -> Handoff:
    m = row._mapping  # type: ignore[attr-defined]
    return Handoff(**{k: m[k] for k in Handoff.__dataclass_fields__})


async def _one(conn: AsyncConnection, *where: object) -> Handoff | None:
    row = (await conn.execute(select(*_COLS).where(*where))).first()  # type: ignore[arg-type]
    return _handoff(row) if row else None


async def handoff_of(conn: AsyncConnection, customer_chat_id: int) -> Handoff | None:
    """The chat's handoff in any state (a closed one keeps its topic for the next time)."""
    return await _one(conn, handoffs.c.chat_id == customer_chat_id)


async def active_handoff(conn: AsyncConnection, customer_chat_id: int) -> Handoff | None:
    """The chat's handoff while a person owns the thread; None when the bot answers."""
    return await _one(conn, handoffs.c.chat_id == customer_chat_id, handoffs.c.state != "closed")


async def handoff_by_id(conn: AsyncConnection, handoff_id: int) -> Handoff | None:
    return await _one(conn, handoffs.c.handoff_id == handoff_id)


async def handoff_by_thread(
    conn: AsyncConnection, support_chat_id: int, thread_id: int
) -> Handoff | None:
    return await _one(
        conn, handoffs.c.support_chat_id == support_chat_id, handoffs.c.thread_id == thread_id
    )


async def claim_handoff(
    conn: AsyncConnection,
    chat_id: int,
    *,
    support_chat_id: int,
    reason: str,
    now: datetime,
    no_answer_due_at: datetime | None,
    customer_name: str,
    username: str | None = None,
    telegram_language: str | None = None,
) -> Claim:
    """Start an escalation for the chat, or find the one already running.

    The first escalation inserts the row; a race loses on UNIQUE(chat_id) and re-reads. A
    later escalation reopens the closed row with a conditional UPDATE, so of two at once
    exactly one starts it."""
    if reason not in REASONS:
        raise ValueError(f"unknown escalation reason {reason!r}")
    await touch_chat(conn, chat_id)
    fresh = {
        "state": "waiting",
        "reason": reason,
        "customer_name": customer_name[:200],
        "username": username,
        "telegram_language": telegram_language,
        "opened_at": now,
        "last_activity_at": now,
        "answered_at": None,
        "no_answer_due_at": no_answer_due_at,
        "no_answer_told_at": None,
        "closed_at": None,
        "customer_blocked": False,
        "updated_at": now,
    }
    started = False
    if await handoff_of(conn, chat_id) is None:
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(handoffs).values(
                        chat_id=chat_id,
                        support_chat_id=support_chat_id,
                        escalations=1,
                        created_at=now,
                        **fresh,
                    )
                )
            started = True
        except IntegrityError:
            pass  # another process inserted it first: theirs is the escalation
    else:
        result = await conn.execute(
            update(handoffs)
            .where(handoffs.c.chat_id == chat_id, handoffs.c.state == "closed")
            .values(escalations=handoffs.c.escalations + 1, **fresh)
        )
        started = bool(result.rowcount)
    found = await handoff_of(conn, chat_id)
    assert found is not None
    if not started:
        return Claim(found, started=False, needs_topic=False)
    if found.support_chat_id != support_chat_id:
        # The shop moved its support group: the old topic is in the old group.
        await conn.execute(
            update(handoffs)
            .where(handoffs.c.handoff_id == found.handoff_id)
            .values(support_chat_id=support_chat_id, thread_id=None, card_message_id=None)
        )
        found = await handoff_by_id(conn, found.handoff_id)
        assert found is not None
    await conn.execute(
        insert(handoff_escalations).values(
            handoff_id=found.handoff_id, reason=reason, started_at=now
        )
    )
    return Claim(found, started=True, needs_topic=found.thread_id is None)


async def set_topic(conn: AsyncConnection, handoff_id: int, thread_id: int) -> Handoff:
    await conn.execute(
        update(handoffs).where(handoffs.c.handoff_id == handoff_id).values(thread_id=thread_id)
    )
    found = await handoff_by_id(conn, handoff_id)
    assert found is not None
    return found


async def set_card(conn: AsyncConnection, handoff_id: int, message_id: int) -> None:
    await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id)
        .values(card_message_id=message_id)
    )


async def record_customer_message(conn: AsyncConnection, handoff_id: int, now: datetime) -> bool:
    """The customer wrote: the thread waits for an agent. True if the state changed."""
    result = await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id, handoffs.c.state == "answered")
        .values(state="waiting", last_activity_at=now, updated_at=now)
    )
    if not result.rowcount:
        await touch_handoff(conn, handoff_id, now)
    return bool(result.rowcount)


async def record_agent_message(conn: AsyncConnection, handoff_id: int, now: datetime) -> bool:
    """An agent wrote to the customer: answered. True if the state changed."""
    result = await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id, handoffs.c.state == "waiting")
        .values(state="answered", no_answer_due_at=None, last_activity_at=now, updated_at=now)
    )
    if not result.rowcount:
        await touch_handoff(conn, handoff_id, now)
        return False
    await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id, handoffs.c.answered_at.is_(None))
        .values(answered_at=now)
    )
    return True


async def touch_handoff(conn: AsyncConnection, handoff_id: int, now: datetime) -> None:
    await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id, handoffs.c.state != "closed")
        .values(last_activity_at=now, updated_at=now)
    )


async def close_handoff(
    conn: AsyncConnection,
    handoff_id: int,
    *,
    now: datetime,
    by: str,
    agent_name: str | None = None,
) -> Handoff | None:
    """Hand the thread back to the bot. None if it was not active (someone else closed it)."""
    if by not in ENDED_BY:
        raise ValueError(f"unknown ended_by {by!r}")
    result = await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id, handoffs.c.state != "closed")
        .values(state="closed", closed_at=now, no_answer_due_at=None, updated_at=now)
    )
    if not result.rowcount:
        return None
    await conn.execute(
        update(handoff_escalations)
        .where(
            handoff_escalations.c.handoff_id == handoff_id,
            handoff_escalations.c.ended_at.is_(None),
        )
        .values(ended_at=now, ended_by=by, agent_name=agent_name)
    )
    # Edits of messages from a finished conversation are not relayed any more.
    await conn.execute(delete(handoff_messages).where(handoff_messages.c.handoff_id == handoff_id))
    return await handoff_by_id(conn, handoff_id)


async def claim_no_answer_notice(conn: AsyncConnection, handoff_id: int, now: datetime) -> bool:
    """True for exactly one caller: the one who tells the customer nobody has answered yet."""
    result = await conn.execute(
        update(handoffs)
        .where(
            handoffs.c.handoff_id == handoff_id,
            handoffs.c.state == "waiting",
            handoffs.c.answered_at.is_(None),
            handoffs.c.no_answer_told_at.is_(None),
        )
        .values(no_answer_told_at=now, updated_at=now)
    )
    return bool(result.rowcount)


async def due_no_answer(conn: AsyncConnection, now: datetime, limit: int = 100) -> list[Handoff]:
    """Waiting escalations nobody answered by their deadline and not yet told."""
    rows = await conn.execute(
        select(*_COLS)
        .where(
            handoffs.c.state == "waiting",
            handoffs.c.answered_at.is_(None),
            handoffs.c.no_answer_told_at.is_(None),
            handoffs.c.no_answer_due_at <= now,
        )
        .order_by(handoffs.c.no_answer_due_at)
        .limit(max(1, min(limit, 1000)))
    )
    return [_handoff(r) for r in rows]


async def due_idle(conn: AsyncConnection, before: datetime, limit: int = 100) -> list[Handoff]:
    """Active handoffs with nothing said since ``before``."""
    rows = await conn.execute(
        select(*_COLS)
        .where(handoffs.c.state != "closed", handoffs.c.last_activity_at <= before)
        .order_by(handoffs.c.last_activity_at)
        .limit(max(1, min(limit, 1000)))
    )
    return [_handoff(r) for r in rows]


async def set_customer_blocked(conn: AsyncConnection, chat_id: int, blocked: bool) -> bool:
    """Record that the customer blocked (or unblocked) the bot. True if it changed."""
    result = await conn.execute(
        update(handoffs)
        .where(handoffs.c.chat_id == chat_id, handoffs.c.customer_blocked.is_not(blocked))
        .values(customer_blocked=blocked)
    )
    return bool(result.rowcount)


async def escalations_of(
    conn: AsyncConnection, handoff_id: int, limit: int = 5
) -> list[Escalation]:
    """The handoff's escalations, newest first."""
    e = handoff_escalations.c
    rows = await conn.execute(
        select(e.escalation_id, e.reason, e.started_at, e.ended_at, e.ended_by, e.agent_name)
        .where(e.handoff_id == handoff_id)
        .order_by(e.started_at.desc(), e.escalation_id.desc())
        .limit(max(1, min(limit, 100)))
    )
    return [Escalation(**r._mapping) for r in rows]


async def link_message(
    conn: AsyncConnection,
    handoff_id: int,
    source: tuple[int, int],
    copy: tuple[int, int],
    now: datetime,
) -> None:
    """Remember that ``copy`` (chat id, message id) relays ``source``."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(handoff_messages).values(
                    handoff_id=handoff_id,
                    source_chat_id=source[0],
                    source_message_id=source[1],
                    copy_chat_id=copy[0],
                    copy_message_id=copy[1],
                    created_at=now,
                )
            )
    except IntegrityError:
        pass  # relayed twice (a redelivered update): the first copy stays the linked one


async def linked_copy(
    conn: AsyncConnection, source_chat_id: int, source_message_id: int
) -> tuple[int, int] | None:
    m = handoff_messages.c
    row = (
        await conn.execute(
            select(m.copy_chat_id, m.copy_message_id).where(
                m.source_chat_id == source_chat_id, m.source_message_id == source_message_id
            )
        )
    ).first()
    return (int(row.copy_chat_id), int(row.copy_message_id)) if row else None


async def date_changes(
    conn: AsyncConnection, restock_ids: list[str], per_restock: int = 5
) -> dict[str, list[DateChange]]:
    """The date history of restocks, oldest change first, the last ``per_restock`` of each."""
    if not restock_ids:
        return {}
    r = restock_date_changes.c
    rows = await conn.execute(
        select(r.restock_id, r.old_date, r.new_date, r.changed_at)
        .where(r.restock_id.in_(restock_ids))
        .order_by(r.restock_id, r.changed_at, r.change_id)
    )
    out: dict[str, list[DateChange]] = {}
    for row in rows:
        out.setdefault(row.restock_id, []).append(
            DateChange(row.old_date, row.new_date, row.changed_at)
        )
    return {k: v[-per_restock:] for k, v in out.items()}


async def find_customer_chat(conn: AsyncConnection, query: str) -> int | None:
    """The private chat an agent means: an order number, a customer's e-mail, or a chat id
    the bot knows. None when nothing (or no linked chat) matches."""
    query = query.strip()
    if not query:
        return None
    if "@" in query:
        owner = select(customers.c.customer_id).where(customers.c.email.ilike(query))
    else:
        owner = select(orders.c.customer_id).where(orders.c.order_number == query)
    found = await conn.scalar(
        select(chats.c.chat_id).where(chats.c.customer_id == owner.scalar_subquery()).limit(1)
    )
    if found is None and query.lstrip("-").isdigit():
        found = await conn.scalar(select(chats.c.chat_id).where(chats.c.chat_id == int(query)))
    return int(found) if found is not None else None
