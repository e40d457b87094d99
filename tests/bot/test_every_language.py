"""The customer's main paths in each of the four languages: the same facts, the reader's words."""

from __future__ import annotations

import pytest

from sandbox.client import SandboxClient
from store import Store
from tests.conftest import link_customer

pytestmark = pytest.mark.usefixtures("bot")

QUIET = 0.15
ANNA = 1

# (what the customer writes, the first line of the bot's answer) per language and path.
PATHS = {
    "en": {
        "orders": ("where is my order?", "Your open orders"),
        "order": ("order 100003", "Order 100003 · placed Aug 30, 2026 · €300.88"),
        "foreign": ("order 100004", "I couldn't find order 100004 for your account."),
        "stock": (
            "/stock KET-0001",
            "✅ Steel Kettle 1.7 l is in stock: you can buy it now and it ships right away.",
        ),
        "cancel": (
            "cancel order 100003",
            "What would you like to cancel from order 100003?",
        ),
        "verify": (
            "where is order 100002",
            "To show you order 100002, I need to make sure it's yours.",
        ),
    },
    "de": {
        "orders": ("wo bleibt meine Bestellung?", "Ihre offenen Bestellungen"),
        "order": (
            "Bestellung 100003",
            "Bestellung 100003 · aufgegeben am 30.08.2026 · 300,88\xa0€",
        ),
        "foreign": (
            "Bestellung 100004",
            "Ich habe die Bestellung 100004 zu Ihrem Kundenkonto nicht gefunden.",
        ),
        "stock": (
            "/stock KET-0001",
            "✅ Wasserkocher Edelstahl 1,7 l ist vorrätig: Sie können jetzt kaufen, der Versand "
            "erfolgt sofort.",
        ),
        "cancel": (
            "Bestellung 100003 stornieren",
            "Was möchten Sie aus Bestellung 100003 stornieren?",
        ),
        "verify": (
            "wo ist Bestellung 100002",
            "Damit ich Ihnen die Bestellung 100002 zeigen kann, muss ich sicherstellen, dass sie "
            "Ihnen gehört.",
        ),
    },
    "es": {
        "orders": ("¿dónde está mi pedido?", "Tus pedidos abiertos"),
        "order": ("pedido 100003", "Pedido 100003 · realizado el 30 ago 2026 · 300,88\xa0€"),
        "foreign": ("pedido 100004", "No he encontrado el pedido 100004 en tu cuenta."),
        "stock": (
            "/stock KET-0001",
            "✅ Hervidor de acero 1,7 l está en stock: se puede comprar ya y se envía enseguida.",
        ),
        "cancel": ("cancelar el pedido 100003", "¿Qué quieres cancelar del pedido 100003?"),
        "verify": (
            "¿dónde está el pedido 100002?",
            "Para mostrarte el pedido 100002, necesito comprobar que es tuyo.",
        ),
    },
    "ru": {
        "orders": ("где мой заказ?", "Ваши открытые заказы"),
        "order": ("заказ 100003", "Заказ 100003 · оформлен 30 авг. 2026\u202fг. · 300,88\xa0€"),
        "foreign": ("заказ 100004", "Я не нашёл заказ 100004 в вашей учётной записи."),
        "stock": (
            "/stock KET-0001",
            "✅ Товар Чайник стальной 1,7 л есть в наличии: можно купить сейчас, отправим сразу.",
        ),
        "cancel": ("отменить заказ 100003", "Что вы хотите отменить в заказе 100003?"),
        "verify": (
            "где заказ 100002",
            "Чтобы показать заказ 100002, мне нужно убедиться, что он ваш.",
        ),
    },
}


@pytest.mark.parametrize("language", sorted(PATHS))
@pytest.mark.parametrize("path", ["orders", "order", "foreign", "stock", "cancel"])
async def test_a_linked_customer_in_each_language(
    tg: SandboxClient, store: Store, language: str, path: str
) -> None:
    await link_customer(tg, store, 951, ANNA, language)
    text, first_line = PATHS[language][path]
    [reply] = await tg.say(951, text, quiet=QUIET)
    assert reply["text"].splitlines()[0] == first_line


@pytest.mark.parametrize("language", sorted(PATHS))
async def test_an_unlinked_customer_is_asked_for_proof_in_each_language(
    tg: SandboxClient, language: str
) -> None:
    await tg.create_user(952, first_name="Anna", language_code=language)
    text, first_line = PATHS[language]["verify"]
    [reply] = await tg.say(952, text, quiet=QUIET)
    assert reply["text"].splitlines()[0] == first_line
