"""Messages typed the way people chat, through the real bot in each language (#16): greetings in
slang, dialect and Latin letters, questions about a product's return, denied requests, help
asked as a question, the team in everyday words, Russian in Latin letters, and two questions
in one message, from a linked chat and from one that must first prove the order is theirs."""

from __future__ import annotations

import pytest

from sandbox.client import SandboxClient
from store import Store
from store.chats import chat_of
from tests.conftest import NO_CHAT_PACE, link_customer

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
ANNA = 1
# What these read of the store is read on PostgreSQL by test_stock, test_orders and the unlinked
# test below; the words of the message are what is tested here (the suite's time).
LANGUAGE_ONLY = pytest.mark.sqlite_only("the understanding is tested; its store reads run on both")

GREETING = {
    "en": "Hello, Customer! 👋",
    "de": "Hallo, Customer! 👋",
    "es": "¡Hola, Customer! 👋",
    "ru": "Здравствуйте, Customer! 👋",
}
BACK = {
    "en": "⏳ Barista Pro Coffee Machine is not in stock, but you can buy it now on backorder: "
    "it ships around January 10 (in 2 months).",
    "de": "⏳ Barista Pro Kaffeemaschine ist nicht vorrätig, kann aber jetzt vorbestellt werden: "
    "Versand um den 10. Januar (in 2 Monaten).",
    "es": "⏳ Cafetera Barista Pro no está en stock, pero se puede comprar ya bajo pedido: se "
    "envía hacia el 10 de enero (dentro de 2 meses).",
    "ru": "⏳ Товара Кофемашина Barista Pro нет в наличии, но его можно купить под заказ уже "
    "сейчас: отправка около 10 января (через 2 месяца).",
}
ORDER = {
    "en": "Order 100003 · placed Aug 30, 2026 · €300.88",
    "de": "Bestellung 100003 · aufgegeben am 30.08.2026 · 300,88\xa0€",
    "es": "Pedido 100003 · realizado el 30 ago 2026 · 300,88\xa0€",
    "ru": "Заказ 100003 · оформлен 30 авг. 2026\u202fг. · 300,88\xa0€",
}
KETTLE = {
    "en": "✅ Steel Kettle 1.7 l is in stock: you can buy it now and it ships right away.\n"
    "SKU KET-0001 · €25.89",
    "de": "✅ Wasserkocher Edelstahl 1,7 l ist vorrätig: Sie können jetzt kaufen, der Versand "
    "erfolgt sofort.\nArt.-Nr. KET-0001 · 25,89\xa0€",
    "es": "✅ Hervidor de acero 1,7 l está en stock: se puede comprar ya y se envía enseguida.\n"
    "Ref. KET-0001 · 25,89\xa0€",
    "ru": "✅ Товар Чайник стальной 1,7 л есть в наличии: можно купить сейчас, отправим сразу.\n"
    "Артикул KET-0001 · 25,89\xa0€",
}
HELP = {"en": "What I can do", "de": "Was ich kann", "es": "Lo que puedo hacer", "ru": "Что я умею"}
# No support group in the test shop: asking for a person gets the way to reach the team.
NO_TEAM = {
    "en": "Sorry, nobody from our team can answer in this chat right now.",
    "de": "Entschuldigung, in diesem Chat kann Ihnen gerade niemand aus unserem Team antworten.",
    "es": "Lo siento, ahora mismo nadie de nuestro equipo puede responder en este chat.",
    "ru": "Извините, сейчас в этом чате никто из нашей команды ответить не может.",
}
PROOF_100004 = {
    "en": "To show you order 100004, I need to make sure it's yours.\n"
    "Which e-mail address did you use for this order?",
    "de": "Damit ich Ihnen die Bestellung 100004 zeigen kann, muss ich sicherstellen, dass sie "
    "Ihnen gehört.\nWelche E-Mail-Adresse haben Sie für diese Bestellung verwendet?",
    "es": "Para mostrarte el pedido 100004, necesito comprobar que es tuyo.\n"
    "¿Qué correo electrónico usaste para este pedido?",
    "ru": "Чтобы показать заказ 100004, мне нужно убедиться, что он ваш.\n"
    "Какой адрес электронной почты вы указали в этом заказе?",
}


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


async def _first_lines(
    tg: SandboxClient, store: Store, chat: int, asked: list[tuple[str, str]]
) -> list[str]:
    """Each (language, message) from its own linked chat: the first line of the one reply."""
    lines = []
    for n, (language, text) in enumerate(asked):
        await link_customer(tg, store, chat + n, ANNA, language)
        [reply] = await tg.say(chat + n, text, quiet=QUIET)
        lines.append(reply["text"].splitlines()[0])
    return lines


@LANGUAGE_ONLY
async def test_greetings_in_slang_dialect_and_latin_letters_greet(
    tg: SandboxClient, store: Store
) -> None:
    asked = [("en", "heyyy"), ("de", "griaß di"), ("es", "holaaa que tal"), ("ru", "privet")]
    assert await _first_lines(tg, store, 9610, asked) == [GREETING[lang] for lang, _ in asked]


@LANGUAGE_ONLY
async def test_a_question_about_a_products_return_gets_its_restock_date(
    tg: SandboxClient, store: Store
) -> None:
    asked = [
        ("en", "when will the barista pro be available again?"),
        ("de", "wann kommt die barista pro kaffeemaschine wieder rein"),
        ("es", "cuando vuelve la cafetera barista pro"),
        ("ru", "когда снова будет кофемашина barista pro?"),
    ]
    assert await _first_lines(tg, store, 9620, asked) == [BACK[lang] for lang, _ in asked]


@LANGUAGE_ONLY
async def test_a_denied_request_gets_the_answer_asked_for(tg: SandboxClient, store: Store) -> None:
    asked = [
        ("en", "i dont want to cancel, just tell me where order 100003 is"),
        ("de", "nicht stornieren, ich will nur wissen wo bestellung 100003 ist"),
        ("es", "no necesito una persona, hay hervidor de acero?"),
        ("ru", "оператор не нужен, чайник стальной есть?"),
    ]
    assert await _first_lines(tg, store, 9630, asked) == [
        ORDER["en"],
        ORDER["de"],
        KETTLE["es"].splitlines()[0],
        KETTLE["ru"].splitlines()[0],
    ]


@LANGUAGE_ONLY
async def test_help_asked_as_a_question_and_the_team_in_everyday_words(
    tg: SandboxClient, store: Store
) -> None:
    asked = [
        ("en", "what can i ask you?"),
        ("de", "was kann ich dich fragen?"),
        ("es", "que te puedo preguntar?"),
        ("ru", "что тебя можно спросить?"),
        ("en", "can i talk to someone from the shop"),
        ("de", "kann ich mit jemandem vom laden reden"),
        ("es", "quiero hablar con alguien de la tienda"),
        ("ru", "хочу поговорить с кем-нибудь из магазина"),
    ]
    assert await _first_lines(tg, store, 9640, asked) == [
        *(HELP[lang] for lang, _ in asked[:4]),
        *(NO_TEAM[lang] for lang, _ in asked[4:]),
    ]


@LANGUAGE_ONLY
async def test_russian_in_latin_letters_and_two_questions_in_spanish(
    tg: SandboxClient, store: Store
) -> None:
    assert await _first_lines(tg, store, 9650, [("ru", "gde moy zakaz 100003")]) == [ORDER["ru"]]
    await link_customer(tg, store, 9651, ANNA, "es")
    replies = await _replies(tg, 9651, "donde esta mi pedido 100003 y tienen el hervidor de acero?")
    assert [r["text"].splitlines()[0] for r in replies] == [
        ORDER["es"],
        KETTLE["es"].split("\n")[0],
    ]


async def _replies(tg: SandboxClient, chat: int, text: str) -> list[dict]:
    """Both answers of a two-question message, counted: the second may take its time."""
    sent = await tg.send_message(chat, text)
    replies: list[dict] = []
    while len(replies) < 2:
        after = replies[-1]["message_id"] if replies else sent["message_id"]
        more = await tg.collect(chat, after, timeout=30, quiet=0)
        assert more, replies
        replies += more
    # and nothing after them (not waited for long: a third would come right after)
    assert await tg.collect(chat, replies[-1]["message_id"], timeout=QUIET, quiet=QUIET) == []
    return replies


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "where is my order 100004 and is the steel kettle in stock?"),
        ("de", "wo ist meine bestellung 100004 und ist der wasserkocher edelstahl auf lager?"),
        ("es", "donde esta mi pedido 100004 y tienen el hervidor de acero?"),
        ("ru", "где мой заказ 100004 и есть ли чайник стальной в наличии?"),
    ],
)
async def test_an_unlinked_chat_gets_the_stock_answer_then_the_proof_question(
    tg: SandboxClient, store: Store, language: str, text: str
) -> None:
    # the answer it can have now first, the question it has to answer last
    await tg.create_user(9660, first_name="Eve", language_code=language)
    replies = await _replies(tg, 9660, text)
    assert [r["text"] for r in replies] == [KETTLE[language], PROOF_100004[language]]
    async with store.connect() as conn:
        chat = await chat_of(conn, 9660)
    assert chat is not None and (chat.pending, chat.pending_order) == ("proof", "100004")
