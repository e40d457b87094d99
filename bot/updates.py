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
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Hashable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

log = logging.getLogger(__name__)

__all__ = ["ChatOrderedProcessor", "chat_key"]


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
    """``ApplicationBuilder().concurrent_updates(ChatOrderedProcessor(64))``."""

    __slots__ = ("_waiting",)

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        # chat -> updates that arrived while the chat's first one was being processed.
        self._waiting: dict[Hashable, deque[Awaitable[Any]]] = {}

    @property
    def busy_chats(self) -> int:
        """Chats with an update in flight (the size of the table)."""
        return len(self._waiting)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = chat_key(update)
        if key is None:
            await coroutine
            return
        queue = self._waiting.get(key)
        if queue is not None:
            # The chat is being processed: its runner will take this one in its turn.
            queue.append(coroutine)
            return
        queue = self._waiting[key] = deque()
        current: Awaitable[Any] | None = coroutine
        try:
            while current is not None:
                try:
                    await current
                except Exception:
                    # Application.process_update reports handler errors itself; this is a
                    # last resort, so one failure cannot stall the chat's later updates.
                    log.exception("processing an update of chat %s failed", key)
                current = queue.popleft() if queue else None
        finally:
            del self._waiting[key]
            # Cancelled (shutdown): what never ran is dropped without a never-awaited warning.
            for pending in queue:
                close = getattr(pending, "close", None)
                if close is not None:
                    close()

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass
