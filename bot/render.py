"""Every text a person reads comes out of here: Jinja2 templates, translated with Babel catalogs."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import (
    format_date,
    format_interval,
    format_skeleton,
    format_time,
    format_timedelta,
    get_datetime_format,
)
from babel.numbers import (
    format_currency,
    format_decimal,
    format_percent,
    get_currency_precision,
)
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.i18n import translations
from bot.settings import SUPPORTED_LANGUAGES
from store.db import Store

KEYBOARD_CACHE_SIZE = 1024

_EXTRA_BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")

# A row of buttons: (label macro name, callback data) pairs, or (label, data, macro arguments).
ButtonSpec = tuple[str, str] | tuple[str, str, Mapping[str, Any]]


class Renderer:
    """One Jinja2 environment per language, so a render never sees another language's catalog."""

    def __init__(self, zone: ZoneInfo, today: Callable[[], date] | None = None) -> None:
        self._zone = zone
        self._today = today or (lambda: datetime.now(zone).date())
        loader = PackageLoader("bot", "templates")
        self._envs = {
            language: self._environment(language, loader) for language in SUPPORTED_LANGUAGES
        }
        # A keyboard is frozen once built, and most replies carry one of a few (the main menu
        # in four languages): building one renders a macro and makes a PTB object per button.
        self._keyboards = lru_cache(maxsize=KEYBOARD_CACHE_SIZE)(self._build_keyboard)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def today(self) -> date:
        return self._today()

    def text(self, template: str, language: str, **values: Any) -> str:
        """Render a message template (HTML parse mode) in a language."""
        rendered = self._envs[language].get_template(template).render(**values)
        # Templates compose macros; whatever blank lines they leave, a message keeps at most one.
        return _EXTRA_BLANK_LINES.sub("\n\n", rendered).strip()

    def plain(self, template: str, macro: str, language: str, /, **values: Any) -> str:
        """A short plain text (a button label, a command description): one macro of a template.

        Telegram shows these as they are, so the autoescaped HTML is turned back into text.
        """
        module = self._envs[language].get_template(template).module
        return Markup(getattr(module, macro)(**values)).unescape().strip()

    def label(self, macro: str, language: str, /, **values: Any) -> str:
        return self.plain("buttons.j2", macro, language, **values)

    def keyboard(self, language: str, rows: Sequence[Sequence[ButtonSpec]]) -> InlineKeyboardMarkup:
        frozen = tuple(
            tuple(
                (spec[0], spec[1], tuple(sorted(spec[2].items())) if len(spec) == 3 else ())
                for spec in row
            )
            for row in rows
        )
        try:
            return self._keyboards(language, frozen)
        except TypeError:  # a macro argument that cannot be a key (a list ...): built each time
            return self._build_keyboard(language, frozen)

    def _build_keyboard(
        self,
        language: str,
        rows: tuple[tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...], ...],
    ) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(
                        self.label(macro, language, **dict(values)), callback_data=data
                    )
                    for macro, data, values in row
                ]
                for row in rows
            ]
        )

    def _environment(self, language: str, loader: PackageLoader) -> Environment:
        env = Environment(
            loader=loader,
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            # Templates ship with the code: checking their files on every render is wasted work.
            auto_reload=False,
        )
        env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
        # Parsed once: babel parses a locale given by name on every call (a tenth of a
        # notice's CPU when sending thousands).
        locale = Locale.parse(language)
        env.filters.update(
            day_month=lambda d: _day_month(d, locale),
            # "12–16 March" in the reader's language (an ETA range, store.insights).
            day_range=lambda start, end: _day_range(start, end, locale),
            long_date=lambda d: format_date(d, "long", locale=locale),
            local_day=lambda dt: format_date(
                dt.astimezone(self._zone).date(), "medium", locale=locale
            ),
            # The shop's local date of a stored UTC moment (then day_month, long_date ...).
            local_date=lambda dt: dt.astimezone(self._zone).date(),
            moment=lambda dt: self._moment(dt, locale),
            relative=lambda d: self._relative(d, locale),
            days_from_today=lambda d: (d - self._today()).days,
            money=lambda minor, currency: _money(minor, currency, locale),
            number=lambda n: format_decimal(n, locale=locale),
            percent=lambda share: format_percent(share, locale=locale),
            iso_day=date.fromisoformat,
            duration=lambda days: _duration(days, locale),
        )
        env.globals["language"] = language
        return env

    def _moment(self, dt: datetime, locale: Locale) -> str:
        """A moment to the minute (no seconds) in the shop's zone: "Nov 26, 2026, 11:00 AM"."""
        local = dt.astimezone(self._zone)
        return (
            str(get_datetime_format("medium", locale=locale))
            .replace("{1}", format_date(local, "medium", locale=locale))
            .replace("{0}", format_time(local, "short", locale=locale))
        )

    def _relative(self, day: date, locale: Locale) -> str:
        return _days_away((day - self._today()).days, locale)


# Dates and spans in words, remembered: a fan-out of notices tells thousands of customers the
# same few dates, and babel takes tens of microseconds for each.
@lru_cache(maxsize=4096)
def _day_month(day: date, locale: Locale) -> str:
    return format_skeleton("MMMMd", day, locale=locale)


@lru_cache(maxsize=4096)
def _day_range(start: date, end: date, locale: Locale) -> str:
    if start == end:
        return _day_month(start, locale)
    return format_interval(start, end, "MMMMd", locale=locale)


@lru_cache(maxsize=1024)
def _duration(days: int, locale: Locale) -> str:
    return format_timedelta(timedelta(days=days), granularity="day", threshold=4, locale=locale)


@lru_cache(maxsize=1024)
def _days_away(days: int, locale: Locale) -> str:
    return format_timedelta(
        timedelta(days=days), granularity="day", add_direction=True, locale=locale
    )


def _money(minor: int, currency: str, locale: Locale) -> str:
    amount = Decimal(minor).scaleb(-get_currency_precision(currency))
    return format_currency(amount, currency, locale=locale)


async def shop_examples(store: Store, language: str) -> dict[str, str | None]:
    """What the texts that teach customers what to write give as examples (fallback.j2,
    stock_ask.j2, stock_not_found.j2, account_ask_order_again.j2): the shop's own, kept with
    the product index (no statement of their own)."""
    examples = (await store.product_index()).examples
    return {
        "product_example": examples.word(language),
        "sku_example": examples.sku,
        "order_example": examples.order_number,
    }
