"""Linking a chat to a customer, end to end through the sandbox: deep links, verification by
order number and e-mail (or postcode), rate limits, /unlink, and one account per customer."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from telegram import Update
from telegram.ext import ApplicationHandlerStop, MessageHandler, filters

from bot.context import BotApplication, BotContext
from bot.handlers.account import continue_pending
from bot.render import Renderer
from bot.reply import MAIN_MENU
from sandbox.client import SandboxClient
from store import Store
from store.chats import Chat, chat_of, count_failed_attempts, set_pending
from store.cli import main as admin
from store.links import make_link_code
from store.schema import chats, orders, used_link_tokens, verification_attempts
from tests.conftest import LINK_SECRET, NO_CHAT_PACE, START, Clock, buttons

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
SECRET = LINK_SECRET  # the bot's, from tests/conftest.py

ANNA, JOHN, MARIA = 1, 2, 3

# The main menu is the foundation's (tested there); here it only has to come after our buttons.
_LABELS = Renderer(ZoneInfo("Europe/Berlin"))
MENU = {
    language: [[(_LABELS.label(spec[0], language), spec[1]) for spec in row] for row in MAIN_MENU]
    for language in ("en", "de", "es", "ru")
}
LINK_BUTTON = {
    "en": ("🔗 Link my account", "acc:link"),
    "de": ("🔗 Mein Konto verknüpfen", "acc:link"),
    "es": ("🔗 Vincular mi cuenta", "acc:link"),
    "ru": ("🔗 Привязать аккаунт", "acc:link"),
}
CANCEL = {
    "en": [[("✖️ Cancel", "acc:cancel")]],
    "de": [[("✖️ Abbrechen", "acc:cancel")]],
    "es": [[("✖️ Cancelar", "acc:cancel")]],
    "ru": [[("✖️ Отмена", "acc:cancel")]],
}


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


def link_menu(language: str) -> list[list[tuple[str, str]]]:
    return [[LINK_BUTTON[language]], *MENU[language]]


LINKED = {
    "en": "✅ Done: this chat is now linked to the customer account of Anna Schmidt.\n"
    "I'll tell you here when a delivery date changes.",
    "de": "✅ Erledigt: Dieser Chat ist jetzt mit dem Kundenkonto von Anna Schmidt verknüpft.\n"
    "Ich sage Ihnen hier Bescheid, wenn sich ein Liefertermin ändert.",
}
NEXT_STEP = {
    "en": "You can link your account here instead with your order number and e-mail address: "
    "tap “Link my account”.",
    "de": "Sie können Ihr Konto stattdessen hier mit Ihrer Bestellnummer und E-Mail-Adresse "
    "verknüpfen: Tippen Sie auf „Mein Konto verknüpfen“.",
    "ru": "Вместо этого вы можете привязать аккаунт здесь по номеру заказа и адресу электронной "
    "почты: нажмите «Привязать аккаунт».",
}
INVALID = {
    "en": "Sorry, this link doesn't work. Perhaps it was not copied completely.\n"
    + NEXT_STEP["en"],
    "ru": "Извините, эта ссылка не работает. Возможно, её скопировали не полностью.\n"
    + NEXT_STEP["ru"],
}
EXPIRED = {
    "en": "Sorry, this link has expired. For your security, the links in our e-mails only work "
    "for a limited time.\n" + NEXT_STEP["en"],
}
USED = {
    "de": "Entschuldigung, dieser Link wurde bereits verwendet. Zu Ihrer Sicherheit funktioniert "
    "jeder Link nur einmal.\n" + NEXT_STEP["de"],
}
ASK_ORDER = {
    "en": "Let's link your customer account to this chat.\n"
    "What is your order number? You'll find it in your order confirmation e-mail.",
    "es": "Vamos a vincular tu cuenta de cliente con este chat.\n"
    "¿Cuál es tu número de pedido? Lo encontrarás en el correo de confirmación del pedido.",
}
ASK_ORDER_AGAIN = {
    "en": "That doesn't look like an order number. Please send the number from your order "
    "confirmation, for example 100123.",
}
ASK_EMAIL = {
    "en": "To show you order 100002, I need to make sure it's yours.\n"
    "Which e-mail address did you use for this order?",
    "de": "Damit ich Ihnen die Bestellung 100002 zeigen kann, muss ich sicherstellen, dass sie "
    "Ihnen gehört.\nWelche E-Mail-Adresse haben Sie für diese Bestellung verwendet?",
}
ASK_POSTCODE = {
    "es": "Para mostrarte el pedido 100006, necesito comprobar que es tuyo.\n"
    "¿Cuál es el código postal de la dirección de este pedido?",
}
EMAIL_AGAIN = {
    "en": "That doesn't look like an e-mail address. Please send the address you used for the "
    "order, for example name@example.com.",
    "ru": "Это не похоже на адрес электронной почты. Пожалуйста, пришлите адрес, который вы "
    "указали в заказе, например name@example.com.",
}
POSTCODE_AGAIN = {
    "es": "Eso no parece un código postal. Envíame el código postal de la dirección del pedido, "
    "por ejemplo 28013.",
}
NO_MATCH = {
    "en": "I couldn't match that order number and e-mail address. Please check both and try "
    "again.\nWhat is your order number?",
    "de": "Ich konnte diese Bestellnummer und E-Mail-Adresse nicht zuordnen. Bitte prüfen Sie "
    "beides und versuchen Sie es noch einmal.\nWie lautet Ihre Bestellnummer?",
}
NO_MATCH_POSTCODE = {
    "es": "No he podido asociar ese número de pedido y ese código postal. Revisa ambos y vuelve "
    "a intentarlo.\n¿Cuál es tu número de pedido?",
}
RATE_LIMITED = {
    "en": "Sorry, there have been too many attempts. For your security, please try again in an "
    "hour.",
    "ru": "Извините, было слишком много попыток. В целях безопасности попробуйте ещё раз через "
    "час.",
}
CANCELLED = {"en": "All right, I've stopped. Nothing was changed."}
NOTHING_TO_CANCEL = {"de": "Gerade gibt es nichts abzubrechen."}
ALREADY_LINKED = {
    "en": "This chat is already linked to your customer account.\n"
    "To link a different account, unlink this chat first.",
}
NOT_LINKED = {
    "en": "This chat isn't linked to a customer account.\nTap “Link my account” to link it.",
}
UNLINK_CONFIRM = {
    "en": "Unlink this chat from your customer account?\n"
    "I won't show your orders or tell you about date changes here until you link it again.",
    "de": "Die Verknüpfung dieses Chats mit Ihrem Kundenkonto aufheben?\nBis Sie ihn wieder "
    "verknüpfen, zeige ich Ihnen hier keine Bestellungen und informiere Sie nicht über "
    "Terminänderungen.",
}
UNLINKED = {
    "en": "Done: this chat is no longer linked to your customer account.\n"
    "You can link it again at any time.",
    "de": "Erledigt: Dieser Chat ist nicht mehr mit Ihrem Kundenkonto verknüpft.\n"
    "Sie können ihn jederzeit wieder verknüpfen.",
}
KEPT = {"en": "All right, your account stays linked."}
MOVED_AWAY = {
    "en": "Your customer account has just been linked to another Telegram account, so this chat "
    "no longer shows your orders.\n"
    "If that wasn't you, please link your account here again and contact us.",
}
STALE = "This is no longer available."


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def free_text_dispatcher(bot: BotApplication) -> None:
    """Free text reaches continue_pending through bot/handlers/conversation.py; until that
    module is registered, a stand-in in the earliest group makes the same call."""
    registered = any(
        getattr(handler.callback, "__module__", "") == "bot.handlers.conversation"
        for group in bot.handlers.values()
        for handler in group
    )
    if registered:
        return

    async def stand_in(update: Update, context: BotContext) -> None:
        if await continue_pending(update, context):
            raise ApplicationHandlerStop

    text = filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND
    bot.add_handler(MessageHandler(text, stand_in), group=-10)


def code_for(customer_id: int, *, days: float = 30, order_id: int | None = None) -> str:
    return make_link_code(
        SECRET, customer_id, expires_at=START + timedelta(days=days), order_id=order_id
    )


async def order_id_of(store: Store, number: str) -> int:
    async with store.connect() as conn:
        found = await conn.scalar(select(orders.c.order_id).where(orders.c.order_number == number))
    assert found is not None
    return int(found)


async def chat(store: Store, chat_id: int) -> Chat | None:
    async with store.connect() as conn:
        return await chat_of(conn, chat_id)


async def linked_to(store: Store, chat_id: int) -> int | None:
    found = await chat(store, chat_id)
    return found.customer_id if found else None


async def attempts(store: Store) -> int:
    async with store.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(verification_attempts)) or 0)


async def used_tokens(store: Store) -> int:
    async with store.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(used_link_tokens)) or 0)


async def say_one(tg: SandboxClient, user: int, text: str) -> dict[str, Any]:
    [reply] = await tg.say(user, text, quiet=QUIET)
    return reply


async def say_n(tg: SandboxClient, user: int, text: str, n: int) -> list[dict[str, Any]]:
    """Send and collect until ``n`` replies came (or none for a while): a reply of two messages
    may pause between them for longer than the quiet time while the second is queried."""
    sent = await tg.send_message(user, text)
    replies: list[dict[str, Any]] = []
    last = sent["message_id"]
    while len(replies) < n:
        more = await tg.collect(user, last, timeout=5, quiet=QUIET)
        if not more:
            break
        replies += more
        last = more[-1]["message_id"]
    return replies


async def verify(
    tg: SandboxClient, user: int, number: str, proof: str, expect: int = 1
) -> list[dict[str, Any]]:
    """The whole in-chat verification: /link, the order number, the proof."""
    await say_one(tg, user, "/link")
    await say_one(tg, user, number)
    return await say_n(tg, user, proof, expect)


# --- deep links -------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "de"])
async def test_a_deep_link_from_the_admin_command_links_and_shows_open_orders(
    tg: SandboxClient, store: Store, db_url: str, language: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code_args = ["--db", db_url, "link", "--customer", "1", "--secret", SECRET]
    assert await asyncio.to_thread(admin, code_args) == 0
    url = capsys.readouterr().out.strip()
    match = re.fullmatch(r"https://t\.me/backorder_demo_bot\?start=([A-Za-z0-9_-]{1,64})", url)
    assert match is not None

    await tg.create_user(601, first_name="Anna", language_code=language)
    # One message: linked, and Anna's open orders below (100002 and 100003, not the shipped
    # 100001) with their buttons.
    [open_orders] = await say_n(tg, 601, f"/start {match.group(1)}", 1)
    assert open_orders["text"].startswith(LINKED[language] + "\n\n")
    assert "100002" in open_orders["text"] and "100003" in open_orders["text"]
    assert "100001" not in open_orders["text"]
    assert buttons(open_orders)[0][0][1] == "o:100003"
    assert await linked_to(store, 601) == ANNA
    assert await used_tokens(store) == 1


async def test_a_deep_link_for_one_order_shows_that_order(tg: SandboxClient, store: Store) -> None:
    code = code_for(ANNA, order_id=await order_id_of(store, "100003"))
    await tg.create_user(602, first_name="Anna", language_code="en")
    [order] = await say_n(tg, 602, f"/start {code}", 1)
    assert order["text"].startswith(LINKED["en"] + "\n\nOrder 100003 ·")
    assert await linked_to(store, 602) == ANNA


async def test_an_expired_link_is_refused_politely_and_changes_nothing(
    tg: SandboxClient, store: Store, clock: Clock
) -> None:
    code = code_for(ANNA, days=1)
    clock.advance(days=1, seconds=1)
    await tg.create_user(603, first_name="Anna", language_code="en")
    reply = await say_one(tg, 603, f"/start {code}")
    assert reply["text"] == EXPIRED["en"]
    assert buttons(reply) == link_menu("en")
    assert await chat(store, 603) is None
    assert await used_tokens(store) == 0


async def test_a_link_works_once(tg: SandboxClient, store: Store) -> None:
    code = code_for(ANNA)
    await tg.create_user(604, first_name="Anna", language_code="de")
    await tg.create_user(605, first_name="Mallory", language_code="de")
    assert len(await say_n(tg, 604, f"/start {code}", 1)) == 1
    # Forwarded to someone else: already used, and the first chat keeps its link.
    reply = await say_one(tg, 605, f"/start {code}")
    assert reply["text"] == USED["de"]
    assert buttons(reply) == link_menu("de")
    assert await chat(store, 605) is None
    assert await linked_to(store, 604) == ANNA
    # The owner tapping the link in their e-mail again just gets their orders.
    [again] = await say_n(tg, 604, f"/start {code}", 1)
    assert "100002" in again["text"]
    assert await used_tokens(store) == 1


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_forged_and_garbled_links_are_refused_and_change_nothing(
    tg: SandboxClient, store: Store, language: str
) -> None:
    good = code_for(ANNA)
    tampered = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    other_secret = make_link_code("not-our-secret", ANNA, expires_at=START + timedelta(days=1))
    deleted_customer = code_for(999)
    await tg.create_user(606, first_name="Mallory", language_code=language)
    for code in (tampered, other_secret, "hello", "x" * 64, deleted_customer):
        reply = await say_one(tg, 606, f"/start {code}")
        assert reply["text"] == INVALID[language]
        assert buttons(reply) == link_menu(language)
    assert await linked_to(store, 606) is None
    assert await used_tokens(store) == 0


# --- verification in chat ---------------------------------------------------------------------


async def test_order_number_and_email_link_the_chat_and_show_the_order(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(610, first_name="Anna", language_code="en")
    ask = await say_one(tg, 610, "/link")
    assert ask["text"] == ASK_ORDER["en"]
    assert buttons(ask) == CANCEL["en"]
    found = await chat(store, 610)
    assert found is not None and found.pending == "order_number"

    proof = await say_one(tg, 610, "it's 100002")
    assert proof["text"] == ASK_EMAIL["en"]
    assert buttons(proof) == CANCEL["en"]
    found = await chat(store, 610)
    assert found is not None and (found.pending, found.pending_order) == ("proof", "100002")

    # Case and spaces do not matter.
    [order] = await say_n(tg, 610, "  Anna.Schmidt@Example.com ", 1)
    # one message (the link's confirmation came alone before the order, without buttons)
    assert order["text"] == (
        LINKED["en"] + "\n\n"
        "Sorry: a delivery date in this order has moved.\n\n"
        "Order 100002 · placed Aug 29, 2026 · €761.99\n\n"
        "Barista Pro Coffee Machine\n"
        "⏳ 1 waiting: ships around December 20 (in 3 weeks).\n"
        "Your place in the queue: 1, for the 4 units due December 20.\n"
        "📅 New date: December 20 instead of December 2 (18 days later)."
    )
    assert buttons(order) == [
        [("✖️ Cancel an item", "cx:100002")],
        [("🔁 Alternatives", "alt:o:100002")],
        [("📦 My orders", "m:orders")],
        [("🙋 Talk to a person", "m:agent")],
        [("❓ Help", "m:help"), ("🌐 Language", "m:lang")],
    ]
    found = await chat(store, 610)
    assert found is not None and found.customer_id == ANNA and found.pending is None


@pytest.mark.parametrize("bot_environ", [{"LINK_PROOF": "postcode"}])
async def test_with_postcode_proof_the_postcode_links_the_chat(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(611, first_name="María", language_code="es")
    assert (await say_one(tg, 611, "/link"))["text"] == ASK_ORDER["es"]
    ask = await say_one(tg, 611, "100006")
    assert ask["text"] == ASK_POSTCODE["es"]
    # An address is not a postcode: asked again, and it costs no attempt.
    again = await say_one(tg, 611, "maria.garcia@example.com")
    assert again["text"] == POSTCODE_AGAIN["es"]
    assert await attempts(store) == 0
    wrong = await say_one(tg, 611, "28014")
    assert wrong["text"] == NO_MATCH_POSTCODE["es"]
    assert await say_one(tg, 611, "100006")
    [order] = await say_n(tg, 611, "28013", 1)
    assert order["text"].startswith(
        "✅ Listo: este chat ya está vinculado a la cuenta de cliente de María García.\n"
        "Te avisaré aquí cuando cambie una fecha de entrega.\n\n"
    )
    assert "\nPedido 100006 ·" in order["text"]
    assert await linked_to(store, 611) == MARIA


async def test_a_wrong_email_and_a_missing_order_get_the_same_reply(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(612, first_name="Eve", language_code="de")
    [wrong_email] = await verify(tg, 612, "100002", "john.smith@example.com")
    assert wrong_email["text"] == NO_MATCH["de"]
    assert buttons(wrong_email) == CANCEL["de"]
    # The reply asked for the order number again, so the next number starts over.
    ask = await say_one(tg, 612, "999999")
    assert ask["text"] == ASK_EMAIL["de"].replace("100002", "999999")
    [missing_order] = await tg.say(612, "anna.schmidt@example.com", quiet=QUIET)
    assert missing_order["text"] == wrong_email["text"]
    assert buttons(missing_order) == buttons(wrong_email)
    assert await linked_to(store, 612) is None
    assert await attempts(store) == 2


async def test_the_sixth_attempt_of_a_chat_is_refused_even_with_the_right_proof(
    tg: SandboxClient, store: Store, clock: Clock
) -> None:
    await tg.create_user(613, first_name="Eve", language_code="en")
    for number in ("100002", "100004", "999999", "100002", "123456"):
        [reply] = await verify(tg, 613, number, "someone@example.com")
        assert reply["text"] == NO_MATCH["en"]
    # Limited before the proof is even asked for...
    refused = await say_one(tg, 613, "100002")
    assert refused["text"] == RATE_LIMITED["en"]
    assert buttons(refused) == MENU["en"]
    found = await chat(store, 613)
    assert found is not None and found.pending is None

    # ...and at the proof itself: a question asked before the limit was reached is no way round.
    async with store.begin() as conn:
        await set_pending(conn, 613, "proof", "100002", at=clock())
    refused = await say_one(tg, 613, "anna.schmidt@example.com")
    assert refused["text"] == RATE_LIMITED["en"]
    assert await linked_to(store, 613) is None
    assert await attempts(store) == 5  # a refused attempt is not checked, so not counted

    clock.advance(hours=1, minutes=1)
    [linked] = await verify(tg, 613, "100002", "anna.schmidt@example.com", expect=1)
    assert linked["text"].startswith(LINKED["en"] + "\n\n")


def order_wait(language: str, number: str, minutes: int) -> str:
    """The reply while proofs for ``number`` wait (e-mail proof)."""
    if language == "de":
        unit = "Minute" if minutes == 1 else "Minuten"
        return (
            f"Zu Ihrer Sicherheit kann ich die Bestellnummer {number} erst in {minutes} {unit} "
            "wieder prüfen: Dafür wurden zu viele falsche Angaben gemacht.\n"
            "Senden Sie mir dann die E-Mail-Adresse dieser Bestellung. Oder öffnen Sie den Link "
            "in Ihrer Bestellbestätigung per E-Mail: Er funktioniert sofort."
        )
    assert language == "en"
    unit = "minute" if minutes == 1 else "minutes"
    return (
        f"For your security, I can check order number {number} again in {minutes} {unit}: "
        "too many wrong answers were given for it.\n"
        "Then send me the e-mail address of this order. Or open the link in your order "
        "confirmation e-mail: it works right away."
    )


async def failed_attempts(store: Store, **which: Any) -> int:
    async with store.connect() as conn:
        return await count_failed_attempts(conn, since=START - timedelta(days=1), **which)


async def test_strangers_wrong_proofs_leave_the_owner_a_short_stated_wait_then_the_link(
    tg: SandboxClient, store: Store, clock: Clock
) -> None:
    """Five chats give wrong e-mails for Anna's order: the allowance of wrong proofs for one
    order. Anna, who has not failed, is told to wait a minute (not an hour), and then links."""
    for stranger in range(620, 625):
        await tg.create_user(stranger, first_name="Guess", language_code="en")
        [reply] = await verify(tg, stranger, "100002", f"guess{stranger}@example.com")
        assert reply["text"] == NO_MATCH["en"]
    await tg.create_user(625, first_name="Anna", language_code="en")
    assert (await say_one(tg, 625, "/link"))["text"] == ASK_ORDER["en"]
    told = await say_one(tg, 625, "100002")
    assert told["text"] == order_wait("en", "100002", 1)
    assert buttons(told) == CANCEL["en"]
    # The right proof before the minute is over: told again, not checked, not counted.
    clock.advance(seconds=59)
    again = await say_one(tg, 625, "anna.schmidt@example.com")
    assert again["text"] == order_wait("en", "100002", 1)
    assert await attempts(store) == 5
    assert await linked_to(store, 625) is None
    # The question stays open: the proof sent once the wait is over links the chat.
    clock.advance(seconds=1)
    [order] = await say_n(tg, 625, "anna.schmidt@example.com", 1)
    assert order["text"].startswith(LINKED["en"] + "\n\n")
    assert "Order 100002 ·" in order["text"]
    assert await linked_to(store, 625) == ANNA
    assert await failed_attempts(store, order_number="100002") == 5
    assert await failed_attempts(store, chat_id=625) == 0


async def test_the_wait_for_one_order_doubles_with_each_wrong_proof_up_to_a_quarter_hour(
    tg: SandboxClient, store: Store, clock: Clock
) -> None:
    """From fresh chats each time (many accounts), in German. A made-up number gets the very
    same replies as a real one: the wait says nothing about whether the order exists."""
    chats = iter(range(630, 700))

    async def fresh_chat() -> int:
        chat_id = next(chats)
        await tg.create_user(chat_id, first_name="Guess", language_code="de")
        return chat_id

    async def wrong(chat_id: int, number: str) -> None:
        [reply] = await verify(tg, chat_id, number, f"guess{chat_id}@example.com")
        assert reply["text"] == NO_MATCH["de"]

    for number in ("100004", "999999"):
        for _ in range(5):
            await wrong(await fresh_chat(), number)
    for minutes in (1, 2, 4, 8, 15, 15):
        waiting: dict[str, int] = {}
        for number in ("100004", "999999"):
            chat_id = waiting[number] = await fresh_chat()
            await say_one(tg, chat_id, "/link")
            told = await say_one(tg, chat_id, number)
            assert told["text"] == order_wait("de", number, minutes)
        clock.advance(minutes=minutes)
        for chat_id in waiting.values():
            # The chat that was told to wait sends its proof after the wait: checked.
            [reply] = await tg.say(chat_id, f"guess{chat_id}@example.com", quiet=QUIET)
            assert reply["text"] == NO_MATCH["de"]
    for number in ("100004", "999999"):
        assert await failed_attempts(store, order_number=number) == 11
    # A day on, all but the last of them have left the window: the order's owner links.
    clock.advance(hours=24)
    await tg.create_user(699, first_name="John", language_code="en")
    [linked] = await verify(tg, 699, "100004", "john.smith@example.com", expect=1)
    assert linked["text"].startswith(LINKED["en"].replace("Anna Schmidt", "John Smith") + "\n\n")


async def test_a_chat_at_its_own_limit_is_refused_for_the_hour_whatever_the_order(
    tg: SandboxClient, store: Store, clock: Clock
) -> None:
    await tg.create_user(700, first_name="Guess", language_code="ru")
    for number in ("100004", "100005", "999998", "999997", "100004"):
        await verify(tg, 700, number, "guess@example.com")
    # None of these numbers waits (each had at most two wrong proofs): the chat's limit holds.
    for number in ("100002", "123456"):
        await say_one(tg, 700, "/link")
        refused = await say_one(tg, 700, number)
        assert refused["text"] == RATE_LIMITED["ru"]
        assert buttons(refused) == MENU["ru"]
    clock.advance(minutes=59)
    await say_one(tg, 700, "/link")
    assert (await say_one(tg, 700, "100002"))["text"] == RATE_LIMITED["ru"]
    assert await failed_attempts(store, chat_id=700) == 5


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "."),
        ("en", "x" * 4096),
        ("ru", "<b>&"),
        ("ru", "😀🎉📦"),
        ("en", "<b>&</b>@"),
        ("en", "anna schmidt@example.com"),
    ],
)
async def test_a_message_that_is_no_email_is_asked_again_without_costing_an_attempt(
    tg: SandboxClient, store: Store, language: str, message: str
) -> None:
    await tg.create_user(618, first_name="Anna", language_code=language)
    await say_one(tg, 618, "/link")
    await say_one(tg, 618, "100002")
    reply = await say_one(tg, 618, message)
    assert reply["text"] == EMAIL_AGAIN[language]
    assert buttons(reply) == CANCEL[language]
    found = await chat(store, 618)
    assert found is not None
    assert (found.customer_id, found.pending, found.pending_order) == (None, "proof", "100002")
    assert await attempts(store) == 0
    # Still listening for the address.
    [linked] = await say_n(tg, 618, "anna.schmidt@example.com", 1)
    assert linked["text"].startswith("✅")


@pytest.mark.parametrize("message", [".", "<b>&", "🙂", "y" * 4096])
async def test_a_message_that_is_no_order_number_is_asked_again(
    tg: SandboxClient, store: Store, message: str
) -> None:
    await tg.create_user(619, first_name="Anna", language_code="en")
    await say_one(tg, 619, "/link")
    reply = await say_one(tg, 619, message)
    assert reply["text"] == ASK_ORDER_AGAIN["en"]
    assert buttons(reply) == CANCEL["en"]
    found = await chat(store, 619)
    assert found is not None and found.pending == "order_number"


async def test_a_corrected_order_number_in_the_proof_step_is_asked_about_afresh(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(620, first_name="Anna", language_code="en")
    await say_one(tg, 620, "/link")
    await say_one(tg, 620, "100002")
    reply = await say_one(tg, 620, "sorry, I meant 100003")
    assert reply["text"] == ASK_EMAIL["en"].replace("100002", "100003")
    found = await chat(store, 620)
    assert found is not None and found.pending_order == "100003"


async def test_a_question_left_for_half_an_hour_is_forgotten(
    tg: SandboxClient, store: Store, clock: Clock
) -> None:
    await tg.create_user(621, first_name="Anna", language_code="en")
    await say_one(tg, 621, "/link")
    clock.advance(minutes=30)
    # No longer read as the answer: it gets the ordinary reply to a message nobody understood.
    reply = await say_one(tg, 621, "qwxz zzkv")
    assert reply["text"] != ASK_ORDER_AGAIN["en"]
    assert reply["text"].startswith("Sorry, I didn't quite get that.")
    found = await chat(store, 621)
    assert found is not None and found.pending is None


async def test_a_stock_question_in_the_middle_moves_on(tg: SandboxClient, store: Store) -> None:
    await tg.create_user(622, first_name="Anna", language_code="en")
    await say_one(tg, 622, "/link")
    replies = await tg.say(622, "is the kettle in stock?", quiet=QUIET)
    assert ASK_ORDER_AGAIN["en"] not in [r["text"] for r in replies]
    found = await chat(store, 622)
    assert found is not None and found.pending is None


# --- cancelling -------------------------------------------------------------------------------


async def test_cancel_by_command_button_or_word_withdraws_the_question(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(623, first_name="Anna", language_code="en")
    await say_one(tg, 623, "/link")
    reply = await say_one(tg, 623, "/cancel")
    assert reply["text"] == CANCELLED["en"]
    assert buttons(reply) == MENU["en"]
    assert (await chat(store, 623)).pending is None  # type: ignore[union-attr]

    ask = await say_one(tg, 623, "/link")
    await say_one(tg, 623, "100002")
    _answered, [reply] = await tg.press(623, ask["message_id"], "acc:cancel", quiet=QUIET)
    assert reply["text"] == CANCELLED["en"]
    # The same button again: nothing is waiting any more.
    answered, replies = await tg.press(623, ask["message_id"], "acc:cancel", quiet=QUIET)
    assert replies == [] and answered["answer"]["text"] == STALE

    await say_one(tg, 623, "/link")
    assert (await say_one(tg, 623, "cancel"))["text"] == CANCELLED["en"]
    assert (await chat(store, 623)).pending is None  # type: ignore[union-attr]


async def test_cancel_with_nothing_pending_says_so(tg: SandboxClient) -> None:
    await tg.create_user(624, first_name="Anna", language_code="de")
    reply = await say_one(tg, 624, "/cancel")
    assert reply["text"] == NOTHING_TO_CANCEL["de"]
    assert buttons(reply) == MENU["de"]


async def test_another_command_or_a_menu_button_abandons_the_question(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(625, first_name="Anna", language_code="en")
    greeting = await say_one(tg, 625, "/start")
    await say_one(tg, 625, "/link")
    help_reply = await say_one(tg, 625, "/help")
    assert help_reply["text"].startswith("What I can do")
    assert (await chat(store, 625)).pending is None  # type: ignore[union-attr]

    await say_one(tg, 625, "/link")
    await say_one(tg, 625, "100002")
    _answered, [help_again] = await tg.press(625, greeting["message_id"], "m:help", quiet=QUIET)
    assert help_again["text"].startswith("What I can do")
    assert (await chat(store, 625)).pending is None  # type: ignore[union-attr]
    # The address that follows is not taken as an answer any more.
    replies = await tg.say(625, "anna.schmidt@example.com", quiet=QUIET)
    assert LINKED["en"] not in [r["text"] for r in replies]
    assert await linked_to(store, 625) is None


# --- /link, /unlink, one account per customer -------------------------------------------------


async def test_link_when_already_linked_offers_to_unlink(tg: SandboxClient) -> None:
    await tg.create_user(626, first_name="Anna", language_code="en")
    await say_n(tg, 626, f"/start {code_for(ANNA)}", 1)
    reply = await say_one(tg, 626, "/link")
    assert reply["text"] == ALREADY_LINKED["en"]
    assert buttons(reply) == [[("🔓 Unlink this chat", "acc:unlink")], *MENU["en"]]


@pytest.mark.parametrize("language", ["en", "de"])
async def test_unlink_asks_first_and_the_answer_is_rechecked(
    tg: SandboxClient, store: Store, language: str
) -> None:
    await tg.create_user(627, first_name="Anna", language_code=language)
    await say_n(tg, 627, f"/start {code_for(ANNA)}", 1)
    confirm = await say_one(tg, 627, "/unlink")
    assert confirm["text"] == UNLINK_CONFIRM[language]
    yes, keep = buttons(confirm)[0]
    assert (yes[1], keep[1]) == ("acc:unlink:1", "acc:keep")
    assert (yes[0], keep[0]) == {
        "en": ("Yes, unlink", "No, keep it"),
        "de": ("Ja, aufheben", "Nein, behalten"),
    }[language]
    assert await linked_to(store, 627) == ANNA

    _answered, [done] = await tg.press(627, confirm["message_id"], "acc:unlink:1", quiet=QUIET)
    assert done["text"] == UNLINKED[language]
    assert buttons(done) == link_menu(language)
    assert await linked_to(store, 627) is None
    # Pressed again: nothing left to unlink.
    answered, replies = await tg.press(627, confirm["message_id"], "acc:unlink:1", quiet=QUIET)
    assert replies == [] and answered["answered"] is True
    answered, replies = await tg.press(627, confirm["message_id"], "acc:keep", quiet=QUIET)
    assert replies == []


async def test_keeping_the_link_and_forged_unlink_presses_change_nothing(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(628, first_name="Anna", language_code="en")
    await say_n(tg, 628, f"/start {code_for(ANNA)}", 1)
    confirm = await say_one(tg, 628, "/unlink")
    _answered, [kept] = await tg.press(628, confirm["message_id"], "acc:keep", quiet=QUIET)
    assert kept["text"] == KEPT["en"]
    assert buttons(kept) == MENU["en"]
    for forged in ("acc:unlink:2", "acc:unlink:x", "acc:unlink:", "acc:whatever"):
        answered, replies = await tg.press(
            628, confirm["message_id"], forged, forge=True, quiet=QUIET
        )
        assert replies == [] and answered["answer"]["text"] == STALE
    assert await linked_to(store, 628) == ANNA


async def test_unlink_without_a_link_offers_to_link(tg: SandboxClient) -> None:
    await tg.create_user(629, first_name="Anna", language_code="en")
    reply = await say_one(tg, 629, "/unlink")
    assert reply["text"] == NOT_LINKED["en"]
    assert buttons(reply) == link_menu("en")
    # The button starts the verification.
    _answered, [ask] = await tg.press(629, reply["message_id"], "acc:link", quiet=QUIET)
    assert ask["text"] == ASK_ORDER["en"]


async def test_a_second_telegram_account_takes_the_customer_over_and_the_first_is_told(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(630, first_name="Anna", language_code="en")
    await tg.create_user(631, first_name="Anna", language_code="en")
    await say_n(tg, 630, f"/start {code_for(ANNA)}", 1)
    before = (await tg.chat(630))["last_message_id"]
    [linked] = await verify(tg, 631, "100003", "anna.schmidt@example.com", expect=1)
    assert linked["text"].startswith(LINKED["en"] + "\n\n")
    assert await linked_to(store, 631) == ANNA
    assert await linked_to(store, 630) is None
    [told] = await tg.collect(630, before, timeout=2, quiet=QUIET)
    assert told["text"] == MOVED_AWAY["en"]
    assert buttons(told) == link_menu("en")


async def test_a_chat_linked_to_one_customer_moves_to_another(
    tg: SandboxClient, store: Store
) -> None:
    await tg.create_user(632, first_name="John", language_code="en")
    await say_n(tg, 632, f"/start {code_for(ANNA)}", 1)
    [linked] = await say_n(tg, 632, f"/start {code_for(JOHN)}", 1)
    assert linked["text"].startswith(
        "✅ Done: this chat is now linked to the customer account of John Smith.\n"
        "It was linked to a different customer account before; that link has been removed.\n"
        "I'll tell you here when a delivery date changes.\n\n"
    )
    assert await linked_to(store, 632) == JOHN
    async with store.connect() as conn:
        anna_chats = await conn.scalar(
            select(func.count()).select_from(chats).where(chats.c.customer_id == ANNA)
        )
    assert anna_chats == 0
