"""The load the chaos tests (tests/test_chaos_*.py) put on the bot, and what every customer
must read back: a few hundred updates from 100+ chats, each chat's texts known exactly.

Unlinked chats go /start, a stock question, "where is my order?" (which starts account
linking) and an order number (the answer to that question): their replies only come out
right if each chat's messages are handled once and in order. The four demo customers
(store/demo.py), linked, ask for their orders, one order by number (Maria asks for one that is
not hers), stock and /start.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from telegram import Update
from telegram.ext import TypeHandler

from bot.context import BotApplication, BotContext
from sandbox.client import SandboxClient
from store import Store
from store.schema import update_inbox
from tests.conftest import link_customer

GREETING = (
    "Hello, Customer! 👋\nI'm the assistant of Demo Shop. I can tell you where your order is, "
    "whether a product is in stock and when a backordered item will arrive.\n\n"
    "Choose below, or just write to me in your own words."
)
KETTLE = (
    "✅ Steel Kettle 1.7 l is in stock: you can buy it now and it ships right away.\n"
    "SKU KET-0001 · €25.89"
)
ASK_ORDER = (
    "Let's link your customer account to this chat.\n"
    "What is your order number? You'll find it in your order confirmation e-mail."
)
ASK_PROOF = (
    "To show you order 100004, I need to make sure it's yours.\n"
    "Which e-mail address did you use for this order?"
)
# What the account questions say when the answer does not fit (a replay can meet these, see
# tests/test_chaos_restart.py).
ASK_ORDER_AGAIN = (
    "That doesn't look like an order number. "
    "Please send the number from your order confirmation, for example 100123."
)
ASK_PROOF_AGAIN = (
    "That doesn't look like an e-mail address. "
    "Please send the address you used for the order, for example name@example.com."
)
APOLOGY = (
    "Sorry, something went wrong on our side. Please try again in a moment.\n"
    "If it keeps happening, tap “Talk to a person”."
)
HELP = (
    "What I can do\n"
    "• Where is my order? Send your order number, or tap “My orders”.\n"
    "• Is it in stock? Write the product name or its SKU.\n"
    "• A person: tap “Talk to a person” and someone from our team takes over.\n"
    "• Language: /language\n\n"
    "Commands: /orders, /stock, /agent, /language, /help"
)
NOT_YOURS = (
    "I couldn't find order {number} for your account.\n"
    "Please check the number in your order confirmation, or choose one of your orders below."
)

UNLINKED_SCRIPT: tuple[tuple[str, str], ...] = (
    ("/start", GREETING),
    ("is KET-0001 in stock?", KETTLE),
    ("where is my order?", ASK_ORDER),
    ("100004", ASK_PROOF),
)

# Demo customer -> (their open orders, the order number they ask for, its page).
LINKED: dict[int, tuple[str, str, str]] = {
    1: (
        "Your open orders\n"
        "📦 100003 · Aug 30, 2026 · waiting, no date yet\n"
        "📦 100002 · Aug 29, 2026 · waiting, ships around December 20\n\n"
        "Tap an order to see its details.",
        "100001",
        "Order 100001 · placed Aug 28, 2026 · €25.89\n\n"
        "Steel Kettle 1.7 l\n"
        "🚚 Shipped on August 30 with DHL, tracking JD014600003828",
    ),
    2: (
        "Your open orders\n"
        "📦 100005 · Sep 1, 2026 · waiting, ships around December 20\n"
        "📦 100004 · Aug 31, 2026 · ready to ship\n\n"
        "Tap an order to see its details.",
        "100004",
        "Order 100004 · placed Aug 31, 2026 · €51.78\n\n"
        "Steel Kettle 1.7 l × 2\n"
        "✅ 2 reserved for you: ready to ship.",
    ),
    3: (
        "Your open orders\n"
        "📦 100006 · Sep 2, 2026 · waiting, ships around December 20\n\n"
        "Tap an order to see its details.",
        "100001",  # Anna's: not found for Maria, and nothing about it shown
        NOT_YOURS.format(number="100001"),
    ),
    4: (
        "You have no open orders right now.",
        "100007",
        "Order 100007 · placed Sep 3, 2026 · €25.89\n\n"
        "Steel Kettle 1.7 l\n"
        "🚚 Shipped on September 5 with UPS, tracking 1Z999AA10123456784",
    ),
}


# How long a chaos test waits for a condition before it fails: only a ceiling, every wait ends
# as soon as its condition holds. 20-30 s ran out at loads of 13-20 on two cores.
CEILING = 180.0

# A group after all of the bot's: its handler sees an update once the bot is done with it.
OBSERVER_GROUP = 1_000_000


class Handled:
    """Counts the updates the bot has finished with, by (chat, message id)."""

    def __init__(self, app: BotApplication) -> None:
        self.seen: Counter[tuple[int, int]] = Counter()
        app.add_handler(TypeHandler(Update, self._saw), group=OBSERVER_GROUP)

    async def _saw(self, update: Update, context: BotContext) -> None:
        message = update.effective_message
        if message is not None:
            self.seen[(message.chat_id, message.message_id)] += 1

    async def all_of(self, sent: list[tuple[int, int]], within: float = CEILING) -> None:
        async def done() -> bool:
            return all(key in self.seen for key in sent)

        await wait_for(done, within, f"the bot to handle all {len(sent)} updates")


@dataclass
class Load:
    """Who says what, and what each chat must read back, in order."""

    users: list[dict[str, Any]] = field(default_factory=list)
    linked: dict[int, int] = field(default_factory=dict)  # chat -> demo customer
    scripts: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def chats(self) -> list[int]:
        return list(self.scripts)

    @property
    def updates(self) -> int:
        return sum(len(s) for s in self.scripts.values())

    def expected(self, chat: int) -> list[str]:
        return [reply for _, reply in self.scripts[chat]]

    @property
    def rounds(self) -> int:
        return max(len(s) for s in self.scripts.values())

    def messages(self, rounds: range | None = None) -> list[dict[str, Any]]:
        """Round-robin: every chat's first message, then every chat's second, ..."""
        return [
            {"user_id": chat, "text": script[i][0]}
            for i in rounds or range(self.rounds)
            for chat, script in self.scripts.items()
            if i < len(script)
        ]


# Each message's answer is the same whatever came before, so a chat can say many in a row.
STATELESS_SCRIPT: tuple[tuple[str, str], ...] = (
    ("/start", GREETING),
    ("is KET-0001 in stock?", KETTLE),
    ("/help", HELP),
)


def build_long_load(chats: int, messages: int, base: int = 840_000) -> Load:
    """``chats`` unlinked chats, each saying ``messages`` things from STATELESS_SCRIPT in turn."""
    load = Load()
    for i in range(1, chats + 1):
        chat = base + i
        load.users.append({"id": chat, "first_name": "Customer", "language_code": "en"})
        load.scripts[chat] = [STATELESS_SCRIPT[n % len(STATELESS_SCRIPT)] for n in range(messages)]
    return load


async def marked_per_chat(store: Store) -> Counter[int]:
    """Updates the inbox holds as answered, per chat (from the saved updates themselves)."""
    async with store.connect() as conn:
        rows = await conn.execute(
            select(update_inbox.c.payload).where(update_inbox.c.answered_at.is_not(None))
        )
        payloads = [json.loads(payload) for (payload,) in rows]
    return Counter(int(p["message"]["chat"]["id"]) for p in payloads if "message" in p)


def build_load(unlinked: int = 100, base: int = 810_000, linked_base: int = 820_000) -> Load:
    load = Load()
    for customer, (orders_page, number, order_page) in LINKED.items():
        chat = linked_base + customer
        load.linked[chat] = customer
        load.scripts[chat] = [
            ("where is my order?", orders_page),
            (number, order_page),
            ("is KET-0001 in stock?", KETTLE),
            ("/start", GREETING),
        ]
    for i in range(1, unlinked + 1):
        chat = base + i
        load.users.append({"id": chat, "first_name": "Customer", "language_code": "en"})
        load.scripts[chat] = list(UNLINKED_SCRIPT)
    return load


async def prepare(tg: SandboxClient, store: Store, load: Load) -> None:
    """Create the users and link the demo customers' chats (in English)."""
    for chat, customer in load.linked.items():
        await link_customer(tg, store, chat, customer, "en")
    await tg.bulk(users=load.users)


async def enqueue(
    tg: SandboxClient, load: Load, rounds: range | None = None
) -> list[tuple[int, int]]:
    """The load's messages (all, or those of some rounds) as updates at once; returns
    (chat, message id) of each."""
    made = await tg.bulk(messages=load.messages(rounds))
    return [(m["chat_id"], m["message_id"]) for m in made["messages"]]


async def bot_texts(tg: SandboxClient, chat: int) -> list[str]:
    """What the bot has said in a chat, in order."""
    return [r["text"] for r in await tg.transcript(chat) if r["from_bot"]]


async def all_bot_texts(tg: SandboxClient, chats: list[int]) -> dict[int, list[str]]:
    texts = await asyncio.gather(*(bot_texts(tg, chat) for chat in chats))
    return dict(zip(chats, texts, strict=True))


async def wait_for(
    condition: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(every)


async def successful_sends(tg: SandboxClient) -> int:
    """sendMessage calls the sandbox executed (whether or not the bot heard the answer)."""
    stats = await tg.stats()
    calls = await tg.calls("sendMessage")
    assert stats["calls"] <= 5_000, "the call log is capped at 5,000: this count would be short"
    return sum(1 for c in calls if c["status"] == 200)


async def call_seq(tg: SandboxClient) -> int:
    """The sandbox's call log position: the number of Bot API calls it has logged."""
    return int((await tg.stats())["calls"])


async def sends_of_the_killed(tg: SandboxClient, killed_at: int, within: float) -> list[int]:
    """The chats of the successful sendMessage calls a bot killed (SIGKILL, reaped) when the
    call log stood at ``killed_at`` made, counted once the bot started after it has made its
    first call (PTB's getMe): call with the new bot started.

    The sandbox runs on the test's event loop, so a request the killed bot had sent is logged
    only when the loop gets to it. A fixed pause after the kill guessed how long that takes; the
    new process's first call is a condition: the killed bot's requests were on their sockets
    before the new process was started and had to import the bot, so every one is logged ahead
    of it (and a killed bot, long initialized, never calls getMe again)."""

    async def restarted() -> bool:
        return bool(await tg.calls("getMe", since=killed_at))

    await wait_for(restarted, within, "the restarted bot's first call (getMe)")
    first = min(c["seq"] for c in await tg.calls("getMe", since=killed_at))
    stats = await tg.stats()
    assert stats["calls"] <= 5_000, "the call log is capped at 5,000: this count would be short"
    return [
        int(c["params"]["chat_id"])
        for c in await tg.calls("sendMessage")
        if c["status"] == 200 and c["seq"] < first
    ]


async def settled_after_kill(store: Store, within: float) -> None:
    """Wait until the database has finished with what a killed bot process left in it.

    SQLite: nothing to wait for (the dead process's transaction is rolled back or was
    committed). PostgreSQL: a server process serves the dead bot until it reads the closed
    socket, and a COMMIT the bot had sent is carried out first; so the marks are counted once
    no session but this one is in a transaction or running a statement (this test's own pooled
    connections are idle)."""
    if store.engine.dialect.name != "postgresql":
        return

    async def settled() -> bool:
        async with store.connect() as conn:
            busy = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    " AND state IS DISTINCT FROM 'idle'"
                )
            )
        return busy == 0

    await wait_for(settled, within, "the killed bot's database sessions to end")
