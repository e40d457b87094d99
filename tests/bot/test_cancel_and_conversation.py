"""Cancelling what has not shipped, and free text in all four languages, end to end."""

from __future__ import annotations

import pytest

from sandbox.client import SandboxClient
from store import Store
from store.chats import chat_of
from store.queries import order_of
from tests.conftest import NO_CHAT_PACE, buttons, link_customer

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
ANNA, JOHN = 1, 2
ANNA_CHAT, JOHN_CHAT = 901, 902


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


async def test_cancel_one_line_with_confirmation(tg: SandboxClient, store: Store) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "en")
    [pick] = await tg.say(ANNA_CHAT, "please cancel order 100003", quiet=QUIET)
    assert pick["text"] == (
        "What would you like to cancel from order 100003?\n"
        "Only what hasn't shipped yet can be cancelled; you get a full refund for it."
    )
    assert buttons(pick) == [
        [("✖️ City Pram", "cxl:100003:1")],
        [("✖️ Steel Kettle 1.7 l", "cxl:100003:2")],
        [("✖️ Cancel the whole order", "cxo:100003")],
        [("No, keep it", "o:100003")],
    ]
    _a, [confirm] = await tg.press(ANNA_CHAT, pick["message_id"], "cxl:100003:1", quiet=QUIET)
    assert confirm["text"] == (
        "Cancel City Pram × 1 from order 100003?\n"
        "You'll get a full refund of €274.99 to your original payment method."
    )
    assert buttons(confirm) == [[("Yes, cancel", "cxy:100003:1"), ("No, keep it", "o:100003")]]
    _a, [done] = await tg.press(ANNA_CHAT, confirm["message_id"], "cxy:100003:1", quiet=QUIET)
    assert done["text"] == (
        "Done: City Pram × 1 is cancelled from order 100003.\n"
        "We're refunding €274.99 to your original payment method."
    )
    async with store.connect() as conn:
        order = await order_of(conn, ANNA, "100003")
    assert order is not None
    assert [(ln.qty_cancelled, ln.qty_waiting, ln.qty_allocated) for ln in order.lines] == [
        (1, 0, 0),
        (0, 0, 1),
    ]
    # Pressing "yes" again: the line is no longer cancellable, nothing else changes.
    answered, replies = await tg.press(
        ANNA_CHAT, confirm["message_id"], "cxy:100003:1", quiet=QUIET
    )
    assert replies == [] and answered["answer"]["text"] == "This is no longer available."


async def test_a_forged_cancel_of_another_customers_line_changes_nothing(
    tg: SandboxClient, store: Store
) -> None:
    await link_customer(tg, store, JOHN_CHAT, JOHN, "en")
    [menu] = await tg.say(JOHN_CHAT, "/orders", quiet=QUIET)
    for data in ("cxy:100003:1", "cxoy:100003", "cxl:100003:1", "cx:100003", "cxy:1:x"):
        _answered, replies = await tg.press(
            JOHN_CHAT, menu["message_id"], data, forge=True, quiet=QUIET
        )
        texts = [r["text"].splitlines()[0] for r in replies]
        assert texts in ([], ["I couldn't find order 100003 for your account."]), data
    async with store.connect() as conn:
        order = await order_of(conn, ANNA, "100003")
    assert order is not None and all(ln.qty_cancelled == 0 for ln in order.lines)


async def test_cancel_the_whole_order(tg: SandboxClient, store: Store) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "de")
    [pick] = await tg.say(ANNA_CHAT, "Ich möchte die Bestellung 100003 stornieren", quiet=QUIET)
    _a, [confirm] = await tg.press(ANNA_CHAT, pick["message_id"], "cxo:100003", quiet=QUIET)
    assert confirm["text"] == (
        "Alles aus Bestellung 100003 stornieren, was noch nicht versandt ist?\n"
        "Sie erhalten den vollen Betrag von 300,88\xa0€ auf Ihr ursprüngliches Zahlungsmittel "
        "zurück."
    )
    _a, [done] = await tg.press(ANNA_CHAT, confirm["message_id"], "cxoy:100003", quiet=QUIET)
    assert done["text"].startswith("Erledigt: Alles aus Bestellung 100003")
    async with store.connect() as conn:
        order = await order_of(conn, ANNA, "100003")
    assert order is not None and order.state == "cancelled"


async def test_cancel_without_a_number_asks_which_order(tg: SandboxClient, store: Store) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "es")
    [reply] = await tg.say(ANNA_CHAT, "quiero cancelar mi pedido", quiet=QUIET)
    assert reply["text"] == "¿De qué pedido quieres cancelar algo?"
    assert buttons(reply)[0] == [
        ("📦 Pedido 100003", "cx:100003"),
        ("📦 Pedido 100002", "cx:100002"),
    ]


@pytest.mark.parametrize(
    ("language", "text", "first_line"),
    [
        ("en", "thanks a lot!", "You're welcome! Anything else I can help with?"),
        ("de", "Danke schön", "Gern geschehen! Kann ich sonst noch helfen?"),
        ("es", "hola", "¡Hola, Customer! 👋"),
        ("ru", "что ты умеешь?", "Что я умею"),
    ],
)
async def test_small_talk_in_every_language(
    tg: SandboxClient, store: Store, language: str, text: str, first_line: str
) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, language)
    [reply] = await tg.say(ANNA_CHAT, text, quiet=QUIET)
    assert reply["text"].splitlines()[0] == first_line


async def test_two_misses_offer_a_person_and_understanding_resets_the_count(
    tg: SandboxClient, store: Store
) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "en")
    await tg.say(ANNA_CHAT, "asdf qwer", quiet=QUIET)
    [second] = await tg.say(ANNA_CHAT, "zxcv bnm", quiet=QUIET)
    assert second["text"].startswith("Sorry, I still didn't get that.")
    assert buttons(second)[0] == [("🙋 Talk to a person", "m:agent")]
    await tg.say(ANNA_CHAT, "thanks", quiet=QUIET)
    async with store.connect() as conn:
        chat = await chat_of(conn, ANNA_CHAT)
    assert chat is not None and chat.misses == 0


@pytest.mark.parametrize(
    "text",
    [
        "a" * 4096,
        "<b>&amp; <script>alert(1)</script> & < > \" '" * 80,
        "😀🎉🔥" * 300,
        "   .   ",
    ],
)
async def test_odd_messages_get_a_plain_reply_and_change_no_order(
    tg: SandboxClient, store: Store, text: str
) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "en")
    replies = await tg.say(ANNA_CHAT, text[:4096], quiet=QUIET)
    assert len(replies) == 1
    assert len(replies[0]["text"]) <= 4096
    async with store.connect() as conn:
        order = await order_of(conn, ANNA, "100003")
    assert order is not None and all(ln.qty_cancelled == 0 for ln in order.lines)


JOHN_ORDER = {
    "en": "Order 100004 · placed Aug 31, 2026 · €51.78\n\n"
    "Steel Kettle 1.7 l × 2\n✅ 2 reserved for you: ready to ship.",
    "de": "Bestellung 100004 · aufgegeben am 31.08.2026 · 51,78\xa0€\n\n"
    "Wasserkocher Edelstahl 1,7 l × 2\n✅ 2 für Sie reserviert: versandbereit.",
    "ru": "Заказ 100004 · оформлен 31 авг. 2026\u202fг. · 51,78\xa0€\n\n"
    "Чайник стальной 1,7 л × 2\n✅ 2 шт. зарезервированы для вас: готовы к отправке.",
}
KETTLE = {
    "en": "✅ Steel Kettle 1.7 l is in stock: you can buy it now and it ships right away.\n"
    "SKU KET-0001 · €25.89",
    "de": "✅ Wasserkocher Edelstahl 1,7 l ist vorrätig: Sie können jetzt kaufen, der Versand "
    "erfolgt sofort.\nArt.-Nr. KET-0001 · 25,89\xa0€",
    "ru": "✅ Товар Чайник стальной 1,7 л есть в наличии: можно купить сейчас, отправим сразу.\n"
    "Артикул KET-0001 · 25,89\xa0€",
}


@pytest.mark.parametrize(
    ("language", "text", "order_first"),
    [
        ("en", "where is my order 100004 and is the steel kettle in stock?", True),
        (
            "de",
            "Ist der Wasserkocher Edelstahl auf Lager? Und wo ist meine Bestellung 100004?",
            False,
        ),
        ("ru", "где мой заказ 100004 и есть ли чайник стальной в наличии?", True),
    ],
)
async def test_two_questions_in_one_message_get_both_answers_in_the_order_asked(
    tg: SandboxClient, store: Store, language: str, text: str, order_first: bool
) -> None:
    await link_customer(tg, store, JOHN_CHAT, JOHN, language)
    sent = await tg.send_message(JOHN_CHAT, text)
    replies: list[dict] = []
    while len(replies) < 2:  # by count: the second may take its time on a busy machine
        after = replies[-1]["message_id"] if replies else sent["message_id"]
        more = await tg.collect(JOHN_CHAT, after, timeout=30, quiet=0)
        assert more, replies
        replies += more
    assert await tg.collect(JOHN_CHAT, replies[-1]["message_id"], quiet=QUIET) == []
    answers = [JOHN_ORDER[language], KETTLE[language]]
    assert [r["text"] for r in replies] == (answers if order_first else answers[::-1])
    # each answer with its own buttons: the order's cancel, the product's menu
    order_reply = replies[0 if order_first else 1]
    assert buttons(order_reply)[0] == [(buttons(order_reply)[0][0][0], "cx:100004")]
