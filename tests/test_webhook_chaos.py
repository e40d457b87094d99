"""The bot in webhook mode under the chaos the polling bot is tested under (test_chaos_load,
test_chaos_restart): the sandbox delivers each update by POST with the secret header, one at a
time and in order, and sends it again until the bot answers 2xx, as Telegram does.

- 429 storms and 5xx on sendMessage: every chat reads exactly what the polling bot's chats
  read under the same faults.
- kill -9 of run_bot.py in webhook mode in the middle of a load, then a new process on the
  same port: the deliveries refused meanwhile come again, the inbox replays what the dead
  process had taken and not answered, nothing is lost, and only what was out and not marked
  answered at the kill is answered twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from telegram import Update

from bot.app import build_application
from bot.context import BotApplication
from bot.settings import Settings
from sandbox import Sandbox
from sandbox.client import SandboxClient
from store import Store
from store.inbox import count_updates
from tests.chaos_helpers import (
    GREETING,
    HELP,
    Handled,
    Load,
    all_bot_texts,
    build_load,
    call_seq,
    enqueue,
    prepare,
    sends_of_the_killed,
    settled_after_kill,
    successful_sends,
    wait_for,
)
from tests.conftest import LINK_SECRET, Clock
from tests.test_chaos_load import (
    BAD_GATEWAY,
    SERVER_ERROR,
    waves,
)
from tests.test_chaos_restart import missing

ROOT = Path(__file__).resolve().parents[1]
SECRET = "webhook-chaos-secret"
# Only a ceiling: every wait is on a condition (as test_chaos_restart's).
DEADLINE = 180.0

pytestmark = pytest.mark.sqlite_only(
    "time: the chaos tests run on SQLite (as test_chaos_restart); the webhook's store path is"
    " the polling one's (bot/inbox.py), which PostgreSQL tests cover"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hook_port() -> int:
    return free_port()


@pytest.fixture
def bot_environ(hook_port: int) -> dict[str, str]:
    # As test_chaos_load's, and the webhook.
    return {
        "REQUEST_TIMEOUT": "4",
        "MAX_RETRIES": "2",
        "REPLIES_PER_SECOND": "0",
        "WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
        "WEBHOOK_PORT": str(hook_port),
        "WEBHOOK_SECRET": SECRET,
    }


@asynccontextmanager
async def webhook_bot(
    settings: Settings, store: Store, clock: Clock
) -> AsyncIterator[BotApplication]:
    """The application with PTB's webhook server, started as run_webhook starts it."""
    app = build_application(settings, store, now=clock)
    await app.initialize()
    assert app.post_init is not None and app.post_shutdown is not None
    await app.post_init(app)
    await app.start()
    assert app.updater is not None and settings.webhook_url is not None
    await app.updater.start_webhook(
        listen="127.0.0.1",
        port=settings.webhook_port,
        url_path="hook",
        webhook_url=settings.webhook_url,
        secret_token=SECRET,
        allowed_updates=Update.ALL_TYPES,
    )
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await app.post_shutdown(app)


@pytest.fixture
async def bot(settings: Settings, store: Store, clock: Clock) -> AsyncIterator[BotApplication]:
    async with webhook_bot(settings, store, clock) as app:
        yield app


async def test_by_webhook_429_storms_and_5xx_leave_every_chat_exact(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    """test_chaos_load's first two waves (the answers' path is the polling bot's; slow
    answers and drops are tested there): every chat's round-0 answer refused once with 429,
    then 502s and 500s on some chats' round-1 answers."""
    load = build_load(unlinked=10)
    await prepare(tg, store, load)
    handled = Handled(bot)
    sent: list[tuple[int, int]] = []
    for at, faults in enumerate(waves(load.chats)[:2]):
        for fault in faults:
            if fault["method"] != "getUpdates" and fault.get("chat_id") in load.chats:
                await tg.inject_fault(**fault)
        wave = await enqueue(tg, load, range(at, at + 1))
        await handled.all_of(wave, within=DEADLINE)
        await tg.clear_faults()
        sent += wave
    assert len(sent) == 2 * len(load.chats) == 28
    assert set(handled.seen) == set(sent)
    assert set(handled.seen.values()) == {1}
    # The 429s are waited out and the 5xx sent again: every answer, once, no apology.
    texts = await all_bot_texts(tg, load.chats)
    assert texts == {chat: load.expected(chat)[:2] for chat in load.chats}
    calls = await tg.calls()
    status = Counter((c["method"].lower(), c["status"]) for c in calls)
    assert status[("sendmessage", 429)] == len(load.chats)
    assert status[("sendmessage", 502)] == len(BAD_GATEWAY)
    assert status[("sendmessage", 500)] == len(SERVER_ERROR)
    assert status[("getupdates", 200)] == 0  # updates came by webhook only


async def test_deliveries_refused_while_the_bot_is_down_come_again_once_it_is_back(
    settings: Settings, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    load = build_load(unlinked=20)
    await prepare(tg, store, load)
    async with webhook_bot(settings, store, clock):
        pass  # the webhook is set; now nobody listens on its port
    sent = await enqueue(tg, load, range(0, 1))
    await asyncio.sleep(0.3)  # the sandbox meets a closed port and keeps the updates
    assert (await tg.stats())["pending_updates"] == len(sent)
    async with webhook_bot(settings, store, clock) as app:
        handled = Handled(app)
        await handled.all_of(sent, within=DEADLINE)
    texts = await all_bot_texts(tg, load.chats)
    assert texts == {chat: load.expected(chat)[:1] for chat in load.chats}


# --- kill -9 ---------------------------------------------------------------------------------


class Bots:
    def __init__(self, environ: dict[str, str], log: Path) -> None:
        self.environ = environ
        self.log = log
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as err:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "run_bot.py")],
                env=self.environ,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.running.append(process)
        return process

    async def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            # Waited for off the event loop: a bot's shutdown talks to the sandbox, which runs on
            # it (waiting on the loop froze the sandbox, and every stop ran into the timeout).
            try:
                await asyncio.to_thread(process.wait, 60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
async def bots(
    sandbox: Sandbox, db_url: str, tmp_path: Path, hook_port: int
) -> AsyncIterator[Bots]:
    environ = {
        **os.environ,
        "BOT_TOKEN": sandbox.token,
        "BOT_API_BASE_URL": sandbox.api_base,
        "BOT_API_FILE_URL": sandbox.file_base,
        "DATABASE_URL": db_url,
        "LINK_SECRET": LINK_SECRET,
        "SHOP_NAME": "Demo Shop",
        "NOTICE_JOB_INTERVAL_SECONDS": "0",
        "REPLIES_PER_SECOND": "0",
        "LOG_LEVEL": "WARNING",
        "WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
        "WEBHOOK_PORT": str(hook_port),
        "WEBHOOK_SECRET": SECRET,
    }
    started = Bots(environ, tmp_path / "bot.log")
    try:
        yield started
    finally:
        await started.stop_all()


async def test_run_bot_by_webhook_killed_mid_load_and_restarted_answers_everything(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    load: Load = build_load(unlinked=12)
    await prepare(tg, store, load)
    sent = await enqueue(tg, load)
    assert len(sent) == load.updates == 64

    first = bots.start()

    async def answering() -> bool:
        assert first.poll() is None, bots.log.read_text()
        return await successful_sends(tg) >= 20

    await wait_for(answering, DEADLINE, "the first bot to answer 20 messages")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    killed_at = await call_seq(tg)
    await settled_after_kill(store, DEADLINE)
    async with store.connect() as conn:
        unanswered_at_kill, marked_at_kill = await count_updates(conn)

    second = bots.start()
    # The sends the sandbox had fully received before the kill (see sends_of_the_killed).
    answered_at_kill = len(await sends_of_the_killed(tg, killed_at, DEADLINE))
    assert answered_at_kill < load.updates
    sent_unmarked = answered_at_kill - marked_at_kill
    assert 0 <= sent_unmarked <= unanswered_at_kill
    marks = await tg.bulk(messages=[{"user_id": chat, "text": "/help"} for chat in load.chats])
    assert len(marks["messages"]) == len(load.chats)

    async def marked() -> bool:
        assert second.poll() is None, bots.log.read_text()
        texts = await all_bot_texts(tg, load.chats)
        return all(HELP in t for t in texts.values())

    await wait_for(marked, DEADLINE, "every chat's last answer")
    texts = await all_bot_texts(tg, load.chats)
    lost = {
        chat: n for chat in load.chats if (n := missing([*load.expected(chat), HELP], texts[chat]))
    }
    assert not lost, f"answers never came: {lost}"
    repeated = sum(len(t) - len(load.expected(chat)) - 1 for chat, t in texts.items())
    assert repeated <= sent_unmarked, (repeated, answered_at_kill, marked_at_kill)
    assert (await tg.stats())["pending_updates"] == 0
    async with store.connect() as conn:
        assert (await count_updates(conn))[0] == 0
    # Never a forged delivery: every POST carried the secret (PTB answers 403 otherwise).
    assert "403" not in bots.log.read_text()
    assert GREETING in texts[load.chats[-1]]
