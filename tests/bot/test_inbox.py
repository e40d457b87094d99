"""bot/inbox.py: what a killed bot had fetched and not answered is answered after a restart, in
order, and what it had answered is not answered again when Telegram delivers it a second time.

A "previous process" here fetches through the bot's getUpdates layer (InboxRequest), so the
batch is saved as the real bot saves it, and then dies without confirming or answering it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime

import pytest
from telegram import Bot, Chat, Message, Update

from bot.context import BotApplication
from bot.inbox import Inbox, InboxRequest
from bot.request import AiohttpRequest
from bot.settings import Settings
from sandbox import Sandbox
from sandbox.client import SandboxClient
from store import Store
from store.chats import set_pending, touch_chat
from store.inbox import count_updates, mark_answered, unanswered_updates
from tests.chaos_helpers import ASK_ORDER, ASK_PROOF, GREETING, HELP, KETTLE, bot_texts, wait_for
from tests.conftest import Clock, running_bot

ANNA, BORIS = 830_001, 830_002


async def previous_process(
    sandbox: Sandbox, store: Store, clock: Clock, tg: SandboxClient, *batches: list[str]
) -> list[list[Update]]:
    """A process that fetched ``batches`` (texts, alternately Anna's and Boris's) through the
    bot's getUpdates layer, each getUpdates confirming the batch before (as PTB's Updater
    does), and was killed before answering any: the last batch stays unconfirmed."""
    inbox = Inbox(store, clock)
    bot = Bot(
        sandbox.token,
        base_url=sandbox.api_base,
        get_updates_request=InboxRequest(AiohttpRequest(connection_pool_size=1), inbox),
    )
    fetched: list[list[Update]] = []
    offset = 0
    async with bot:
        for texts in batches:
            await tg.bulk(
                messages=[
                    {"user_id": (ANNA, BORIS)[i % 2], "text": text} for i, text in enumerate(texts)
                ]
            )
            batch = list(await bot.get_updates(offset=offset, timeout=0))
            assert len(batch) == len(texts)
            offset = batch[-1].update_id + 1
            fetched.append(batch)
    return fetched


async def test_a_restart_answers_what_was_fetched_in_order_and_not_what_was_answered(
    sandbox: Sandbox, tg: SandboxClient, store: Store, settings: Settings, clock: Clock
) -> None:
    await tg.bulk(
        users=[
            {"id": ANNA, "first_name": "Customer", "language_code": "en"},
            {"id": BORIS, "first_name": "Customer", "language_code": "en"},
        ]
    )
    first, second = await previous_process(
        sandbox, store, clock, tg, ["/start", "/help"], ["is KET-0001 in stock?", "/start"]
    )
    # Anna's two had been answered and marked; Boris's were still in memory at the kill. The
    # first batch was confirmed (only the inbox has Boris's /help now), the second was not.
    async with store.begin() as conn:
        await mark_answered(conn, [first[0].update_id, second[0].update_id], clock())
    assert (await tg.stats())["pending_updates"] == 2
    # Both write again while the bot is down: that comes after what was fetched.
    await tg.send_message(ANNA, "/help")
    await tg.send_message(BORIS, "is KET-0001 in stock?")

    async with running_bot(settings, store, clock) as app:
        intake = app.update_queue

        async def done() -> bool:
            return len(await bot_texts(tg, ANNA)) >= 1 and len(await bot_texts(tg, BORIS)) >= 3

        await wait_for(done, 10, "the replayed and the new updates to be answered")

        async def all_taken() -> bool:
            return (await tg.stats())["pending_updates"] == 0 and intake.empty()

        await wait_for(all_taken, 10, "polling to take and confirm the re-delivered batch")
    # Nothing of what Anna had been answered comes again, though Telegram sent her stock
    # question a second time; Boris's replayed updates come once each, before his new one.
    assert await bot_texts(tg, ANNA) == [HELP]
    assert await bot_texts(tg, BORIS) == [HELP, GREETING, KETTLE]
    async with store.connect() as conn:
        assert await count_updates(conn) == (0, 6)


async def test_a_stop_flushes_the_answered_marks(
    tg: SandboxClient, store: Store, settings: Settings, clock: Clock
) -> None:
    await tg.create_user(ANNA, first_name="Customer", language_code="en")
    async with running_bot(settings, store, clock):
        await tg.send_message(ANNA, "/help")
        await tg.wait_for_bot_message(ANNA)
    async with store.connect() as conn:
        assert await count_updates(conn) == (0, 1)


def _update(update_id: int) -> Update:
    chat = Chat(ANNA, Chat.PRIVATE)
    message = Message(update_id, datetime(2026, 11, 26, tzinfo=UTC), chat, text="/help")
    return Update(update_id, message=message)


async def test_a_webhook_update_is_saved_before_it_is_taken_and_a_resend_is_dropped(
    store: Store, clock: Clock
) -> None:
    inbox = Inbox(store, clock, webhook=True)
    assert await inbox.admit(_update(7)) is True
    async with store.connect() as conn:
        saved = await unanswered_updates(conn)
    assert [u.update_id for u in saved] == [7]
    assert Update.de_json(json.loads(saved[0].payload), None) == _update(7)
    # Telegram sends it again (our 200 was lost): held here, so dropped.
    assert await inbox.admit(_update(7)) is False
    inbox.answered(7)
    await inbox.close()
    async with store.connect() as conn:
        assert await count_updates(conn) == (0, 1)
    # And again after a restart: answered in the inbox, so dropped.
    assert await Inbox(store, clock, webhook=True).admit(_update(7)) is False


async def test_an_answered_update_is_marked_at_the_loops_next_turn(
    store: Store, clock: Clock
) -> None:
    """No timer: a kill right after an answer repeats it only if the loop never turned again
    (a timer's mark waited 50 ms and two turns of a busy loop; see tests/test_chaos_restart)."""
    inbox = Inbox(store, clock)
    await inbox.received([_update(7).to_dict(), _update(8).to_dict()])
    assert await inbox.admit(_update(7)) is True
    assert await inbox.admit(_update(8)) is True
    inbox.answered(7)
    await asyncio.sleep(0)
    async with store.connect() as conn:
        assert await count_updates(conn) == (1, 1)
    inbox.answered(8)
    await asyncio.sleep(0)
    async with store.connect() as conn:
        assert await count_updates(conn) == (0, 2)
    await inbox.close()


async def test_a_replayed_where_is_my_order_whose_step_was_saved_asks_for_the_number(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    await tg.create_user(ANNA, first_name="Customer", language_code="en")
    # What the first run of "where is my order?" left before the kill: the step, no question.
    async with store.begin() as conn:
        await touch_chat(conn, ANNA)
        await set_pending(conn, ANNA, "order_number", at=clock())
    await tg.send_message(ANNA, "where is my order?")
    await tg.wait_for_bot_message(ANNA)
    assert await bot_texts(tg, ANNA) == [ASK_ORDER]


async def test_a_replayed_order_number_whose_step_was_saved_asks_for_the_proof(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    await tg.create_user(BORIS, first_name="Customer", language_code="en")
    # What the first run of "100004" left before the kill: the proof step, no question.
    async with store.begin() as conn:
        await touch_chat(conn, BORIS)
        await set_pending(conn, BORIS, "proof", "100004", at=clock())
    await tg.send_message(BORIS, "100004")
    await tg.wait_for_bot_message(BORIS)
    assert await bot_texts(tg, BORIS) == [ASK_PROOF]


@pytest.mark.sqlite_only("SQLite's write lock held by another program")
async def test_the_last_flush_tries_again_while_another_program_holds_the_database(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop while a tool writes to the file: the marks answered last are written once it
    lets go, not given up after one try (a restart would answer those updates again)."""
    monkeypatch.setattr("store.db.BUSY_TIMEOUT_MS", 100)
    # More tries than the test needs: it lets go after two failed writes, whenever they came.
    monkeypatch.setattr("bot.inbox.FLUSH_TRIES", 1000)
    inbox, tool = await _held_by_a_tool(store, clock)
    try:
        closing = asyncio.create_task(inbox.close())

        async def failed_twice() -> bool:
            return _failed_marks(caplog) >= 2

        await wait_for(failed_twice, 60, "two failed writes of the mark")
        assert not closing.done()
    finally:
        tool.execute("ROLLBACK")
        tool.close()
    await closing
    async with store.connect() as conn:
        assert await count_updates(conn) == (0, 1)
    assert not _given_up(caplog)


@pytest.mark.sqlite_only("SQLite's write lock held by another program")
async def test_the_last_flush_gives_up_after_its_tries_and_says_so(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("store.db.BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr("bot.inbox.FLUSH_TRIES", 2)
    inbox, tool = await _held_by_a_tool(store, clock)
    try:
        await inbox.close()
    finally:
        tool.execute("ROLLBACK")
        tool.close()
    async with store.connect() as conn:
        assert await count_updates(conn) == (1, 0)
    assert _given_up(caplog) == ["1 answered updates left unmarked: a restart answers them again"]


async def _held_by_a_tool(store: Store, clock: Clock) -> tuple[Inbox, sqlite3.Connection]:
    """An inbox with update 7 answered, its mark not written yet, and another program (the
    sqlite3 module, as a tool would) holding the file's write lock."""
    inbox = Inbox(store, clock)
    await inbox.received([_update(7).to_dict()])
    assert await inbox.admit(_update(7)) is True
    path = store.engine.url.database
    assert path is not None
    tool = sqlite3.connect(path, isolation_level=None)
    tool.execute("BEGIN IMMEDIATE")
    inbox.answered(7)
    return inbox, tool


def _given_up(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "left unmarked" in r.getMessage()]


def _failed_marks(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1 for r in caplog.records if r.getMessage() == "marking 1 updates answered failed; retrying"
    )
