"""Chat state, account links, link tokens, verification attempts and "notify me"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from store.errors import NotFound
from store.marks import mark_customer
from store.schema import (
    UTCDateTime,
    back_in_stock_subscriptions,
    chats,
    customers,
    handoffs,
    orders,
    products,
    used_link_tokens,
    utcnow,
    verification_attempts,
)

# A question left unanswered this long is forgotten: the customer has moved on, and a late
# message must not be read as the answer to something they no longer see on screen.
PENDING_TTL = timedelta(minutes=30)


@dataclass(frozen=True)
class Chat:
    chat_id: int
    language: str | None
    customer_id: int | None
    misses: int
    pending: str | None = None
    pending_order: str | None = None
    pending_at: datetime | None = None

    def pending_step(self, now: datetime | None = None) -> str | None:
        """The step the bot is waiting on, or None when there is none or it is stale."""
        if self.pending is None or self.pending_at is None:
            return None
        if (now or utcnow()) - self.pending_at >= PENDING_TTL:
            return None
        return self.pending


def _chat(row: object) -> Chat:
    m = row._mapping  # type: ignore[attr-defined]
    return Chat(
        chat_id=m["chat_id"],
        language=m["language"],
        customer_id=m["customer_id"],
        misses=m["misses"],
        pending=m["pending"],
        pending_order=m["pending_order"],
        pending_at=m["pending_at"],
    )


_CHAT_COLS = (
    chats.c.chat_id,
    chats.c.language,
    chats.c.customer_id,
    chats.c.misses,
    chats.c.pending,
    chats.c.pending_order,
    chats.c.pending_at,
)


_CHAT_OF = select(*_CHAT_COLS).where(chats.c.chat_id == bindparam("chat_id", type_=BigInteger))


async def chat_of(conn: AsyncConnection, chat_id: int) -> Chat | None:
    row = (await conn.execute(_CHAT_OF, {"chat_id": chat_id})).first()
    return _chat(row) if row else None


@dataclass(frozen=True)
class ChatState:
    """What every update of a chat needs to know before it is answered, read at once."""

    chat: Chat | None  # None: the chat has never been seen
    unreachable: bool  # the linked customer had blocked the bot (learnt from a 403)
    in_handoff: bool  # a person owns the thread: the bot does not answer


def _chat_state_query() -> Select[Any]:
    # From a one-row subquery, so that an unseen chat still gets a row.
    me = select(bindparam("chat_id", type_=BigInteger).label("chat_id")).subquery("me")
    in_handoff = (
        exists()
        .where(handoffs.c.chat_id == me.c.chat_id, handoffs.c.state != "closed")
        .label("in_handoff")
    )
    return select(*_CHAT_COLS, customers.c.unreachable_at, in_handoff).select_from(
        me.outerjoin(chats, chats.c.chat_id == me.c.chat_id).outerjoin(
            customers, customers.c.customer_id == chats.c.customer_id
        )
    )


# Built once: every update reads it, and building it cost ten times more than running it.
_CHAT_STATE = _chat_state_query()


async def chat_state(conn: AsyncConnection, chat_id: int) -> ChatState:
    """One statement instead of one per module: the chat, its customer's reachability and
    whether a handoff is open."""
    row = (await conn.execute(_CHAT_STATE, {"chat_id": chat_id})).one()
    return ChatState(
        chat=_chat(row) if row.chat_id is not None else None,
        unreachable=row.unreachable_at is not None,
        in_handoff=bool(row.in_handoff),
    )


async def touch_chat(conn: AsyncConnection, chat_id: int) -> Chat:
    """The chat, created on first contact."""
    found = await chat_of(conn, chat_id)
    if found:
        return found
    now = utcnow()
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(chats).values(chat_id=chat_id, misses=0, created_at=now, updated_at=now)
            )
    except IntegrityError:
        # Another process created it between our read and insert: theirs is as good.
        pass
    chat = await chat_of(conn, chat_id)
    assert chat is not None
    return chat


async def _update_chat(conn: AsyncConnection, chat_id: int, **values: object) -> Chat:
    # One statement for a known chat (the usual case: a miss counted, a question asked).
    change = (
        update(chats)
        .where(chats.c.chat_id == chat_id)
        .values(updated_at=utcnow(), **values)
        .returning(*_CHAT_COLS)
    )
    row = (await conn.execute(change)).first()
    if row is None:
        await touch_chat(conn, chat_id)
        row = (await conn.execute(change)).one()
    return _chat(row)


async def set_chat_language(conn: AsyncConnection, chat_id: int, language: str) -> Chat:
    return await _update_chat(conn, chat_id, language=language)


async def record_miss(conn: AsyncConnection, chat_id: int, update_id: int | None = None) -> Chat:
    """One more message not understood; the same update again (a crash replay) counts once."""
    if update_id is None:
        return await _update_chat(conn, chat_id, misses=chats.c.misses + 1)
    again = chats.c.last_miss_update.is_not(None) & (chats.c.last_miss_update == update_id)
    return await _update_chat(
        conn,
        chat_id,
        misses=case((again, chats.c.misses), else_=chats.c.misses + 1),
        last_miss_update=update_id,
    )


async def reset_misses(conn: AsyncConnection, chat_id: int) -> Chat:
    return await _update_chat(conn, chat_id, misses=0)


async def link_chat(conn: AsyncConnection, chat_id: int, customer_id: int) -> Chat:
    """Link the chat to the customer. One account per customer and one customer per account:
    a previous link of either side is dropped."""
    exists = await conn.scalar(
        select(customers.c.customer_id).where(customers.c.customer_id == customer_id)
    )
    if exists is None:
        raise NotFound(f"no customer {customer_id}")
    await touch_chat(conn, chat_id)
    # Free the customer first so the UNIQUE on customer_id never sees two rows.
    await conn.execute(
        update(chats)
        .where(chats.c.customer_id == customer_id, chats.c.chat_id != chat_id)
        .values(customer_id=None, updated_at=utcnow())
    )
    await mark_customer(conn, customer_id)
    return await _update_chat(conn, chat_id, customer_id=customer_id)


async def unlink_chat(conn: AsyncConnection, chat_id: int) -> Chat:
    return await _update_chat(conn, chat_id, customer_id=None)


async def set_pending(
    conn: AsyncConnection,
    chat_id: int,
    step: str,
    order_number: str | None = None,
    *,
    at: datetime | None = None,
) -> Chat:
    """Remember the question the bot just asked this chat (one at a time: replaces any other)."""
    return await _update_chat(
        conn, chat_id, pending=step, pending_order=order_number, pending_at=at or utcnow()
    )


async def clear_pending(conn: AsyncConnection, chat_id: int) -> bool:
    """Forget the pending step. True if one was set (fresh or stale); never creates the chat."""
    result = await conn.execute(
        update(chats)
        .where(chats.c.chat_id == chat_id, chats.c.pending.is_not(None))
        .values(pending=None, pending_order=None, pending_at=None, updated_at=utcnow())
    )
    return bool(result.rowcount)


def _norm(value: str) -> str:
    return "".join(value.split()).casefold()


async def verify_order_owner(
    conn: AsyncConnection,
    order_number: str,
    email: str | None = None,
    postcode: str | None = None,
) -> int | None:
    """The customer id if the order exists and the email or postcode given matches its
    customer (ignoring case and spaces); None otherwise, without saying which part failed."""
    if not (email and email.strip()) and not (postcode and postcode.strip()):
        return None
    row = (
        await conn.execute(
            select(customers.c.customer_id, customers.c.email, customers.c.postcode)
            .select_from(orders.join(customers, orders.c.customer_id == customers.c.customer_id))
            .where(orders.c.order_number == order_number.strip())
        )
    ).first()
    if row is None:
        return None
    if email is not None and email.strip() and _norm(email) != _norm(row.email or ""):
        return None
    if postcode is not None and postcode.strip() and _norm(postcode) != _norm(row.postcode or ""):
        return None
    return int(row.customer_id)


async def consume_link_token(conn: AsyncConnection, token_id: str, expires_at: datetime) -> bool:
    """Mark a single-use token as used. False if it was used before (or has expired)."""
    now = utcnow()
    if expires_at <= now:
        return False
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(used_link_tokens).values(
                    token_id=token_id, expires_at=expires_at, used_at=now
                )
            )
    except IntegrityError:
        return False
    return True


async def record_verification_attempt(
    conn: AsyncConnection,
    chat_id: int,
    order_number: str,
    ok: bool,
    at: datetime | None = None,
) -> None:
    await conn.execute(
        insert(verification_attempts).values(
            chat_id=chat_id, order_number=order_number, ok=ok, at=at or utcnow()
        )
    )


async def count_failed_attempts(
    conn: AsyncConnection,
    chat_id: int | None = None,
    order_number: str | None = None,
    *,
    since: datetime,
) -> int:
    """Failed verifications since ``since``, for a chat, an order number, or both."""
    conds = [verification_attempts.c.ok.is_(False), verification_attempts.c.at >= since]
    if chat_id is not None:
        conds.append(verification_attempts.c.chat_id == chat_id)
    if order_number is not None:
        conds.append(verification_attempts.c.order_number == order_number)
    n = await conn.scalar(select(func.count()).select_from(verification_attempts).where(*conds))
    return int(n or 0)


# Wrong proofs are limited twice. Per chat, strictly: VERIFICATION_ATTEMPTS_PER_HOUR wrong ones
# in an hour and the chat is refused for the rest of that hour. Per order number, from any
# chat, by slowing down instead of locking out: the owner would otherwise be locked out by
# anyone who knows the number (five strangers' wrong e-mails made the owner wait an hour).
# The first `allowance` wrong proofs for a number within ORDER_WINDOW cost nothing; after
# that, each proof for it is taken only ORDER_FIRST_WAIT after the last wrong one, doubling
# with each further wrong one, at most ORDER_MAX_WAIT. Keyed by the number as typed, so an
# unknown number slows down exactly like a real one and the wait tells nothing.
CHAT_WINDOW = timedelta(hours=1)
ORDER_WINDOW = timedelta(hours=24)  # long, so the capped waits bound guesses per day too
ORDER_FIRST_WAIT = timedelta(minutes=1)
ORDER_MAX_WAIT = timedelta(minutes=15)  # what the owner may be told to wait, at most


@dataclass(frozen=True)
class ProofCheck:
    """Whether a proof for an order number may be checked now."""

    chat_limited: bool  # this chat has used its wrong proofs for the hour
    order_wait: timedelta  # how long until the number's next proof is taken; zero: now

    @property
    def allowed(self) -> bool:
        return not self.chat_limited and self.order_wait <= timedelta(0)


def order_wait_after(failures: int, allowance: int) -> timedelta:
    """The wait after the last of ``failures`` wrong proofs for one order number."""
    beyond = failures - allowance
    if beyond < 0:
        return timedelta(0)
    # 2**beyond overflows nothing: the cap is reached after a few doublings.
    return min(ORDER_FIRST_WAIT * (2 ** min(beyond, 16)), ORDER_MAX_WAIT)


_CHAT_FAILURES = (
    select(func.count())
    .select_from(verification_attempts)
    .where(
        verification_attempts.c.chat_id == bindparam("chat_id", type_=BigInteger),
        verification_attempts.c.ok.is_(False),
        verification_attempts.c.at >= bindparam("since", type_=UTCDateTime()),
    )
)
_ORDER_FAILURES = (
    select(func.count(), func.max(verification_attempts.c.at))
    .select_from(verification_attempts)
    .where(
        verification_attempts.c.order_number == bindparam("order_number"),
        verification_attempts.c.ok.is_(False),
        verification_attempts.c.at >= bindparam("since", type_=UTCDateTime()),
    )
)


# PostgreSQL only: a lock held until the transaction ends, on a 64-bit hash of a text key (two
# keys that hash alike only wait for each other).
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def proof_check(
    conn: AsyncConnection, chat_id: int, order_number: str, *, allowance: int, now: datetime
) -> ProofCheck:
    """Whether this chat may have a proof for ``order_number`` checked at ``now``.

    Atomic with the attempt it lets through when the caller checks the proof and records it
    (`record_verification_attempt`) in the same write transaction: two proofs of the chat,
    or two for the number, are counted one after the other. On PostgreSQL, where READ
    COMMITTED would let both read the same count, this takes a transaction-level advisory
    lock on the chat and one on the number (a number that does not exist has no row to
    lock), always in that order; on SQLite the transaction holds the file's write lock from
    its start (Store.begin and begin_small begin IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_ADVISORY_LOCK, {"key": f"proof-chat:{chat_id}"})
        await conn.execute(_ADVISORY_LOCK, {"key": f"proof-order:{order_number}"})
    chat_failures = await conn.scalar(
        _CHAT_FAILURES, {"chat_id": chat_id, "since": now - CHAT_WINDOW}
    )
    if int(chat_failures or 0) >= allowance:
        return ProofCheck(chat_limited=True, order_wait=timedelta(0))
    failures, last = (
        await conn.execute(
            _ORDER_FAILURES, {"order_number": order_number, "since": now - ORDER_WINDOW}
        )
    ).one()
    wait = timedelta(0)
    if last is not None:
        wait = max(last + order_wait_after(int(failures), allowance) - now, timedelta(0))
    return ProofCheck(chat_limited=False, order_wait=wait)


async def subscribe_back_in_stock(conn: AsyncConnection, chat_id: int, sku: str) -> bool:
    """Ask to be told when ``sku`` is back. False if this chat already asked."""
    sku = sku.strip().upper()
    if await conn.scalar(select(products.c.sku).where(products.c.sku == sku)) is None:
        raise NotFound(f"unknown SKU {sku}")
    chat = await touch_chat(conn, chat_id)
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(back_in_stock_subscriptions).values(
                    chat_id=chat_id, customer_id=chat.customer_id, sku=sku, created_at=utcnow()
                )
            )
    except IntegrityError:
        return False
    return True


async def back_in_stock_subscribers(conn: AsyncConnection, sku: str) -> list[int]:
    """Chats waiting for ``sku`` and not yet told."""
    rows = await conn.execute(
        select(back_in_stock_subscriptions.c.chat_id)
        .where(
            and_(
                back_in_stock_subscriptions.c.sku == sku,
                back_in_stock_subscriptions.c.notified_at.is_(None),
            )
        )
        .order_by(back_in_stock_subscriptions.c.subscription_id)
    )
    return [int(r.chat_id) for r in rows]


async def mark_back_in_stock_notified(conn: AsyncConnection, chat_id: int, sku: str) -> None:
    await conn.execute(
        update(back_in_stock_subscriptions)
        .where(
            back_in_stock_subscriptions.c.chat_id == chat_id,
            back_in_stock_subscriptions.c.sku == sku,
        )
        .values(notified_at=utcnow())
    )
