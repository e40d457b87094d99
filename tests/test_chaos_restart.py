"""Issue #7, kill -9 under load: the bot runs in its own process the way run_bot.py runs it
(tests/notice_bot_process.py: settings from the environment, long polling) against the sandbox
in this process; 256 updates from 64 chats wait for it; it is killed with SIGKILL while
answering them and started again on the same store.

Telegram confirms an update with the next getUpdates (whose offset is above its id), which PTB
sends before the bot has handled the batch; so the bot saves each batch in its inbox
(bot/inbox.py) before that, marks updates answered once handled (at the event loop's next
turn) and replays the unanswered ones on start. Nothing may be lost: every message gets its
answer, in order, whichever process gives it. After the kill, an update is answered twice
only if its answer went out and its answered mark was not committed: those in flight at the
kill and those whose handling ended in the loop's last turn. So the repeats are at
most the answers sent at the kill minus the updates marked answered then, and those updates
are among the inbox's unanswered rows at the kill.

Notices queued in the outbox at the kill are covered by
tests/bot/test_notice_restart.py (every customer hears, repeats bounded by what was in
flight); this test has the notice job off and is about answers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.client import SandboxClient
from store import Store
from store.inbox import count_updates
from tests.chaos_helpers import (
    HELP,
    Load,
    all_bot_texts,
    build_load,
    build_long_load,
    call_seq,
    enqueue,
    marked_per_chat,
    prepare,
    sends_of_the_killed,
    settled_after_kill,
    successful_sends,
    wait_for,
)
from tests.conftest import LINK_SECRET

ROOT = Path(__file__).resolve().parents[1]
# Only a ceiling: every wait is on a condition and ends as soon as it holds. 30 s ran out twice
# on PostgreSQL at a load of 13 (two bot processes start and answer 320 updates); at a load of
# 15 each test took 45-55 s in all, its longest wait about half of that.
DEADLINE = 180.0


@pytest.fixture
def environ(sandbox: Sandbox, db_url: str) -> dict[str, str]:
    return {
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
        # Reaped, so its sockets are closed before anything is counted (this holds up the
        # event loop, and with it the sandbox, for the moment it takes).
        process.wait(timeout=60)

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
async def bots(environ: dict[str, str], tmp_path: Path) -> AsyncIterator[Bots]:
    started = Bots(environ, tmp_path / "bot.log")
    try:
        yield started
    finally:
        await started.stop_all()


def missing(wanted: list[str], got: list[str]) -> int:
    """How many of `wanted`, in order, `got` lacks; repeats in `got` are skipped over. A
    replayed update whose step its first run had saved gets the question itself again (see
    tests/bot/test_inbox.py), so a replay has nothing but the very answers to give."""
    at, lacking = 0, 0
    for text in wanted:
        if text in got[at:]:
            at = got.index(text, at) + 1
        else:
            lacking += 1
    return lacking


async def test_killed_mid_load_and_restarted_answers_everything_repeating_only_unmarked(
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
    killed_at = await call_seq(tg)
    await settled_after_kill(store, DEADLINE)
    async with store.connect() as conn:
        unanswered_at_kill, marked_at_kill = await count_updates(conn)

    second = bots.start()
    answered_at_kill = len(await sends_of_the_killed(tg, killed_at, DEADLINE))
    assert answered_at_kill < load.updates  # really killed in the middle
    # Every update marked answered had had its one answer; the rest of the answers were for
    # updates in flight or in the last flush window, which the inbox still holds unanswered.
    sent_unmarked = answered_at_kill - marked_at_kill
    assert 0 <= sent_unmarked <= unanswered_at_kill

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
    found = {chat: missing([*load.expected(chat), HELP], texts[chat]) for chat in load.chats}
    lost = {chat: n for chat, n in found.items() if n}
    assert not lost, (
        f"{sum(lost.values())} answers never came, in {len(lost)} chats; "
        f"{answered_at_kill} had been sent at the kill, "
        f"{marked_at_kill} updates were marked answered then"
    )
    repeated = sum(len(t) - len(load.expected(chat)) - 1 for chat, t in texts.items())
    assert repeated <= sent_unmarked, (
        f"{repeated} answers repeated; at the kill {answered_at_kill} answers were out and "
        f"{marked_at_kill} updates marked answered ({unanswered_at_kill} unanswered)"
    )
    async with store.connect() as conn:
        assert (await count_updates(conn))[0] == 0
    assert "database is locked" not in bots.log.read_text()


# Few updates handled at once, so that "in flight" is small and the bound below means much:
# at 2, about 42 answers were out at the kill and 2 unmarked; before the fix 9-15.
CONCURRENT = 2


async def test_killed_early_in_a_burst_repeats_only_what_was_in_flight_or_just_ended(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    """Issue #13: killed 0.3 s into a burst, a bot had sent 121 answers and marked none, and
    sent all 121 again after the restart: its marks were written behind a 50 ms timer, and
    the timer and the task it started each waited for a turn of the busy loop (100-200 ms).
    Now an update is marked at the loop's next turn, so at the kill the answers out and not
    marked are at most those in flight (one per update handled at once, CONCURRENT) and those
    that ended in the last turn (one more per running update): two per chat, 2 x CONCURRENT
    in all; counted per chat, the sandbox's answers against the inbox's marks."""
    bots.environ = {**bots.environ, "CONCURRENT_UPDATES": str(CONCURRENT)}
    load = build_long_load(chats=32, messages=8)
    await prepare(tg, store, load)
    await enqueue(tg, load)
    first = bots.start()

    async def answering() -> bool:
        assert first.poll() is None, bots.log.read_text()
        return await successful_sends(tg) >= 40

    await wait_for(answering, DEADLINE, "the first bot to answer 40 messages", every=0.01)
    bots.kill(first)
    killed_at = await call_seq(tg)
    await settled_after_kill(store, DEADLINE)
    marked = await marked_per_chat(store)
    second = bots.start()
    # Sends the sandbox had fully received before the kill count as sent (see
    # sends_of_the_killed).
    at_kill = Counter(await sends_of_the_killed(tg, killed_at, DEADLINE))
    out = sum(at_kill.values())
    assert 2 * CONCURRENT < out < load.updates  # killed early, with more out than the bound
    unmarked = {chat: at_kill[chat] - marked[chat] for chat in load.chats}
    # An answer goes out before its update can be marked, never after.
    assert min(unmarked.values()) >= 0, unmarked
    over = {chat: n for chat, n in unmarked.items() if n > 2}
    assert not over, f"answers out and not marked per chat at the kill: {over}"
    assert sum(unmarked.values()) <= 2 * CONCURRENT, (
        f"{sum(unmarked.values())} answers out and not marked at the kill, of {out}"
    )

    async def all_answered() -> bool:
        assert second.poll() is None, bots.log.read_text()
        if (await tg.stats())["pending_updates"]:
            return False
        async with store.connect() as conn:
            if (await count_updates(conn))[0]:
                return False
        texts = await all_bot_texts(tg, load.chats)
        return all(missing(load.expected(chat), texts[chat]) == 0 for chat in load.chats)

    await wait_for(all_answered, DEADLINE, "the second bot to answer every message")
    texts = await all_bot_texts(tg, load.chats)
    repeated = {chat: len(texts[chat]) - len(load.expected(chat)) for chat in load.chats}
    # Only what was out and unmarked at the kill is answered again, chat by chat.
    assert {c: n for c, n in repeated.items() if n > unmarked[c]} == {}
    assert "database is locked" not in bots.log.read_text()
