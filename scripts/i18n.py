"""Keep the catalogs in step with the templates, with Babel's own tooling.

    python scripts/i18n.py update   # extract messages.pot from the templates, update every catalog
    python scripts/i18n.py missing  # list the messages a catalog has not translated yet

English is the source language: its catalog is filled with the source text so that the shop
can reword English without touching templates. Every other catalog is translated by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "bot" / "locale"
POT = LOCALE / "messages.pot"
LANGUAGES = ("en", "de", "es", "ru")


def _babel(*args: str) -> None:
    CommandLineInterface().run(["pybabel", "-q", *args])


def update() -> None:
    _babel(
        "extract",
        "-F",
        str(ROOT / "babel.cfg"),
        "--no-location",
        "--omit-header",
        "--sort-output",
        "-o",
        str(POT),
        str(ROOT),
    )
    for language in LANGUAGES:
        po = LOCALE / language / "LC_MESSAGES" / "messages.po"
        if po.exists():
            _babel(
                "update",
                "-i",
                str(POT),
                "-d",
                str(LOCALE),
                "-l",
                language,
                "--no-fuzzy-matching",
                "--ignore-obsolete",
            )
        else:
            _babel("init", "-i", str(POT), "-d", str(LOCALE), "-l", language)
    _fill_source_language(LOCALE / "en" / "LC_MESSAGES" / "messages.po")


def _fill_source_language(po: Path) -> None:
    with po.open("rb") as fh:
        catalog = read_po(fh, locale="en")
    for message in catalog:
        # A plural message's id and string are tuples: (singular, plural) fits English's forms.
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.id and not all(strings):
            message.string = message.id
    with po.open("wb") as fh:
        write_po(fh, catalog, no_location=True, width=100)


def missing() -> int:
    count = 0
    for language in LANGUAGES:
        with (LOCALE / language / "LC_MESSAGES" / "messages.po").open("rb") as fh:
            catalog = read_po(fh, locale=language)
        for message in catalog:
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            if message.id and (not all(strings) or message.fuzzy):
                print(f"{language}: {message.id!r}")
                count += 1
    return 1 if count else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["update"]:
        update()
    elif sys.argv[1:] == ["missing"]:
        sys.exit(missing())
    else:
        sys.exit(__doc__)
