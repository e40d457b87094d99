"""The lexicon as data: the files load, a mistake names its file and line, a shop's file adds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import lexicon, understanding
from bot.lexicon import LexiconError, check_file
from bot.settings import SettingsError, load_settings
from bot.understanding import Intent, load_lexicon, understand

SHOP = """\
[de.phrases]
order_status = ["vorbestellung*"]

[en.phrases]
order_status = ["preorder*"]

[de.synonyms]
"päckchen" = "paket"
"""


@pytest.fixture
def shop_lexicon(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "shop.toml"
    path.write_text(SHOP, encoding="utf-8")
    try:
        yield path
    finally:
        load_lexicon(None)


def test_the_built_in_files_are_one_per_language() -> None:
    assert [p.name for p in lexicon.BUILTIN] == ["en.toml", "de.toml", "es.toml", "ru.toml"]
    assert {lang for p in understanding._C.phrases for lang in p.langs} == set(lexicon.LANGUAGES)


def test_a_shops_words_change_what_is_understood(shop_lexicon: Path) -> None:
    assert understand("preorder?").intent is Intent.STOCK  # a name the catalog must know
    load_lexicon(shop_lexicon)
    assert understand("preorder?").intent is Intent.ORDER_STATUS
    assert understand("vorbestellung?").intent is Intent.ORDER_STATUS
    # the synonym reads "Päckchen" as "Paket": with "wo" that is the phrase "wo ... paket*"
    assert understanding._direct_atoms("packchen") == understanding._direct_atoms("paket")
    load_lexicon(None)
    assert understand("preorder?").intent is Intent.STOCK
    assert understanding._direct_atoms("packchen") == frozenset()


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[de.phrases]\nstock = ['ab']\nstock = ['cd']\n", 3, "Cannot overwrite a value"),
        ("[de.phrases]\norder_status = [\n  'abc',\n  'b'\n", 4, "Unclosed array"),
        ("[fr.phrases]\nstock = ['x']\n", 1, "unknown language 'fr'"),
        ("[de]\nstopword = 'x'\n", 2, "unknown key 'stopword' in [de]"),
        ("[de.phrases]\nstock = ['x']\nrefund = [\n  'geld',\n]\n", 3, "unknown intent 'refund'"),
        ('[de.phrases]\nstock = [\n  "auf lager",\n  "",\n]\n', 4, "empty phrase ''"),
        ('[de.phrases]\nstock = ["!  "]\n', 2, "empty phrase '!  '"),
        ('[de.phrases]\nstock = [\n  "lager :viel",\n]\n', 3, "bad weight 'viel'"),
        ('[de.phrases]\nstock = ["lager :0"]\n', 2, "weight '0' in 'lager :0' is not above 0"),
        ('[de.phrases]\nstock = ["lager :-1"]\n', 2, "is not above 0 and at most 10"),
        ('[de.phrases]\nstock = ["lager :nan"]\n', 2, "is not above 0 and at most 10"),
        ('[de.phrases]\nstock = ["la*"]\n', 2, "stem 'la*' in 'la*' is too short"),
        ('[de.phrases]\nstock = ["auf|| lager"]\n', 2, "'' in 'auf|| lager' is not a word"),
        ("[de.phrases]\nstock = [3]\n", 2, "a phrase must be a string, not 3"),
        ('[de.synonyms]\nkiste = "gibtsnicht"\n', 2, "synonym 'kiste': 'gibtsnicht' is no word"),
    ],
)
def test_a_mistake_names_file_line_and_reason(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LexiconError) as failed:
        check_file(path)
    message = str(failed.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert reason in message


def test_a_broken_file_keeps_the_lexicon_in_use(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text('[en.phrases]\norder_status = ["preorder*"]\nstock = [""]\n', "utf-8")
    with pytest.raises(LexiconError):
        load_lexicon(path)
    assert understand("preorder?").intent is Intent.STOCK


def test_the_setting_stops_start_up_with_the_files_line(tmp_path: Path, shop_lexicon: Path) -> None:
    assert load_settings({"LEXICON_FILE": str(shop_lexicon)}).lexicon_file == shop_lexicon
    assert load_settings({"LEXICON_FILE": ""}).lexicon_file is None
    broken = tmp_path / "broken.toml"
    broken.write_text('[en.phrases]\n\nwhere = ["wheres"]\n', encoding="utf-8")
    with pytest.raises(SettingsError) as failed:
        load_settings({"LEXICON_FILE": str(broken)})
    assert str(failed.value) == (
        f"LEXICON_FILE: {broken}:3: unknown intent 'where' (one of order_status, stock, cancel,"
        " alternatives, agent, stop_notifications, greeting, help, thanks)"
    )
    with pytest.raises(SettingsError) as failed:
        load_settings({"LEXICON_FILE": str(tmp_path / "missing.toml")})
    assert str(failed.value).startswith(f"LEXICON_FILE: {tmp_path / 'missing.toml'}:1: cannot be")
