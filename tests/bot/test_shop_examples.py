"""The examples in the texts that teach customers what to write come from the shop's own
store: the demo shop's kind of product, SKU and order-number shape; none in an empty shop."""

from __future__ import annotations

import pytest

from sandbox.client import SandboxClient
from tests.conftest import NO_CHAT_PACE, buttons

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
CANCEL_ROW = [[("✖️ Cancel", "acc:cancel")]]


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


async def _say(tg: SandboxClient, user: int, text: str) -> dict:
    [reply] = await tg.say(user, text, quiet=QUIET)
    return reply


async def _user(tg: SandboxClient, user: int, language: str) -> int:
    await tg.create_user(user, first_name="Eve", language_code=language)
    return user


# --- the demo shop: bikes, kettles, prams ...; six-digit order numbers from 100001 ---------

DEMO = {
    "en": (
        "Which product? Write its name or SKU, for example “bike” or “BIK-0001”.",
        "Sorry, I didn't quite get that.\n"
        "You can send me an order number like “100123” or a product name like “bike”, or "
        "choose below.",
        "I couldn't find a product matching “zzyzx”.\n"
        "Try another word from its name, or its SKU from the product page (for example "
        "BIK-0001).",
        "That doesn't look like an order number. Please send the number from your order "
        "confirmation, for example 100123.",
    ),
    "de": (
        "Welcher Artikel? Schreiben Sie den Namen oder die Artikelnummer, zum Beispiel "
        "„Trekkingrad“ oder „BIK-0001“.",
        "Entschuldigung, das habe ich nicht ganz verstanden.\n"
        "Sie können mir eine Bestellnummer wie „100123“ oder einen Artikelnamen wie "
        "„Trekkingrad“ schicken – oder wählen Sie unten.",
        "Ich habe keinen Artikel zu „zzyzx“ gefunden.\n"
        "Versuchen Sie ein anderes Wort aus dem Namen oder die Artikelnummer von der "
        "Produktseite (zum Beispiel BIK-0001).",
        "Das sieht nicht nach einer Bestellnummer aus. Bitte senden Sie die Nummer aus Ihrer "
        "Bestellbestätigung, zum Beispiel 100123.",
    ),
    "es": (
        "¿Qué producto? Escribe su nombre o referencia, por ejemplo «bicicleta» o «BIK-0001».",
        "Perdona, no te he entendido bien.\n"
        "Puedes enviarme un número de pedido como «100123» o el nombre de un producto como "
        "«bicicleta», o elegir abajo.",
        "No he encontrado ningún producto para «zzyzx».\n"
        "Prueba con otra palabra del nombre o con la referencia de la página del producto (por "
        "ejemplo BIK-0001).",
        "Eso no parece un número de pedido. Envíame el número de tu confirmación de pedido, "
        "por ejemplo 100123.",
    ),
    "ru": (
        "Какой товар? Напишите название или артикул, например «велосипед» или «BIK-0001».",
        "Извините, я не совсем понял.\n"
        "Вы можете прислать номер заказа, например «100123», или название товара, например "
        "«велосипед», — или выберите ниже.",
        "Я не нашёл товар по запросу «zzyzx».\n"
        "Попробуйте другое слово из названия или артикул со страницы товара (например, "
        "BIK-0001).",
        "Это не похоже на номер заказа. Пожалуйста, пришлите номер из подтверждения заказа, "
        "например 100123.",
    ),
}


@pytest.mark.parametrize("language", ["en", "de", "es", "ru"])
async def test_the_demo_shops_examples_in_every_language(tg: SandboxClient, language: str) -> None:
    ask, fallback, not_found, ask_order_again = DEMO[language]
    user = await _user(tg, 830, language)
    assert (await _say(tg, user, "/stock"))["text"] == ask
    assert (await _say(tg, user, "qwxz zzkv"))["text"] == fallback
    assert (await _say(tg, user, "/stock zzyzx"))["text"] == not_found
    await _say(tg, user, "/link")
    again = await _say(tg, user, ".")
    assert again["text"] == ask_order_again
    assert buttons(again)[-1][0][1] == "acc:cancel"
