"""Logging for a process that runs the bot: no customer's data and no secret in any log line.

At the source, our own log lines name updates and chats by id, never by content (see
bot/handlers/errors.py). Some libraries do not: at DEBUG, PTB logs every Bot API call with its
parameters (the reply texts), every update it processes and the Bot API URL with the token;
httpx logs each request's URL (the token) from INFO; aiosqlite logs each statement with its
parameters (e-mail addresses, postcodes). Those loggers are held at INFO or above whatever
LOG_LEVEL says (`hold_content_loggers`).

As a safety net, `Redactor`, a filter on the process's log handler, rewrites each record before
it is written: the bot's token (anywhere, also as ``/bot<token>/`` in a URL) and the other
secrets it is given, anything shaped like a Telegram token, e-mail addresses and phone-number-like
strings, in the message, its arguments and the exception's text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

log = logging.getLogger(__name__)

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Logger -> the lowest level it may log at. PTB's, aiosqlite's and httpcore's DEBUG lines carry
# content (texts, statement parameters, headers); httpx's INFO lines carry the URL with the token.
CONTENT_LOGGERS = {
    "telegram": logging.INFO,
    "aiosqlite": logging.INFO,
    "httpcore": logging.INFO,
    "hpack": logging.INFO,
    "httpx": logging.WARNING,
    "sqlalchemy": logging.WARNING,
    "apscheduler": logging.WARNING,
}

MIN_HIDDEN = 8

_TOKEN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}")
# The token's place in a Bot API URL, whatever the token looks like (the sandbox's does not
# look like Telegram's).
_URL_TOKEN = re.compile(r"(/(?:file/)?bot)\d+:[^/\s'\"]+")
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
# A candidate for a phone number: digits with spaces, dashes, slashes or brackets between them,
# not inside a longer word or a negative number (a supergroup's chat id). `_phone` decides.
_NUMBER = re.compile(r"(?<![\w+-])[+(]?\d[\d ()/-]*\d(?!\w)")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")


# PTB's templates for a whole update as received: one logs it at CRITICAL when it cannot read it
# (the webhook's "Received data was: %r"), beyond any level the content loggers are held at.
_RAW_UPDATE = ("Received data was", "received data:")


def _as_tuple(args: object) -> tuple[object, ...]:
    return args if isinstance(args, tuple) else (args,)


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    if not 7 <= digits <= 15 or _DATE.search(text):
        return text
    # A bare run of digits not starting with 0 is an id (chat, update, message), which the log
    # needs; a leading + or 0, or separators between groups, is how people write phone numbers.
    if text.isdigit() and not text.startswith("0"):
        return text
    return "<phone>"


class Redactor(logging.Filter):
    """Rewrites a record's text so that no secret, e-mail address or phone number is left."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: list[str] = []
        for secret in secrets:
            self.hide(secret)

    def hide(self, secret: str) -> None:
        """Replace this exact string wherever it appears (the token, once it is known)."""
        # A short one would eat ordinary words; only the sandbox allows one (for LINK_SECRET).
        if len(secret) >= MIN_HIDDEN and secret not in self._secrets:
            self._secrets.append(secret)
            # Longest first: a secret that contains another is replaced whole.
            self._secrets.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<secret>")
        text = _URL_TOKEN.sub(r"\1<token>", text)
        text = _TOKEN.sub("<token>", text)
        text = _EMAIL.sub("<e-mail>", text)
        return _NUMBER.sub(_phone, text)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and any(part in str(record.msg) for part in _RAW_UPDATE):
            record.args = tuple("<not logged>" for _ in _as_tuple(record.args))
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: still write what there is, redacted
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            # The redacted text is what every formatter writes; the exception itself would be
            # formatted again by one that does not look at exc_text.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


# (update_id, chat_id) of the update being handled, set by bot.metrics.timed for the whole of
# its handling: every line logged meanwhile carries them in the JSON log.
UPDATE_CONTEXT: ContextVar[tuple[int | None, int | None] | None] = ContextVar(
    "update_context", default=None
)
JSON_FIELDS = ("time", "level", "logger", "message", "update_id", "chat_id")


class JsonFormatter(logging.Formatter):
    """LOG_FORMAT=json: one JSON object per line with JSON_FIELDS (update_id and chat_id null
    when the line is not about an update), and "exception" when there is one. It writes the
    record as the Redactor left it, like the text format."""

    def format(self, record: logging.LogRecord) -> str:
        known = UPDATE_CONTEXT.get() or (None, None)
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "update_id": getattr(record, "update_id", known[0]),
            "chat_id": getattr(record, "chat_id", known[1]),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def hold_content_loggers(level: int) -> None:
    """Keep the libraries' loggers that write content at or above their safe level."""
    for name, lowest in CONTENT_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, lowest))


def configure_logging(
    level: str,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    *,
    json_lines: bool = False,
) -> Redactor:
    """The process's logging: one handler on the root logger, at ``level``, behind a Redactor
    that hides ``secrets`` (add the sandbox's token later with `Redactor.hide`); ``json_lines``:
    one JSON object per line (JsonFormatter) instead of FORMAT."""
    redactor = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(FORMAT))
    handler.addFilter(redactor)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    number = logging.getLevelNamesMapping()[level]
    hold_content_loggers(number)
    held = [name for name, lowest in CONTENT_LOGGERS.items() if lowest > number]
    # Whoever turns on DEBUG to see PTB's requests learns why they are not there.
    log.debug("held at INFO or above, as they log content: %s", ", ".join(held))
    return redactor


__all__ = [
    "CONTENT_LOGGERS",
    "FORMAT",
    "JSON_FIELDS",
    "UPDATE_CONTEXT",
    "JsonFormatter",
    "Redactor",
    "configure_logging",
    "hold_content_loggers",
]
