"""Issue #7, kill -9 under load: the bot runs in its own process the way run_bot.py runs it
(tests/notice_bot_process.py: settings from the environment, long polling) against the sandbox
in this process; 256 updates from 64 chats wait for it; it is killed with SIGKILL while
answering them and started again on the same store.

What Telegram's getUpdates allows: an update is confirmed by the next getUpdates whose offset
is above its id, and only unconfirmed updates are delivered again. So after a kill, the
updates that were unconfirmed at that moment (and only those) may be handled twice; every
other update is handled by exactly one of the two processes. Nothing may be lost: every
message gets its answer, in order, whichever process gives it.

Notices queued in the outbox at the kill are covered by
tests/bot/test_notice_restart.py (every customer hears, repeats bounded by what was in
flight); this test has the notice job off and is about answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.client import SandboxClient
from store import Store
from tests.chaos_helpers import (
    HELP,
    Load,
    all_bot_texts,
    build_load,
    enqueue,
    prepare,
    successful_sends,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 30.0


@pytest.fixture
def environ(sandbox: Sandbox, db_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "BOT_TOKEN": sandbox.token,
        "BOT_API_BASE_URL": sandbox.api_base,
        "BOT_API_FILE_URL": sandbox.file_base,
        "DATABASE_URL": db_url,
        "SHOP_NAME": "Demo Shop",
        "NOTICE_JOB_INTERVAL_SECONDS": "0",
        "REPLIES_PER_SECOND": "0",
        "LOG_LEVEL": "WARNING",
    }


class Bots:
    """Bot processes started by a test; whatever is still running at the end is killed."""

    def __init__(self, environ: dict[str, str], log: Path) -> None:
        self.environ = environ
        self.log = log
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as err:
            process = subprocess.Popen(
                # As a module from the repo root (tests/bot would shadow the bot package).
                [sys.executable, "-m", "tests.notice_bot_process"],
                env=self.environ,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.running.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def bots(environ: dict[str, str], tmp_path: Path) -> Iterator[Bots]:
    started = Bots(environ, tmp_path / "bot.log")
    try:
        yield started
    finally:
        started.stop_all()


def missing(wanted: list[str], got: list[str]) -> int:
    """How many of `wanted`, in order, `got` lacks (repeats in `got` are skipped over)."""
    at, lacking = 0, 0
    for text in wanted:
        try:
            at = got.index(text, at) + 1
        except ValueError:
            lacking += 1
    return lacking


@pytest.mark.xfail(
    strict=True,
    reason="bug: PTB's Updater confirms updates (next getUpdates offset) as soon as it has "
    "fetched them, before the bot handled them; a kill loses every fetched, unhandled update "
    "(here ~170 of 256, with none left unconfirmed at the kill)",
)
async def test_killed_mid_load_and_restarted_answers_everything_repeating_only_unconfirmed(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    load: Load = build_load(unlinked=60)
    await prepare(tg, store, load)
    sent = await enqueue(tg, load)
    assert len(sent) == load.updates == 256

    first = bots.start()

    async def answering() -> bool:
        assert first.poll() is None, bots.log.read_text()
        return await successful_sends(tg) >= 80

    await wait_for(answering, DEADLINE, "the first bot to answer 80 messages")
    bots.kill(first)
    answered_at_kill = await successful_sends(tg)
    # Only what was not yet confirmed to the Bot API may come again.
    unconfirmed_at_kill = (await tg.stats())["pending_updates"]
    assert answered_at_kill < load.updates  # really killed in the middle

    second = bots.start()

    async def all_taken() -> bool:
        assert second.poll() is None, bots.log.read_text()
        return (await tg.stats())["pending_updates"] == 0

    await wait_for(all_taken, DEADLINE, "the second bot to take every update")
    # Then /help in every chat: its answer (no other message is the help) comes after
    # everything the chat said before, each chat's updates being handled in order; once it is
    # there, the chat is done, repeats included.
    marks = await tg.bulk(messages=[{"user_id": chat, "text": "/help"} for chat in load.chats])
    assert len(marks["messages"]) == len(load.chats)

    async def marked() -> bool:
        assert second.poll() is None, bots.log.read_text()
        texts = await all_bot_texts(tg, load.chats)
        return all(HELP in t for t in texts.values())

    await wait_for(marked, DEADLINE, "every chat's last answer")

    texts = await all_bot_texts(tg, load.chats)
    lost = {chat: missing([*load.expected(chat), HELP], texts[chat]) for chat in load.chats}
    assert sum(lost.values()) == 0, (
        f"{sum(lost.values())} answers never came, in {sum(1 for n in lost.values() if n)} "
        f"chats; {answered_at_kill} had been sent at the kill, "
        f"{unconfirmed_at_kill} updates were unconfirmed then"
    )
    repeated = sum(len(t) - len(load.expected(chat)) - 1 for chat, t in texts.items())
    assert repeated <= unconfirmed_at_kill
    assert "database is locked" not in bots.log.read_text()
