"""Concurrent update processing that keeps each chat's updates in order.

PTB's ``concurrent_updates(n)`` alone would answer a customer's "100002" before their "where is
my order?" whenever the second is quicker. `ChatOrderedProcessor` runs up to n updates at once
but never two of the same chat: the first update of a chat runs its own coroutine and then,
in arrival order, every update of that chat that arrived meanwhile. Later arrivals are queued
behind it and hand back their processing slot at once, so a burst from one chat occupies one
slot, not all of them. A chat's entry exists only while it has work, so the table holds at
most the chats with updates in flight and forgets idle ones by construction.

Arrival order is PTB's: the Application starts one task per update in update_id order, each
passes the processor's semaphore (FIFO) before `do_process_update`.

`UpdateIntake` bounds what the bot holds. PTB's update queue is unbounded, and with concurrent
updates its fetcher empties it at once into one task per update, so a backlog of 100,000
updates would become 100,000 tasks in memory. The intake counts an update from the moment
polling (or the webhook) hands it over until it has been answered; at the limit, `put` waits,
so polling stops asking Telegram for more and the backlog stays on Telegram's side.

With a `bot.inbox.Inbox`, the intake also drops updates Telegram delivered again (already in
the inbox) and passes on which updates were handled, for the inbox to mark them answered; an
update cancelled at shutdown is not handled and stays in the inbox for the next start. With
several processes (bot/shared.py) each update is checked in its chat's turn (`may_answer`):
one whose chat this process no longer holds is dropped unhandled, for the chat's new holder.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Hashable
from typing import TYPE_CHECKING, Any, cast

from telegram import Update
from telegram.ext import BaseUpdateProcessor

from bot.metrics import timed

if TYPE_CHECKING:
    from bot.inbox import Inbox

log = logging.getLogger(__name__)

__all__ = ["ChatOrderedProcessor", "UpdateIntake", "chat_key"]


class UpdateIntake(asyncio.Queue[object]):
    """The Application's update queue, holding at most ``limit`` unanswered updates.

    Only `Update` objects count: PTB's own stop signal must never wait behind a full intake.
    """

    def __init__(self, limit: int, inbox: Inbox | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.inbox = inbox
        self.unanswered = 0
        self.peak = 0  # the most ever held at once: what the benchmark reports
        self._room = asyncio.Event()

    async def put(self, item: object) -> None:
        if isinstance(item, Update):
            if self.inbox is not None and not await self.inbox.admit(item):
                return
            while self.unanswered >= self.limit:
                self._room.clear()
                await self._room.wait()
        self.put_nowait(item)

    def put_nowait(self, item: object) -> None:
        super().put_nowait(item)
        if isinstance(item, Update):
            self.unanswered += 1
            self.peak = max(self.peak, self.unanswered)

    def _put(self, item: object) -> None:
        # PTB's stop signal goes before the updates still queued: PTB's fetcher then stops at
        # once and drops them, and they stay unanswered in the inbox, for the next start or
        # another process. Behind them, they were started as tasks of an application no
        # longer running (PTB warns that it will not await them): half-handled at shutdown,
        # or destroyed pending. An update put just before a stop (the claim round of
        # bot/shared.py) met this in CI.
        if isinstance(item, Update):
            super()._put(item)
        else:
            # asyncio.Queue keeps its items in the deque ``_queue`` (LifoQueue's way of
            # ordering them too); tests/bot/test_updates.py fails if that changes.
            items: deque[object] = cast(Any, self)._queue
            items.appendleft(item)

    async def may_answer(self, item: object) -> bool:
        """Whether ``item`` may be answered now (several processes: its chat is still this
        process's, bot/shared.py); one that may not is dropped unhandled, for its chat's
        new holder."""
        if self.inbox is None or not isinstance(item, Update):
            return True
        return await self.inbox.may_answer(item.update_id)

    def answered(self, item: object, handled: bool = True) -> None:
        """``item`` has left the bot: ``handled``, or dropped unhandled (cancelled)."""
        if isinstance(item, Update):
            self.unanswered -= 1
            if self.unanswered < self.limit:
                self._room.set()
            if self.inbox is not None:
                if handled:
                    self.inbox.answered(item.update_id)
                else:
                    self.inbox.released(item.update_id)


def chat_key(update: object) -> Hashable | None:
    """What orders an update: its chat, else its user (inline queries), else nothing."""
    if not isinstance(update, Update):
        return None
    chat = update.effective_chat
    if chat is not None:
        return chat.id
    user = update.effective_user
    if user is not None:
        return ("user", user.id)
    return None


class ChatOrderedProcessor(BaseUpdateProcessor):
    """``ApplicationBuilder().concurrent_updates(ChatOrderedProcessor(64, intake))``.

    Tells ``intake`` when each update has been answered, including those parked behind their
    chat (they left PTB's count when parked, but they are still held in memory here).
    """

    __slots__ = ("_intake", "_waiting")

    def __init__(self, max_concurrent_updates: int, intake: UpdateIntake | None = None) -> None:
        super().__init__(max_concurrent_updates)
        self._intake = intake
        # chat -> updates that arrived while the chat's first one was being processed.
        self._waiting: dict[Hashable, deque[tuple[object, Awaitable[Any]]]] = {}

    @property
    def busy_chats(self) -> int:
        """Chats with an update in flight (the size of the table)."""
        return len(self._waiting)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = chat_key(update)
        if key is None:
            if not await self._may_answer(update, coroutine):
                return
            handled = False
            try:
                await timed(update, coroutine)
                handled = True
            except Exception:
                handled = True  # it would fail again if replayed
                raise
            finally:
                self._answered(update, handled)
            return
        queue = self._waiting.get(key)
        if queue is not None:
            # The chat is being processed: its runner will take this one in its turn.
            queue.append((update, coroutine))
            return
        queue = self._waiting[key] = deque()
        current: tuple[object, Awaitable[Any]] | None = (update, coroutine)
        try:
            while current is not None:
                # Checked once the chat is this runner's (a later update of it waits behind),
                # and kept in the queue while the check waits, for the shutdown's clean-up.
                queue.appendleft(current)
                allowed = await self._intake_allows(current[0])
                queue.popleft()
                if not allowed:
                    self._drop(*current)
                    current = queue.popleft() if queue else None
                    continue
                handled = False
                try:
                    await timed(*current)
                    handled = True
                except Exception:
                    # Application.process_update reports handler errors itself; this is a
                    # last resort, so one failure cannot stall the chat's later updates. It
                    # counts as handled: a replay would fail the same way.
                    handled = True
                    log.exception("processing an update of chat %s failed", key)
                finally:
                    self._answered(current[0], handled)
                current = queue.popleft() if queue else None
        finally:
            del self._waiting[key]
            # Cancelled (shutdown): what never ran is dropped without a never-awaited warning.
            for parked, pending in queue:
                self._answered(parked, handled=False)
                close = getattr(pending, "close", None)
                if close is not None:
                    close()

    async def _may_answer(self, update: object, coroutine: Awaitable[Any]) -> bool:
        if await self._intake_allows(update):
            return True
        self._drop(update, coroutine)
        return False

    async def _intake_allows(self, update: object) -> bool:
        return self._intake is None or await self._intake.may_answer(update)

    def _drop(self, update: object, coroutine: Awaitable[Any]) -> None:
        # Not this process's to answer (its chat was taken over): left unanswered in the
        # inbox for the chat's holder.
        self._answered(update, handled=False)
        close = getattr(coroutine, "close", None)
        if close is not None:
            close()

    def _answered(self, update: object, handled: bool = True) -> None:
        if self._intake is not None:
            self._intake.answered(update, handled)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass
