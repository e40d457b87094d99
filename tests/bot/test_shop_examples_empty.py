"""An empty shop: the texts that teach customers what to write give no example (the demo's
"kettle", "KET-0001", "100123" would be another shop's); its first product becomes one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandbox.client import SandboxClient
from store import Store
from store.schema import products

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A store with the schema and nothing in it (the bot's start migrates it)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"


async def _say(tg: SandboxClient, user: int, text: str) -> str:
    [reply] = await tg.say(user, text, quiet=QUIET)
    return str(reply["text"])


EMPTY = {
    "en": (
        "Which product? Write its name or SKU.",
        "Sorry, I didn't quite get that.\n"
        "You can ask me where your order is or whether a product is in stock, or choose below.",
        "I couldn't find a product matching “zzyzx”.\n"
        "Try another word from its name, or its SKU from the product page.",
        "That doesn't look like an order number. Please send the number from your order "
        "confirmation.",
    ),
    "de": (
        "Welcher Artikel? Schreiben Sie den Namen oder die Artikelnummer.",
        "Entschuldigung, das habe ich nicht ganz verstanden.\n"
        "Sie können mich fragen, wo Ihre Bestellung ist oder ob ein Artikel vorrätig ist – oder "
        "wählen Sie unten.",
        "Ich habe keinen Artikel zu „zzyzx“ gefunden.\n"
        "Versuchen Sie ein anderes Wort aus dem Namen oder die Artikelnummer von der "
        "Produktseite.",
        "Das sieht nicht nach einer Bestellnummer aus. Bitte senden Sie die Nummer aus Ihrer "
        "Bestellbestätigung.",
    ),
}


@pytest.mark.parametrize("language", ["en", "de"])
async def test_an_empty_shop_gives_no_examples(tg: SandboxClient, language: str) -> None:
    ask, fallback, not_found, ask_order_again = EMPTY[language]
    await tg.create_user(840, first_name="Eve", language_code=language)
    assert await _say(tg, 840, "/stock") == ask
    assert await _say(tg, 840, "qwxz zzkv") == fallback
    assert await _say(tg, 840, "/stock zzyzx") == not_found
    await _say(tg, 840, "/link")
    assert await _say(tg, 840, ".") == ask_order_again


async def test_the_first_product_becomes_the_example(tg: SandboxClient, store: Store) -> None:
    await tg.create_user(841, first_name="Eve", language_code="en")
    async with store.begin() as conn:
        await conn.execute(
            products.insert().values(
                sku="TEA-0001",
                name_en="Teapot",
                category="tea",
                price_minor=1500,
                currency="EUR",
                active=True,
                backorderable=True,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    assert await _say(tg, 841, "/stock") == (
        "Which product? Write its name or SKU, for example “teapot” or “TEA-0001”."
    )
    # no orders yet: no order number to show
    assert await _say(tg, 841, "qwxz zzkv") == (
        "Sorry, I didn't quite get that.\n"
        "You can ask me where your order is, or send me a product name like “teapot”, or "
        "choose below."
    )
