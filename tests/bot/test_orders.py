""" "Where is my order?" end to end: linked customers, exact replies, privacy, buttons."""

from __future__ import annotations

import pytest

from sandbox.client import SandboxClient
from store import Store
from store.queries import order_of
from tests.conftest import NO_CHAT_PACE, buttons, link_customer

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
ANNA, JOHN = 1, 2  # demo customers (store/demo.py)
ANNA_CHAT, JOHN_CHAT = 701, 702


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


EN_MENU_TAIL = [
    [("🙋 Talk to a person", "m:agent")],
    [("❓ Help", "m:help"), ("🌐 Language", "m:lang")],
]


async def test_my_open_orders_newest_first_with_buttons(tg: SandboxClient, store: Store) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "en")
    [reply] = await tg.say(ANNA_CHAT, "/orders", quiet=QUIET)
    assert reply["text"] == (
        "Your open orders\n"
        "📦 100003 · Aug 30, 2026 · waiting, no date yet\n"
        "📦 100002 · Aug 29, 2026 · waiting, ships around December 20\n"
        "\n"
        "Tap an order to see its details."
    )
    assert buttons(reply) == [
        [("📦 Order 100003", "o:100003"), ("📦 Order 100002", "o:100002")],
        [("🗂 All my orders", "ol:all")],
        [("📦 My orders", "m:orders"), ("🔎 Is it in stock?", "m:stock")],
        *EN_MENU_TAIL,
    ]


async def test_an_order_whose_date_moved_says_so_once_and_by_how_much(
    tg: SandboxClient, store: Store
) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "en")
    [reply] = await tg.say(ANNA_CHAT, "where is my order 100002?", quiet=QUIET)
    assert reply["text"] == (
        "Sorry: a delivery date in this order has moved.\n"
        "\n"
        "Order 100002 · placed Aug 29, 2026 · €761.99\n"
        "\n"
        "Barista Pro Coffee Machine\n"
        "⏳ 1 waiting: ships around December 20 (in 3 weeks).\n"
        "Your place in the queue: 1, for the 4 units due December 20.\n"
        "📅 New date: December 20 instead of December 2 (18 days later)."
    )
    assert buttons(reply) == [
        [("✖️ Cancel an item", "cx:100002")],
        [("🔁 Alternatives", "alt:o:100002")],
        [("📦 My orders", "m:orders")],
        *EN_MENU_TAIL,
    ]
    async with store.connect() as conn:
        order = await order_of(conn, ANNA, "100002")
    assert order is not None and order.lines[0].last_told_date == order.lines[0].projected_date
    # Told once: the next look shows the date without the news.
    [again] = await tg.say(ANNA_CHAT, "/orders 100002", quiet=QUIET)
    assert "New date" not in again["text"] and "Sorry" not in again["text"]


@pytest.mark.parametrize(
    ("language", "question", "expected"),
    [
        (
            "de",
            "wo bleibt meine Bestellung 100003?",
            "Bestellung 100003 · aufgegeben am 30.08.2026 · 300,88\xa0€\n\n"
            "Stadt-Kinderwagen\n"
            "⏳ 1 wartet: noch kein Termin. Der Lieferant hat die nächste Lieferung noch nicht "
            "bestätigt.\n\n"
            "Wasserkocher Edelstahl 1,7 l\n"
            "✅ 1 für Sie reserviert: versandbereit.",
        ),
        (
            "es",
            "¿dónde está mi pedido 100003?",
            "Pedido 100003 · realizado el 30 ago 2026 · 300,88\xa0€\n\n"
            "Cochecito urbano\n"
            "⏳ 1 pendiente: aún sin fecha. El proveedor no ha confirmado la próxima entrega.\n\n"
            "Hervidor de acero 1,7 l\n"
            "✅ 1 reservado para ti: listo para enviar.",
        ),
        (
            "ru",
            "где мой заказ 100003",
            "Заказ 100003 · оформлен 30 авг. 2026\u202fг. · 300,88\xa0€\n\n"
            "Городская коляска\n"
            "⏳ 1 шт. ожидается: срока пока нет. "
            "Поставщик ещё не подтвердил следующую поставку.\n\n"
            "Чайник стальной 1,7 л\n"
            "✅ 1 шт. зарезервирована для вас: готова к отправке.",
        ),
    ],
)
async def test_an_order_in_the_customers_language(
    tg: SandboxClient, store: Store, language: str, question: str, expected: str
) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, language)
    [reply] = await tg.say(ANNA_CHAT, question, quiet=QUIET)
    assert reply["text"] == expected


async def test_a_shipped_order_shows_its_tracking(tg: SandboxClient, store: Store) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "en")
    [reply] = await tg.say(ANNA_CHAT, "order 100001", quiet=QUIET)
    assert reply["text"] == (
        "Order 100001 · placed Aug 28, 2026 · €25.89\n\n"
        "Steel Kettle 1.7 l\n"
        "🚚 Shipped on August 30 with DHL, tracking JD014600003828"
    )
    # Telegram counts entity offsets in UTF-16 code units; the truck emoji takes two.
    offset = len(reply["text"][: reply["text"].index("JD0")].encode("utf-16-le")) // 2
    assert {"type": "code", "offset": offset, "length": 14} in [
        {k: e[k] for k in ("type", "offset", "length")} for e in reply["entities"]
    ]


async def test_someone_elses_order_and_a_missing_one_read_the_same(
    tg: SandboxClient, store: Store
) -> None:
    await link_customer(tg, store, JOHN_CHAT, JOHN, "en")
    [foreign] = await tg.say(JOHN_CHAT, "where is order 100002", quiet=QUIET)
    [missing] = await tg.say(JOHN_CHAT, "where is order 999999", quiet=QUIET)
    assert foreign["text"] == (
        "I couldn't find order 100002 for your account.\n"
        "Please check the number in your order confirmation, or choose one of your orders below."
    )
    assert missing["text"] == foreign["text"].replace("100002", "999999")
    assert buttons(missing) == buttons(foreign)
    assert "Barista" not in foreign["text"]


async def test_a_forged_order_button_reveals_nothing(tg: SandboxClient, store: Store) -> None:
    await link_customer(tg, store, JOHN_CHAT, JOHN, "en")
    [menu] = await tg.say(JOHN_CHAT, "/orders", quiet=QUIET)
    answered, replies = await tg.press(
        JOHN_CHAT, menu["message_id"], "o:100002", forge=True, quiet=QUIET
    )
    # Another customer's number through the button path: the same not-found reply, no details.
    assert [r["text"].splitlines()[0] for r in replies] == [
        "I couldn't find order 100002 for your account."
    ]
    assert answered["answered"] is True


async def test_all_my_orders_includes_the_shipped_ones(tg: SandboxClient, store: Store) -> None:
    await link_customer(tg, store, ANNA_CHAT, ANNA, "en")
    [menu] = await tg.say(ANNA_CHAT, "/orders", quiet=QUIET)
    _answered, [reply] = await tg.press(ANNA_CHAT, menu["message_id"], "ol:all", quiet=QUIET)
    assert reply["text"].splitlines() == [
        "Your orders",
        "📦 100003 · Aug 30, 2026 · waiting, no date yet",
        "📦 100002 · Aug 29, 2026 · waiting, ships around December 20",
        "📦 100001 · Aug 28, 2026 · shipped",
        "",
        "Tap an order to see its details.",
    ]


async def test_an_unlinked_chat_pressing_an_order_button_gets_nothing(
    tg: SandboxClient,
) -> None:
    await tg.create_user(703, first_name="Stranger", language_code="en")
    [menu] = await tg.say(703, "/help", quiet=QUIET)
    answered, replies = await tg.press(703, menu["message_id"], "o:100002", forge=True, quiet=QUIET)
    assert replies == []
    assert answered["answer"]["text"] == "This is no longer available."
