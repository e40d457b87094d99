"""Settings from environment variables, optionally from a file named by BACKORDER_SETTINGS_FILE.

A missing or invalid setting stops start-up with one line naming it (see `load_settings`).
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.lexicon import LexiconError, check_file
from store.links import DEVELOPMENT_SECRET, secret_problem
from store.settings import SettingsError, StoreSettings
from store.settings import load_settings as _load

SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "de", "es", "ru")


def _check_language(value: str) -> str:
    value = value.strip().lower()
    if value not in SUPPORTED_LANGUAGES:
        raise ValueError(f"must be one of {', '.join(SUPPORTED_LANGUAGES)}")
    return value


Language = Annotated[str, AfterValidator(_check_language)]


class Settings(StoreSettings):
    """Every setting of the bot: the store's (store.settings, shared with backorder-admin) and
    its own. Environment names are the field names in upper case."""

    bot_token: SecretStr | None = None
    bot_api_base_url: str = "https://api.telegram.org/bot"
    bot_api_file_url: str = "https://api.telegram.org/file/bot"

    webhook_url: str | None = None
    # Behind the TLS proxy on the same machine; whoever listens on every interface says so.
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    # None: run_bot.py makes a random one for each start (several processes need one shared).
    webhook_secret: SecretStr | None = None

    shop_name: str = "Backorder Demo Shop"
    default_language: Language = "en"
    link_proof: Literal["email", "postcode"] = "email"
    verification_attempts_per_hour: int = Field(default=5, ge=1, le=100)

    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = Field(default=8080, ge=0, le=65535)
    demo_size: str = "small"

    request_timeout: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    # The HTTP client under PTB (bot/request.py) and how many updates are handled at once
    # (bot/updates.py: one chat's updates stay in order).
    request_layer: Literal["aiohttp", "httpx"] = "aiohttp"
    concurrent_updates: int = Field(default=64, ge=1, le=4096)
    # Updates taken from Telegram and not answered yet; beyond it, polling waits and the
    # backlog stays with Telegram instead of in memory.
    intake_limit: int = Field(default=1000, ge=1, le=1_000_000)
    replies_per_second: int = Field(default=30, ge=0, le=100_000)
    log_level: str = "INFO"

    # Notices the bot sends first (the scheduler): see bot/notices.py and store/outbox.py.
    send_rate_per_second: float = Field(default=25.0, gt=0, le=10_000)
    per_chat_interval_seconds: float = Field(default=1.0, ge=0, le=3600)
    quiet_hours: str = "21:00-08:00"
    notice_job_interval_seconds: float = Field(default=2.0, ge=0, le=3600)
    notice_batch_size: int = Field(default=500, ge=1, le=10_000)
    lease_seconds: int = Field(default=60, ge=5, le=3600)
    notice_max_attempts: int = Field(default=8, ge=1, le=100)
    alternative_action: Literal["confirm", "agents"] = "confirm"

    # Handoff to people: the support supergroup (a forum) with one topic per customer.
    support_chat_id: int | None = None
    agents: Literal["members", "admins"] = "members"
    business_hours: str = "09:00-18:00"
    business_days: str = "mon-fri"
    agent_signature: bool = False
    support_contact: str = ""
    no_answer_minutes: int = Field(default=15, ge=1, le=24 * 60)
    idle_handback_hours: int = Field(default=24, ge=1, le=24 * 30)
    handoff_check_seconds: int = Field(default=60, ge=5, le=3600)

    # The shop's own words, phrases and synonyms on top of bot/lexicon/ (checked here, so a
    # mistake stops start-up with file:line: reason; used by bot.understanding.load_lexicon).
    lexicon_file: Path | None = None

    # "json": one JSON object per log line (bot/logs.py JsonFormatter), for log collectors.
    log_format: Literal["text", "json"] = "text"
    # The Shopify app's webhook signing secret: POST /shopify/webhooks on API_PORT is served
    # only when it is set (shopapi/shopify.py).
    shopify_webhook_secret: SecretStr | None = None

    # The HTTP API for shop systems (shopapi/): off unless API_PORT is set. API_TOKENS is
    # "name:token,name:token", one per integration (shopapi.auth.parse_tokens checks it).
    api_port: int | None = Field(default=None, ge=0, le=65535)
    api_listen: str = "127.0.0.1"
    api_tokens: SecretStr = Field(default=SecretStr(""), validate_default=True)
    api_rate_per_second: float = Field(default=20.0, gt=0, le=100_000)

    # The team's ops topic in the support group (#18, bot.ops): alerts and the daily digest.
    # On whenever SUPPORT_CHAT_ID is set, unless OPS_TOPIC=false. OPS_CHECK_MINUTES: how often
    # the track records, causes and alerts are refreshed (0: never, by the bot); DIGEST_TIME:
    # the shop's local time of the digest, or off; REORDER_POINT_DEFAULT: free units below
    # which a SKU without a point of its own is reported (0: only SKUs with their own).
    ops_topic: bool = True
    ops_check_minutes: int = Field(default=15, ge=0, le=24 * 60)
    digest_time: str = "08:30"
    reorder_point_default: int = Field(default=0, ge=0, le=1_000_000)

    # Several bot processes sharing one bot on PostgreSQL (bot/shared.py): this process's name
    # in claims and leases (default host:pid:random), and how long a dead process's chats and
    # its poller's lease wait before another process takes them over.
    worker_name: str | None = Field(default=None, min_length=1, max_length=60)
    update_lease_seconds: float = Field(default=15.0, ge=1, le=600)

    @field_validator("digest_time")
    @classmethod
    def _known_digest_time(cls, value: str) -> str:
        value = value.strip()
        if value in ("", "off"):
            return "off"
        try:
            return f"{time.fromisoformat(value):%H:%M}"
        except ValueError:
            raise ValueError("must be HH:MM (or off)") from None

    @property
    def ops_chat_id(self) -> int | None:
        """The support group that holds the ops topic, None when there is none."""
        return self.support_chat_id if self.ops_topic else None

    @field_validator("bot_token", "webhook_secret", "shopify_webhook_secret", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_secret")
    @classmethod
    def _telegram_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram's setWebhook refuses anything else, and the bot would not start.
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()
        ):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="before")
    @classmethod
    def _strong_secret(cls, data: Any) -> Any:
        # A code signed with this secret links a chat to a customer's account: with a real
        # token, a secret anyone can read (the README's) or guess would give away every account.
        # A model validator, since LINK_SECRET (a store setting) is validated before BOT_TOKEN.
        if not isinstance(data, dict):
            return data
        token, secret = _raw(data.get("bot_token")), _raw(data.get("link_secret"))
        if not token:
            return data if secret else {**data, "link_secret": DEVELOPMENT_SECRET}
        if not secret:
            raise ValueError(
                "LINK_SECRET: must be set when BOT_TOKEN is: a random string of at least 32"
                " characters, e.g. from"
                " python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        problem = secret_problem(secret)
        if problem is not None:
            raise ValueError(f"LINK_SECRET: {problem}")
        return data

    @field_validator("lexicon_file", mode="before")
    @classmethod
    def _blank_path_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("lexicon_file")
    @classmethod
    def _readable_lexicon(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                check_file(value)
            except LexiconError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("api_port", mode="before")
    @classmethod
    def _blank_port_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_tokens")
    @classmethod
    def _api_tokens(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        from shopapi.auth import parse_tokens

        tokens = parse_tokens(value.get_secret_value())
        if info.data.get("api_port") is not None and not tokens:
            raise ValueError("must be set when API_PORT is: name:token,name:token")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("demo_size")
    @classmethod
    def _known_size(cls, value: str) -> str:
        if value not in {"small", "medium", "large"}:
            raise ValueError("must be small, medium or large")
        return value

    @field_validator("support_chat_id", mode="before")
    @classmethod
    def _blank_chat_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("business_hours")
    @classmethod
    def _known_hours(cls, value: str) -> str:
        opens, closes = parse_business_hours(value)
        if opens >= closes:
            raise ValueError("must be HH:MM-HH:MM with the opening before the closing")
        return value.strip()

    @field_validator("business_days")
    @classmethod
    def _known_days(cls, value: str) -> str:
        parse_business_days(value)
        return value.strip().lower()

    @property
    def open_hours(self) -> tuple[time, time]:
        return parse_business_hours(self.business_hours)

    @property
    def open_days(self) -> frozenset[int]:
        """Weekdays the team works, Monday = 0."""
        return parse_business_days(self.business_days)

    @field_validator("quiet_hours")
    @classmethod
    def _known_quiet_hours(cls, value: str) -> str:
        value = value.strip()
        if value in ("", "off"):
            return "off"
        try:
            start, end = (time.fromisoformat(part.strip()) for part in value.split("-"))
        except ValueError:
            raise ValueError("must be HH:MM-HH:MM (or off)") from None
        return f"{start:%H:%M}-{end:%H:%M}"

    @property
    def quiet_window(self) -> tuple[time, time] | None:
        """Quiet hours in the shop's zone as (start, end); None when there are none."""
        if self.quiet_hours == "off":
            return None
        start, end = self.quiet_hours.split("-")
        return time.fromisoformat(start), time.fromisoformat(end)

    @property
    def sandboxed(self) -> bool:
        return self.bot_token is None


def _raw(value: object) -> str:
    """A setting's text as given, blank when unset."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value.strip() if isinstance(value, str) else ""


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_business_hours(value: str) -> tuple[time, time]:
    """ "09:00-18:00" -> (09:00, 18:00)."""
    try:
        opens, closes = (time.fromisoformat(part.strip()) for part in value.split("-"))
    except ValueError:
        raise ValueError("must be HH:MM-HH:MM, e.g. 09:00-18:00") from None
    return opens, closes


def parse_business_days(value: str) -> frozenset[int]:
    """ "mon-fri", "mon,wed,fri", "mon-fri,sun" -> weekday numbers (Monday = 0)."""
    days: set[int] = set()
    for part in value.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError("must be days like mon-fri or mon,wed,fri")
        start, stop = _DAYS.index(first), _DAYS.index(last or first)
        days.update(
            range(start, stop + 1) if start <= stop else [*range(start, 7), *range(stop + 1)]
        )
    return frozenset(days)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings; raise SettingsError with one line naming the first bad setting."""
    return _load(Settings, environ)


__all__ = ["SUPPORTED_LANGUAGES", "Settings", "SettingsError", "load_settings"]
