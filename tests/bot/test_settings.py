"""Settings: defaults, the optional file, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings
from store.links import DEVELOPMENT_SECRET
from tests.conftest import LINK_SECRET

TOKEN = "1:abc"


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
    assert not load_settings({"BOT_TOKEN": TOKEN, "LINK_SECRET": LINK_SECRET}).sandboxed


def test_the_sandbox_signs_links_with_the_development_secret() -> None:
    assert load_settings({}).link_secret.get_secret_value() == DEVELOPMENT_SECRET
    assert load_settings({"LINK_SECRET": " "}).link_secret.get_secret_value() == DEVELOPMENT_SECRET
    # A shop trying its own secret in the sandbox keeps it, strong or not.
    assert load_settings({"LINK_SECRET": "mine"}).link_secret.get_secret_value() == "mine"


MISSING = (
    "LINK_SECRET: must be set when BOT_TOKEN is: a random string of at least 32 characters, "
    "e.g. from python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, MISSING),
        ("  ", MISSING),
        (
            DEVELOPMENT_SECRET,
            "LINK_SECRET: is the sandbox's development secret, which anyone can read in the README",
        ),
        (f"  {DEVELOPMENT_SECRET} ", "LINK_SECRET: is the sandbox's development secret"),
        ("x" * 31, "LINK_SECRET: must be at least 32 characters"),
    ],
)
def test_a_real_token_needs_a_strong_link_secret(secret: str | None, message: str) -> None:
    environ = (
        {"BOT_TOKEN": TOKEN} if secret is None else {"BOT_TOKEN": TOKEN, "LINK_SECRET": secret}
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_link_secret_in_the_settings_file_counts(tmp_path: Path) -> None:
    file = tmp_path / "bot.env"
    file.write_text(f"BOT_TOKEN={TOKEN}\nLINK_SECRET={'y' * 32}\n")
    settings = load_settings({"BACKORDER_SETTINGS_FILE": str(file)})
    assert settings.link_secret.get_secret_value() == "y" * 32
    file.write_text(f"BOT_TOKEN={TOKEN}\n")
    with pytest.raises(SettingsError, match=r"^LINK_SECRET: must be set"):
        load_settings({"BACKORDER_SETTINGS_FILE": str(file)})


def test_the_webhook_server_listens_on_loopback_unless_told() -> None:
    assert load_settings({}).webhook_listen == "127.0.0.1"
    assert load_settings({"WEBHOOK_LISTEN": "0.0.0.0"}).webhook_listen == "0.0.0.0"


def test_a_webhook_secret_telegram_would_refuse_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"WEBHOOK_SECRET": "has spaces"})
    assert str(caught.value) == (
        "WEBHOOK_SECRET: must be 1-256 characters of A-Z, a-z, 0-9, _ and -"
    )
    assert load_settings({"WEBHOOK_SECRET": "Ab9_-"}).webhook_secret is not None
