"""Issue #7, an admin import while the bot is busy: the bot answers 816 updates from 204 chats
while the shop's operations import order files into the same SQLite database, the way
`backorder-admin import orders FILE` does (store/cli.py: every row checked, the file applied
in one transaction that commits, then what it owes - the delay policy, the notices - in short
batches of their own from its marks), from a second engine, as the admin process has. No
customer may get the apology, no "database is locked" may reach the bot's log, every chat reads
exactly its answers, and every imported file lands whole.

The load goes in rounds, a file imported in each once the bot has handled some of it, so the
imports overlap the bot's work by construction; the test checks that at least two of them
committed while the bot was in the middle of it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.context import BotApplication
from sandbox.client import SandboxClient
from store import Store, open_store
from store.cli import follow_on, follow_on_settings
from store.imports import apply_file, parse_file
from store.marks import DELAY, NOTICE, pending
from store.schema import order_lines, orders, products
from tests.chaos_helpers import (
    APOLOGY,
    CEILING,
    Handled,
    all_bot_texts,
    build_load,
    enqueue,
    prepare,
    wait_for,
)

ORDERS_PER_FILE = 10
STEP = 16  # updates the bot handles between two imports
FIRST_NUMBER = 500_000
# Customers and products the load's answers do not depend on (store/demo.py's showcase SKUs
# and customers 1-4 stay as they are).
CUSTOMERS = range(100, 400)
SHOWCASE = ("KET-0001", "COF-0001", "PRM-0001", "BIK-0001", "SOF-0001")


@pytest.fixture
def bot_environ() -> dict[str, str]:
    return {"REPLIES_PER_SECOND": "0"}


async def skus(store: Store) -> list[str]:
    async with store.connect() as conn:
        rows = await conn.execute(
            select(products.c.sku)
            .where(products.c.active, products.c.backorderable, products.c.sku.not_in(SHOWCASE))
            .order_by(products.c.sku)
        )
        return [r[0] for r in rows]


def orders_file(folder: Path, index: int, catalog: list[str]) -> tuple[Path, set[str]]:
    """A CSV of new orders, two lines each (docs/csv-formats.md)."""
    path = folder / f"orders-{index:03d}.csv"
    numbers: set[str] = set()
    rows = ["order_number,customer_id,placed_at,line_no,sku,qty"]
    for i in range(ORDERS_PER_FILE):
        n = index * ORDERS_PER_FILE + i
        number = str(FIRST_NUMBER + n)
        numbers.add(number)
        customer = CUSTOMERS[n % len(CUSTOMERS)]
        for line in (1, 2):
            sku = catalog[(n * 2 + line) % len(catalog)]
            rows.append(f"{number},{customer},2026-11-25T09:{n % 60:02d}:00Z,{line},{sku},1")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path, numbers


async def test_an_import_while_the_bot_is_busy_reaches_no_customer_and_lands_whole(
    bot: BotApplication,
    tg: SandboxClient,
    store: Store,
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    load = build_load(unlinked=200)
    await prepare(tg, store, load)
    catalog = await skus(store)
    handled = Handled(bot)

    admin = await open_store(db_url)  # the admin process's own engine and connections
    imported: set[str] = set()
    during: list[int] = []  # for each import, updates handled when it committed
    owed: asyncio.Task[object] | None = None  # the last import's follow-on, still running
    sent: list[tuple[int, int]] = []
    try:
        # The load in rounds (every chat's first message, then every chat's second, ...), a
        # file imported in each once the bot has handled more of it: every import but the
        # last commits while updates are still to come, by construction, however fast or slow
        # the machine. Each import's follow-on runs beside the next one, as a second admin
        # command would.
        for index in range(load.rounds):
            sent += await enqueue(tg, load, range(index, index + 1))
            target = sum(handled.seen.values()) + STEP

            async def moved(target: int = target) -> bool:
                return sum(handled.seen.values()) >= target

            await wait_for(moved, CEILING, f"the bot to handle {STEP} more updates")
            path, numbers = orders_file(tmp_path, index, catalog)
            parse_file("orders", path)  # the CLI checks the whole file first
            async with admin.begin() as conn:
                result = await apply_file(conn, "orders", path)
            during.append(sum(handled.seen.values()))
            assert (result.rows, result.changed) == (2 * ORDERS_PER_FILE, ORDERS_PER_FILE)
            imported |= numbers
            if owed is not None:
                await owed
            owed = asyncio.create_task(follow_on(admin, follow_on_settings(), show=False))
        assert len(sent) == load.updates == 816
        await handled.all_of(sent)
        if owed is not None:
            await owed
    finally:
        if owed is not None and not owed.done():
            owed.cancel()
            await asyncio.gather(owed, return_exceptions=True)
        await admin.close()

    # The imports really ran while the bot was answering.
    assert sum(1 for n in during if 0 < n < load.updates) >= 2, during

    texts = await all_bot_texts(tg, load.chats)
    assert not [chat for chat, t in texts.items() if APOLOGY in t]
    for chat in load.chats:
        assert texts[chat] == load.expected(chat), chat
    assert "database is locked" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # Every file landed whole: each order with both of its lines.
    async with store.connect() as conn:
        landed = await conn.scalar(
            select(func.count()).select_from(orders).where(orders.c.order_number.in_(imported))
        )
        lines = await conn.scalar(
            select(func.count())
            .select_from(order_lines.join(orders))
            .where(orders.c.order_number.in_(imported))
        )
    assert (landed, lines) == (len(imported), 2 * len(imported))
    # And what the imports owed ran to its end, after their commits: nothing is left marked.
    async with store.connect() as conn:
        left = [(await pending(conn, stage)).marked for stage in (DELAY, NOTICE)]
    assert left == [0, 0]
