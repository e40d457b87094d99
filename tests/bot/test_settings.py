"""Settings: defaults, the optional file, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings


def test_defaults_run_the_sandbox_on_sqlite() -> None:
    settings = load_settings({})
    assert settings.sandboxed
    assert settings.database_url == "sqlite+aiosqlite:///var/backorder.sqlite3"
    assert settings.default_language == "en"


def test_environment_overrides_the_settings_file(tmp_path: Path) -> None:
    file = tmp_path / "bot.env"
    file.write_text("SHOP_NAME=From File\nDEFAULT_LANGUAGE=de\n")
    settings = load_settings({"BACKORDER_SETTINGS_FILE": str(file), "DEFAULT_LANGUAGE": "ru"})
    assert (settings.shop_name, settings.default_language) == ("From File", "ru")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SHOP_TIMEZONE": "Mars/Olympus"}, "SHOP_TIMEZONE: unknown time zone"),
        ({"DEFAULT_LANGUAGE": "fr"}, "DEFAULT_LANGUAGE: must be one of en, de, es, ru"),
        (
            {"WEBHOOK_PORT": "eighty"},
            "WEBHOOK_PORT: Input should be a valid integer, unable to parse string as an integer",
        ),
        ({"BACKORDER_SETTINGS_FILE": "/nonexistent.env"}, "BACKORDER_SETTINGS_FILE: no such file"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_blank_token_means_the_sandbox() -> None:
    assert load_settings({"BOT_TOKEN": "  "}).sandboxed
    assert not load_settings({"BOT_TOKEN": "1:abc"}).sandboxed
