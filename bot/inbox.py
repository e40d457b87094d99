"""The durable inbox on the bot's side: no fetched update is lost when the process is killed.

PTB's Updater confirms a getUpdates batch to Telegram with the offset of its next getUpdates,
which it sends as soon as the batch is in the in-memory queue: a SIGKILL then loses every
update fetched and not yet answered. So each batch is saved in the store (`store.inbox`, one
transaction per batch) before PTB even sees it, by `InboxRequest`, the getUpdates request
layer; updates are marked answered once handled (`Inbox.answered`: written at the event
loop's next turn, one small transaction for every update answered in the turn before); and
on start, before polling, the unanswered ones are put back in the update queue in update_id
order (`Inbox.replay`), ahead of anything new, so each chat's order holds.

Why the request layer, not the Updater: the Updater's polling loop is PTB's private code, and
``BaseRequest.post`` is final; ``do_request`` is the documented extension point and sees the
raw answer, so the saved JSON is Telegram's and nothing is parsed twice by PTB. The answer is
passed on whole: updates already in the inbox (Telegram delivers the last unconfirmed batch
again after a restart) are dropped by `UpdateIntake.put` instead, because an answer with fewer
updates would hold back PTB's offset (an emptied batch would be fetched again forever).

Webhook mode: Telegram sends an update again until it gets our 200, and PTB's webhook handler
answers only after `UpdateIntake.put` returns, so `Inbox.admit` saves a webhook update there
(one transaction per update; Telegram sends them one per request anyway).

Several processes on PostgreSQL share the inbox instead (bot/shared.py, SharedInbox): a
start replays nothing itself; the processes claim the unanswered updates chat by chat.

Duplicates: after a kill, an update is answered again only if its answer went out but its
answered mark was not committed yet: the updates in flight at the kill (handled at once, at
most CONCURRENT_UPDATES) and those whose handling ended in the loop's last turn, which the
next turn marks. A running update ends at most once per turn (its reply's answer from
Telegram comes in a later turn than its start), so at most 2 x CONCURRENT_UPDATES answers
repeat, at most two per chat, however long the turns of a busy loop are; while another
writer holds the file longer (an import in another process), the marks wait for it, and so
many more may repeat. Nothing else repeats, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection
from telegram import Bot, Update
from telegram._utils.types import ODVInput
from telegram.error import NetworkError
from telegram.request import BaseRequest, RequestData

from store.db import Store
from store.inbox import (
    KEEP_ANSWERED,
    Saved,
    mark_answered,
    prune_answered,
    save_updates,
    unanswered_updates,
)

log = logging.getLogger(__name__)

__all__ = ["FLUSH_AT", "Inbox", "InboxRequest"]

# At most this many marks in one transaction: a backlog (marks that could not be written for
# a while) goes in several short ones, each holding the file briefly.
FLUSH_AT = 100
RETRY_AFTER = 0.05  # seconds before marks whose write failed are tried again
# Writes of the marks that `flush` tries (close's last flush): an update whose mark is not
# written is answered again after a restart. Each waits up to the store's busy timeout.
FLUSH_TRIES = 3


class Intake(Protocol):
    """What a replay feeds: the Application's update queue (bot.updates.UpdateIntake, which
    holds an Inbox: the queue's type lives there, this is what the inbox needs of it)."""

    limit: int  # unanswered updates it holds at most
    unanswered: int

    def put_nowait(self, item: object) -> None: ...


class Inbox:
    """What the bot has fetched and not answered, kept in the store.

    ``webhook``: updates reach `admit` without passing `received` first, and are saved there.
    """

    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime],
        *,
        webhook: bool = False,
        flush_at: int = FLUSH_AT,
        keep: int = KEEP_ANSWERED,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self.store = store
        self.now = now
        self.webhook = webhook
        self.flush_at = flush_at
        self.keep = keep
        self.retry_after = retry_after
        # Saved by `received`, to be let through by `admit` (once).
        self._fresh: set[int] = set()
        # Delivered again while saved already (answered, or held here), to be dropped by `admit`.
        self._skip: set[int] = set()
        # Let through, not answered yet.
        self._held: set[int] = set()
        # Answered, the mark not committed yet; `_done` those not being written.
        self._unflushed: set[int] = set()
        self._done: list[int] = []
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._since_prune = 0
        self.failures = 0  # writes of marks that failed (their marks kept for the next)

    def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        # Not counted: a counted write makes every update in flight read its chat again and
        # the product index be checked again (bot.context, store.db), and nothing they cache
        # is in the inbox's rows. Counted, the inbox cost 1.2-1.7 ms of CPU per update in the
        # probe ('hello'); not counted, about 0.2.
        # Small (at most a batch of 100 rows, or FLUSH_AT marks): on the loop's own thread
        # when the file is free. Through the pool, a batch's save took 5-8 ms at the median at
        # 200 updates/s, each hand-off waiting for the busy loop, and PTB asks for the next
        # batch only after it: every update waited for the previous batch's save.
        return self.store.begin_small(counted=False)

    # --- in: fetched updates -------------------------------------------------------------

    async def received(self, updates: list[dict[str, Any]]) -> None:
        """Save a fetched batch (raw update dicts) in one transaction and note what
        `admit` must let through."""
        pairs = [
            (int(u["update_id"]), json.dumps(u, ensure_ascii=False, separators=(",", ":")))
            for u in updates
        ]
        try:
            async with self._begin() as conn:
                saved = await save_updates(conn, pairs, self.now())
        except Exception as exc:
            # A TelegramError makes PTB's polling loop retry with its back-off; the batch is
            # not confirmed (PTB never sees it), so Telegram delivers it again.
            raise NetworkError(f"the update inbox could not save a batch: {exc!r}") from exc
        self._note(saved)

    def _note(self, saved: Saved) -> None:
        self._fresh.update(saved.new)
        self._skip.update(saved.answered)
        for update_id in saved.unanswered:
            # Saved and not answered, but nobody here holds it (fetched while the Updater was
            # stopping, never queued): let it through, it would otherwise wait for a restart.
            if update_id in self._held or update_id in self._unflushed:
                self._skip.add(update_id)
            else:
                self._fresh.add(update_id)

    async def admit(self, update: Update) -> bool:
        """Whether the update queue takes ``update``; False for one delivered again."""
        update_id = update.update_id
        if update_id in self._fresh:
            self._fresh.discard(update_id)
            self._held.add(update_id)
            return True
        if update_id in self._skip:
            self._skip.discard(update_id)
            return False
        if not self.webhook:
            # Not from getUpdates (put by the bot's own code): nothing to replay it from.
            return True
        if update_id in self._held or update_id in self._unflushed:
            return False
        async with self._begin() as conn:
            saved = await save_updates(conn, [(update_id, update.to_json())], self.now())
        if saved.answered:
            return False
        self._held.add(update_id)
        return True

    async def may_answer(self, update_id: int) -> bool:
        """Whether the update may be answered now: always, in one process."""
        return True

    async def may_poll(self, within: float) -> bool:
        """Whether this process may send getUpdates, known within ``within`` seconds: one
        process always may."""
        return True

    async def replay(self, bot: Bot, queue: Intake) -> int:
        """Put every saved, unanswered update into ``queue``, in update_id order; call before
        polling starts. Returns how many."""
        async with self._begin() as conn:
            await prune_answered(conn, self.keep)
            pending = await unanswered_updates(conn)
        for row in pending:
            try:
                update = Update.de_json(json.loads(row.payload), bot)
            except Exception:
                log.exception("update %s in the inbox cannot be read; dropped", row.update_id)
                self._held.add(row.update_id)
                self.answered(row.update_id)
                continue
            self._held.add(row.update_id)
            # No wait at the intake's limit: nothing answers before polling starts.
            queue.put_nowait(update)
        if pending:
            log.warning("replaying %d updates fetched but not answered before", len(pending))
        return len(pending)

    # --- out: answered updates, marked at the loop's next turn -------------------------

    def answered(self, update_id: int) -> None:
        """``update_id`` has been handled; its mark is written at the event loop's next turn,
        with every other update answered by then."""
        if update_id not in self._held:
            return
        self._held.discard(update_id)
        self._unflushed.add(update_id)
        self._done.append(update_id)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        self._wake.set()

    def released(self, update_id: int) -> None:
        """``update_id`` was dropped unhandled (shutdown): it stays unanswered, for a replay."""
        self._held.discard(update_id)

    async def _flush_forever(self) -> None:
        # Woken by `answered`, so it runs one hop after the first answer of a loop turn and
        # takes all of that turn's answers: a burst's turns are where batches come from, and
        # nothing waits for a timer. A timer (50 ms) did: a timer and the task it started
        # each ran only after the loop's turn then running, and the first turns of a burst
        # took 100-200 ms (64 handlers' first steps back to back). 121 answers were out with
        # no mark written when the bot was killed 0.3 s into a burst; measured at 150 chats x
        # 4 messages, answer to committed mark took up to 145 ms on a quiet machine.
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._done:
                if not await self._write():
                    await asyncio.sleep(self.retry_after)

    async def _write(self) -> bool:
        # One writer at a time, so that `flush` knows when a batch being written has ended.
        async with self._writing:
            batch = self._done[: self.flush_at]
            del self._done[: len(batch)]
            if not batch:
                return True
            since_prune = self._since_prune + len(batch)
            try:
                async with self._begin() as conn:
                    await mark_answered(conn, batch, self.now())
                    if since_prune >= self.keep:
                        await prune_answered(conn, self.keep)
                        since_prune = 0
            except Exception:
                # Kept for the next try; until then a kill would only answer them again.
                log.exception("marking %d updates answered failed; retrying", len(batch))
                self._done[:0] = batch
                self.failures += 1
                return False
            self._since_prune = since_prune
            self._unflushed.difference_update(batch)
            return True

    async def flush(self) -> None:
        """Write every answered mark now, and wait for one being written. A write that fails
        (here or the flusher's, whose marks come back) is tried again until FLUSH_TRIES have
        failed (the database busy a moment as the bot stops); then the marks left are given
        up and logged."""
        failed_before = self.failures
        while True:
            async with self._writing:
                pass  # a write under way ends first: a failed one puts its marks back
            if not self._done:
                return
            if self.failures - failed_before >= FLUSH_TRIES:
                log.error(
                    "%d answered updates left unmarked: a restart answers them again",
                    len(self._done),
                )
                return
            if not await self._write():
                await asyncio.sleep(self.retry_after)

    async def close(self) -> None:
        """The last flush, on shutdown."""
        await self.flush()
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher


# A getUpdates answer with no updates.
_NOTHING = b'{"ok":true,"result":[]}'


class InboxRequest(BaseRequest):
    """The getUpdates request layer: ``InboxRequest(inner, inbox)`` saves each batch ``inner``
    fetched in ``inbox`` before handing it on (see the module docstring)."""

    __slots__ = ("_inbox", "_inner")

    def __init__(self, inner: BaseRequest, inbox: Inbox) -> None:
        self._inner = inner
        self._inbox = inbox

    @property
    def inner(self) -> BaseRequest:
        """The HTTP layer underneath (REQUEST_LAYER's)."""
        return self._inner

    @property
    def read_timeout(self) -> float | None:
        # PTB adds the long-poll timeout to this.
        return self._inner.read_timeout

    async def initialize(self) -> None:
        await self._inner.initialize()

    async def shutdown(self) -> None:
        await self._inner.shutdown()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        polling = url.endswith("/getUpdates")
        if polling:
            # Of several processes, only the poller's lease holder asks Telegram (bot/shared.py);
            # the others' polls wait as long as a poll would and find nothing. So PTB's
            # Updater runs as usual, and its last poll on stop (timeout 0) ends at once.
            wait = request_data.parameters.get("timeout", 0) if request_data else 0
            if not await self._inbox.may_poll(float(wait) if isinstance(wait, int | float) else 0):
                return 200, _NOTHING
        code, payload = await self._inner.do_request(
            url,
            method,
            request_data,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )
        if code == 200 and polling:
            try:
                body = json.loads(payload)
            except ValueError:
                # PTB reports the broken answer itself; nothing in it can be confirmed.
                return code, payload
            updates = body.get("result") if isinstance(body, dict) and body.get("ok") else None
            if isinstance(updates, list) and updates:
                await self._inbox.received(updates)
        return code, payload
