"""Several bot processes, one bot: how N copies of run_bot.py (one machine or several) share
one bot token on one PostgreSQL database. SQLite stays one process (run_bot.py refuses a
second one).

Updates. Whoever receives them writes them to the durable inbox (store.inbox) and answers
nothing itself: in polling mode the one process holding the 'poller' lease (`PollerLease`:
only it sends getUpdates; another takes over once a dead holder's lease has run out), in
webhook mode every process that Telegram (through the shop's load balancer) reaches. The
processes' `SharedInbox` then claim the unanswered updates chat by chat (store.shared.
claim_chats: a claim with a lease, taken over from a dead process once it has run out) and
put a claimed chat's updates in their own update queue in update_id order, where
bot.updates.ChatOrderedProcessor answers them one after another. An update's answered mark
and the release of its chat, once the process holds nothing more of it, are one
transaction, so the next process to claim the chat starts after the last answered update.
A chat is answered by one process at a time, in order, and an update twice only when its
process died between its answer and that transaction: the updates in flight at the kill,
given the same answer again by the process that takes the chat over.

Processes hear of new updates by LISTEN/NOTIFY (the save notifies 'backorder_inbox'), and
look anyway every CLAIM_POLL_SECONDS (a dead process's chats, a lost notification).

The send pace belongs to the bot token, so on PostgreSQL it is one row per pace in the
database (store.shared.take_slots), whichever process sends: `SharedPace` hands out slots of
'replies' (REPLIES_PER_SECOND, `SharedRateLimiter` under PTB) and of 'notices'
(SEND_RATE_PER_SECOND, bot.notices), and one slot a PER_CHAT_INTERVAL_SECONDS per chat
(`ChatPace`) to every message any process sends to the chat: notices, replies, agents'
messages relayed.

Scheduler jobs (the handoff check, the notices' policy round, the ops check) run in the one
process holding each job's lease (`JobLeases`). The catalog's trigger notifies
'backorder_catalog': the store's product index is checked again only then (`Store.
product_index`), not at every product question.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import time
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from telegram import Bot, Update
from telegram.error import NetworkError, RetryAfter
from telegram.ext import BaseRateLimiter

from bot.inbox import Inbox, Intake
from bot.updates import chat_key
from store.db import Store
from store.inbox import Saved, mark_answered, save_updates
from store.shared import (
    claim_chats,
    drop_lease,
    payloads,
    pending_of,
    prune_pace,
    release_chats,
    renew_chats,
    renew_leases,
    set_chat_keys,
    take_lease,
    take_slots,
    unkeyed_updates,
)

if TYPE_CHECKING:
    from bot.context import BotApplication, BotContext

log = logging.getLogger(__name__)

__all__ = [
    "JobLeases",
    "PollerLease",
    "SharedInbox",
    "SharedPace",
    "SharedRateLimiter",
    "close_job_leases",
    "is_shared",
    "job_leases",
    "key_of",
    "leased",
    "raw_key_of",
    "worker_name",
]

CHANNEL = "backorder_inbox"
# Notified by the products' trigger (migration 0016) at the commit of every catalog write.
CATALOG_CHANNEL = "backorder_catalog"
# How often a process looks for claimable chats without being told (a dead process's chats
# once their lease has run out, a lost notification).
CLAIM_POLL_SECONDS = 0.5
# Claims and the poller's lease are renewed every this share of their length.
RENEW_EVERY = 0.25
# An update is answered only while at least this share of its chat's lease is left as last
# written (else the claim is renewed first): its answer must be out before another process
# could take the chat over.
ANSWER_MARGIN = 0.5
RETRY_AFTER = 0.2
# On stop, a round in progress is given this long to end before it is cancelled.
STOP_WAIT_SECONDS = 10.0


def is_shared(store: Store) -> bool:
    """Whether the bot's processes share the database's inbox, claims and pace: PostgreSQL."""
    return store.engine.dialect.name == "postgresql"


def worker_name(explicit: str | None = None) -> str:
    """WORKER_NAME, else unique among the bot's processes: a pid alone is not (every
    container's bot is pid 1), and a claim two processes shared would be renewed by both."""
    if explicit:
        return explicit
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def key_of(update: Update) -> str:
    """What orders ``update`` (bot.updates.chat_key), as the inbox's chat_key."""
    key = chat_key(update)
    if isinstance(key, int):
        return str(key)
    if isinstance(key, tuple):
        return f"u{key[1]}"
    return f"x{update.update_id}"


def raw_key_of(update: Mapping[str, Any]) -> str:
    """`key_of` from Telegram's JSON, without building PTB's objects: the chat of the update's
    message (a callback query's: its message's), else its sender, else the update alone."""
    for name, body in update.items():
        if name == "update_id" or not isinstance(body, dict):
            continue
        chat = body.get("chat")
        if not isinstance(chat, dict):
            message = body.get("message")
            chat = message.get("chat") if isinstance(message, dict) else None
        if isinstance(chat, dict) and isinstance(chat.get("id"), int):
            return str(chat["id"])
        user = body.get("from") or body.get("user")
        if isinstance(user, dict) and isinstance(user.get("id"), int):
            return f"u{user['id']}"
    return f"x{update.get('update_id')}"


def _set(event: asyncio.Event, *_args: object) -> None:
    event.set()


class _Rounds:
    """``round_`` in a task of its own, every ``every`` seconds or sooner when ``wake`` is
    set, until `stop`, which lets the round in progress end. Cancelled in the middle of a
    statement, a round sent its PostgreSQL connection back to the pool still busy, and the
    next user of that connection failed ("another operation is in progress"): the inbox's
    last flush on shutdown, whose answered marks were then lost (answered again after the
    restart)."""

    def __init__(
        self,
        round_: Callable[[], Coroutine[Any, Any, object]],
        every: float,
        *,
        failed: str,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._round = round_
        self._every = every
        self._failed = failed
        self._wake = wake if wake is not None else asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self, *, at_once: bool = False) -> None:
        self._stopping = False
        if at_once:
            self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._pause(self._every)
            if self._stopping:
                return
            try:
                await self._round()
            except Exception:
                log.warning(self._failed, exc_info=True)
                await self._pause(RETRY_AFTER)

    async def _pause(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the inner result
        # when a cancellation meets a wake-up, and the loop then ran on with the cancellation
        # lost (a bot's shutdown waited for it forever, in CI).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(STOP_WAIT_SECONDS):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("a round did not end in %.0f s on stop; cancelled", STOP_WAIT_SECONDS)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class SharedInbox(Inbox):
    """The inbox of one of several processes: saves what this process receives, and answers
    the updates of the chats it claims (see the module docstring).

    ``max_chats``: chats held at once (CONCURRENT_UPDATES: what this process works on at
    once), so a burst is shared among the processes instead of taken whole by the first."""

    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime],
        *,
        worker: str,
        lease: float,
        max_chats: int,
        webhook: bool = False,
        poll: float = CLAIM_POLL_SECONDS,
    ) -> None:
        super().__init__(store, now, webhook=webhook)
        self.worker = worker
        self.lease = lease
        self.max_chats = max_chats
        self.poll = poll
        self._polled: set[int] = set()  # saved by `received`: `admit` drops them
        self._chats: set[str] = set()  # claimed by this process
        self._chat_of: dict[int, str] = {}  # update held or unflushed -> its chat
        self._open: Counter[str] = Counter()  # chat -> its updates held or unflushed here
        self._more = asyncio.Event()
        # chat -> monotonic time until which its claim is this process's, as last written
        # (from before the write): an update is answered only with ANSWER_MARGIN of it left.
        self._until: dict[str, float] = {}
        self._renewing: asyncio.Task[None] | None = None
        self._bot: Bot | None = None
        self._queue: Intake | None = None
        self._claiming = _Rounds(
            self.claim_round, poll, wake=self._more, failed="claiming updates failed; trying again"
        )
        # Updates wait for a renewal in may_answer: none is answered unconfirmed.
        self._renewals = _Rounds(
            self.renew,
            lease * RENEW_EVERY,
            failed="could not renew the chats' claims; trying again",
        )
        self._listener: asyncio.Task[None] | None = None
        self.poller = PollerLease(store, worker, lease)
        self.rounds = 0
        self.marked = 0  # updates this process answered and marked
        self.claimed = 0  # chats it claimed (a chat claimed again counts again)
        self.lost = 0  # chats this process held and another took over (its lease ran out)

    # --- in ------------------------------------------------------------------------------

    async def received(self, updates: list[dict[str, Any]]) -> None:
        pairs = [
            (int(u["update_id"]), json.dumps(u, ensure_ascii=False, separators=(",", ":")))
            for u in updates
        ]
        keys = {int(u["update_id"]): raw_key_of(u) for u in updates}
        try:
            await self._save(pairs, keys)
        except Exception as exc:
            # As Inbox.received: PTB's polling retries, Telegram delivers the batch again.
            raise NetworkError(f"the update inbox could not save a batch: {exc!r}") from exc
        self._polled.update(keys)

    async def _save(self, pairs: list[tuple[int, str]], keys: dict[int, str]) -> Saved:
        async with self.store.begin(counted=False) as conn:
            saved = await save_updates(conn, pairs, self.now(), keys)
            if saved.new:
                # Delivered at commit, to every process listening (this one too).
                await conn.execute(text(f"NOTIFY {CHANNEL}"))
        if saved.new:
            self._more.set()
        return saved

    async def admit(self, update: Update) -> bool:
        """False for every update received: it is in the inbox, for whichever process claims
        its chat. True only for one the bot's own code put in the queue."""
        update_id = update.update_id
        if update_id in self._polled:
            self._polled.discard(update_id)
            return False
        if not self.webhook:
            return True
        await self._save([(update_id, update.to_json())], {update_id: key_of(update)})
        return False

    async def replay(self, bot: Bot, queue: Intake) -> int:
        """Start claiming (before polling starts): keys for updates saved before they had one,
        then the claim rounds and the listener. Returns the unanswered updates found."""
        self._bot, self._queue = bot, queue
        while True:
            async with self.store.begin(counted=False) as conn:
                old = await unkeyed_updates(conn)
                keys = {}
                for update_id, payload in old:
                    try:
                        keys[update_id] = raw_key_of(json.loads(payload))
                    except ValueError:
                        keys[update_id] = f"x{update_id}"
                await set_chat_keys(conn, keys)
            if len(old) < 1000:
                break
        self._claiming.start(at_once=True)
        self._renewals.start()
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        return 0

    async def _listen(self) -> None:
        """LISTEN on a connection of its own, for new updates and for writes of the catalog
        (the store's product index); a failure leaves the claim rounds' own pace, and the
        product index read the catalog's version at every use until it listens again."""
        store = self.store
        while True:
            try:
                async with store.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    closed = asyncio.Event()
                    driver.add_termination_listener(partial(_set, closed))
                    await driver.add_listener(CHANNEL, self._notified)
                    await driver.add_listener(CATALOG_CHANNEL, self._catalog_notified)
                    # What was written while nobody listened: read the version once.
                    store.catalog_changed()
                    store.catalog_listening = True
                    try:
                        await closed.wait()
                    finally:
                        store.catalog_listening = False
                        # Not back to the pool with a listener on it.
                        await conn.invalidate()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("listening for new updates failed; trying again", exc_info=True)
            await asyncio.sleep(1.0)

    async def may_poll(self, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                await self.poller.wait()
        except TimeoutError:
            return False
        return True

    def _notified(self, *_args: object) -> None:
        self._more.set()

    def _catalog_notified(self, *_args: object) -> None:
        self.store.catalog_changed()

    # --- claiming --------------------------------------------------------------------------

    async def claim_round(self) -> int:
        """Renew this process's claims when due, claim chats, and put every unanswered update
        of its chats that it does not hold yet in the update queue, in update_id order.
        Returns how many were put."""
        queue, bot = self._queue, self._bot
        assert queue is not None and bot is not None, "replay starts the claiming"
        # One at a time with the marks' writes, which release chats: a chat is released only
        # when this process holds none of its updates, judged with nothing fed meanwhile.
        async with self._writing:
            self.rounds += 1
            room = queue.limit - queue.unanswered
            started = time.monotonic()
            async with self.store.begin(counted=False) as conn:
                chats_room = min(self.max_chats - len(self._chats), room)
                if chats_room > 0:
                    claimed = await claim_chats(conn, self.worker, self.lease, chats_room)
                    self.claimed += len(set(claimed) - self._chats)
                    self._chats.update(claimed)
                    for key in claimed:
                        self._until[key] = started + self.lease
                pending = await pending_of(conn, self.worker, room + len(self._chat_of))
                new = [p for p in pending if p.update_id not in self._chat_of][: max(room, 0)]
                bodies = await payloads(conn, [p.update_id for p in new])
                # Claims with nothing left to answer here (answered meanwhile elsewhere):
                # given back at once.
                waiting = {p.chat_key for p in pending}
                idle = {k for k in self._chats if not self._open[k] and k not in waiting}
                if idle:
                    await release_chats(conn, self.worker, idle)
                    self._let_go(idle)
        for p in new:
            try:
                update = Update.de_json(json.loads(bodies[p.update_id]), bot)
            except Exception:
                log.exception("update %s in the inbox cannot be read; dropped", p.update_id)
                update = None
            self._held.add(p.update_id)
            self._chat_of[p.update_id] = p.chat_key
            self._open[p.chat_key] += 1
            if update is None:
                self.answered(p.update_id)
            else:
                queue.put_nowait(update)
        return len(new)

    def _let_go(self, keys: set[str]) -> None:
        self._chats -= keys
        for key in keys:
            self._until.pop(key, None)

    # --- leases ----------------------------------------------------------------------------

    async def renew(self) -> None:
        """Extend every claim this process holds; a chat missing from the renewed ones was
        taken over (this process stalled past its lease): its updates not started yet are
        dropped, for the new holder (`may_answer`)."""
        task = self._renewing
        if task is None:
            task = self._renewing = asyncio.get_running_loop().create_task(self._renew())
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._renewing is task:
                self._renewing = None

    async def _renew(self) -> None:
        async with self._writing:
            started = time.monotonic()
            async with self.store.begin(counted=False) as conn:
                held = await renew_chats(conn, self.worker, self.lease)
            gone = self._chats - held
            if gone:
                self.lost += len(gone)
                log.warning("%d chats were taken over by another process", len(gone))
                self._let_go(gone)
            # Claimed under this name by a run before (a restart with the same WORKER_NAME).
            self._chats |= held
            for key in held:
                self._until[key] = started + self.lease

    async def may_answer(self, update_id: int) -> bool:
        """Whether this process may answer the update now: its chat's claim is this
        process's with at least ANSWER_MARGIN of the lease left (renewed first if not). So
        a process that stalled past its lease answers nothing the new holder answers too,
        but what it had started before."""
        key = self._chat_of.get(update_id)
        if key is None:
            return True  # not from the inbox's claims
        for attempt in range(2):
            if key not in self._chats:
                return False
            if time.monotonic() < self._until.get(key, 0.0) - self.lease * ANSWER_MARGIN:
                return True
            if attempt == 0:
                try:
                    await self.renew()
                except Exception:
                    # Given up here (not in the database) so that the chat's later updates
                    # are dropped too, not answered before this one: the next renewal that
                    # works takes it back, and the claim rounds put them all in again.
                    log.warning("could not renew the chats' claims", exc_info=True)
                    self._let_go({key})
                    return False
        return False

    # --- out -----------------------------------------------------------------------------

    def released(self, update_id: int) -> None:
        super().released(update_id)
        self._forget(update_id)

    def _forget(self, update_id: int) -> str | None:
        key = self._chat_of.pop(update_id, None)
        if key is not None:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]
        return key

    async def _write(self) -> bool:
        async with self._writing:
            batch = self._done[: self.flush_at]
            del self._done[: len(batch)]
            if not batch:
                return True
            chats = {self._chat_of[i] for i in batch if i in self._chat_of}
            counts = Counter(self._chat_of[i] for i in batch if i in self._chat_of)
            # Released with their marks: every update this process held of them is answered.
            done = {k for k in chats if self._open[k] <= counts[k]}
            try:
                async with self.store.begin(counted=False) as conn:
                    await mark_answered(conn, batch, self.now())
                    if done:
                        await release_chats(conn, self.worker, done)
            except Exception:
                log.exception("marking %d updates answered failed; retrying", len(batch))
                self._done[:0] = batch
                self.failures += 1
                return False
            self.marked += len(batch)
            for update_id in batch:
                self._forget(update_id)
            self._let_go(done)
            self._unflushed.difference_update(batch)
        # Room in the queue, or a chat given back whose newer updates wait in the inbox.
        self._more.set()
        return True

    async def close(self) -> None:
        """Stop claiming (a round in progress ends first), write the last marks and give back
        every chat still claimed (what was not answered is taken at once by another process,
        not after the lease)."""
        # Together: each may wait up to STOP_WAIT_SECONDS for a round on a database that hangs.
        await asyncio.gather(self._claiming.stop(), self._renewals.stop())
        listener, self._listener = self._listener, None
        if listener is not None:
            # Waiting for a notification: its connection is closed, not sent back to the pool.
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await self.poller.close()
        await super().close()
        log.info("%s answered %d updates of %d chats", self.worker, self.marked, self.claimed)
        if self._chats:
            try:
                async with self.store.begin(counted=False) as conn:
                    await release_chats(conn, self.worker, self._chats)
            except Exception:
                log.warning("could not give back %d chats on stop", len(self._chats))
            self._let_go(set(self._chats))


class PollerLease:
    """The 'poller' lease: the one process that sends getUpdates (two would make Telegram
    answer 409 Conflict to one of them). `wait` returns once this process holds it, with more
    than half of it left as last written."""

    NAME = "poller"

    def __init__(self, store: Store, worker: str, lease: float) -> None:
        self.store = store
        self.worker = worker
        self.lease = lease
        self._held = asyncio.Event()
        self._until = 0.0  # monotonic; the lease as last written, from before the write
        self._rounds = _Rounds(
            self._take, lease * RENEW_EVERY, failed="could not take or renew the poller's lease"
        )
        self.taken = 0  # times this process took it (not renewals)

    async def wait(self) -> None:
        if not self._rounds.running:
            self._rounds.start(at_once=True)
        while not (self._held.is_set() and time.monotonic() < self._until - self.lease / 2):
            self._held.clear()
            await self._held.wait()

    async def _take(self) -> None:
        started = time.monotonic()
        try:
            async with self.store.begin(counted=False) as conn:
                mine = await take_lease(conn, self.NAME, self.worker, self.lease)
        except Exception:
            log.warning("could not take or renew the poller's lease", exc_info=True)
            mine = False
        if mine:
            if not self._held.is_set() and self._until < started:
                self.taken += 1
                log.info("this process polls for updates now (%s)", self.worker)
            self._until = started + self.lease
            self._held.set()
        else:
            self._held.clear()

    async def close(self) -> None:
        if not self._rounds.running:
            return
        await self._rounds.stop()
        # Another process takes over at once, not after the lease.
        with contextlib.suppress(Exception):
            async with self.store.begin(counted=False) as conn:
                await drop_lease(conn, self.NAME, self.worker)


# --- scheduler jobs -----------------------------------------------------------------------


class JobLeases:
    """Which process runs each scheduler job (the handoff check, the delay policy's round,
    the ops check): the one holding the job's lease, a row of worker_leases named
    'job:<name>', taken by the same atomic upsert as the poller's (store.shared.take_lease).
    Every process's scheduler still ticks; a round of a job whose lease another process
    holds is skipped. The holder renews its leases every RENEW_EVERY of the lease between
    rounds too, so it keeps them while it lives (another process's rounds always find them
    taken, whatever the phase of its scheduler), and another process takes a job over at its
    first round after a dead holder's lease has run out (UPDATE_LEASE_SECONDS).

    A row rather than PostgreSQL's advisory locks: a session lock lives as long as one
    connection, which would have to be kept out of the pool for the process's life and is
    lost, silently, with that connection; a transaction lock does not outlast the round's
    first transaction. The row is read by the database's clock, seen in the table (who holds
    what), and the same on SQLite, where the one process always holds every lease."""

    PREFIX = "job:"

    def __init__(self, store: Store, worker: str, lease: float) -> None:
        self.store = store
        self.worker = worker
        self.lease = lease
        self.shared = is_shared(store)
        self._held: set[str] = set()
        self._renewals = _Rounds(
            self._renew,
            lease * RENEW_EVERY,
            failed="could not renew the jobs' leases; trying again",
        )
        self.runs: Counter[str] = Counter()  # rounds run here, by job
        self.skipped: Counter[str] = Counter()  # rounds left to the holder elsewhere

    async def take(self, job: str) -> bool:
        """Whether this process runs this round of ``job``: it holds the job's lease, taken
        or renewed now. False when the database cannot say (the next round asks again)."""
        if not self.shared:
            return True
        name = self.PREFIX + job
        try:
            async with self.store.begin(counted=False) as conn:
                mine = await take_lease(conn, name, self.worker, self.lease)
        except Exception:
            log.warning("could not take the lease of the job %s", job, exc_info=True)
            mine = False
        if mine and name not in self._held:
            log.info("this process runs the job %s now (%s)", job, self.worker)
        if mine:
            self._held.add(name)
            if not self._renewals.running:
                self._renewals.start()
        else:
            self._held.discard(name)
        return mine

    async def run(self, job: str, round_: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``round_`` if this process holds ``job``'s lease; whether it ran."""
        if not await self.take(job):
            self.skipped[job] += 1
            return False
        self.runs[job] += 1
        await round_()
        return True

    async def _renew(self) -> None:
        if not self._held:
            return
        async with self.store.begin(counted=False) as conn:
            kept = await renew_leases(conn, self.worker, self._held, self.lease)
        lost = self._held - kept
        if lost:
            # Stalled past the lease: another process runs them now.
            log.warning("jobs taken over by another process: %s", sorted(lost))
        self._held = kept

    async def close(self) -> None:
        """Stop renewing and give the leases back: another process takes the jobs over at
        its next round, not after the lease."""
        await self._renewals.stop()
        if self.runs or self.skipped:
            log.info(
                "%s ran job rounds %s, left to another process %s",
                self.worker,
                dict(sorted(self.runs.items())),
                dict(sorted(self.skipped.items())),
            )
        held, self._held = self._held, set()
        for name in sorted(held):
            with contextlib.suppress(Exception):
                async with self.store.begin(counted=False) as conn:
                    await drop_lease(conn, name, self.worker)


_job_leases: weakref.WeakKeyDictionary[Any, JobLeases] = weakref.WeakKeyDictionary()


def job_leases(app: BotApplication) -> JobLeases:
    """The application's job leases, under its inbox's worker name (one name per process)."""
    leases = _job_leases.get(app)
    if leases is None:
        settings = app.bot_data.settings
        inbox = getattr(app.update_queue, "inbox", None)
        worker = inbox.worker if isinstance(inbox, SharedInbox) else None
        leases = JobLeases(
            app.bot_data.store,
            worker or worker_name(settings.worker_name),
            settings.update_lease_seconds,
        )
        _job_leases[app] = leases
    return leases


def leased(
    job: str, callback: Callable[[BotContext], Coroutine[Any, Any, None]]
) -> Callable[[BotContext], Coroutine[Any, Any, None]]:
    """``callback`` as a job of the scheduler that one process at a time runs (`JobLeases`)."""

    async def run(context: BotContext) -> None:
        app: BotApplication = context.application  # type: ignore[assignment]
        await job_leases(app).run(job, partial(callback, context))

    run.__name__ = run.__qualname__ = f"leased_{job.replace('-', '_')}"
    return run


async def close_job_leases(app: BotApplication) -> None:
    leases = _job_leases.pop(app, None)
    if leases is not None:
        await leases.close()


# --- the shared send pace ------------------------------------------------------------------

# Slots are reserved this long's worth at a time (at least one): one statement per slot at
# 1,000/s would be 1,000 statements a second on one row.
RESERVE_SECONDS = 0.05
# A reserved slot passed by more than this is not used (the process stalled): sent now, it
# would go out closer to the next slots than the pace allows.
STALE_SECONDS = 0.05
# Chat paces idle this long are deleted, at most every PRUNE_EVERY slots taken.
PRUNE_AFTER = 60.0
PRUNE_EVERY = 10_000


class SharedPace:
    """Send slots of the pace ``name`` at ``rate`` a second across every process of the bot
    (store.shared.take_slots), a few reserved at a time; ``handed`` records each slot handed
    out (database clock) when ``record`` is set, for the tests that count them."""

    def __init__(self, store: Store, name: str, rate: float, *, record: bool = False) -> None:
        self.store = store
        self.name = name
        self.interval = 1 / rate
        self.batch = max(1, math.floor(rate * RESERVE_SECONDS))
        self._reserved: list[tuple[float, float]] = []  # (database time, monotonic time)
        self._lock = asyncio.Lock()
        self.handed: list[float] | None = [] if record else None

    async def slot(self) -> float:
        """Wait for this process's next slot; returns it (database clock)."""
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._reserved and self._reserved[0][1] < now - STALE_SECONDS:
                    self._reserved.pop(0)
                if self._reserved:
                    at, local = self._reserved.pop(0)
                    break
                async with self.store.begin(counted=False) as conn:
                    slot = await take_slots(conn, self.name, self.interval, self.batch)
                base = time.monotonic() + slot.wait
                self._reserved = [
                    (slot.at + i * self.interval, base + i * self.interval)
                    for i in range(self.batch)
                ]
        if self.handed is not None:
            self.handed.append(at)
        wait = local - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return at


class ChatPace:
    """One send a ``interval`` seconds per chat, across every process (a pace per chat).

    ``burst``: sends that may go out at once before the pace applies, as Telegram tolerates
    short bursts in a chat (a token bucket of that size, the sandbox's model of it): the
    chat's row is the pace's theoretical next slot, and a sender waits only for what of it
    lies beyond (burst - 1) intervals from now (the generic cell rate algorithm). Senders of
    different bursts may share a chat's row: each keeps to the largest bucket."""

    def __init__(self, store: Store, interval: float, burst: int = 1) -> None:
        self.store = store
        self.interval = interval
        self.tolerance = (burst - 1) * interval
        self.taken = 0  # slots taken: what the tests count
        self.waited = 0  # of them, those that had to wait

    async def slot(self, chat_id: int) -> float:
        if self.interval <= 0:
            return 0.0
        async with self.store.begin(counted=False) as conn:
            slot = await take_slots(conn, f"chat:{chat_id}", self.interval)
            self.taken += 1
            if self.taken % PRUNE_EVERY == 0:
                await prune_pace(conn, PRUNE_AFTER)
        wait = slot.wait - self.tolerance
        if wait > 0:
            self.waited += 1
            await asyncio.sleep(wait)
        return slot.at


# Replies to a chat that may go out at once before its pace applies (`ChatPace`): Telegram
# allows short bursts over one message a second in a chat (about three), and an update's
# answer of two messages, or a customer's quick second question, is answered at once.
# Notices keep a burst of one (bot.notices): nobody waits for them. Two, not three: a notice
# may go out later than its chat's slot (behind the token's pace and its lease check), and
# lands beside the replies that the pace let go meanwhile: one late message and two replies
# at once stay within the three (a burst of three let a fourth through: a 429 in the test).
REPLY_BURST = 2

# Methods that put a message in a chat: what Telegram's limits count.
_PACED = ("send", "copy", "forward")


class SharedRateLimiter(BaseRateLimiter[int]):
    """PTB's rate limiter for the replies of several processes: each message a slot of its
    chat's pace (one a PER_CHAT_INTERVAL_SECONDS, shared with the notices and whatever any
    process sends to the chat) and then of the shared 'replies' pace (REPLIES_PER_SECOND;
    none when 0); a 429 waits what Telegram says and tries again, up to ``max_retries``
    times, as AIORateLimiter does.

    Why every reply takes its chat's slot in the database, although a chat's replies come
    from the one process holding its claim: its own pace in memory would see its own sends
    only. A notice, an agent's message relayed or a handoff's notice goes to the chat from
    whichever process runs that work, and that process would see nothing of the replies. So
    each send, whoever makes it, moves the chat's row (one single-row upsert, store.shared.
    take_slots), and a reply waits only when the chat's bucket (REPLY_BURST) is empty: no
    wait at all when nothing went to the chat within the last interval or two."""

    def __init__(self, store: Store, rate: float, max_retries: int, per_chat: float = 0.0) -> None:
        self.pace = SharedPace(store, "replies", rate) if rate > 0 else None
        self.chats = ChatPace(store, per_chat, REPLY_BURST) if per_chat > 0 else None
        self.max_retries = max_retries

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        if self.chats is not None:
            log.info(
                "replies took %d slots of their chats' pace, %d of them waited",
                self.chats.taken,
                self.chats.waited,
            )

    async def _slot(self, data: dict[str, Any]) -> None:
        chat = data.get("chat_id")
        if self.chats is not None and isinstance(chat, int):
            # The chat's slot first: a slot of the token's pace is not spent on waiting.
            await self.chats.slot(chat)
        if self.pace is not None:
            await self.pace.slot()

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        paced = endpoint.startswith(_PACED)
        for attempt in range(self.max_retries + 1):
            if paced:
                await self._slot(data)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if attempt == self.max_retries:
                    raise
                wait = exc.retry_after
                seconds = wait if isinstance(wait, (int, float)) else wait.total_seconds()
                await asyncio.sleep(float(seconds) + 0.1)
        raise AssertionError("unreachable: the last attempt returns or raises")
