"""run_bot.py as a person starts it: the README's first command (no token: sandbox, demo data,
playground), a clean stop on SIGTERM, and webhook mode against a Bot API that posts updates."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

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
    seen = []
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
