"""No customer's data and no secret in the log, at any level: the redacting filter on its own,
and a whole conversation with run_bot.py at LOG_LEVEL=DEBUG, a handler failure included."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.logs import CONTENT_LOGGERS, Redactor, configure_logging
from bot.settings import Settings
from sandbox import Limits, Sandbox
from sandbox.client import SandboxClient
from store import open_store
from tests.conftest import LINK_SECRET

ROOT = Path(__file__).resolve().parents[1]
OURS = {name.upper() for name in Settings.model_fields} | {"BACKORDER_SETTINGS_FILE"}

# Shaped like a real one: digits, a colon, 35 characters.
TOKEN = "7123456789:AAE" + "Zq8xK2vL9mN4pR7sT1uW3yB6cD5fG0hJ2k"


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, exc_info)


def redacted(msg: str, *args: object, secrets: tuple[str, ...] = (TOKEN,)) -> str:
    rec = record(msg, *args)
    assert Redactor(secrets).filter(rec)
    return rec.getMessage()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            f"POST https://api.telegram.org/bot{TOKEN}/sendMessage",
            "POST https://api.telegram.org/bot<secret>/sendMessage",
        ),
        # A token the filter was not told about: by its shape, and by its place in a URL.
        (
            "token 6000000001:AAHabcdefghijklmnopqrstuvwxyz0123456 leaked",
            "token <token> leaked",
        ),
        ("GET /bot123456:SANDBOX-TOKEN/getMe", "GET /bot<token>/getMe"),
        ("GET /file/bot123456:SANDBOX-TOKEN/photo.jpg", "GET /file/bot<token>/photo.jpg"),
        (
            "from anna.schmidt@example.com, cc: ivan+x@mail.example.ru",
            "from <e-mail>, cc: <e-mail>",
        ),
        ("call +49 30 1234567.", "call <phone>."),
        ("call 030 1234567 or (030) 123-4567", "call <phone> or <phone>"),
        ("mobile 01711234567", "mobile <phone>"),
        ("+44 20 7946 0000", "<phone>"),
    ],
)
def test_secrets_addresses_and_phone_numbers_are_replaced(line: str, expected: str) -> None:
    assert redacted(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        # What the log needs to stay useful: ids, dates, times, addresses, counts.
        "update 581234567 (message, chat 123456789) failed",
        "could not post in topic 17 of chat -1001000000999: Forbidden",
        "restock PO-000001 moved 2026-12-03 -> 2026-12-20",
        "order 100002, line 1: 2 units at 09:00-18:00",
        "listening on 127.0.0.1:8443",
        "bot @backorder_demo_bot is up",
        "replaying 12 updates fetched but not answered before",
    ],
)
def test_ids_dates_and_addresses_are_kept(line: str) -> None:
    assert redacted(line) == line


def test_arguments_and_exception_text_are_redacted_too() -> None:
    try:
        raise ValueError(f"no customer anna.schmidt@example.com at /bot{TOKEN}/getChat")
    except ValueError as exc:
        rec = record("update %s from %s failed", 7, "+49 30 1234567", exc=exc)
    Redactor([TOKEN]).filter(rec)
    formatted = logging.Formatter().format(rec)
    assert formatted.splitlines()[0] == "update 7 from <phone> failed"
    assert formatted.splitlines()[-1] == (
        "ValueError: no customer <e-mail> at /bot<secret>/getChat"
    )


def test_a_short_secret_is_not_hidden_where_it_would_eat_words() -> None:
    # Only the sandbox allows a short LINK_SECRET; hiding "shop" would garble every line.
    assert redacted("shop is up", secrets=("shop",)) == "shop is up"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the process's logging; put back what pytest had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in CONTENT_LOGGERS}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)


@pytest.mark.usefixtures("restore_logging")
def test_the_process_log_handler_redacts_and_holds_the_content_loggers() -> None:
    out = io.StringIO()
    redactor = configure_logging("DEBUG", [TOKEN], stream=out)
    redactor.hide("123456:SANDBOX-TOKEN")  # the sandbox's, known once it runs
    logging.getLogger("bot.test").info("chat 5 wrote %s", "anna.schmidt@example.com")
    logging.getLogger("bot.test").info("GET /bot123456:SANDBOX-TOKEN/getMe %s", TOKEN)
    logging.getLogger("telegram.ext.Application").debug("Processing update %s", "secret words")
    logging.getLogger("aiosqlite").debug("executing %s", "anna.schmidt@example.com")
    logging.getLogger("httpx").info("HTTP Request: POST %s", TOKEN)
    # PTB's webhook server, for an update it cannot read.
    logging.getLogger("telegram.ext.Updater").critical(
        "Something went wrong processing the data received from Telegram. "
        "Received data was *not* processed! Received data was: %r",
        {"message": {"text": "secret words"}},
    )
    lines = [line.split(" ", 2)[2] for line in out.getvalue().splitlines()]
    assert lines == [
        "DEBUG bot.logs: held at INFO or above, as they log content: "
        "telegram, aiosqlite, httpcore, hpack, httpx, sqlalchemy, apscheduler",
        "INFO bot.test: chat 5 wrote <e-mail>",
        "INFO bot.test: GET /bot<secret>/getMe <secret>",
        "CRITICAL telegram.ext.Updater: Something went wrong processing the data received from "
        "Telegram. Received data was *not* processed! Received data was: '<not logged>'",
    ]


async def test_a_store_error_does_not_carry_what_the_customer_gave(tmp_path: Path) -> None:
    """SQLAlchemy writes a failed statement's parameters into its error's text, and the error
    handler logs the error: the store's engines leave them out."""
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'shop.sqlite3'}")
    bad = text("SELECT customer_id FROM customers WHERE mail = :mail")

    async def query(conn: AsyncConnection) -> object:
        return await conn.execute(bad, {"mail": "anna.schmidt@example.com"})

    errors = []
    try:
        # Through the pool (aiosqlite) and on the event loop's thread (Store.read).
        async with store.connect() as conn:
            with pytest.raises(DBAPIError) as pooled:
                await query(conn)
        errors.append(str(pooled.value))
        with pytest.raises(DBAPIError) as inline:
            await store.read(query)
        errors.append(str(inline.value))
    finally:
        await store.close()
    for error in errors:
        assert "no such column: mail" in error
        assert "anna.schmidt" not in error
        assert "[SQL parameters hidden due to hide_parameters=True]" in error


# --- a whole conversation at DEBUG ------------------------------------------------------------

CHAT = 51
EMAIL = "john.smith@example.com"
POSTCODE = "SW1A 1AA"
PHONE = "+44 20 7946 0000"
# Words no log line has any business containing.
TEXTS = ("zebra quokka lighthouse", "purple-umbrella-quokka")
APOLOGY = (
    "Sorry, something went wrong on our side. Please try again in a moment.\n"
    "If it keeps happening, tap “Talk to a person”."
)


async def exchange(tg: SandboxClient, text: str, until: str | None = None) -> list[str]:
    """Send ``text`` and wait for one reply, or for the reply starting with ``until``: by count,
    not by a quiet time, which a busy machine can outlast between two replies."""
    sent = await tg.send_message(CHAT, text)
    replies: list[str] = []
    last = sent["message_id"]
    while not replies or (until is not None and not replies[-1].startswith(until)):
        more = await tg.collect(CHAT, last, timeout=30, quiet=0)
        assert more, f"no reply to {text!r} after {replies}"
        replies += [m["text"] for m in more]
        last = more[-1]["message_id"]
    return replies


@pytest.fixture
async def telegram() -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(token=TOKEN, limits=Limits(enabled=False))
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


async def _wait_for(log: Path, marker: str, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(60):
        while marker not in _text(log):
            if process.returncode is not None:
                raise AssertionError("run_bot.py ended early:\n" + _text(log))
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("proof", ["email", "postcode"])
async def test_a_conversation_at_debug_leaves_no_private_data_in_the_log(
    proof: str, telegram: Sandbox, tmp_path: Path, demo_db_template: Path
) -> None:
    db = tmp_path / "shop.sqlite3"
    shutil.copyfile(demo_db_template, db)
    env = {k: v for k, v in os.environ.items() if k.upper() not in OURS}
    env.update(
        BOT_TOKEN=TOKEN,
        BOT_API_BASE_URL=telegram.api_base,
        BOT_API_FILE_URL=telegram.file_base,
        DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        LINK_SECRET=LINK_SECRET,
        LINK_PROOF=proof,
        LOG_LEVEL="DEBUG",
        NOTICE_JOB_INTERVAL_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "bot.log"
    with open(log, "wb") as out:  # noqa: ASYNC230 (opened once, before anything runs)
        # To a file: a DEBUG log can outgrow a pipe nobody reads while the test talks.
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "run_bot.py"), cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        await _wait_for(log, "is up", process)
        async with SandboxClient(telegram.url) as tg:
            await tg.create_user(CHAT, first_name="John", language_code="en")
            asked = [*await exchange(tg, "/link"), *await exchange(tg, "100005")]
            # The reply to the proof fails (Telegram refuses it): the error handler logs the
            # update that carried the e-mail address or postcode, and apologises.
            await tg.inject_fault("5xx", method="sendMessage", chat_id=CHAT, status=400)
            apology = await exchange(tg, EMAIL if proof == "email" else POSTCODE)
            other = f"I live at {POSTCODE}" if proof == "email" else f"write to {EMAIL}"
            for text in (f"my number is {PHONE}, {TEXTS[0]}", other, "where is my order?"):
                await tg.send_message(CHAT, text)
            await exchange(tg, f"/stock {TEXTS[1]}")
            # The chat's updates are handled in order: once /help is answered, all were.
            await exchange(tg, "/help", until="What I can do")
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await process.wait()
    assert process.returncode == 0
    assert asked[0].startswith("Let's link your customer account to this chat.")
    assert asked[1].startswith("To show you order 100005, I need to make sure it's yours.")
    assert apology == [APOLOGY]
    written = _text(log)
    for private in (EMAIL, "john.smith", POSTCODE, PHONE, "7946", *TEXTS, "quokka"):
        assert private not in written, private
    for secret in (TOKEN, TOKEN.split(":")[1], LINK_SECRET):
        assert secret not in written
    # The failure and the DEBUG level are in it: the test looked where the leaks were.
    failed = r"ERROR bot\.handlers\.errors: update \d+ \(message, chat 51\) failed"
    assert re.search(failed, written)
    assert "telegram.error.BadRequest: Internal Server Error" in written
    assert "DEBUG bot.logs: held at INFO or above, as they log content: telegram," in written
