"""Rendering and the choice of language, exact output."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from bot.i18n import choose_language
from bot.render import Renderer

TODAY = date(2026, 11, 26)


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(ZoneInfo("Europe/Berlin"), today=lambda: TODAY)


@pytest.mark.parametrize(
    ("saved", "telegram", "expected"),
    [
        ("ru", "de", "ru"),
        (None, "de", "de"),
        (None, "de-AT", "de"),
        (None, "es_MX", "es"),
        (None, "fr", "en"),
        (None, None, "en"),
        ("xx", "es", "es"),
    ],
)
def test_language_is_saved_choice_then_telegram_then_default(
    saved: str | None, telegram: str | None, expected: str
) -> None:
    assert choose_language(saved, telegram, "en") == expected


def test_user_text_is_escaped_and_markup_kept(renderer: Renderer) -> None:
    text = renderer.text("start.j2", "en", name="<b>Eve</b> & co", shop="Shop")
    assert text.splitlines()[0] == "Hello, &lt;b&gt;Eve&lt;/b&gt; &amp; co! 👋"
    assert "<b>Shop</b>" in text


@pytest.mark.parametrize(
    ("language", "greeting"),
    [("en", "Hello! 👋"), ("de", "Hallo! 👋"), ("es", "¡Hola! 👋"), ("ru", "Здравствуйте! 👋")],
)
def test_each_language_renders_its_own_catalog(
    renderer: Renderer, language: str, greeting: str
) -> None:
    assert renderer.text("start.j2", language, name=None, shop="S").splitlines()[0] == greeting


def test_labels_are_plain_text(renderer: Renderer) -> None:
    assert renderer.label("orders", "de") == "📦 Meine Bestellungen"
    assert renderer.label("language_option", "es", code="es", current="es") == "✓ Español"


@pytest.mark.parametrize(
    ("language", "day_month", "relative", "money"),
    [
        ("en", "December 12", "in 2 weeks", "€1,299.90"),
        ("de", "12. Dezember", "in 2 Wochen", "1.299,90\xa0€"),
        ("es", "12 de diciembre", "dentro de 2 semanas", "1.299,90\xa0€"),
        ("ru", "12 декабря", "через 2 недели", "1\xa0299,90\xa0€"),
    ],
)
def test_babel_filters_follow_the_language(
    renderer: Renderer, language: str, day_month: str, relative: str, money: str
) -> None:
    env = renderer._envs[language]
    template = env.from_string("{{ d|day_month }}|{{ d|relative }}|{{ 129990|money('EUR') }}")
    assert template.render(d=date(2026, 12, 12)) == f"{day_month}|{relative}|{money}"
