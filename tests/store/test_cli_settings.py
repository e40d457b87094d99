"""Issue #14, one source of settings: backorder-admin reads the store's settings through
store.settings, the class the bot's settings extend, so a name, a default and a check cannot
drift apart between the two programs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError, load_settings
from store.cli import follow_on_settings, main
from store.delays import DelayPolicy
from store.settings import StoreSettings, load_store_settings

_STORE_KEYS = [
    "DATABASE_URL",
    "SHOP_TIMEZONE",
    "LINK_SECRET",
    "LINK_CODE_DAYS",
    "BOT_USERNAME",
    "NOTICE_THRESHOLD_DAYS",
    "DELAY_SILENT_CONSENT_DAYS",
    "DELAY_DEFAULT_SHIP_DAYS",
    "DELAY_MIN_ANSWER_DAYS",
    "DELAY_NO_ANSWER_ACTION",
    "BACKORDER_SETTINGS_FILE",
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in _STORE_KEYS:
        monkeypatch.delenv(key, raising=False)


def test_the_bot_has_every_store_setting_with_the_same_default() -> None:
    assert issubclass(Settings, StoreSettings)
    bot, admin = load_settings({}), load_store_settings({})
    for name in StoreSettings.model_fields:
        if name != "link_secret":  # the bot puts the sandbox's development secret in
            assert getattr(bot, name) == getattr(admin, name), name
    assert admin.delay_policy == bot.delay_policy == DelayPolicy()


def test_a_settings_file_reaches_both_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file = tmp_path / "shop.env"
    settings_file.write_text(
        "SHOP_TIMEZONE=America/Chicago\nDELAY_SILENT_CONSENT_DAYS=12\nNOTICE_THRESHOLD_DAYS=3\n"
    )
    monkeypatch.setenv("BACKORDER_SETTINGS_FILE", str(settings_file))
    monkeypatch.setenv("DELAY_NO_ANSWER_ACTION", "agents")
    admin = follow_on_settings()
    bot = load_settings()
    assert admin.policy == bot.delay_policy == DelayPolicy(12, 30, 7, "agents")
    assert admin.zone == bot.zone
    assert str(admin.zone) == "America/Chicago"
    assert admin.threshold_days == bot.notice_threshold_days == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DELAY_MIN_ANSWER_DAYS", "0"),
        ("DELAY_NO_ANSWER_ACTION", "refund"),
        ("SHOP_TIMEZONE", "Mars/Olympus"),
        ("NOTICE_THRESHOLD_DAYS", "soon"),
    ],
)
def test_a_bad_setting_stops_both_programs_with_the_same_line(
    key: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SettingsError) as bot_error:
        load_settings({key: value})
    assert str(bot_error.value).startswith(f"{key}: ")
    monkeypatch.setenv(key, value)
    restocks = tmp_path / "restocks.csv"
    restocks.write_text("restock_id,supplier_id,sku,qty,expected_date\n")
    db = tmp_path / "store.sqlite3"
    assert main(["--db", f"sqlite+aiosqlite:///{db}", "import", "restocks", str(restocks)]) == 1
    assert capsys.readouterr().err == f"error: {bot_error.value}\n"
    assert not db.exists()  # refused before the store was opened
