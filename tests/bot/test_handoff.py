"""Agents take over: escalation, the topic, relaying both ways, hand-back, safety.

Through the sandbox's forum topics: the support group is a real supergroup of the sandbox,
agents are its users, and the bot polls it like Telegram.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest
from telegram import Update
from telegram.ext import ApplicationHandlerStop, CommandHandler

from bot.context import BotApplication, BotContext
from bot.handlers.handoff import (
    check_support_group,
    escalate,
    post_to_topic,
    sweep_handoffs,
)
from sandbox.client import SandboxClient
from store import Store
from store.chats import link_chat, record_miss
from store.handoffs import (
    Handoff,
    active_handoff,
    claim_handoff,
    escalations_of,
    handoff_of,
    hold_message,
)
from tests.conftest import Clock, buttons

T = TypeVar("T")

QUIET = 0.15
SUPPORT = -1001999000001
MARIA = 9001  # administrator of the support group
TOM = 9002  # plain member
EVE = 9003  # not in the group
ANNA = 601  # customer 1 of the demo shop (German)
JOHN = 602  # customer 2 (English)
NEW = 603  # not linked to a customer record
ANNA_2 = 604  # Anna's second Telegram account, linked later

pytestmark = pytest.mark.usefixtures("bot")


@pytest.fixture
def group_rights() -> dict[str, bool] | None:
    return None


@pytest.fixture
async def support(tg: SandboxClient, group_rights: dict[str, bool] | None) -> int:
    await tg.create_user(MARIA, first_name="Maria")
    await tg.create_user(TOM, first_name="Tom")
    await tg.create_user(EVE, first_name="Eve")
    await tg.create_supergroup(
        "Support", chat_id=SUPPORT, members=[TOM], administrators=[MARIA], bot_rights=group_rights
    )
    return SUPPORT


@pytest.fixture
def bot_environ(request: pytest.FixtureRequest, support: int) -> dict[str, str]:
    """The support group; a test adds settings with indirect parametrisation. The notice
    scheduler stays off: its notices in a topic are a test of their own."""
    return {
        "SUPPORT_CHAT_ID": str(support),
        "NOTICE_JOB_INTERVAL_SECONDS": "0",
        # The group's topics here are the customers' alone (the ops topic: test_alerts).
        "OPS_TOPIC": "false",
        # No pace per chat (on PostgreSQL, replies share it): a third message within a second
        # would wait past the QUIET window the transcripts are collected with. The pace is
        # test_processes's.
        "PER_CHAT_INTERVAL_SECONDS": "0",
        **getattr(request, "param", {}),
    }


@pytest.fixture
async def customers(tg: SandboxClient, store: Store) -> AsyncIterator[None]:
    await tg.create_user(ANNA, first_name="Anna", username="anna_s", language_code="de")
    await tg.create_user(JOHN, first_name="John", language_code="en")
    await tg.create_user(NEW, first_name="Nora", last_name="Neu", language_code="es")
    async with store.begin() as conn:
        await link_chat(conn, ANNA, 1)
        await link_chat(conn, JOHN, 2)
    yield


async def _topic(tg: SandboxClient) -> dict[str, Any]:
    [topic] = await tg.topics(SUPPORT)
    return topic


async def _in_topic(tg: SandboxClient, thread: int, after: int = 0) -> list[str]:
    """What the bot posted in the topic (copies and notices), without service messages."""
    records = await tg.transcript(SUPPORT, message_thread_id=thread, after_message_id=after)
    return [
        r["text"] if r["text"] is not None else f"[{r['kind']}] {r['caption'] or ''}".strip()
        for r in records
        if r["from_bot"] and r["kind"] != "service"
    ]


async def _agent_says(tg: SandboxClient, agent: int, thread: int, text: str) -> dict[str, Any]:
    return await tg.send_topic_message(agent, SUPPORT, thread, text)


async def _last_from_bot(tg: SandboxClient, chat: int) -> str | None:
    mine = [r for r in await tg.transcript(chat) if r["from_bot"]]
    return mine[-1]["text"] if mine else None


async def _state(store: Store, chat_id: int) -> str:
    return (await _handoff(store, chat_id)).state


async def _handoff(store: Store, chat_id: int) -> Handoff:
    async with store.connect() as conn:
        found = await handoff_of(conn, chat_id)
    assert found is not None
    return found


async def eventually(read: Callable[[], Awaitable[T]], expected: T, timeout: float = 20.0) -> T:  # noqa: ASYNC109
    """What ``read()`` gives once it gives ``expected``: asked again every 20 ms, so a test
    waits exactly as long as the bot takes (through PostgreSQL's pool a relay takes more of
    the loop's turns than through SQLite's inline writer). Fails with the last reading if
    it never does within ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got = await read()
    while got != expected and loop.time() < deadline:
        await asyncio.sleep(0.02)
        got = await read()
    assert got == expected
    return got


STARTED_DE = (
    "🙋 Ich habe Ihren Chat an unser Team übergeben.\n"
    "Ein Mensch antwortet Ihnen hier, meist innerhalb von 15 Minuten.\n\n"
    "Alles, was Sie jetzt schreiben, geht an das Team, auch Fotos und Dateien."
)
STARTED_EN = (
    "🙋 I've passed your chat to our team.\n"
    "A person will answer you here, usually within 15 minutes.\n\n"
    "Everything you write now goes to them; photos and files too."
)
CARD_ANNA = """🙋 Anna Schmidt · #1 · Deutsch
anna.schmidt@example.com · +49 30 1234567
Telegram: Anna (@anna_s) · 601
Why: asked for a person, Nov 26, 2026, 11:00\u202fAM

100003 · August 30 · €300.88
1. City Pram ×1 · waiting · no date · queue 1
2. Steel Kettle 1.7 l ×1 · ready to ship

100002 · August 29 · €761.99
1. Barista Pro Coffee Machine ×1 · waiting · ~December 20 · queue 1
   📅 December 2 → December 9 → December 20 · told December 2

100001 · August 28 · €25.89
1. Steel Kettle 1.7 l ×1 · shipped

Reply here to write to the customer. /orders · /cancel ORDER LINE · /canned · /close"""
TOOLS = [
    [("📦 Orders", "ag:o:1"), ("✖️ Cancel a line", "ag:c:1")],
    [("💬 Canned reply", "ag:r:1"), ("↩️ Hand back to the bot", "ag:x:1")],
]


async def test_agent_command_opens_a_topic_with_the_context_card(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    [reply] = await tg.say(ANNA, "/agent", quiet=QUIET)
    assert reply["text"] == STARTED_DE
    assert buttons(reply) == []
    topic = await _topic(tg)
    assert topic["name"] == "⏳ Anna Schmidt · #1"
    assert topic["closed"] is False
    records = await tg.transcript(SUPPORT, message_thread_id=topic["message_thread_id"])
    card = next(r for r in records if r["kind"] == "text")
    assert card["text"] == CARD_ANNA
    assert buttons(card) == TOOLS
    h = await _handoff(store, ANNA)
    assert (h.state, h.reason, h.escalations, h.thread_id) == (
        "waiting",
        "asked",
        1,
        topic["message_thread_id"],
    )
    assert h.card_message_id == card["message_id"]


async def test_the_menu_button_after_two_misses_escalates_as_misunderstood(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    [offer] = await tg.say(JOHN, "/help", quiet=QUIET)
    # Which words miss is the understanding's business; two misses in a row are in the
    # store, and the fallback then offers this button.
    async with store.begin() as conn:
        await record_miss(conn, JOHN)
        await record_miss(conn, JOHN)
    answered, [reply] = await tg.press(
        JOHN, offer["message_id"], "m:agent", forge=True, quiet=QUIET
    )
    assert answered["answered"] is True
    assert reply["text"] == STARTED_EN
    topic = await _topic(tg)
    assert topic["name"] == "⏳ John Smith · #2"
    [card] = await _in_topic(tg, topic["message_thread_id"])
    assert "Why: the bot misunderstood twice in a row, Nov 26, 2026, 11:00\u202fAM" in card
    h = await _handoff(store, JOHN)
    assert h.reason == "misunderstood"


@pytest.fixture
def routes(bot: BotApplication) -> None:
    """The routes other modules own, standing in for them: the delay policy's "ask a person"
    and the free-text dispatcher's AGENT intent."""

    async def delay_decision(update: Update, context: BotContext) -> None:
        await escalate(update, context, "delay_policy")
        raise ApplicationHandlerStop

    async def free_text(update: Update, context: BotContext) -> None:
        await escalate(update, context, "asked")
        raise ApplicationHandlerStop

    bot.add_handler(CommandHandler("delaydecision", delay_decision), group=-5)
    bot.add_handler(CommandHandler("freetext", free_text), group=-5)


async def test_the_delay_policy_and_free_text_routes(
    tg: SandboxClient, store: Store, customers: None, routes: None
) -> None:
    [reply] = await tg.say(NEW, "/delaydecision", quiet=QUIET)
    assert reply["text"] == (
        "🙋 He pasado tu chat a nuestro equipo.\n"
        "Una persona te responderá aquí, normalmente en 15 minutos.\n\n"
        "Todo lo que escribas ahora les llega, también fotos y archivos."
    )
    topic = await _topic(tg)
    assert topic["name"] == "⏳ Nora Neu"
    [card] = await _in_topic(tg, topic["message_thread_id"])
    assert card.splitlines()[:4] == [
        "🙋 Nora Neu · Español",
        "Not linked to a customer record.",
        f"Telegram: Nora Neu · {NEW}",
        "Why: a long delay needs a person's decision, Nov 26, 2026, 11:00\u202fAM",
    ]
    assert (await _handoff(store, NEW)).reason == "delay_policy"


async def test_free_text_asking_for_a_person_is_copied_into_the_topic(
    bot: BotApplication, tg: SandboxClient, store: Store, customers: None
) -> None:
    from telegram.ext import MessageHandler, filters

    app = bot

    async def wants_a_person(update: Update, context: BotContext) -> None:
        await escalate(update, context, "asked")
        raise ApplicationHandlerStop  # as the dispatcher's own answer, the last word

    app.add_handler(MessageHandler(filters.Regex("Mensch"), wants_a_person), group=-5)
    [reply] = await tg.say(ANNA, "Ich möchte mit einem Menschen sprechen", quiet=QUIET)
    assert reply["text"] == STARTED_DE
    thread = (await _topic(tg))["message_thread_id"]
    texts = await _in_topic(tg, thread)
    assert texts[1:] == ["Ich möchte mit einem Menschen sprechen"]


async def test_an_agent_pulls_a_customer_in_from_the_group(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    before = (await tg.chat(JOHN))["last_message_id"]
    await tg.send_message(MARIA, "/pull 100004", chat_id=SUPPORT)
    [told] = await tg.collect(JOHN, before, quiet=QUIET)
    assert told["text"] == (
        "🙋 Someone from our team would like to help you personally and will write to you here."
        "\n\nEverything you write now goes to them; photos and files too."
    )
    topic = await _topic(tg)
    assert topic["name"] == "⏳ John Smith · #2"
    h = await _handoff(store, JOHN)
    assert (h.reason, h.state) == ("agent_pulled", "waiting")
    # An unknown customer: said plainly in the group, nothing opened.
    sent = await tg.send_message(MARIA, "/pull 999999", chat_id=SUPPORT)
    [reply] = await tg.collect(SUPPORT, sent["message_id"], quiet=QUIET)
    assert reply["text"] == (
        "No customer chat found for “999999”. Give an order number, an e-mail or a chat id: "
        "/pull 100002"
    )
    assert len(await tg.topics(SUPPORT)) == 1


MEDIA = [
    {"photo": "photo-1", "caption": "the box"},
    {"document": "doc-1", "caption": "invoice"},
    {"voice": "voice-1"},
    {"sticker": "sticker-1"},
]


async def test_messages_of_every_kind_and_their_edits_are_relayed_both_ways(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(ANNA, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    # Customer -> topic: text and every kind of media, silently for the customer.
    assert await tg.say(ANNA, "Wo bleibt meine Kaffeemaschine?", timeout=0.5, quiet=QUIET) == []
    for media in MEDIA:
        sent = await tg.send_message(ANNA, **media)
        assert await tg.collect(ANNA, sent["message_id"], timeout=0.5, quiet=QUIET) == []
    relayed = [
        "Wo bleibt meine Kaffeemaschine?",
        "[photo] the box",
        "[document] invoice",
        "[voice]",
        "[sticker]",
    ]

    async def in_topic() -> list[str]:
        return (await _in_topic(tg, thread))[1:]

    await eventually(in_topic, relayed)
    # Topic -> customer: the agent's own account never shows, the bot sends the copy.
    before = (await tg.chat(ANNA))["last_message_id"]
    first = await _agent_says(tg, MARIA, thread, "Hallo Anna, ich schaue nach.")
    [copy] = await tg.collect(ANNA, before, quiet=QUIET)
    assert copy["text"] == "Hallo Anna, ich schaue nach."
    assert copy["from_bot"] is True
    assert (await _topic(tg))["name"] == "💬 Anna Schmidt · #1"
    for media in MEDIA:
        await tg.send_message(MARIA, chat_id=SUPPORT, message_thread_id=thread, **media)

    async def customer_side() -> list[tuple[str, str | None]]:
        after = await tg.transcript(ANNA, after_message_id=copy["message_id"])
        return [(r["kind"], r["caption"]) for r in after if r["from_bot"]]

    await eventually(
        customer_side,
        [("photo", "the box"), ("document", "invoice"), ("voice", None), ("sticker", None)],
    )
    h = await _handoff(store, ANNA)
    assert h.state == "answered" and h.answered_at is not None
    # Edits follow, both ways.
    await tg.edit_message(
        MARIA, first["message_id"], "Hallo Anna, ich schaue sofort nach.", SUPPORT
    )

    async def the_copy() -> list[str]:
        return [
            r["text"] for r in await tg.transcript(ANNA) if r["message_id"] == copy["message_id"]
        ]

    await eventually(the_copy, ["Hallo Anna, ich schaue sofort nach."])
    mine = await tg.send_message(ANNA, "Danke!")

    async def topic_name() -> str:
        return str((await _topic(tg))["name"])

    await eventually(topic_name, "⏳ Anna Schmidt · #1")  # the customer wrote last
    await eventually(in_topic, [*relayed, "Danke!"])
    await tg.edit_message(ANNA, mine["message_id"], "Danke schön!")
    await eventually(in_topic, [*relayed, "Danke schön!"])


@pytest.mark.parametrize("bot_environ", [{"AGENT_SIGNATURE": "true"}], indirect=True)
async def test_agents_sign_with_their_first_name_when_the_shop_wants_it(
    tg: SandboxClient, customers: None
) -> None:
    await tg.say(ANNA, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    before = (await tg.chat(ANNA))["last_message_id"]
    await _agent_says(tg, MARIA, thread, "Ihr Paket kommt morgen.")
    [copy] = await tg.collect(ANNA, before, quiet=QUIET)
    # The signature is in the customer's language, like everything the customer reads.
    assert copy["text"] == "Ihr Paket kommt morgen.\n\n— Maria, Team von Demo Shop"
    assert "Maria" not in str(copy["message"]["from"])


async def test_the_bot_is_silent_to_the_customer_and_its_notices_go_to_the_topic(
    bot: BotApplication, tg: SandboxClient, customers: None
) -> None:
    assert await post_to_topic(bot, ANNA, "📅 <b>Order 100002</b>: new date") is False
    await tg.say(ANNA, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    # Commands and buttons the bot would answer are the agent's business now.
    assert await tg.say(ANNA, "/help", timeout=0.5, quiet=QUIET) == []
    [greeting] = [r for r in await tg.transcript(ANNA) if r["from_bot"]]
    answered, replies = await tg.press(
        ANNA, greeting["message_id"], "m:help", forge=True, timeout=1.0, quiet=QUIET
    )
    assert replies == []
    assert answered["answer"]["text"] == (
        "Ein Mensch aus unserem Team betreut Ihren Chat gerade: Schreiben Sie einfach hier."
    )
    assert await post_to_topic(bot, ANNA, "📅 <b>Order 100002</b>: new date") is True
    assert (await _in_topic(tg, thread))[-2:] == ["/help", "📅 Order 100002: new date"]
    assert [r for r in await tg.transcript(ANNA) if r["from_bot"]] == [greeting]


async def test_hand_back_by_command_then_the_bot_answers_and_a_new_escalation_reopens(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(ANNA, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    await _agent_says(tg, MARIA, thread, "Alles erledigt?")
    await eventually(lambda: _last_from_bot(tg, ANNA), "Alles erledigt?")
    before = (await tg.chat(ANNA))["last_message_id"]
    await _agent_says(tg, MARIA, thread, "/close")
    [back] = await tg.collect(ANNA, before, quiet=QUIET)
    assert back["text"] == (
        "Unser Team hat das Gespräch beendet. Vielen Dank für Ihre Geduld!\n"
        "Fragen Sie mich jederzeit nach Ihren Bestellungen und Artikeln, oder tippen Sie auf "
        "„Mit einem Menschen sprechen“, um das Team wieder zu erreichen."
    )
    assert buttons(back) == [
        [("📦 Meine Bestellungen", "m:orders"), ("🔎 Ist es vorrätig?", "m:stock")],
        [("🙋 Mit einem Menschen sprechen", "m:agent")],
        [("❓ Hilfe", "m:help"), ("🌐 Sprache", "m:lang")],
    ]
    topic = await _topic(tg)
    assert (topic["name"], topic["closed"]) == ("✅ Anna Schmidt · #1", True)
    assert (await _in_topic(tg, thread))[-1] == "✅ Handed back to the bot by Maria."
    h = await _handoff(store, ANNA)
    assert h.state == "closed"
    # The customer's next message is the bot's again.
    [reply] = await tg.say(ANNA, "/help", quiet=QUIET)
    assert reply["text"].startswith("Was ich kann")
    # A new escalation reopens the same topic, with a fresh card that remembers the last one.
    [again] = await tg.say(ANNA, "/agent", quiet=QUIET)
    assert again["text"] == STARTED_DE
    topics = await tg.topics(SUPPORT)
    assert [(t["message_thread_id"], t["name"], t["closed"]) for t in topics] == [
        (thread, "⏳ Anna Schmidt · #1", False)
    ]
    card = (await _in_topic(tg, thread))[-1]
    assert "Earlier:\n• Nov 26, 2026, 11:00\u202fAM: asked for a person, closed by Maria" in card
    h = await _handoff(store, ANNA)
    assert (h.state, h.escalations) == ("waiting", 2)
    async with store.connect() as conn:
        history = await escalations_of(conn, h.handoff_id)
    assert [(e.reason, e.ended_by, e.agent_name) for e in history] == [
        ("asked", None, None),
        ("asked", "agent", "Maria"),
    ]


async def test_hand_back_by_button(tg: SandboxClient, store: Store, customers: None) -> None:
    await tg.say(JOHN, "/agent", quiet=QUIET)
    h = await _handoff(store, JOHN)
    before = (await tg.chat(JOHN))["last_message_id"]
    query = await tg.press_button(SUPPORT, h.card_message_id or 0, "ag:x:1", user_id=TOM)
    await tg.callback_answer(query["id"], timeout=2)
    [back] = await tg.collect(JOHN, before, quiet=QUIET)
    assert back["text"] == (
        "Our team has finished the conversation. Thank you for your patience!\n"
        "Ask me about your orders and products any time, or tap “Talk to a person” to reach "
        "the team again."
    )
    # "Talk to a person" once, in the menu (it came twice, a row of its own above the menu)
    assert buttons(back) == [
        [("📦 My orders", "m:orders"), ("🔎 Is it in stock?", "m:stock")],
        [("🙋 Talk to a person", "m:agent")],
        [("❓ Help", "m:help"), ("🌐 Language", "m:lang")],
    ]
    assert (await _handoff(store, JOHN)).state == "closed"
    assert (await _topic(tg))["closed"] is True


async def test_no_answer_in_time_then_the_customer_goes_back_to_the_bot(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock, customers: None
) -> None:
    await tg.say(JOHN, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    clock.advance(minutes=14)
    await sweep_handoffs(bot)
    assert [r for r in await tg.transcript(JOHN) if r["from_bot"]][-1]["text"] == STARTED_EN
    clock.advance(minutes=2)
    before = (await tg.chat(JOHN))["last_message_id"]
    await sweep_handoffs(bot)
    await sweep_handoffs(bot)  # a second run (or process) tells nobody twice
    [notice] = await tg.collect(JOHN, before, quiet=QUIET)
    assert notice["text"] == (
        "Sorry, nobody from our team has been able to answer yet.\n"
        "You can keep waiting here, or go back to me for your orders and products."
    )
    assert buttons(notice) == [
        [("🤖 Back to the bot", "h:back:1")],
        [("⏳ Keep waiting", "h:wait:1")],
    ]
    assert (await _in_topic(tg, thread))[-1] == (
        "⏰ Nobody answered within 15 minutes: the customer was told and may go back to the bot."
    )
    answered, _ = await tg.press(JOHN, notice["message_id"], "h:wait:1", timeout=1.0, quiet=QUIET)
    assert answered["answer"]["text"] == "Thanks for your patience. Your chat stays with our team."
    assert (await _handoff(store, JOHN)).state == "waiting"
    # The keyboard went with "keep waiting"; pressing "back" on it now is a forged press.
    answered, [back] = await tg.press(
        JOHN, notice["message_id"], "h:back:1", forge=True, quiet=QUIET
    )
    assert back["text"].startswith("OK, you're back with me.")
    assert (await _handoff(store, JOHN)).state == "closed"
    assert (await _in_topic(tg, thread))[-1] == "✅ The customer went back to the bot."


async def test_an_idle_thread_is_handed_back_by_itself(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock, customers: None
) -> None:
    await tg.say(JOHN, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    await _agent_says(tg, MARIA, thread, "Hi John, I'm on it.")
    await eventually(lambda: _last_from_bot(tg, JOHN), "Hi John, I'm on it.")
    await eventually(lambda: _state(store, JOHN), "answered")
    clock.advance(hours=23)
    await sweep_handoffs(bot)
    assert (await _handoff(store, JOHN)).state == "answered"
    clock.advance(hours=1, minutes=1)
    before = (await tg.chat(JOHN))["last_message_id"]
    await sweep_handoffs(bot)
    [back] = await tg.collect(JOHN, before, quiet=QUIET)
    assert back["text"].startswith(
        "As nothing more came up, I've closed the conversation with our team."
    )
    assert (await _in_topic(tg, thread))[-1] == (
        "✅ Handed back to the bot after 24 hours without messages."
    )
    topic = await _topic(tg)
    assert (topic["name"], topic["closed"]) == ("✅ John Smith · #2", True)
    # An agent writing in the closed topic takes the customer back.
    before = (await tg.chat(JOHN))["last_message_id"]
    await _agent_says(tg, MARIA, thread, "One more thing, John.")
    replies = await tg.collect(JOHN, before, quiet=QUIET)
    assert [r["text"] for r in replies][-1] == "One more thing, John."
    h = await _handoff(store, JOHN)
    assert (h.state, h.reason, h.escalations) == ("answered", "agent_pulled", 2)


async def test_outside_business_hours_the_customer_hears_when_the_team_is_back(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock, customers: None
) -> None:
    clock.advance(days=2)  # Saturday, 11:00 in Berlin
    [reply] = await tg.say(JOHN, "/agent", quiet=QUIET)
    assert reply["text"] == (
        "🙋 I've passed your chat to our team.\n"
        "They're away right now and back on Mon, November 30 at 9:00\u202fAM. "
        "A person will answer you then.\n\n"
        "Everything you write now goes to them; photos and files too."
    )
    h = await _handoff(store, JOHN)
    assert h.no_answer_due_at is not None
    assert h.no_answer_due_at.isoformat() == "2026-11-30T08:15:00+00:00"


async def test_two_escalations_at_once_make_one_topic(
    bot: BotApplication, tg: SandboxClient, store: Store, customers: None
) -> None:
    def update(n: int, text: str) -> Update:
        data = {
            "update_id": 10_000 + n,
            "message": {
                "message_id": 10_000 + n,
                "date": 0,
                "chat": {"id": JOHN, "type": "private", "first_name": "John"},
                "from": {"id": JOHN, "is_bot": False, "first_name": "John"},
                "text": text,
            },
        }
        return Update.de_json(data, bot.bot)

    updates = [update(1, "/agent"), update(2, "/agent")]
    await asyncio.gather(*(escalate(u, BotContext.from_update(u, bot), "asked") for u in updates))
    assert len(await tg.topics(SUPPORT)) == 1
    told = [r for r in await tg.transcript(JOHN) if r["from_bot"]]
    assert [r["text"] for r in told] == [STARTED_EN]
    h = await _handoff(store, JOHN)
    assert h.escalations == 1
    async with store.connect() as conn:
        assert len(await escalations_of(conn, h.handoff_id)) == 1


async def test_only_the_support_team_acts_as_agents(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(JOHN, "/agent", quiet=QUIET)
    h = await _handoff(store, JOHN)
    # Someone outside the group pressing the card's hand-back button.
    query = await tg.press_button(SUPPORT, h.card_message_id or 0, "ag:x:1", user_id=EVE)
    answered = await tg.callback_answer(query["id"], timeout=2)
    assert answered["answer"]["text"] == "Only the support team can do this."
    # Agent commands from a private chat are a customer's words, not agent commands.
    await tg.create_user(EVE, first_name="Eve", language_code="en")
    replies = await tg.say(EVE, "/close", quiet=QUIET)
    assert all("Handed back" not in r["text"] for r in replies)
    # ... and from another group they do nothing at all.
    other = await tg.create_supergroup("Other", members=[EVE], administrators=[MARIA])
    sent = await tg.send_message(MARIA, "/close", chat_id=other["id"])
    assert await tg.collect(other["id"], sent["message_id"], timeout=0.5, quiet=QUIET) == []
    assert (await _handoff(store, JOHN)).state == "waiting"
    # A customer's text never reaches agent handling: it is relayed as words.
    await tg.say(JOHN, "/close", timeout=0.5, quiet=QUIET)
    assert (await _handoff(store, JOHN)).state == "waiting"


@pytest.mark.parametrize("bot_environ", [{"AGENTS": "admins"}], indirect=True)
async def test_with_agents_admins_a_plain_member_cannot_act(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(JOHN, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    sent = await _agent_says(tg, TOM, thread, "/close")
    [reply] = await tg.collect(SUPPORT, sent["message_id"], message_thread_id=thread, quiet=QUIET)
    assert reply["text"] == "Only the support team can do this."
    await _agent_says(tg, TOM, thread, "Hi John")
    assert [r for r in await tg.transcript(JOHN) if r["from_bot"]][-1]["text"] == STARTED_EN
    assert (await _handoff(store, JOHN)).state == "waiting"


async def test_a_customer_who_blocked_the_bot(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(JOHN, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    await tg.block(JOHN)

    async def last_in_topic() -> str:
        return (await _in_topic(tg, thread))[-1]

    await eventually(
        last_in_topic,
        "⛔ The customer blocked the bot: nothing reaches them until they unblock it.",
    )
    await _agent_says(tg, MARIA, thread, "Hello?")
    await eventually(last_in_topic, "⛔ Not delivered: the customer has blocked the bot.")
    assert (await _handoff(store, JOHN)).customer_blocked is True
    await tg.unblock(JOHN)
    await eventually(last_in_topic, "✅ The customer unblocked the bot.")


async def test_agent_tools_orders_cancel_and_canned_reply(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(ANNA, "/agent", quiet=QUIET)
    h = await _handoff(store, ANNA)
    thread = h.thread_id or 0

    async def press(message_id: int, data: str) -> list[str]:
        last = (await tg.chat(SUPPORT))["last_message_id"]
        query = await tg.press_button(SUPPORT, message_id, data, user_id=MARIA)
        await tg.callback_answer(query["id"], timeout=2)
        return [
            r["text"]
            for r in await tg.collect(SUPPORT, last, quiet=QUIET, message_thread_id=thread)
        ]

    [orders] = await press(h.card_message_id or 0, "ag:o:1")
    assert orders.startswith("100003 · August 30 · €300.88\n1. City Pram ×1 · waiting")
    await press(h.card_message_id or 0, "ag:c:1")
    pick = (await tg.transcript(SUPPORT, message_thread_id=thread))[-1]
    assert pick["text"] == "Which line should be cancelled? The customer is told."
    assert buttons(pick) == [
        [("✖️ 100003/1 City Pram", "ag:cl:1:100003:1")],
        [("✖️ 100003/2 Steel Kettle 1.7 l", "ag:cl:1:100003:2")],
        [("✖️ 100002/1 Barista Pro Coffee Machine", "ag:cl:1:100002:1")],
    ]
    [confirm] = await press(pick["message_id"], "ag:cl:1:100002:1")
    assert confirm == "Cancel 1 × Barista Pro Coffee Machine of order 100002? The customer is told."
    confirm_id = (await tg.transcript(SUPPORT, message_thread_id=thread))[-1]["message_id"]
    before = (await tg.chat(ANNA))["last_message_id"]
    notices = await press(confirm_id, "ag:cy:1:100002:1")
    assert notices == [
        "✖️ Cancelled 1 × Barista Pro Coffee Machine of order 100002. The customer was told."
    ]
    [told] = await tg.collect(ANNA, before, quiet=QUIET)
    assert told["text"] == (
        "✖️ Erledigt: 1 × Barista Pro Kaffeemaschine aus Bestellung 100002 ist storniert."
    )
    from sqlalchemy import select

    from store.schema import events

    async with store.connect() as conn:
        kinds = (await conn.execute(select(events.c.kind, events.c.data))).all()
    assert any(k == "line_cancelled" and "agent" in (d or "") for k, d in kinds)
    assert any(k == "handoff_line_cancelled" and "Maria" in (d or "") for k, d in kinds)
    # The card follows the change.
    card = next(r for r in await tg.transcript(SUPPORT) if r["message_id"] == h.card_message_id)
    assert "1. Barista Pro Coffee Machine ×1 · cancelled" in card["text"]
    # Again: nothing left to cancel, the same check as the customer's own cancel.
    assert await press(pick["message_id"], "ag:cl:1:100002:1") == [
        "Nothing left to cancel there: it has shipped or is cancelled already."
    ]
    # A canned reply, in the customer's language.
    await press(h.card_message_id or 0, "ag:r:1")
    menu = (await tg.transcript(SUPPORT, message_thread_id=thread))[-1]
    assert menu["text"] == "Which reply? It goes to the customer in Deutsch."
    before = (await tg.chat(ANNA))["last_message_id"]
    [sent] = await press(menu["message_id"], "ag:rs:1:checking")
    assert sent == (
        "📤 Sent to the customer (Deutsch):\n"
        "Ich prüfe das jetzt für Sie und melde mich gleich hier."
    )
    [canned] = await tg.collect(ANNA, before, quiet=QUIET)
    assert canned["text"] == "Ich prüfe das jetzt für Sie und melde mich gleich hier."
    assert (await _handoff(store, ANNA)).state == "answered"
    async with store.connect() as conn:
        assert (await active_handoff(conn, ANNA)) is not None


@pytest.mark.parametrize("group_rights", [{"can_manage_topics": False}])
async def test_the_start_up_check_says_what_is_missing(bot: BotApplication) -> None:
    assert await check_support_group(bot) == ["the bot lacks the administrator right Manage topics"]


async def test_the_start_up_check_passes_for_a_proper_group(bot: BotApplication) -> None:
    assert await check_support_group(bot) == []


@pytest.mark.parametrize(
    "bot_environ", [{"SUPPORT_CHAT_ID": "", "SUPPORT_CONTACT": "help@example.com"}], indirect=True
)
async def test_without_a_support_group_the_customer_hears_how_else_to_reach_the_shop(
    bot: BotApplication, tg: SandboxClient, store: Store, customers: None
) -> None:
    [reply] = await tg.say(JOHN, "/agent", quiet=QUIET)
    assert reply["text"] == (
        "Sorry, nobody from our team can answer in this chat right now.\n"
        "You can reach them at help@example.com.\n\n"
        "I'm still here for your orders and products: choose below."
    )
    async with store.connect() as conn:
        assert await handoff_of(conn, JOHN) is None
    assert await check_support_group(bot) == ["SUPPORT_CHAT_ID is not set"]


# --- one topic per customer, whichever account they write from --------------------------


async def test_a_customer_on_a_new_account_gets_their_topic_back_and_the_old_chat_is_freed(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(ANNA, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    # Anna links a new Telegram account while her thread is still open on the old one.
    await tg.create_user(ANNA_2, first_name="Anna", language_code="de")
    async with store.begin() as conn:
        await link_chat(conn, ANNA_2, 1)
    [reply] = await tg.say(ANNA_2, "/agent", quiet=QUIET)
    assert reply["text"] == STARTED_DE
    topics = await tg.topics(SUPPORT)
    assert [(t["message_thread_id"], t["name"], t["closed"]) for t in topics] == [
        (thread, "⏳ Anna Schmidt · #1", False)
    ]
    h = await _handoff(store, ANNA_2)
    assert (h.thread_id, h.customer_id, h.state, h.escalations) == (thread, 1, "waiting", 2)
    async with store.connect() as conn:
        assert await handoff_of(conn, ANNA) is None
        history = await escalations_of(conn, h.handoff_id)
    assert [(e.reason, e.ended_by) for e in history] == [("asked", None), ("asked", "moved")]
    posted = await _in_topic(tg, thread)
    assert posted[-1] == (
        f"↪️ The customer now writes from another Telegram account (chat {ANNA} → {ANNA_2}). "
        "Their old chat is back with the bot."
    )
    assert posted[-2].startswith("🙋 Anna Schmidt · #1 · Deutsch")
    assert "asked for a person, moved to another Telegram account" in posted[-2]
    # The new account talks to the topic, both ways ...
    assert await tg.say(ANNA_2, "Hallo, neues Handy!", timeout=0.5, quiet=QUIET) == []

    async def last_in_topic() -> str:
        return (await _in_topic(tg, thread))[-1]

    await eventually(last_in_topic, "Hallo, neues Handy!")
    before = (await tg.chat(ANNA_2))["last_message_id"]
    await _agent_says(tg, MARIA, thread, "Willkommen zurück!")
    [copy] = await tg.collect(ANNA_2, before, quiet=QUIET)
    assert copy["text"] == "Willkommen zurück!"
    # ... and the old account is the bot's again.
    [answer] = await tg.say(ANNA, "/help", quiet=QUIET)
    assert answer["text"].startswith("Was ich kann")


async def test_an_unlinked_chat_has_its_own_topic_which_its_customer_keeps_after_linking(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(NEW, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    assert (await _handoff(store, NEW)).customer_id is None
    await _agent_says(tg, MARIA, thread, "/close")

    async def closed() -> tuple[str, bool]:
        return (await _state(store, NEW), bool((await _topic(tg))["closed"]))

    await eventually(closed, ("closed", True))
    async with store.begin() as conn:
        await link_chat(conn, NEW, 3)
    await tg.say(NEW, "/agent", quiet=QUIET)
    [topic] = await tg.topics(SUPPORT)
    assert (topic["message_thread_id"], topic["closed"]) == (thread, False)
    assert topic["name"].startswith("⏳ ") and topic["name"].endswith(" · #3")
    assert (await _handoff(store, NEW)).customer_id == 3
    # Another unlinked chat gets a topic of its own.
    await tg.create_user(ANNA_2, first_name="Otto", language_code="de")
    await tg.say(ANNA_2, "/agent", quiet=QUIET)
    assert [t["name"] for t in await tg.topics(SUPPORT)][-1] == "⏳ Otto"


async def test_the_sweep_opens_a_topic_that_a_crashed_process_never_opened(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock, customers: None
) -> None:
    # The escalation was claimed, then the process died before it opened the topic.
    async with store.begin() as conn:
        claim = await claim_handoff(
            conn,
            JOHN,
            support_chat_id=SUPPORT,
            reason="asked",
            now=clock.now,
            no_answer_due_at=clock.now + timedelta(minutes=15),
            customer_name="John",
            telegram_language="en",
        )
    assert claim.needs_topic
    # What John writes meanwhile is held for the topic, and the bot stays silent.
    assert await tg.say(JOHN, "Where is my kettle?", timeout=0.5, quiet=QUIET) == []
    await sweep_handoffs(bot)  # the opener's lease still runs: not the sweep's business yet
    assert await tg.topics(SUPPORT) == []
    clock.advance(minutes=3)
    before = (await tg.chat(JOHN))["last_message_id"]
    await asyncio.gather(sweep_handoffs(bot), sweep_handoffs(bot))  # two processes at once
    topic = await _topic(tg)
    assert (topic["name"], topic["closed"]) == ("⏳ John Smith · #2", False)
    posted = await _in_topic(tg, topic["message_thread_id"])
    assert posted[0].startswith("🙋 John Smith · #2 · English")
    assert posted[1:] == ["Where is my kettle?"]
    h = await _handoff(store, JOHN)
    assert h.thread_id == topic["message_thread_id"] and h.card_message_id is not None
    [told] = await tg.collect(JOHN, before, quiet=QUIET)
    assert told["text"] == STARTED_EN
    # Nothing is relayed twice by a later run.
    await sweep_handoffs(bot)
    assert len(await _in_topic(tg, topic["message_thread_id"])) == 2


async def test_a_held_message_left_behind_is_relayed_by_the_sweep(
    bot: BotApplication, tg: SandboxClient, store: Store, customers: None
) -> None:
    # A message held while the topic was opening, which its opener did not get to relay
    # (here: one John sent just before, held by hand). A greeting: "is anybody there?" asks
    # for a person itself.
    sent = await tg.send_message(JOHN, "Hello?")
    await tg.wait_for_bot_message(JOHN, sent["message_id"], timeout=20)
    await tg.say(JOHN, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    h = await _handoff(store, JOHN)
    async with store.begin() as conn:
        await hold_message(conn, h.handoff_id, (JOHN, sent["message_id"]), datetime.now(UTC))
    await asyncio.gather(sweep_handoffs(bot), sweep_handoffs(bot))
    await sweep_handoffs(bot)
    assert (await _in_topic(tg, thread))[1:] == ["Hello?"]


# --- the card keeps up ----------------------------------------------------------------------


async def test_a_notice_posted_to_the_topic_brings_the_card_up_to_date(
    bot: BotApplication, tg: SandboxClient, store: Store, customers: None
) -> None:
    from store.backorders import change_restock_date
    from store.queries import orders_of

    await tg.say(ANNA, "/agent", quiet=QUIET)
    h = await _handoff(store, ANNA)
    async with store.begin() as conn:
        [order] = [o for o in await orders_of(conn, 1) if o.order_number == "100002"]
        waits = order.lines[0].waits_for
        assert waits is not None
        await change_restock_date(conn, waits.restock_id, date(2027, 1, 8), "supplier")
    # The notice scheduler's path: it posts the rendered notice through post_to_topic.
    assert await post_to_topic(bot, ANNA, "📅 <b>Order 100002</b>: new date") is True

    async def card_up_to_date() -> bool:
        card = next(r for r in await tg.transcript(SUPPORT) if r["message_id"] == h.card_message_id)
        return (
            "Barista Pro Coffee Machine ×1 · waiting · ~January 8 · queue 1" in card["text"]
            and "December 20 → January 8" in card["text"]
        )

    await eventually(card_up_to_date, True)


async def test_the_card_shows_order_dates_as_the_shops_local_day(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    from sqlalchemy import update

    from store.schema import orders

    # 23:30 UTC on August 30 is already August 31 in Berlin.
    async with store.begin() as conn:
        await conn.execute(
            update(orders)
            .where(orders.c.order_number == "100003")
            .values(placed_at=datetime(2026, 8, 30, 23, 30, tzinfo=UTC))
        )
    await tg.say(ANNA, "/agent", quiet=QUIET)
    [card] = (await _in_topic(tg, (await _topic(tg))["message_thread_id"]))[:1]
    assert "100003 · August 31 · €300.88" in card
    assert "Why: asked for a person, Nov 26, 2026, 11:00\u202fAM" in card


async def test_the_sweep_brings_the_card_up_to_date_after_a_receipt_and_a_cancellation(
    bot: BotApplication, tg: SandboxClient, store: Store, customers: None
) -> None:
    from store.backorders import cancel_order, receive_restock
    from store.queries import orders_of

    await tg.say(ANNA, "/agent", quiet=QUIET)
    h = await _handoff(store, ANNA)

    async def card() -> str:
        records = await tg.transcript(SUPPORT)
        return str(next(r for r in records if r["message_id"] == h.card_message_id)["text"])

    first = await card()
    await sweep_handoffs(bot)  # nothing changed: the card stays as it is
    assert await card() == first
    # The restock arrives (no notice goes to the topic for that) and the shop cancels an
    # order from the command line.
    async with store.begin() as conn:
        [order] = [o for o in await orders_of(conn, 1) if o.order_number == "100002"]
        waits = order.lines[0].waits_for
        assert waits is not None
        await receive_restock(conn, waits.restock_id)
        await cancel_order(conn, "100003", customer_id=1, reason="shop")
    await sweep_handoffs(bot)
    updated = await card()
    assert "1. Barista Pro Coffee Machine ×1 · ready to ship" in updated
    assert "1. City Pram ×1 · cancelled" in updated


async def test_an_agent_writing_in_a_closed_topic_reaches_the_customers_current_account(
    tg: SandboxClient, store: Store, customers: None
) -> None:
    await tg.say(ANNA, "/agent", quiet=QUIET)
    thread = (await _topic(tg))["message_thread_id"]
    closing = (await tg.chat(ANNA))["last_message_id"]
    await _agent_says(tg, MARIA, thread, "/close")
    [back] = await tg.collect(ANNA, closing, quiet=QUIET)
    assert back["text"].startswith("Unser Team hat das Gespräch beendet.")
    await tg.create_user(ANNA_2, first_name="Anna", language_code="de")
    async with store.begin() as conn:
        await link_chat(conn, ANNA_2, 1)
    before = (await tg.chat(ANNA_2))["last_message_id"]
    old_before = (await tg.chat(ANNA))["last_message_id"]
    await _agent_says(tg, MARIA, thread, "Anna, eine Frage noch.")
    replies = await tg.collect(ANNA_2, before, quiet=QUIET)
    assert [r["text"] for r in replies][-1] == "Anna, eine Frage noch."
    assert await tg.collect(ANNA, old_before, timeout=0.3, quiet=QUIET) == []
    assert len(await tg.topics(SUPPORT)) == 1
    h = await _handoff(store, ANNA_2)
    assert (h.thread_id, h.state, h.reason) == (thread, "answered", "agent_pulled")
