"""LOG_FORMAT=json: run_bot.py through a whole conversation at DEBUG (an account proof by e-mail
or postcode, a phone number, a handler failure): every line of the log is one JSON object with
the fixed fields, and no e-mail address, postcode, phone number or token is in any of them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from bot.logs import JSON_FIELDS, UPDATE_CONTEXT, configure_logging
from sandbox import Sandbox
from sandbox.client import SandboxClient
from tests.conftest import LINK_SECRET
from tests.test_logs import (  # noqa: F401 (the telegram fixture)
    APOLOGY,
    CHAT,
    EMAIL,
    OURS,
    PHONE,
    POSTCODE,
    ROOT,
    TEXTS,
    TOKEN,
    _text,
    _wait_for,
    exchange,
    telegram,
)


def test_a_json_line_has_the_fixed_fields_and_the_redactors_text() -> None:
    stream = io.StringIO()
    configure_logging("INFO", [TOKEN], stream, json_lines=True)
    try:
        log = logging.getLogger("bot.test")
        log.info("token %s for %s", TOKEN, "anna@example.com")
        marker = UPDATE_CONTEXT.set((4711, 51))
        try:
            try:
                raise ValueError(f"call +49 30 1234567 with {TOKEN}")
            except ValueError:
                log.exception("update %s failed", 4711)
        finally:
            UPDATE_CONTEXT.reset(marker)
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first) == list(JSON_FIELDS)
    assert first["level"] == "INFO" and first["logger"] == "bot.test"
    assert first["message"] == "token <secret> for <e-mail>"
    assert (first["update_id"], first["chat_id"]) == (None, None)
    assert list(second) == [*JSON_FIELDS, "exception"]
    assert (second["update_id"], second["chat_id"]) == (4711, 51)
    assert second["exception"].endswith("ValueError: call <phone> with <secret>")


# One proof here (a postcode, with an e-mail address and a phone number as messages): the
# text-format test in test_logs.py runs both proofs, and the lines differ only in format.
@pytest.mark.parametrize("proof", ["postcode"])
async def test_a_conversation_logged_as_json_at_debug_holds_no_private_data(
    proof: str,
    telegram: Sandbox,  # noqa: F811
    tmp_path: Path,
    demo_db_template: Path,
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
        LOG_FORMAT="json",
        NOTICE_JOB_INTERVAL_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "bot.log"
    with open(log, "wb") as out:  # noqa: ASYNC230 (opened once, before anything runs)
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "run_bot.py"), cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        await _wait_for(log, "is up", process)
        async with SandboxClient(telegram.url) as tg:
            await tg.create_user(CHAT, first_name="John", language_code="en")
            await exchange(tg, "/link")
            await exchange(tg, "100005")
            # The reply to the proof fails: the error handler logs the update that carried it.
            await tg.inject_fault("5xx", method="sendMessage", chat_id=CHAT, status=400)
            apology = await exchange(tg, EMAIL if proof == "email" else POSTCODE)
            other = f"I live at {POSTCODE}" if proof == "email" else f"write to {EMAIL}"
            for text in (f"my number is {PHONE}, {TEXTS[0]}", other):
                await tg.send_message(CHAT, text)
            await exchange(tg, "/help", until="What I can do")
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await process.wait()
    assert process.returncode == 0
    assert apology == [APOLOGY]
    lines = [json.loads(line) for line in _text(log).splitlines()]
    for line in lines:
        assert list(line)[: len(JSON_FIELDS)] == list(JSON_FIELDS), line
        assert set(line) <= {*JSON_FIELDS, "exception", "stack"}, line
    written = _text(log)
    for private in (EMAIL, "john.smith", POSTCODE, PHONE, "7946", *TEXTS, "quokka"):
        assert private not in written, private
    for secret in (TOKEN, TOKEN.split(":")[1], LINK_SECRET):
        assert secret not in written
    # The failure is there, with its update's ids, and DEBUG lines: the test looked.
    failed = [
        line
        for line in lines
        if line["level"] == "ERROR" and line["logger"] == "bot.handlers.errors"
    ]
    assert failed and failed[0]["chat_id"] == CHAT and isinstance(failed[0]["update_id"], int)
    assert "telegram.error.BadRequest: Internal Server Error" in failed[0]["exception"]
    assert any(line["level"] == "DEBUG" for line in lines)
