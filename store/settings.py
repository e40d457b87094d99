"""The settings the store's rules depend on, read the same way by the bot and by backorder-admin.

The bot's `bot.settings.Settings` extends `StoreSettings`, so a delay policy, time zone or
notice threshold has one name, one default and one check, whichever program reads it. Values
come from the environment and from the file named by BACKORDER_SETTINGS_FILE; a missing or
invalid one stops the program with one line naming it (`load_settings`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from store.db import DEFAULT_URL
from store.delays import DelayPolicy


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line that names it."""


class StoreSettings(BaseSettings):
    """Environment names are the field names in upper case."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=False)

    database_url: str = DEFAULT_URL
    shop_timezone: str = "Europe/Berlin"

    # Linking a chat to a customer: the admin command signs the codes the bot checks.
    # Blank means unset; the bot decides what that means (bot.settings: the sandbox's
    # development secret, refused with a real token).
    link_secret: SecretStr = Field(default=SecretStr(""), validate_default=True)
    link_code_days: int = Field(default=30, ge=1, le=365)
    # For the deep links backorder-admin prints; the bot itself asks Telegram for its name.
    bot_username: str = "backorder_demo_bot"

    # Notices and the delay policy (store.outbox, store.delays).
    notice_threshold_days: int = Field(default=1, ge=1, le=365)
    delay_silent_consent_days: int = Field(default=30, ge=0, le=365)
    delay_default_ship_days: int = Field(default=30, ge=1, le=365)
    delay_min_answer_days: int = Field(default=7, ge=1, le=90)
    delay_no_answer_action: Literal["cancel", "agents"] = "cancel"

    # Suppliers' track records (store.insights): fewer deliveries than this is "not enough
    # history", and the order view states a single date instead of a range.
    insights_min_deliveries: int = Field(default=5, ge=1, le=10_000)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment is passed in by load_settings, so tests can give their own.
        return (init_settings, dotenv_settings)

    @field_validator("shop_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone") from exc
        return value

    @field_validator("link_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        return SecretStr("") if isinstance(value, str) and not value.strip() else value

    @field_validator("bot_username", mode="before")
    @classmethod
    def _blank_username_is_default(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return "backorder_demo_bot"
        return value.strip().removeprefix("@") if isinstance(value, str) else value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.shop_timezone)

    @property
    def delay_policy(self) -> DelayPolicy:
        return DelayPolicy(
            silent_consent_days=self.delay_silent_consent_days,
            default_ship_days=self.delay_default_ship_days,
            min_answer_days=self.delay_min_answer_days,
            no_answer_action=self.delay_no_answer_action,
        )


S = TypeVar("S", bound=StoreSettings)


def load_settings(cls: type[S], environ: dict[str, str] | None = None) -> S:
    """Read ``cls``'s settings; raise SettingsError with one line naming the first bad one."""
    env = dict(os.environ if environ is None else environ)
    settings_file = env.get("BACKORDER_SETTINGS_FILE")
    if settings_file and not Path(settings_file).is_file():
        raise SettingsError(f"BACKORDER_SETTINGS_FILE: no such file: {settings_file}")
    keys = {name.upper() for name in cls.model_fields}
    values: dict[str, Any] = {k.lower(): v for k, v in env.items() if k.upper() in keys}
    try:
        return cls(_env_file=settings_file or None, **values)  # type: ignore[call-arg]
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across settings names the setting in its message
            raise SettingsError(message) from None
        name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
        raise SettingsError(f"{name}: {message}") from None


def load_store_settings(environ: dict[str, str] | None = None) -> StoreSettings:
    return load_settings(StoreSettings, environ)


__all__ = ["SettingsError", "StoreSettings", "load_settings", "load_store_settings"]
