"""run_bot.py as a person starts it: the README's first command (no token: sandbox, demo data,
playground), a clean stop on SIGTERM, and webhook mode against a Bot API that posts updates."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.settings import Settings
from sandbox import Limits, Sandbox
from sandbox.client import SandboxClient
from tests.conftest import LINK_SECRET

ROOT = Path(__file__).resolve().parents[1]
OURS = {name.upper() for name in Settings.model_fields} | {"BACKORDER_SETTINGS_FILE"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "run_bot.py"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _read_until(process: asyncio.subprocess.Process, marker: str, within: float) -> str:
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(within):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError("run_bot.py ended early:\n" + "".join(seen))
            seen.append(line)
            if marker in line:
                return line


async def _stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        await process.communicate()
    assert process.returncode is not None
    return process.returncode


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    # Only what each test sets: a developer's own settings would change what is tested.
    env = {k: v for k, v in os.environ.items() if k.upper() not in OURS}
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}",
        LOG_LEVEL="INFO",
        NOTICE_JOB_INTERVAL_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    return env


async def test_without_a_token_it_runs_the_sandbox_with_demo_data(
    base_env: dict[str, str],
) -> None:
    port = _free_port()
    process = await _start({**base_env, "SANDBOX_PORT": str(port)})
    try:
        # Codes signed with a secret from the README link accounts in the sandbox only, and
        # the log says so.
        warning = await _read_until(process, "development secret", within=60)
        assert warning.split(" ", 2)[2].strip() == (
            "WARNING backorder-bot: sandbox mode: link codes are signed with the development "
            "secret, which anyone can read in the README; with a BOT_TOKEN the bot needs a "
            "LINK_SECRET of its own"
        )
        line = await _read_until(process, "Sandbox playground:", within=60)
        assert f"http://127.0.0.1:{port}/" in line
        await _read_until(process, "is up", within=30)
        async with SandboxClient(f"http://127.0.0.1:{port}") as tg:
            await tg.create_user(31, first_name="Anna", language_code="en")
            replies = await tg.say(31, "/stock KET-0001", timeout=10, quiet=0.3)
        # The demo shop was loaded into the empty database.
        assert replies[0]["text"].startswith("✅ Steel Kettle 1.7 l is in stock")
    finally:
        code = await _stop(process)
    assert code == 0


async def test_a_restart_on_the_same_database_answers_the_new_sandboxs_first_message(
    base_env: dict[str, str],
) -> None:
    """Each start runs a new sandbox: its update ids go on past those the store saved (update
    1 answered in the last run), or the bot drops the new update 1 as a re-delivery."""
    for run, user in enumerate((31, 32)):
        port = _free_port()
        process = await _start({**base_env, "SANDBOX_PORT": str(port)})
        try:
            await _read_until(process, "is up", within=60)
            async with SandboxClient(f"http://127.0.0.1:{port}") as tg:
                await tg.create_user(user, first_name="Anna", language_code="en")
                replies = await tg.say(user, "/stock KET-0001", timeout=10, quiet=0.3)
            assert [r["text"].split("\n")[0] for r in replies] == [
                "✅ Steel Kettle 1.7 l is in stock: you can buy it now and it ships right away."
            ], run
        finally:
            code = await _stop(process)
        assert code == 0


async def test_a_bad_setting_stops_start_up_with_one_line(base_env: dict[str, str]) -> None:
    process = await _start({**base_env, "SHOP_TIMEZONE": "Mars/Olympus"})
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode == 2
    assert output.decode().strip().splitlines() == [
        "backorder-bot: invalid setting SHOP_TIMEZONE: unknown time zone"
    ]


@pytest.mark.parametrize(
    ("link_secret", "reason"),
    [
        (
            None,
            "must be set when BOT_TOKEN is: a random string of at least 32 characters, e.g. from"
            " python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        ),
        (
            "change-me-in-production",
            "is the sandbox's development secret, which anyone can read in the README",
        ),
    ],
)
async def test_a_real_token_without_a_link_secret_of_its_own_refuses_to_start(
    base_env: dict[str, str], link_secret: str | None, reason: str
) -> None:
    env = {**base_env, "BOT_TOKEN": "7000000001:AAHfakefakefakefakefakefakefakefake1"}
    if link_secret is not None:
        env["LINK_SECRET"] = link_secret
    process = await _start(env)
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode == 2
    assert output.decode().strip().splitlines() == [
        f"backorder-bot: invalid setting LINK_SECRET: {reason}"
    ]


@pytest.fixture
async def telegram() -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(limits=Limits(enabled=False))
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()


async def test_with_a_webhook_url_updates_arrive_by_webhook(
    base_env: dict[str, str], telegram: Sandbox
) -> None:
    port = _free_port()
    env = {
        **base_env,
        "BOT_TOKEN": telegram.token,
        "BOT_API_BASE_URL": telegram.api_base,
        "BOT_API_FILE_URL": telegram.file_base,
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram-hook",
        "WEBHOOK_LISTEN": "127.0.0.1",
        "WEBHOOK_PORT": str(port),
        "WEBHOOK_SECRET": "s3cret-token",
        "LINK_SECRET": LINK_SECRET,
    }
    process = await _start(env)
    try:
        await _read_until(process, "is up", within=60)
        async with SandboxClient(telegram.url) as tg:
            await tg.create_user(32, first_name="Eve", language_code="de")
            replies = await tg.say(32, "/help", timeout=10, quiet=0.3)
            webhook_calls = await tg.calls("setWebhook")
            polls = await tg.calls("getUpdates")
        assert replies[0]["text"].startswith("Was ich kann")
        [call] = webhook_calls
        assert call["params"]["url"] == f"http://127.0.0.1:{port}/telegram-hook"
        assert call["params"]["secret_token"] == "s3cret-token"
        assert polls == []
    finally:
        code = await _stop(process)
    assert code == 0


# --- webhooks are always verified ----------------------------------------------------------

ANNA = 1
ANNA_CHAT = 41
MENU_ALL_ON = (
    "🔔 What I tell you about first\nTap a topic to switch it on or off.\n\n"
    "Offers to cancel or keep waiting when an item is badly delayed always come, because they "
    "need your answer."
)


def _rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """What a forged update could change: Anna's order lines, her notice settings, the chat,
    and the updates the bot took in."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {
            "lines": conn.execute(
                "SELECT l.line_no, l.qty_waiting, l.qty_allocated, l.qty_cancelled"
                " FROM order_lines l JOIN orders o ON o.order_id = l.order_id"
                " WHERE o.order_number = '100002' ORDER BY l.line_no"
            ).fetchall(),
            "notices": conn.execute(
                "SELECT notify_delays, notify_back_in_stock, notify_shipping FROM customers"
                " WHERE customer_id = ?",
                (ANNA,),
            ).fetchall(),
            "inbox": conn.execute("SELECT update_id FROM update_inbox ORDER BY 1").fetchall(),
        }


@pytest.fixture
async def anna_db(tmp_path: Path, demo_db_template: Path) -> Path:
    """The demo shop with Anna's chat linked, as a shop's real store would have it."""
    from store import open_store
    from store.chats import link_chat, set_chat_language, touch_chat

    path = tmp_path / "shop.sqlite3"
    shutil.copyfile(demo_db_template, path)
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    try:
        async with store.begin() as conn:
            await touch_chat(conn, ANNA_CHAT)
            await link_chat(conn, ANNA_CHAT, ANNA)
            await set_chat_language(conn, ANNA_CHAT, "en")
    finally:
        await store.close()
    return path


async def test_without_a_webhook_secret_forged_updates_are_refused_and_change_nothing(
    base_env: dict[str, str], telegram: Sandbox, anna_db: Path
) -> None:
    port = _free_port()
    hook = f"http://127.0.0.1:{port}/telegram-hook"
    env = {
        **base_env,
        "BOT_TOKEN": telegram.token,
        "BOT_API_BASE_URL": telegram.api_base,
        "BOT_API_FILE_URL": telegram.file_base,
        "DATABASE_URL": f"sqlite+aiosqlite:///{anna_db}",
        "LINK_SECRET": LINK_SECRET,
        # No WEBHOOK_SECRET and no WEBHOOK_LISTEN: the defaults are what is tested.
        "WEBHOOK_URL": hook,
        "WEBHOOK_PORT": str(port),
    }
    process = await _start(env)
    try:
        await _read_until(process, "is up", within=60)
        async with SandboxClient(telegram.url) as tg:
            await tg.create_user(ANNA_CHAT, first_name="Anna", language_code="en")
            # Telegram's own deliveries carry the secret it was given, and are answered.
            [help_reply] = await tg.say(ANNA_CHAT, "/help", timeout=10, quiet=0.3)
            [call] = await tg.calls("setWebhook")
            line = _rows(anna_db)["lines"][0][0]
            before = _rows(anna_db)
            assert before["lines"][0][1] > 0 and before["notices"] == [(1, 1, 1)]

            anna = {"id": ANNA_CHAT, "is_bot": False, "first_name": "Anna", "language_code": "en"}
            forged = [
                # Confirm the cancellation of a waiting line of Anna's order.
                {
                    "update_id": 900_000_001,
                    "callback_query": {
                        "id": "9000000001",
                        "from": anna,
                        "message": help_reply["message"],
                        "chat_instance": "1",
                        "data": f"cxy:100002:{line}",
                    },
                },
                {
                    "update_id": 900_000_002,
                    "message": {
                        "message_id": 900_000_002,
                        "date": int(time.time()),
                        "chat": {"id": ANNA_CHAT, "type": "private", "first_name": "Anna"},
                        "from": anna,
                        "text": "stop sending me updates",
                    },
                },
            ]
            statuses = []
            async with aiohttp.ClientSession() as http:
                for update in forged:
                    for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "guess"}):
                        async with http.post(hook, json=update, headers=headers) as resp:
                            statuses.append(resp.status)
            # Had the bot taken any of them, it would have handled them before this message
            # of the same chat (one chat's updates are handled in order).
            menu = await tg.say(ANNA_CHAT, "/notifications", timeout=10, quiet=0.3)
        assert statuses == [403, 403, 403, 403]
        assert [m["text"] for m in menu] == [MENU_ALL_ON]
        after = _rows(anna_db)
        assert after["lines"] == before["lines"]
        assert after["notices"] == before["notices"]
        assert not {(900_000_001,), (900_000_002,)} & set(after["inbox"])
        # A random secret for this run, in the alphabet Telegram allows for it.
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", call["params"]["secret_token"])
        assert help_reply["text"].startswith("What I can do")
    finally:
        code = await _stop(process)
    assert code == 0
