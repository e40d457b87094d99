"""Handoffs to people: one support topic per customer, its escalations, relayed messages.

A linked customer has one topic, whichever Telegram account they write from: when their link
moves to another chat (store.chats.link_chat), their next escalation moves the topic to the
new chat and reopens it there (UNIQUE(customer_id) on handoffs). An escalation still open on
the old chat is ended then ("moved": the old account goes back to the bot, silently; the
conversation continues in the same topic with the new account). A topic the new chat had of
its own before it was linked is detached (chat_id NULL) and stays closed. An unlinked chat
keeps one topic per chat (UNIQUE(chat_id)).

Several bot processes may act on the same customer at once, so every transition is a
conditional UPDATE (or an INSERT guarded by a UNIQUE constraint) whose row count says who won;
the loser re-reads and follows the winner. An escalation, which reads where the customer's
topic is before it moves it, first holds the rows of the chat and of the customers involved
(_hold_topics): escalations that could touch the same topic run one after the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from store.chats import Chat, chat_of, touch_chat
from store.errors import Conflict
from store.schema import (
    chats,
    customers,
    handoff_escalations,
    handoff_held,
    handoff_messages,
    handoffs,
    orders,
    restock_date_changes,
)

STATES = ("waiting", "answered", "closed")
REASONS = ("asked", "misunderstood", "delay_policy", "agent_pulled")
ENDED_BY = ("agent", "idle", "customer", "failed", "moved")
# How long the escalating process has to open the topic before the sweep may do it.
TOPIC_LEASE = timedelta(minutes=2)


@dataclass(frozen=True)
class Handoff:
    handoff_id: int
    chat_id: int  # the customer's private chat (detached topics are never returned)
    customer_id: int | None  # the linked customer whose topic this is; None: the chat's own
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
    moved_from: int | None = None  # the customer's topic came over from this (old) chat


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
    row = (
        await conn.execute(select(*_COLS).where(handoffs.c.chat_id.is_not(None), *where))  # type: ignore[arg-type]
    ).first()
    return _handoff(row) if row else None


async def is_detached_topic(conn: AsyncConnection, support_chat_id: int, thread_id: int) -> bool:
    """True for a topic no chat talks to any more (its customer writes from elsewhere)."""
    found = await conn.scalar(
        select(handoffs.c.handoff_id).where(
            handoffs.c.support_chat_id == support_chat_id,
            handoffs.c.thread_id == thread_id,
            handoffs.c.chat_id.is_(None),
        )
    )
    return found is not None


async def _detach(conn: AsyncConnection, h: Handoff, now: datetime) -> None:
    """The chat no longer talks to this (closed) topic."""
    await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == h.handoff_id, handoffs.c.chat_id == h.chat_id)
        .values(chat_id=None, updated_at=now)
    )


async def _settle_topic(
    conn: AsyncConnection, chat_id: int, customer_id: int | None, now: datetime
) -> int | None:
    """Before an escalation of the chat (which has no active handoff): make the chat's row
    the right topic. A linked customer's topic comes to the chat from wherever it is; the
    chat's own topic is adopted by its customer when they have none. Returns the chat the
    customer's topic came from, if it moved."""
    mine = await handoff_of(conn, chat_id)
    if customer_id is None:
        if mine is not None and mine.customer_id is not None:
            await _detach(conn, mine, now)  # someone else's topic: the chat is not theirs now
        return None
    theirs = (
        await conn.execute(
            select(handoffs.c.handoff_id, handoffs.c.chat_id, handoffs.c.state).where(
                handoffs.c.customer_id == customer_id
            )
        )
    ).first()
    if theirs is None:
        if mine is not None and mine.customer_id is None:
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        update(handoffs)
                        .where(
                            handoffs.c.handoff_id == mine.handoff_id,
                            handoffs.c.customer_id.is_(None),
                        )
                        .values(customer_id=customer_id, updated_at=now)
                    )
            except IntegrityError:
                pass  # another process gave the customer a topic first
        elif mine is not None:
            await _detach(conn, mine, now)
        return None
    if theirs.chat_id == chat_id or (mine is not None and mine.handoff_id == theirs.handoff_id):
        return None  # already here (another process of this chat may have just claimed it)
    if mine is not None:
        await _detach(conn, mine, now)
    old_chat = theirs.chat_id
    try:
        async with conn.begin_nested():
            moved = await conn.execute(
                update(handoffs)
                .where(
                    handoffs.c.handoff_id == theirs.handoff_id,
                    handoffs.c.chat_id.is_(None)
                    if old_chat is None
                    else handoffs.c.chat_id == old_chat,
                )
                .values(chat_id=chat_id, customer_blocked=False, updated_at=now)
            )
    except IntegrityError:
        return None  # another process gave this chat a row first: theirs stands
    if not moved.rowcount:
        return None  # another process moved it first
    # The move is ours: an escalation still open on the old chat ends here.
    await close_handoff(conn, theirs.handoff_id, now=now, by="moved")
    return int(old_chat) if old_chat is not None else None


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


async def _hold_topics(conn: AsyncConnection, chat_id: int) -> Chat:
    """Hold, until the transaction ends, the chat's row and the rows of the customers whose
    topics an escalation of the chat may touch (the chat's customer's, and the one its own
    topic belongs to): two escalations that could move the same topic run one after the
    other. On PostgreSQL at READ COMMITTED one chat's escalation would otherwise see the
    customer's topic on the old chat while another moves it (and fail, or detach the topic
    the other just took). The chat first, then customers by id, so two escalations never
    wait for each other in a circle; FOR NO KEY UPDATE leaves rows that refer to them free
    to be written. Nothing on SQLite, whose write transactions run one at a time. Returns
    the chat as it is under the lock."""
    await touch_chat(conn, chat_id)
    await conn.execute(
        select(chats.c.chat_id).where(chats.c.chat_id == chat_id).with_for_update(key_share=True)
    )
    chat = await chat_of(conn, chat_id)
    assert chat is not None
    mine = await handoff_of(conn, chat_id)
    held = {chat.customer_id, mine.customer_id if mine is not None else None} - {None}
    if held:
        await conn.execute(
            select(customers.c.customer_id)
            .where(customers.c.customer_id.in_(sorted(held)))
            .order_by(customers.c.customer_id)
            .with_for_update(key_share=True)
        )
    return chat


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
    chat = await _hold_topics(conn, chat_id)
    current = await handoff_of(conn, chat_id)
    if current is not None and current.active:
        return Claim(current, started=False, needs_topic=False)
    moved_from = await _settle_topic(conn, chat_id, chat.customer_id, now)
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
        "topic_lease_until": now + TOPIC_LEASE,
        "updated_at": now,
    }
    started = False
    if await handoff_of(conn, chat_id) is None:
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(handoffs).values(
                        chat_id=chat_id,
                        customer_id=chat.customer_id,
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
    if found is None:
        # Lost a race on the customer's topic to another chat's escalation.
        raise Conflict(f"the topic of chat {chat_id} is being moved; try again")
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
    return Claim(found, started=True, needs_topic=found.thread_id is None, moved_from=moved_from)


async def set_topic(conn: AsyncConnection, handoff_id: int, thread_id: int) -> Handoff | None:
    """Record the topic just opened. None if the handoff has one already (another process
    opened it first: the caller's topic is surplus) or is gone."""
    result = await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id, handoffs.c.thread_id.is_(None))
        .values(thread_id=thread_id, topic_lease_until=None)
    )
    if not result.rowcount:
        return None
    return await handoff_by_id(conn, handoff_id)


async def without_topic(conn: AsyncConnection, now: datetime, limit: int = 100) -> list[Handoff]:
    """Active handoffs whose topic was never opened and whose opener's lease ran out (the
    process crashed between the claim and the topic)."""
    rows = await conn.execute(
        select(*_COLS)
        .where(
            handoffs.c.chat_id.is_not(None),
            handoffs.c.state != "closed",
            handoffs.c.thread_id.is_(None),
            (handoffs.c.topic_lease_until.is_(None)) | (handoffs.c.topic_lease_until <= now),
        )
        .order_by(handoffs.c.opened_at)
        .limit(max(1, min(limit, 1000)))
    )
    return [_handoff(r) for r in rows]


async def claim_topic_lease(conn: AsyncConnection, handoff_id: int, now: datetime) -> bool:
    """True for exactly one caller: the one who opens the missing topic now."""
    result = await conn.execute(
        update(handoffs)
        .where(
            handoffs.c.handoff_id == handoff_id,
            handoffs.c.state != "closed",
            handoffs.c.thread_id.is_(None),
            (handoffs.c.topic_lease_until.is_(None)) | (handoffs.c.topic_lease_until <= now),
        )
        .values(topic_lease_until=now + TOPIC_LEASE)
    )
    return bool(result.rowcount)


async def hold_message(
    conn: AsyncConnection, handoff_id: int, source: tuple[int, int], now: datetime
) -> None:
    """Keep a customer message that came before the topic, to relay it once it exists."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(handoff_held).values(
                    handoff_id=handoff_id,
                    source_chat_id=source[0],
                    source_message_id=source[1],
                    created_at=now,
                )
            )
    except IntegrityError:
        pass  # held twice (a redelivered update)


async def held_messages(
    conn: AsyncConnection, handoff_id: int, limit: int = 100
) -> list[tuple[int, int, int]]:
    """(held id, chat id, message id) of the handoff's held messages, oldest first."""
    hm = handoff_held.c
    rows = await conn.execute(
        select(hm.held_id, hm.source_chat_id, hm.source_message_id)
        .where(hm.handoff_id == handoff_id)
        .order_by(hm.held_id)
        .limit(max(1, min(limit, 1000)))
    )
    return [(int(r.held_id), int(r.source_chat_id), int(r.source_message_id)) for r in rows]


async def take_held(conn: AsyncConnection, held_id: int) -> bool:
    """True for exactly one caller: the one who relays this held message."""
    result = await conn.execute(delete(handoff_held).where(handoff_held.c.held_id == held_id))
    return bool(result.rowcount)


async def with_held(conn: AsyncConnection, limit: int = 100) -> list[Handoff]:
    """Active handoffs with a topic, its card posted, and messages still held for it.

    Until the card is there the topic belongs to whoever is opening it: relaying earlier would
    put the customer's words above the card that explains who they are.
    """
    ids = select(handoff_held.c.handoff_id).distinct().scalar_subquery()
    rows = await conn.execute(
        select(*_COLS)
        .where(
            handoffs.c.chat_id.is_not(None),
            handoffs.c.state != "closed",
            handoffs.c.thread_id.is_not(None),
            handoffs.c.card_message_id.is_not(None),
            handoffs.c.handoff_id.in_(ids),
        )
        .order_by(handoffs.c.handoff_id)
        .limit(max(1, min(limit, 1000)))
    )
    return [_handoff(r) for r in rows]


async def set_card(
    conn: AsyncConnection, handoff_id: int, message_id: int, digest: str | None = None
) -> None:
    await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id)
        .values(card_message_id=message_id, card_digest=digest)
    )


async def card_digest(conn: AsyncConnection, handoff_id: int) -> str | None:
    """The digest of the card as last posted or edited."""
    found = await conn.scalar(
        select(handoffs.c.card_digest).where(handoffs.c.handoff_id == handoff_id)
    )
    return str(found) if found is not None else None


async def set_card_digest(
    conn: AsyncConnection, handoff_id: int, digest: str, now: datetime
) -> None:
    await conn.execute(
        update(handoffs)
        .where(handoffs.c.handoff_id == handoff_id)
        .values(card_digest=digest, card_checked_at=now)
    )


async def cards_to_check(conn: AsyncConnection, now: datetime, limit: int = 100) -> list[Handoff]:
    """Active handoffs with a card, the longest unchecked first; marked checked now, so that
    a batch at a time goes round all of them."""
    rows = await conn.execute(
        select(*_COLS)
        .where(
            handoffs.c.chat_id.is_not(None),
            handoffs.c.state != "closed",
            handoffs.c.card_message_id.is_not(None),
        )
        .order_by(handoffs.c.card_checked_at.is_not(None), handoffs.c.card_checked_at)
        .limit(max(1, min(limit, 1000)))
    )
    found = [_handoff(r) for r in rows]
    if found:
        await conn.execute(
            update(handoffs)
            .where(handoffs.c.handoff_id.in_([h.handoff_id for h in found]))
            .values(card_checked_at=now)
        )
    return found


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
    await conn.execute(delete(handoff_held).where(handoff_held.c.handoff_id == handoff_id))
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


async def linked_chat(conn: AsyncConnection, customer_id: int) -> int | None:
    """The chat the customer is linked to now, if any."""
    found = await conn.scalar(select(chats.c.chat_id).where(chats.c.customer_id == customer_id))
    return int(found) if found is not None else None


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
