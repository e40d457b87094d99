"""bot/updates.py: updates processed concurrently, each chat's in the order they came."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from telegram import Chat, Message, Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

from bot.request import AiohttpRequest
from bot.updates import ChatOrderedProcessor, UpdateIntake, chat_key
from sandbox import Sandbox
from sandbox.client import SandboxClient

BURST = 20


def _update(update_id: int, chat_id: int) -> Update:
    chat = Chat(chat_id, Chat.PRIVATE)
    message = Message(update_id, datetime(2026, 1, 1, tzinfo=UTC), chat, text=str(update_id))
    return Update(update_id, message=message)


async def test_an_update_of_a_busy_chat_waits_while_other_chats_proceed() -> None:
    processor = ChatOrderedProcessor(4)
    ran: list[str] = []
    release = asyncio.Event()

    async def slow(name: str) -> None:
        ran.append(f"{name} start")
        await release.wait()
        ran.append(f"{name} end")

    async def quick(name: str) -> None:
        ran.append(name)

    first = asyncio.create_task(processor.process_update(_update(1, 10), slow("a1")))
    await asyncio.sleep(0)
    second = asyncio.create_task(processor.process_update(_update(2, 10), quick("a2")))
    other = asyncio.create_task(processor.process_update(_update(3, 20), quick("b1")))
    await asyncio.wait_for(asyncio.gather(second, other), 1)
    # a2 handed its slot back at once but has not run; b1 ran.
    assert ran == ["a1 start", "b1"]
    assert processor.busy_chats == 1
    assert processor.current_concurrent_updates == 1
    release.set()
    await asyncio.wait_for(first, 1)
    assert ran == ["a1 start", "b1", "a1 end", "a2"]
    assert processor.busy_chats == 0  # an idle chat is forgotten


async def test_a_failing_update_does_not_stall_the_chat() -> None:
    processor = ChatOrderedProcessor(2)
    ran: list[int] = []
    gate = asyncio.Event()

    async def boom() -> None:
        await gate.wait()
        raise RuntimeError("handler bug")

    async def ok(n: int) -> None:
        ran.append(n)

    first = asyncio.create_task(processor.process_update(_update(1, 7), boom()))
    await asyncio.sleep(0)
    await processor.process_update(_update(2, 7), ok(2))
    gate.set()
    await asyncio.wait_for(first, 1)
    assert ran == [2]


async def test_cancelled_work_leaves_no_coroutine_unawaited() -> None:
    processor = ChatOrderedProcessor(2)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def never() -> None:
        raise AssertionError("must not run")

    runner = asyncio.create_task(processor.process_update(_update(1, 7), forever()))
    await started.wait()
    await processor.process_update(_update(2, 7), never())
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert processor.busy_chats == 0


async def test_the_intake_waits_at_its_limit_counting_updates_parked_behind_their_chat() -> None:
    intake = UpdateIntake(3)
    processor = ChatOrderedProcessor(4, intake)
    release = asyncio.Event()
    ran: list[int] = []

    async def handle(n: int) -> None:
        await release.wait()
        ran.append(n)

    for n, chat in ((1, 10), (2, 10), (3, 20)):
        await asyncio.wait_for(intake.put(_update(n, chat)), 1)
    fourth = asyncio.create_task(intake.put(_update(4, 30)))
    tasks = []
    for _ in range(3):
        update = intake.get_nowait()
        assert isinstance(update, Update)
        tasks.append(
            asyncio.create_task(processor.process_update(update, handle(update.update_id)))
        )
    await asyncio.sleep(0.05)
    # Update 2 is parked behind update 1 (same chat) and still counts: the fourth waits.
    assert not fourth.done()
    assert (intake.unanswered, intake.qsize()) == (3, 0)
    intake.put_nowait(object())  # PTB's stop signal is never held back
    assert intake.unanswered == 3
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks, fourth), 1)
    assert sorted(ran) == [1, 2, 3]
    assert (intake.unanswered, intake.peak) == (1, 3)


def test_the_order_key_is_the_chat_else_the_user() -> None:
    assert chat_key(_update(1, 42)) == 42
    assert chat_key(object()) is None
    assert chat_key(Update(5)) is None


# --- through the sandbox: a bot whose later replies would overtake earlier ones -------------


@pytest.fixture
async def jittery(sandbox: Sandbox) -> AsyncIterator[Application]:  # type: ignore[type-arg]
    """An echo bot on the processor whose early messages take longest: without per-chat
    order, a burst would be answered backwards."""

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        number = int(update.message.text.split()[-1])
        await asyncio.sleep(0.002 * (BURST - number % 100))
        await update.message.reply_text(update.message.text)

    app = (
        ApplicationBuilder()
        .token(sandbox.token)
        .base_url(sandbox.api_base)
        .request(AiohttpRequest(connection_pool_size=32))
        .get_updates_request(AiohttpRequest(connection_pool_size=1, read_timeout=10))
        .concurrent_updates(ChatOrderedProcessor(16))
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0, timeout=1)
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


async def test_a_burst_is_answered_in_order_while_other_chats_proceed(
    jittery: Application,  # type: ignore[type-arg]
    tg: SandboxClient,
) -> None:
    burst, others = 501, [502, 503, 504]
    for user in (burst, *others):
        await tg.create_user(user)
    for n in range(BURST):
        await tg.send_message(burst, f"burst {n}")
    for user in others:
        await tg.send_message(user, f"other {BURST - 1}")  # the quickest to handle
    replies: list[str] = []
    after = 0
    async with asyncio.timeout(10):
        while len(replies) < BURST:
            found = await tg.collect(burst, after, timeout=5, quiet=0.2)
            replies += [m["text"] for m in found if m["from_bot"]]
            after = found[-1]["message_id"] if found else after
    assert replies == [f"burst {n}" for n in range(BURST)]
    # The other chats did not wait for the burst: each was answered before its last reply.
    calls = [c for c in await tg.calls("sendMessage") if c["status"] == 200]
    order = [int(c["params"]["chat_id"]) for c in calls]
    last_of_burst = max(i for i, chat in enumerate(order) if chat == burst)
    assert all(order.index(user) < last_of_burst for user in others)


async def test_a_backlog_is_held_to_the_intake_limit_and_answered_in_order(
    sandbox: Sandbox, tg: SandboxClient
) -> None:
    """Through the sandbox: 30 messages from three chats while the handler is stuck; the bot
    holds at most INTAKE (the rest wait with polling), then answers all of them in order."""
    intake_limit = 4
    gate = asyncio.Event()
    entered: list[int] = []
    all_chats_stuck = asyncio.Event()

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        entered.append(update.update_id)
        if len(entered) == 3:
            all_chats_stuck.set()
        await gate.wait()
        await update.message.reply_text(update.message.text)

    intake = UpdateIntake(intake_limit)
    app = (
        ApplicationBuilder()
        .token(sandbox.token)
        .base_url(sandbox.api_base)
        .request(AiohttpRequest(connection_pool_size=8))
        .get_updates_request(AiohttpRequest(connection_pool_size=1, read_timeout=10))
        .update_queue(intake)
        .concurrent_updates(ChatOrderedProcessor(16, intake))
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    users = [601, 602, 603]
    for user in users:
        await tg.create_user(user)
    for n in range(10):
        for user in users:
            await tg.send_message(user, f"{user} {n}")
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0, timeout=1)
    try:
        # Each chat's first message is stuck in the handler, a fourth is parked behind one.
        await asyncio.wait_for(all_chats_stuck.wait(), 5)
        await asyncio.sleep(0.2)  # room for any over-read to show
        assert len(entered) == 3
        assert (intake.unanswered, intake.peak) == (intake_limit, intake_limit)
        gate.set()
        for user in users:
            # Until all ten came, not until a quiet moment: under load a chat's next reply
            # may come later than any fixed quiet time.
            replies: list[str] = []
            after = 0
            async with asyncio.timeout(30):
                while len(replies) < 10:
                    found = await tg.collect(user, after, timeout=5, quiet=0.05)
                    replies += [m["text"] for m in found if m["from_bot"]]
                    after = found[-1]["message_id"] if found else after
            assert replies == [f"{user} {n}" for n in range(10)]
        assert (intake.unanswered, intake.peak) == (0, intake_limit)
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


class _Inbox:
    """Records what the intake passes on (bot.inbox.Inbox's side of the contract)."""

    def __init__(self, refused: frozenset[int] = frozenset()) -> None:
        self.answered_ids: list[int] = []
        self.released_ids: list[int] = []
        self.refused = refused

    async def admit(self, update: Update) -> bool:
        return True

    async def may_answer(self, update_id: int) -> bool:
        await asyncio.sleep(0)  # as a renewal of the chat's claim would
        return update_id not in self.refused

    def answered(self, update_id: int) -> None:
        self.answered_ids.append(update_id)

    def released(self, update_id: int) -> None:
        self.released_ids.append(update_id)


async def test_the_inbox_hears_handled_and_failed_updates_as_answered_cancelled_ones_not() -> None:
    inbox = _Inbox()
    intake = UpdateIntake(10, inbox)  # type: ignore[arg-type]
    processor = ChatOrderedProcessor(4, intake)
    started = asyncio.Event()

    async def ok() -> None:
        pass

    async def boom() -> None:
        raise RuntimeError("handler bug")

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    for n in (1, 2, 3, 4):
        await intake.put(_update(n, 7 if n > 2 else n))
    await processor.process_update(_update(1, 1), ok())
    await processor.process_update(_update(2, 2), boom())
    runner = asyncio.create_task(processor.process_update(_update(3, 7), forever()))
    await started.wait()
    await processor.process_update(_update(4, 7), ok())  # parked behind 3
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    # A failed update would fail again if replayed; a cancelled or parked one never ran.
    assert (inbox.answered_ids, inbox.released_ids) == ([1, 2], [3, 4])
    assert intake.unanswered == 0


async def test_an_update_whose_chat_was_taken_over_is_dropped_and_the_chat_stays_in_order() -> None:
    """Several processes (bot/shared.py): the inbox refuses an update whose chat's claim this
    process lost; it is not handled, left for the chat's new holder (released), and the
    chat's updates after it, checked in their turn, keep their order."""
    inbox = _Inbox(refused=frozenset({2}))
    intake = UpdateIntake(10, inbox)  # type: ignore[arg-type]
    processor = ChatOrderedProcessor(4, intake)
    ran: list[int] = []

    async def handle(n: int) -> None:
        await asyncio.sleep(0)
        ran.append(n)

    for n in (1, 2, 3):
        await intake.put(_update(n, 9))
    await asyncio.gather(*(processor.process_update(_update(n, 9), handle(n)) for n in (1, 2, 3)))
    assert ran == [1, 3]
    assert (inbox.answered_ids, inbox.released_ids) == ([1, 3], [2])
    assert intake.unanswered == 0


async def test_a_stop_goes_before_the_updates_still_queued_which_are_left_unanswered(
    sandbox: Sandbox,
) -> None:
    """An update put in the intake just as the application stops (another process's chat
    claimed a moment before, bot/shared.py) is not started by an application no longer
    running (PTB warns it would not await it: half-handled, or destroyed pending at
    shutdown): PTB's fetcher takes its stop signal first and drops what is left, unanswered,
    for the inbox to hand on."""
    handled: list[int] = []
    first = asyncio.Event()

    async def note(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        handled.append(update.update_id)
        first.set()

    intake = UpdateIntake(10)
    app = (
        ApplicationBuilder()
        .token(sandbox.token)
        .base_url(sandbox.api_base)
        .request(AiohttpRequest(connection_pool_size=2))
        .update_queue(intake)
        .concurrent_updates(ChatOrderedProcessor(4, intake))
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, note))
    await app.initialize()
    await app.start()
    try:
        await intake.put(_update(1, 10))
        async with asyncio.timeout(5):
            await first.wait()
        # Put, then the stop in the same turn of the loop: PTB's fetcher has not taken
        # update 2 yet when the application stops running.
        intake.put_nowait(_update(2, 20))
        async with asyncio.timeout(10):
            await app.stop()
    finally:
        await app.shutdown()
    assert handled == [1]
    assert intake.unanswered == 1  # update 2: never answered, never started
