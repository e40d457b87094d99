"""Every text in every language: complete catalogs, same placeholders, current extraction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot.i18n import LOCALE_DIR, catalog_path
from bot.settings import SUPPORTED_LANGUAGES

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
TAG = re.compile(r"</?([a-z-]+)")


def _catalog(language: str) -> Catalog:
    with catalog_path(language).open("rb") as fh:
        return read_po(fh, locale=language)


def _ids(catalog: Catalog) -> set[str]:
    return {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}


def _extracted_now() -> set[str]:
    method_map = [("bot/templates/**.j2", "jinja2")]
    options = {
        "bot/templates/**.j2": {
            "extensions": "jinja2.ext.i18n",
            "trim_blocks": "true",
            "lstrip_blocks": "true",
        }
    }
    found = extract_from_dir(str(ROOT), method_map, options_map=options)
    return {msg if isinstance(msg, str) else msg[0] for _f, _l, msg, _c, _x in found}


def test_the_template_extraction_is_current() -> None:
    with (LOCALE_DIR / "messages.pot").open("rb") as fh:
        pot = read_po(fh)
    assert _ids(pot) == _extracted_now(), "run: python scripts/i18n.py update"


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_message_is_translated(language: str) -> None:
    catalog = _catalog(language)
    with (LOCALE_DIR / "messages.pot").open("rb") as fh:
        pot = read_po(fh)
    assert _ids(catalog) == _ids(pot)
    untranslated = [
        m.id
        for m in catalog
        if m.id and (m.fuzzy or not all(m.string if isinstance(m.string, tuple) else (m.string,)))
    ]
    assert untranslated == []


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_translations_keep_placeholders_and_markup(language: str) -> None:
    for message in _catalog(language):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(PLACEHOLDER.findall(" ".join(ids)))
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == wanted, (language, message.id)
            assert sorted(TAG.findall(string)) == sorted(TAG.findall(ids[0])), (
                language,
                message.id,
            )
