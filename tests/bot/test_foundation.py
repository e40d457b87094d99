"""The foundation, end to end: the real application polling the sandbox over HTTP."""

from __future__ import annotations

import logging
import re

import pytest
from telegram import Update
from telegram.ext import CommandHandler

from bot.context import BotApplication, BotContext
from sandbox import Sandbox
from sandbox.client import SandboxClient
from store import Store
from store.chats import chat_of
from tests.conftest import NO_CHAT_PACE, buttons, texts

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15

MENU = {
    "en": [
        [("📦 My orders", "m:orders"), ("🔎 Is it in stock?", "m:stock")],
        [("🙋 Talk to a person", "m:agent")],
        [("❓ Help", "m:help"), ("🌐 Language", "m:lang")],
    ],
    "de": [
        [("📦 Meine Bestellungen", "m:orders"), ("🔎 Ist es vorrätig?", "m:stock")],
        [("🙋 Mit einem Menschen sprechen", "m:agent")],
        [("❓ Hilfe", "m:help"), ("🌐 Sprache", "m:lang")],
    ],
    "es": [
        [("📦 Mis pedidos", "m:orders"), ("🔎 ¿Hay en stock?", "m:stock")],
        [("🙋 Hablar con una persona", "m:agent")],
        [("❓ Ayuda", "m:help"), ("🌐 Idioma", "m:lang")],
    ],
    "ru": [
        [("📦 Мои заказы", "m:orders"), ("🔎 Есть ли в наличии?", "m:stock")],
        [("🙋 Связаться с сотрудником", "m:agent")],
        [("❓ Помощь", "m:help"), ("🌐 Язык", "m:lang")],
    ],
}

GREETING = {
    "en": "Hello, Anna! 👋\nI'm the assistant of Demo Shop. I can tell you where your order is, "
    "whether a product is in stock and when a backordered item will arrive.\n\n"
    "Choose below, or just write to me in your own words.",
    "de": "Hallo, Anna! 👋\nIch bin der Assistent von Demo Shop. Ich sage Ihnen, wo Ihre "
    "Bestellung ist, ob ein Artikel vorrätig ist und wann ein nachbestellter Artikel ankommt.\n\n"
    "Wählen Sie unten, oder schreiben Sie mir einfach in Ihren eigenen Worten.",
    "es": "¡Hola, Anna! 👋\nSoy el asistente de Demo Shop. Te digo dónde está tu pedido, si un "
    "producto está en stock y cuándo llegará un artículo pendiente de reposición.\n\n"
    "Elige abajo o escríbeme con tus propias palabras.",
    "ru": "Здравствуйте, Anna! 👋\nЯ помощник магазина Demo Shop. Я подскажу, где ваш заказ, "
    "есть ли товар в наличии и когда придёт товар под заказ.\n\n"
    "Выберите ниже или просто напишите мне своими словами.",
}


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


@pytest.mark.parametrize("language", ["en", "de", "es", "ru"])
async def test_start_greets_in_the_users_telegram_language(
    tg: SandboxClient, store: Store, language: str
) -> None:
    await tg.create_user(501, first_name="Anna", language_code=language)
    [reply] = await tg.say(501, "/start", quiet=QUIET)
    assert reply["text"] == GREETING[language]
    assert buttons(reply) == MENU[language]
    async with store.connect() as conn:
        chat = await chat_of(conn, 501)
    assert chat is not None and chat.language is None  # nothing chosen yet, nothing saved


async def test_a_reply_goes_out_as_html_without_a_link_preview(tg: SandboxClient) -> None:
    # Replies are posted without Bot.send_message (reply.send): the Defaults must still apply.
    await tg.create_user(504, first_name="Anna", language_code="en")
    await tg.say(504, "/help", quiet=QUIET)
    [call] = await tg.calls("sendMessage")
    assert call["status"] == 200
    assert call["params"]["parse_mode"] == "HTML"
    assert call["params"]["link_preview_options"] == '{"is_disabled": true}'
    assert "message_thread_id" not in call["params"]


async def test_an_unshipped_telegram_language_gets_the_shop_default(tg: SandboxClient) -> None:
    await tg.create_user(502, first_name="Anna", language_code="fr")
    [reply] = await tg.say(502, "/start", quiet=QUIET)
    assert reply["text"] == GREETING["en"]


async def test_help_lists_what_the_bot_can_do_with_buttons(tg: SandboxClient) -> None:
    await tg.create_user(503, first_name="Eve", language_code="en")
    [reply] = await tg.say(503, "/help", quiet=QUIET)
    assert reply["text"].splitlines()[0] == "What I can do"
    assert "Commands: /orders, /stock, /agent, /language, /help" in reply["text"]
    assert buttons(reply) == MENU["en"]
    answered, [again] = await tg.press(503, reply["message_id"], "m:help", quiet=QUIET)
    assert answered["answered"] is True
    assert again["text"] == reply["text"]


async def test_a_press_too_old_to_answer_still_gets_its_reply(
    tg: SandboxClient, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    # A press that waited past Telegram's answer window (a backlog; a restart replays presses
    # from its inbox): the spinner can no longer be stopped, and the answer still comes. The
    # handler used to stop at the failed answer and the customer got the apology.
    await tg.create_user(504, first_name="Eve", language_code="en")
    [reply] = await tg.say(504, "/help", quiet=QUIET)
    sandbox.settings.callback_timeout = 0
    answered, [again] = await tg.press(504, reply["message_id"], "m:help", timeout=1, quiet=QUIET)
    assert answered["answered"] is False
    assert again["text"] == reply["text"]
    assert "failed" not in caplog.text


@pytest.mark.parametrize(
    ("choice", "confirmation"),
    [
        ("en", "Done: I'll write to you in English from now on."),
        ("de", "Erledigt: Ich schreibe Ihnen ab jetzt auf Deutsch."),
        ("es", "Listo: a partir de ahora te escribo en español."),
        ("ru", "Готово: теперь я пишу вам по-русски."),
    ],
)
async def test_language_is_chosen_with_buttons_and_remembered(
    tg: SandboxClient, store: Store, choice: str, confirmation: str
) -> None:
    await tg.create_user(504, first_name="Ivan", language_code="de")
    [menu] = await tg.say(504, "/language", quiet=QUIET)
    assert menu["text"] == "In welcher Sprache soll ich schreiben?"
    assert buttons(menu) == [
        [("English", "lang:en"), ("✓ Deutsch", "lang:de")],
        [("Español", "lang:es"), ("Русский", "lang:ru")],
    ]
    _answered, [reply] = await tg.press(504, menu["message_id"], f"lang:{choice}", quiet=QUIET)
    assert reply["text"] == confirmation
    assert buttons(reply) == MENU[choice]
    async with store.connect() as conn:
        chat = await chat_of(conn, 504)
    assert chat is not None and chat.language == choice
    # The saved choice wins over Telegram's language_code from now on.
    [greeting] = await tg.say(504, "/start", quiet=QUIET)
    assert (
        greeting["text"].split("\n")[0] == GREETING[choice].replace("Anna", "Ivan").split("\n")[0]
    )


async def test_a_forged_language_button_changes_nothing(tg: SandboxClient, store: Store) -> None:
    await tg.create_user(505, first_name="Mallory", language_code="en")
    [menu] = await tg.say(505, "/language", quiet=QUIET)
    answered, replies = await tg.press(505, menu["message_id"], "lang:xx", forge=True, quiet=QUIET)
    assert replies == []
    assert answered["answered"] is True
    assert answered["answer"]["text"] == "This is no longer available."
    async with store.connect() as conn:
        chat = await chat_of(conn, 505)
    assert chat is None or chat.language is None


async def test_a_stale_press_too_old_to_answer_is_told_in_a_message(
    tg: SandboxClient, sandbox: Sandbox, store: Store
) -> None:
    await tg.create_user(506, first_name="Mallory", language_code="en")
    [menu] = await tg.say(506, "/language", quiet=QUIET)
    sandbox.settings.callback_timeout = 0
    answered, [told] = await tg.press(
        506, menu["message_id"], "lang:xx", forge=True, timeout=1, quiet=QUIET
    )
    assert answered["answered"] is False
    assert told["text"] == "This is no longer available."
    async with store.connect() as conn:
        chat = await chat_of(conn, 506)
    assert chat is None or chat.language is None


@pytest.mark.parametrize(
    ("language", "first", "second"),
    [
        ("en", "Sorry, I didn't quite get that.", "Sorry, I still didn't get that."),
        ("ru", "Извините, я не совсем понял.", "Извините, я снова не понял."),
    ],
)
async def test_the_fallback_offers_a_person_after_two_misses(
    tg: SandboxClient, store: Store, language: str, first: str, second: str
) -> None:
    await tg.create_user(506, first_name="Zed", language_code=language)
    [one] = await tg.say(506, "qwxz zzkv", quiet=QUIET)
    [two] = await tg.say(506, "blorp fnord", quiet=QUIET)
    assert one["text"].startswith(first)
    assert two["text"].startswith(second)
    async with store.connect() as conn:
        chat = await chat_of(conn, 506)
    assert chat is not None and chat.misses == 2


async def test_the_commands_menu_is_set_in_every_language(tg: SandboxClient) -> None:
    calls = await tg.calls("setMyCommands")
    by_code = {c["params"].get("language_code"): c["params"]["commands"] for c in calls}
    assert set(by_code) == {None, "en", "de", "es", "ru"}
    assert all(c["status"] == 200 for c in calls)


async def test_a_failing_handler_is_logged_and_the_user_told_politely(
    bot: BotApplication, tg: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(update: Update, context: BotContext) -> None:
        raise RuntimeError("kaboom")

    # First in the default group, so the failure happens where real handlers live.
    bot.handlers[0].insert(0, CommandHandler("explode", explode))
    await tg.create_user(507, first_name="Eve", language_code="de")
    with caplog.at_level(logging.ERROR, logger="bot.handlers.errors"):
        [reply] = await tg.say(507, "/explode", quiet=QUIET)
    assert reply["text"] == (
        "Entschuldigung, bei uns ist etwas schiefgelaufen. Bitte versuchen Sie es gleich noch "
        "einmal.\nWenn es wieder passiert, tippen Sie auf „Mit einem Menschen sprechen“."
    )
    [failure] = [r for r in caplog.records if r.name == "bot.handlers.errors"]
    assert "kaboom" in (failure.exc_text or "")
    # Named by id, kind and chat: an update's content (here "/explode" from Eve) may be anything
    # a customer wrote, e-mail addresses and phone numbers included.
    assert re.fullmatch(r"update \d+ \(message, chat 507\) failed", failure.getMessage())
    # Still running: the next message is answered as usual.
    [help_reply] = await tg.say(507, "/help", quiet=QUIET)
    assert help_reply["text"].startswith("Was ich kann")


async def test_a_429_is_waited_out_and_the_reply_still_arrives(tg: SandboxClient) -> None:
    await tg.create_user(508, first_name="Eve", language_code="en")
    await tg.inject_fault("429", method="sendMessage", count=1, retry_after=1)
    [reply] = await tg.say(508, "/help", timeout=5, quiet=QUIET)
    assert reply["text"].startswith("What I can do")
    statuses = [c["status"] for c in await tg.calls("sendMessage")]
    assert statuses[-2:] == [429, 200]


async def test_a_user_who_blocked_the_bot_does_not_stop_it(
    tg: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    await tg.create_user(509, first_name="Gone", language_code="en")
    await tg.create_user(510, first_name="Here", language_code="en")
    # The user blocks the bot while its reply is on the way.
    await tg.inject_fault("slow", method="sendMessage", count=1, delay=0.5)
    with caplog.at_level(logging.ERROR, logger="bot.handlers.errors"):
        sent = await tg.send_message(509, "/help")
        await tg.block(509)
        assert await tg.collect(509, sent["message_id"], timeout=1.5, quiet=0.5) == []
    assert [c["status"] for c in await tg.calls("sendMessage")] == [403]
    assert any("Forbidden" in (r.exc_text or "") for r in caplog.records)
    assert texts(await tg.say(510, "/help", quiet=QUIET))[0].startswith("What I can do")
