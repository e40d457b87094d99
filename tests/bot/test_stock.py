""" "Is this in stock?" end to end: the five answers, choices, alternatives, "notify me"."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from sandbox.client import SandboxClient
from store import Store
from store.schema import back_in_stock_subscriptions
from tests.conftest import NO_CHAT_PACE, buttons

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
USER = 801
MENU_ROWS = [
    [("📦 My orders", "m:orders"), ("🔎 Is it in stock?", "m:stock")],
    [("🙋 Talk to a person", "m:agent")],
    [("❓ Help", "m:help"), ("🌐 Language", "m:lang")],
]


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


@pytest.fixture
async def customer(tg: SandboxClient) -> int:
    await tg.create_user(USER, first_name="Eve", language_code="en")
    return USER


async def _ask(tg: SandboxClient, text: str) -> dict:
    [reply] = await tg.say(USER, text, quiet=QUIET)
    return reply


@pytest.mark.usefixtures("customer")
@pytest.mark.parametrize(
    ("question", "first_line"),
    [
        (
            "/stock KET-0001",
            "✅ Steel Kettle 1.7 l is in stock: you can buy it now and it ships right away.",
        ),
        (
            "/stock cof-0001",
            "⏳ Barista Pro Coffee Machine is not in stock, but you can buy it now on backorder: "
            "it ships around January 10 (in 2 months).",
        ),
        (
            "is PRM-0001 in stock?",
            "⏳ City Pram is not in stock. You can buy it now on backorder, but the date is not "
            "known yet: the supplier hasn't confirmed the next delivery.",
        ),
        (
            "/stock BIK-0001",
            "❌ Trekking Bike 28 is out of stock and can't be bought right now.",
        ),
        ("/stock SOF-0001", "❌ Corner Sofa Oslo has been discontinued and won't come back."),
    ],
)
async def test_the_five_stock_answers(tg: SandboxClient, question: str, first_line: str) -> None:
    reply = await _ask(tg, question)
    assert reply["text"].splitlines()[0] == first_line


@pytest.mark.usefixtures("customer")
async def test_out_of_stock_comes_with_alternatives_and_notify_me(
    tg: SandboxClient, store: Store
) -> None:
    reply = await _ask(tg, "/stock BIK-0001")
    rows = buttons(reply)
    assert rows[0] == [("🔔 Notify me", "n:BIK-0001")]
    assert rows[1][0][1] == "p:BIK-0002"  # the explicit alternative comes first
    assert "In stock now instead:" in reply["text"]
    _answered, [done] = await tg.press(USER, reply["message_id"], "n:BIK-0001", quiet=QUIET)
    assert done["text"].startswith("🔔 Done: I'll tell you as soon as")
    _answered, [again] = await tg.press(USER, reply["message_id"], "n:BIK-0001", quiet=QUIET)
    assert again["text"].startswith("You're already on the list")
    async with store.connect() as conn:
        rows_in_store = (
            await conn.execute(
                select(back_in_stock_subscriptions.c.chat_id, back_in_stock_subscriptions.c.sku)
            )
        ).all()
    assert [tuple(r) for r in rows_in_store] == [(USER, "BIK-0001")]


@pytest.mark.usefixtures("customer")
async def test_a_forged_product_or_notify_press_changes_nothing(
    tg: SandboxClient, store: Store
) -> None:
    reply = await _ask(tg, "/stock KET-0001")
    for data in ("p:NOPE-0000", "n:NOPE-0000", "n:SOF-0001"):
        answered, replies = await tg.press(USER, reply["message_id"], data, forge=True, quiet=QUIET)
        assert replies == [] and answered["answer"]["text"] == "This is no longer available."
    async with store.connect() as conn:
        subscriptions = (await conn.execute(select(back_in_stock_subscriptions))).all()
    assert subscriptions == []


@pytest.mark.usefixtures("customer")
async def test_a_typo_and_a_partial_name_still_find_the_product(tg: SandboxClient) -> None:
    reply = await _ask(tg, "do you have the barista pro cofee machine?")
    assert reply["text"].startswith("⏳ Barista Pro Coffee Machine is not in stock")


@pytest.mark.usefixtures("customer")
async def test_several_matches_offer_buttons(tg: SandboxClient) -> None:
    reply = await _ask(tg, "/stock kettle")
    assert reply["text"] == "I found several products for “kettle”. Which one do you mean?"
    product_rows = [row for row in buttons(reply) if row[0][1].startswith("p:")]
    assert 2 <= len(product_rows) <= 5
    sku = product_rows[0][0][1]
    _answered, [answer] = await tg.press(USER, reply["message_id"], sku, quiet=QUIET)
    assert f"SKU {sku.removeprefix('p:')}" in answer["text"]


@pytest.mark.usefixtures("customer")
async def test_nothing_found_echoes_the_words_safely(tg: SandboxClient) -> None:
    reply = await _ask(tg, "/stock <b>zzqx & co</b>")
    assert reply["text"].splitlines()[0] == (
        "I couldn't find a product matching “<b>zzqx & co</b>”."
    )
    assert buttons(reply) == MENU_ROWS


@pytest.mark.parametrize(
    ("language", "question", "first_line"),
    [
        (
            "es",
            "¿tienen la cafetera barista pro en stock?",
            "⏳ Cafetera Barista Pro no está en stock, pero se puede comprar ya bajo pedido: "
            "se envía hacia el 10 de enero (dentro de 2 meses).",
        ),
        (
            "de",
            "ist der Wasserkocher Edelstahl vorrätig?",
            "✅ Wasserkocher Edelstahl 1,7 l ist vorrätig: Sie können jetzt kaufen, der Versand "
            "erfolgt sofort.",
        ),
        (
            "ru",
            "есть ли в наличии городская коляска?",
            "⏳ Товара Городская коляска нет в наличии. Его можно купить под заказ уже сейчас, но "
            "срок пока неизвестен: поставщик ещё не подтвердил следующую поставку.",
        ),
    ],
)
async def test_stock_questions_in_other_languages(
    tg: SandboxClient, language: str, question: str, first_line: str
) -> None:
    await tg.create_user(USER, first_name="Eve", language_code=language)
    reply = await _ask(tg, question)
    assert reply["text"].splitlines()[0] == first_line


@pytest.mark.usefixtures("customer")
@pytest.mark.parametrize(
    ("question", "first_line"),
    [
        (
            "is the barista coffee machine in matte black with milk frother in stock?",
            "⏳ Barista Pro Coffee Machine is not in stock, but you can buy it now on backorder: "
            "it ships around January 10 (in 2 months).",
        ),
        (
            "do you have the steel kettle with the blue led light and auto shutoff?",
            "✅ Steel Kettle 1.7 l is in stock: you can buy it now and it ships right away.",
        ),
    ],
)
async def test_words_the_catalog_lacks_lower_the_match_but_keep_it(
    tg: SandboxClient, question: str, first_line: str
) -> None:
    reply = await _ask(tg, question)
    assert reply["text"].splitlines()[0] == first_line


@pytest.mark.usefixtures("customer")
async def test_russian_in_latin_letters_finds_the_russian_names(tg: SandboxClient) -> None:
    reply = await _ask(tg, "est li kofemashina?")  # "кофемашина": every coffee machine
    assert reply["text"] == "I found several products for “kofemashina”. Which one do you mean?"
    assert buttons(reply) == [
        [("Barista Pro Coffee Machine", "p:COF-0001")],
        [("Lumen 470 Coffee Machine", "p:COF-0002")],
        [("Milano 803 Coffee Machine", "p:COF-0003")],
        [("Castell 236 Coffee Machine", "p:COF-0004")],
        [("Kaskad 569 Coffee Machine", "p:COF-0005")],
        *MENU_ROWS,
    ]
