"""A small world for notice tests: one product on backorder, customers with linked chats."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, timedelta

from sqlalchemy import select, update

from sandbox.client import SandboxClient
from store import Store, open_store
from store.backorders import NewLine, place_order
from store.chats import link_chat
from store.master import (
    CustomerIn,
    ProductIn,
    add_restock,
    upsert_customer,
    upsert_product,
    upsert_supplier,
)
from store.schema import delay_offers, order_lines, orders, outbox
from tests.conftest import START, TODAY

SKU = "QQT-0001"
ALT = "QQT-0002"
RESTOCK = "PO-LMP-1"
FIRST_DATE = TODAY + timedelta(days=10)  # 6 December
CUSTOMER_BASE = 90_000
CHAT_BASE = 700_000


async def seed(
    store: Store,
    tg: SandboxClient | None,
    customers: int,
    *,
    promised_in_days: int | None = 60,
    languages: tuple[str, ...] = ("en",),
) -> list[tuple[int, int, str]]:
    """Customers (customer id, chat id, order number), each with one unit of SKU waiting for
    RESTOCK. ``promised_in_days``: the shop promised shipping within that many days (None:
    the promise is the projected date at order time)."""
    made = []
    async with store.begin() as conn:
        await upsert_product(
            conn,
            ProductIn(
                SKU,
                "Desk Lamp",
                "qq-lamps",
                2500,
                "EUR",
                name_de="Schreibtischlampe",
                name_es="Lámpara de escritorio",
                name_ru="Настольная лампа",
            ),
        )
        await upsert_product(conn, ProductIn(ALT, "Clip Lamp", "qq-lamps", 1900, "EUR"))
        await upsert_supplier(conn, "SUP-LMP", "Lamp Supplier")
        await add_restock(conn, RESTOCK, "SUP-LMP", SKU, customers * 2, FIRST_DATE)
        for i in range(customers):
            cid, chat = CUSTOMER_BASE + i, CHAT_BASE + i
            number = str(900_000 + i)
            language = languages[i % len(languages)]
            await upsert_customer(
                conn, CustomerIn(cid, f"Customer {i}", f"c{i}@example.com", language=language)
            )
            placed = await place_order(conn, number, cid, [NewLine(SKU, 1)], placed_at=START)
            if promised_in_days is not None:
                await conn.execute(
                    update(order_lines)
                    .where(order_lines.c.order_id == placed.order_id)
                    .values(promised_date=TODAY + timedelta(days=promised_in_days))
                )
            await link_chat(conn, chat, cid)
            made.append((cid, chat, number))
    if tg is not None:
        for i, (_, chat, _) in enumerate(made):
            await tg.create_user(
                chat, first_name=f"C{i}", language_code=languages[i % len(languages)]
            )
    return made


async def order_id_of(store: Store, number: str) -> int:
    async with store.connect() as conn:
        return int(
            await conn.scalar(
                orders.select()
                .with_only_columns(orders.c.order_id)
                .where(orders.c.order_number == number)
            )
        )


def day(offset: int) -> date:
    return TODAY + timedelta(days=offset)


async def quiet_demo(store: Store) -> None:
    """Take the demo shop's own waiting lines and delay offers out of the way: tests that move
    the clock by months would otherwise apply the delay policy to a thousand demo lines."""
    demo = select(orders.c.order_id).where(orders.c.customer_id < CUSTOMER_BASE)
    ol = order_lines.c
    async with store.begin() as conn:
        await conn.execute(
            update(order_lines)
            .where(ol.order_id.in_(demo.scalar_subquery()), ol.qty_waiting > 0)
            .values(
                qty_cancelled=ol.qty_cancelled + ol.qty_waiting,
                told_cancelled_qty=ol.qty_cancelled + ol.qty_waiting,
                qty_waiting=0,
            )
        )
        await conn.execute(
            update(delay_offers)
            .where(delay_offers.c.customer_id < CUSTOMER_BASE)
            .values(status="closed")
        )


async def sends_per_chat(tg: SandboxClient) -> Counter[int]:
    """Messages the Bot API took (sendMessage answered 200), per chat: what customers got,
    whatever the outbox says."""
    return Counter(
        int(c["params"]["chat_id"])
        for c in await tg.calls("sendMessage")
        if c["status"] == 200 and c["params"].get("chat_id") is not None
    )


def duplicates(sends: Counter[int]) -> dict[int, int]:
    """Per chat, the messages beyond the first (for chats owed one notice each)."""
    return {chat: n - 1 for chat, n in sends.items() if n > 1}


async def settled_sends(tg: SandboxClient) -> Counter[int]:
    """sends_per_chat once a killed sender's last requests have been taken or refused: read
    until two reads a moment apart agree (nothing can arrive from a dead process after its
    bytes already on the way are read)."""
    last = await sends_per_chat(tg)
    while True:
        await asyncio.sleep(0.3)
        now = await sends_per_chat(tg)
        if now == last:
            return now
        last = now


async def sent_marks(db_url: str) -> Counter[int]:
    """Per chat, the notices the outbox records as sent (its own connection: the test's
    store may not see another process's last writes through its pool)."""
    store = await open_store(db_url)
    try:
        async with store.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.chat_id).where(
                    outbox.c.customer_id >= CUSTOMER_BASE, outbox.c.status == "sent"
                )
            )
            return Counter(int(r[0]) for r in rows)
    finally:
        await store.close()
