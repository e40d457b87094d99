"""Check-then-write steps run many at once, for tests/store/test_races*.py and race_proc.py.

Every task runs its step in a transaction of its own, on a connection of its own, and all of
them are let go together (after each has its connection, so none starts while the others are
still connecting). The tasks are spread over several `Store`s: on SQLite each has its own
writer, so they meet at the file's lock as separate processes would (one `Store` queues its
own writers in order, which would hide a race); on PostgreSQL each has its own pool.

The outcomes are read back from the store afterwards and compared with what the limits allow:
the steps themselves may fail only as the store's rules say (never a constraint's error)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from store import Store, open_store
from store.backorders import NewLine, OrderIn, place_order, place_orders, set_stock
from store.chats import link_chat, proof_check, record_verification_attempt, touch_chat
from store.delays import next_order_number
from store.handoffs import claim_handoff, close_handoff
from store.master import CustomerIn, ProductIn, upsert_customer, upsert_product
from store.schema import handoff_escalations, handoffs, order_lines, orders, stock
from store.schema import verification_attempts as attempts

T = TypeVar("T")

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ALLOWANCE = 5  # wrong proofs: per chat in an hour, per order number before the waits
GROUP = -1001
LAST_UNIT = ("KET-0001", "KET-0002")  # one unit free of each
CUSTOMERS = 6
LINKED_CHAT = 9001  # linked to customer 1: its escalations are the customer's topic
OLD_CHAT = 9002  # customer 1's chat before: its topic moves to LINKED_CHAT


async def seed(store: Store) -> None:
    """Two products with one free unit each, customers, and customer 1 who wrote from
    OLD_CHAT (where their topic was opened and closed) and now writes from LINKED_CHAT."""
    async with store.begin() as conn:
        for sku in LAST_UNIT:
            await upsert_product(conn, ProductIn(sku, f"Kettle {sku}", "kettles", 2999, "EUR"))
        for i in range(1, CUSTOMERS + 1):
            await upsert_customer(conn, CustomerIn(i, f"Customer {i}", f"c{i}@example.com"))
        for sku in LAST_UNIT:
            await set_stock(conn, sku, 1)
        await touch_chat(conn, OLD_CHAT)
        await link_chat(conn, OLD_CHAT, 1)
        first = await _claim(conn, OLD_CHAT)
        assert first.started
        await close_handoff(conn, first.handoff.handoff_id, now=NOW, by="agent")
        await touch_chat(conn, LINKED_CHAT)
        await link_chat(conn, LINKED_CHAT, 1)


async def open_stores(url: str, n: int) -> list[Store]:
    return [await open_store(url, migrate_schema=False) for _ in range(n)]


async def close_stores(stores: Sequence[Store]) -> None:
    for s in stores:
        await s.close()


async def at_once(
    stores: Sequence[Store], n: int, step: Callable[[AsyncConnection, int], Awaitable[T]]
) -> list[T | BaseException]:
    """``step(conn, i)`` for i in range(n), each in its own transaction, all let go at once;
    what each returned or raised."""
    ready = 0
    go = asyncio.Event()

    async def one(i: int) -> T:
        nonlocal ready
        s = stores[i % len(stores)]
        ready += 1
        if ready == n:
            go.set()
        await go.wait()
        async with s.begin() as conn:
            return await step(conn, i)

    return list(await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True))


def failures(results: Sequence[object]) -> list[BaseException]:
    return [r for r in results if isinstance(r, BaseException)]


# --- the steps ---------------------------------------------------------------------------


async def wrong_proof(conn: AsyncConnection, chat_id: int, order_number: str) -> bool:
    """What the bot does with a proof: check the limits, and when they let it through, record
    it (a wrong one). True if it was recorded."""
    check = await proof_check(conn, chat_id, order_number, allowance=ALLOWANCE, now=NOW)
    if not check.allowed:
        return False
    await record_verification_attempt(conn, chat_id, order_number, False, at=NOW)
    return True


async def order_last_unit(conn: AsyncConnection, order_number: str, i: int) -> bool:
    """An order for one unit of each LAST_UNIT product (in either order, so two orders lock
    the two SKUs from opposite ends). True if it got any unit at once."""
    skus = LAST_UNIT if i % 2 == 0 else LAST_UNIT[::-1]
    placed = await place_order(
        conn,
        order_number,
        1 + i % CUSTOMERS,
        [NewLine(sku, 1) for sku in skus],
        placed_at=NOW + timedelta(seconds=i),
    )
    return bool(placed.allocated)


async def import_last_units(conn: AsyncConnection, order_number: str, i: int) -> int:
    """A file of one order for one unit of each LAST_UNIT product, placed as `import orders`
    places a file (store.backorders.place_orders; the SKUs in either order). The units it got
    at once."""
    skus = LAST_UNIT if i % 2 == 0 else LAST_UNIT[::-1]
    # All at one time: a file whose line would jump the queue is placed order by order.
    lines = [NewLine(sku, 1) for sku in skus]
    order = OrderIn(order_number, 1 + i % CUSTOMERS, tuple(lines), NOW)
    assert await place_orders(conn, [order]) == 1
    got = await conn.scalar(
        select(func.coalesce(func.sum(order_lines.c.qty_allocated), 0))
        .select_from(order_lines.join(orders))
        .where(orders.c.order_number == order_number)
    )
    return int(got or 0)


async def bot_order(conn: AsyncConnection, i: int) -> str:
    """An order the bot places itself (an accepted alternative): a fresh number, then the
    order under it."""
    number = await next_order_number(conn)
    await place_order(conn, number, 1 + i % CUSTOMERS, [NewLine(LAST_UNIT[0], 1)], placed_at=NOW)
    return number


async def _claim(conn: AsyncConnection, chat_id: int) -> object:
    return await claim_handoff(
        conn,
        chat_id,
        support_chat_id=GROUP,
        reason="asked",
        now=NOW,
        no_answer_due_at=NOW + timedelta(minutes=15),
        customer_name="Customer",
    )


async def escalate(conn: AsyncConnection, i: int) -> bool:
    """Customer 1 asks for a person from their chat, and (every third task) their old chat
    asks too. True if this task started an escalation."""
    claim = await _claim(conn, OLD_CHAT if i % 3 == 2 else LINKED_CHAT)
    return bool(claim.started)  # type: ignore[attr-defined]


# --- what the store holds afterwards -------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    attempts_by_chat: dict[int, int]
    attempts_by_number: dict[str, int]
    allocated: dict[str, int]  # stock.allocated
    lines_allocated: dict[str, int]  # sum of the lines' qty_allocated
    lines_waiting: dict[str, int]
    numbers: list[str]
    topics: list[tuple[int | None, int | None, str, int]]  # chat, customer, state, escalations
    escalation_rows: int


async def outcome(store: Store) -> Outcome:
    async with store.connect() as conn:
        by_chat = dict(
            (int(c), int(n))
            for c, n in await conn.execute(
                select(attempts.c.chat_id, func.count()).group_by(attempts.c.chat_id)
            )
        )
        by_number = dict(
            (str(o), int(n))
            for o, n in await conn.execute(
                select(attempts.c.order_number, func.count()).group_by(attempts.c.order_number)
            )
        )
        allocated = {
            str(s): int(a) for s, a in await conn.execute(select(stock.c.sku, stock.c.allocated))
        }
        lines = {
            str(s): (int(a), int(w))
            for s, a, w in await conn.execute(
                select(
                    order_lines.c.sku,
                    func.sum(order_lines.c.qty_allocated),
                    func.sum(order_lines.c.qty_waiting),
                ).group_by(order_lines.c.sku)
            )
        }
        numbers = sorted(str(n) for n in await conn.scalars(select(orders.c.order_number)))
        topics = sorted(
            (
                (r.chat_id, r.customer_id, r.state, int(r.escalations))
                for r in await conn.execute(
                    select(
                        handoffs.c.chat_id,
                        handoffs.c.customer_id,
                        handoffs.c.state,
                        handoffs.c.escalations,
                    )
                )
            ),
            key=lambda t: (t[0] is None, t[0] or 0),
        )
        escalation_rows = int(
            await conn.scalar(select(func.count()).select_from(handoff_escalations)) or 0
        )
    return Outcome(
        attempts_by_chat=by_chat,
        attempts_by_number=by_number,
        allocated=allocated,
        lines_allocated={s: a for s, (a, _) in lines.items()},
        lines_waiting={s: w for s, (_, w) in lines.items()},
        numbers=numbers,
        topics=topics,
        escalation_rows=escalation_rows,
    )
