"""The scheduler: queue what changed, apply the delay policy, deliver due notices.

Everything here reads the app clock (`app.bot_data.now`), so tests move time and call
`run_policy`, `queue_due` and `deliver_due` directly; the JobQueue runs `tick` periodically.

Delivery is crash-safe through leases (store.outbox.claim_due): a notice whose send was never
confirmed is claimed again when its lease runs out, so a killed process loses nothing and
repeats at most what it had in flight. A living holder renews its leases while it sends (a
batch may take longer than one lease: a slow Bot API, a database held by an import) and sends
nothing whose lease it cannot confirm; what it sent is recorded however long the database
refuses the write. Rate limits are real time (Telegram's), so the pacer uses the monotonic
clock, not the app clock; leases are the app clock's, as claim_due judges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import math
import secrets
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.request import BaseRequest, RequestData
from telegram.request._requestparameter import RequestParameter

from bot.context import BotApplication, BotContext
from bot.metrics import counted
from bot.render import ButtonSpec
from bot.request import request_for
from bot.settings import Settings
from bot.shared import ChatPace, SharedPace, is_shared, job_leases, worker_name
from store.backorders import run_allocation
from store.catalog import names_of, pick_name
from store.db import Store
from store.delays import DelayPolicy, offer_for, record_shown, run_delay_policy, run_follow_on
from store.insights import line_range_days
from store.outbox import (
    BACK_IN_STOCK,
    DELAY_CANCELLED,
    DELAY_OFFER,
    ORDER_UPDATE,
    Claimed,
    claim_due,
    finish,
    mark_unreachable,
    renew_claims,
    retry_later,
    run_notices,
)
from store.schema import handoffs as handoffs_table
from store.schema import products

log = logging.getLogger(__name__)

# Backoff for 5xx and timeouts: 2, 4, 8 ... seconds, at most this.
MAX_BACKOFF = timedelta(minutes=5)
# While an agent owns the thread and the topic cannot take the notice yet, look again then.
HOLD = timedelta(minutes=1)
# Results are written back in small batches: a kill repeats at most what was sent since the
# last write plus what was in flight.
FLUSH_SECONDS = 0.1
# A write of results the database refused (locked by an import past the busy timeout, a
# disk error) is tried again after this, doubling up to RETRY_MAX: a send done is never
# forgotten (it was sent again once its lease ran out).
RETRY_FIRST = 0.1
RETRY_MAX = 2.0
# Leases are renewed every this share of LEASE_SECONDS while a round holds any, and a notice
# is sent only while at least SEND_MARGIN of its lease is left as last confirmed; with less
# (renewals late: the database held by another process) the send waits for a renewal. A
# batch that took longer than its lease had its unsent rest claimed again by the next claim:
# 331 duplicates in a fan-out of 3,338 with LEASE_SECONDS=10.
RENEW_EVERY = 0.25
SEND_MARGIN = 0.5
# A batch is at most what the rate sends in this share of a lease.
BATCH_LEASE_SHARE = 0.5
# The next batch is claimed when what is left of this one would take about this long to
# send at the configured rate: the pacer never runs dry between batches (claiming after the
# last send of a batch left a gap of a claim and a round-trip per batch), and the next batch's
# leases start only this much earlier.
PREFETCH_SECONDS = 1.0
# Slots the pacer missed by at most this long (the event loop ran late: a busy turn, the
# process descheduled) are still taken, at once. At 1,000/s a slot is a millisecond: the
# schedule was reset on every jitter and a loaded 2-core machine lost a quarter of the rate.
# The bound keeps the burst small: at most this long's worth of sends above the rate in any
# window (50 at 1,000/s); at rates below 40/s it is one slot, as before.
CATCH_UP_SECONDS = 0.05


@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    to_agents: int = 0
    skipped: int = 0  # nothing left after the customer's choices
    retried: int = 0  # 5xx, timeouts: back later
    rate_limited: int = 0  # 429s received
    failed: int = 0
    unreachable: int = 0  # 403: customer blocked the bot
    held: int = 0  # agent owns the thread
    no_chat: int = 0
    lost: int = 0  # claimed, then taken by another holder or closed before its send: not sent
    renewed: int = 0  # lease renewals written
    quiet: bool = False


@dataclass(frozen=True)
class Rendered:
    text: str
    rows: tuple[tuple[ButtonSpec, ...], ...]
    offer_id: int | None = None


# Sends in flight at once, whatever the rate, and the sender's HTTP pool, per request layer
# (REQUEST_LAYER). Measured against the sandbox in its own process (2 loaded cores, limits
# off): PTB's httpx layer is fastest with few requests in flight and slows down with more
# (152/s with 4, 29/s with 16, 41/s with 64), so a few reused connections carry it all; the
# aiohttp layer gains with concurrency (532/s with 4, 570/s with 16, 661/s with 32, 708/s
# with 64).
IN_FLIGHT = {"aiohttp": 64, "httpx": 4}
POOL_SIZE = {"aiohttp": 64, "httpx": 8}
# Over aiohttp, the sends in flight (and its pool) also cover this long at the configured
# rate: a send holds its place until the answer comes, so when answers slowed down (the API
# busy for a moment) every place was taken, nobody took the pacer's slots and they were lost.
# At 1,000/s, 64 in flight lost 130-170 ms of slots once or twice in 20 s (98.6-98.9% of the
# rate delivered), 128 once, 256 never (99.6%).
ANSWER_SECONDS = 0.25
# The scheduler's follow-on in the bot's process (run_policy): lines per batch, per tick.
POLICY_BATCH = 50
POLICY_LINES = 10_000
NOTICE_LINES_BATCH = 100
NOTICE_LINES = 20_000


def sends_in_flight(settings: Settings) -> int:
    """How many notices may be sending or waiting for a slot at once."""
    layer = settings.request_layer
    if layer != "aiohttp":
        return IN_FLIGHT[layer]
    return max(IN_FLIGHT[layer], math.ceil(settings.send_rate_per_second * ANSWER_SECONDS))


def sender_request(settings: Settings) -> BaseRequest:
    """The notice sender's own HTTP layer: the one REQUEST_LAYER names, sized for sending."""
    pool = max(POOL_SIZE[settings.request_layer], sends_in_flight(settings))
    return counted(request_for(settings, pool=pool, json_body=True), "notice")


@dataclass
class _Sender:
    """Per-application delivery state: its own Bot (PTB's AIORateLimiter would cap and retry
    behind our back), the pacer, and the last send per chat.

    The pacer hands out slots by reservation: each sender takes the next free instant and
    sleeps once until it. (Polling for a free slot woke every waiting send on every slot: with
    thousands waiting at 1,000/s the event loop did nothing else, the HTTP requests in flight
    starved into timeouts and a round delivered nothing.) At most ``max_in_flight``
    (sends_in_flight) sends hold or wait for a slot; the rest wait on a semaphore, which wakes
    one at a time."""

    bot: Bot
    rate: float
    per_chat: float
    max_in_flight: int = 4
    next_slot: float = 0.0
    paused_until: float = 0.0
    last_to_chat: dict[int, float] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    in_flight: asyncio.Semaphore = field(init=False)
    worker: str = field(default_factory=lambda: _worker_name())
    rounds: int = 0
    # Several processes (PostgreSQL, bot/shared.py): the token's pace and each chat's are
    # the database's, whichever process sends.
    shared: SharedPace | None = None
    chat_pace: ChatPace | None = None

    def __post_init__(self) -> None:
        self.in_flight = asyncio.Semaphore(self.max_in_flight)

    async def slot(self) -> None:
        if self.shared is not None:
            while True:
                pause = self.paused_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                await self.shared.slot()
                if self.paused_until <= time.monotonic():
                    return
        interval = 1 / self.rate
        # How far behind the schedule may be and still be caught up: whole slots, at least
        # one (at 25/s exactly one).
        behind = max(1, math.floor(self.rate * CATCH_UP_SECONDS)) * interval
        while True:
            now = time.monotonic()
            # Keep the schedule: a late wake-up must not push every later slot back (a slot
            # missed by less than ``behind`` is taken now), nor may an idle spell (or a
            # longer stall) bank more than one slot.
            at = self.next_slot
            if at < now - behind:
                at = now - interval
            at = max(at, self.paused_until)
            self.next_slot = at + interval
            if at > now:
                await asyncio.sleep(at - now)
            if self.paused_until <= at:
                return
            # A 429 arrived while this send waited: take a slot after the pause.

    async def chat_wait(self, chat_id: int) -> None:
        if self.chat_pace is not None:
            await self.chat_pace.slot(chat_id)
            return
        last = self.last_to_chat.get(chat_id)
        if last is not None:
            wait = last + self.per_chat - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    def chat_sent(self, chat_id: int) -> None:
        self.last_to_chat[chat_id] = time.monotonic()
        if len(self.last_to_chat) > 100_000:
            horizon = time.monotonic() - self.per_chat
            self.last_to_chat = {c: t for c, t in self.last_to_chat.items() if t > horizon}


def _worker_name(explicit: str | None = None) -> str:
    """Unique among the bot's processes, and among one name's runs: a pid alone is not (every
    container's bot is pid 1), and a claim token two processes shared would renew each
    other's leases (WORKER_NAME gets a random tail: a restart must not take its dead
    run's claims for its own before their lease has run out)."""
    if explicit:
        return f"{explicit}:{secrets.token_hex(4)}"
    return worker_name()


_senders: weakref.WeakKeyDictionary[BotApplication, _Sender] = weakref.WeakKeyDictionary()


def _sender(app: BotApplication) -> _Sender:
    sender = _senders.get(app)
    if sender is None:
        s = app.bot_data.settings
        request = sender_request(s)
        bot = Bot(
            app.bot.token,
            base_url=app.bot.base_url.removesuffix(app.bot.token),
            base_file_url=app.bot.base_file_url.removesuffix(app.bot.token),
            request=request,
        )
        store = app.bot_data.store
        shared = is_shared(store)
        sender = _Sender(
            bot,
            s.send_rate_per_second,
            s.per_chat_interval_seconds,
            max_in_flight=sends_in_flight(s),
            worker=_worker_name(s.worker_name),
            shared=SharedPace(store, "notices", s.send_rate_per_second) if shared else None,
            chat_pace=ChatPace(store, s.per_chat_interval_seconds) if shared else None,
        )
        _senders[app] = sender
    return sender


async def close(app: BotApplication) -> None:
    sender = _senders.pop(app, None)
    if sender is not None:
        # Bot.shutdown skips a bot that never ran initialize (a get_me we do not need).
        await sender.bot.request.shutdown()


def delay_policy(app: BotApplication) -> DelayPolicy:
    return app.bot_data.settings.delay_policy


def shop_today(app: BotApplication) -> date:
    return app.bot_data.now().astimezone(app.bot_data.settings.zone).date()


def in_quiet_hours(app: BotApplication, now: datetime | None = None) -> bool:
    window = app.bot_data.settings.quiet_window
    if window is None:
        return False
    local = (now or app.bot_data.now()).astimezone(app.bot_data.settings.zone).time()
    start, end = window
    if start <= end:
        return start <= local < end
    return local >= start or local < end


async def run_policy(app: BotApplication) -> None:
    """The follow-on work of the changes, as backorder-admin does it: a big receipt's units,
    then the projections the changes owe with the policy and the notices of the lines they
    move in the same batches (store.delays.run_follow_on), then what those left from the
    marks, in short batches of their own (store.delays.run_delay_policy,
    store.outbox.run_notices)."""
    now = app.bot_data.now()
    store = app.bot_data.store
    await run_allocation(store, max_batches=40)
    await run_follow_on(
        store,
        today=shop_today(app),
        now=now,
        policy=delay_policy(app),
        threshold_days=app.bot_data.settings.notice_threshold_days,
        max_batches=40,
    )
    # At most 10,000 lines a tick, so that delivery is not held back behind a long first pass
    # over a big store; the next tick goes on from the marks and the cursor. In batches a
    # fifth of an admin command's: an update that writes waits for the batch that holds the
    # write lock to end (0.45-0.6 s for 250 lines on the 1M-order store under load).
    await run_delay_policy(
        store,
        today=shop_today(app),
        now=now,
        policy=delay_policy(app),
        batch_size=POLICY_BATCH,
        max_batches=POLICY_LINES // POLICY_BATCH,
    )
    # The notices of what the policy is done with, in batches of their own as well.
    await run_notices(
        store,
        threshold_days=app.bot_data.settings.notice_threshold_days,
        now=now,
        batch_size=NOTICE_LINES_BATCH,
        max_batches=NOTICE_LINES // NOTICE_LINES_BATCH,
    )


async def tick(context: BotContext) -> None:
    app: BotApplication = context.application  # type: ignore[assignment]
    # In the background: on SQLite this process's writers take turns, and an update's write
    # goes before the next batch of the follow-on or of a notice round (store.db.Store.
    # background). Before, an update waited behind every batch queued ahead of it.
    with Store.background():
        # The job must outlive one bad round; the next tick tries again. Queueing that could
        # not write (an import holds the database past the busy timeout) does not hold back
        # delivery of what is queued already.
        try:
            await run_policy(app)
        except OperationalError as exc:
            log.warning("notice queueing could not write, the next round tries again: %s", exc)
        except Exception:
            log.exception("notice queueing failed")
        try:
            await deliver_due(app)
        except Exception:
            log.exception("notice round failed")


async def _leased_tick(context: BotContext) -> None:
    """The tick in the process holding the 'notices' job's lease (bot.shared.JobLeases): the
    policy's round is one process's work. Every other process still delivers: claim_due
    shares out the due notices (SKIP LOCKED), under the token's shared pace."""
    app: BotApplication = context.application  # type: ignore[assignment]
    if await job_leases(app).run("notices", partial(tick, context)):
        return
    try:
        await deliver_due(app)
    except Exception:
        log.exception("notice round failed")


def schedule(app: BotApplication) -> None:
    interval = app.bot_data.settings.notice_job_interval_seconds
    if interval <= 0 or app.job_queue is None:
        return
    app.job_queue.run_repeating(
        _leased_tick,
        interval=interval,
        first=interval,
        name="notices",
        job_kwargs={"max_instances": 1},
    )


# --- delivery ----------------------------------------------------------------------------


async def deliver_due(app: BotApplication, *, max_rounds: int | None = None) -> DeliveryReport:
    """Send every notice that is due now, within the limits; returns what happened."""
    report = DeliveryReport()
    if in_quiet_hours(app):
        report.quiet = True
        return report
    sender = _sender(app)
    if sender.lock.locked():
        return report  # another round is running in this process
    async with sender.lock:
        sender.rounds += 1
        lease = _Lease(app, f"{sender.worker}#{sender.rounds}", report)
        results = _Results(app, report, lease)
        flusher = asyncio.create_task(results.run())
        renewer = asyncio.create_task(lease.run())
        chats: dict[int, asyncio.Future[None]] = {}  # each chat's last turn
        rounds: list[asyncio.Task[None]] = []
        unsent = _Unsent(low_water=max(1, math.ceil(sender.rate * PREFETCH_SECONDS)))
        try:
            while max_rounds is None or len(rounds) < max_rounds:
                if rounds and in_quiet_hours(app):
                    break
                try:
                    batch = await _claim(app, sender, report, lease)
                except Exception:
                    # The database refused the claim: what is claimed is still sent; the
                    # next round claims the rest.
                    log.warning(
                        "could not claim notices, the next round tries again", exc_info=True
                    )
                    break
                if batch is None:
                    break
                unsent.add(len(batch.notices))
                rounds.append(
                    asyncio.create_task(_send_batch(app, sender, batch, results, chats, unsent))
                )
                # Claim the next batch once what is claimed is nearly sent (or a round failed).
                # A round that merely ended does not let the next claim in: with others still
                # sending, what is claimed may not be nearly sent yet.
                while not unsent.low.is_set() and not _failed(rounds):
                    running = [r for r in rounds if not r.done()]
                    if not running:
                        break
                    waiting = asyncio.create_task(unsent.low.wait())
                    await asyncio.wait((waiting, *running), return_when=asyncio.FIRST_COMPLETED)
                    waiting.cancel()
                if _failed(rounds):
                    break
        finally:
            try:
                # Every batch claimed is sent before the round ends; the first failure is raised.
                await asyncio.gather(*rounds)
            finally:
                results.closing.set()
                try:
                    await flusher
                finally:
                    # Held until every result is written: a sent notice whose mark waits on the
                    # database must not be claimed again meanwhile.
                    lease.closing.set()
                    await renewer
    return report


class _Lease:
    """The round's claims, all under one token: renewed together every RENEW_EVERY of the
    lease while any is held (claimed, its outcome not written yet), and before each claim, so
    the round never claims its own unsent notices again. A notice a renewal finds gone
    (another holder took it after its lease ran out, or it was closed) is lost: not sent.

    ``until``: every held notice's lease lasts at least until then, as last written (app
    clock, the one claim_due judges leases by)."""

    def __init__(self, app: BotApplication, token: str, report: DeliveryReport) -> None:
        self.app = app
        self.token = token
        self.report = report
        self.length = timedelta(seconds=app.bot_data.settings.lease_seconds)
        self.margin = self.length * SEND_MARGIN
        self.held: set[int] = set()
        self.lost: set[int] = set()
        self.until: datetime | None = None
        # The earliest lease of the claims made while a renewal was writing (not in it).
        self._claimed_since: datetime | None = None
        self._renewing = asyncio.Lock()
        self.closing = asyncio.Event()

    def claimed(self, outbox_ids: Sequence[int], until: datetime) -> None:
        self.until = until if not self.held or self.until is None else min(self.until, until)
        if self._renewing.locked():
            since = self._claimed_since
            self._claimed_since = until if since is None else min(since, until)
        self.held.update(outbox_ids)

    def released(self, outbox_ids: Sequence[int]) -> None:
        self.held.difference_update(outbox_ids)

    def short(self, now: datetime, margin: timedelta) -> bool:
        """Whether a held lease may run out within ``margin`` of ``now``."""
        return bool(self.held) and (self.until is None or self.until - margin <= now)

    async def renew(self, *, if_within: timedelta | None = None) -> None:
        """Renew every lease held; ``if_within``: only if one may run out within that (sends
        that found their lease short wait for one renewal, not one each)."""
        async with self._renewing:
            if if_within is not None and not self.short(self.app.bot_data.now(), if_within):
                return
            self._claimed_since = None
            async with self.app.bot_data.store.begin(counted=False) as conn:
                # Read under the writer's turn: what a flush just wrote is not asked for.
                ids = sorted(self.held)
                if not ids:
                    return
                until = self.app.bot_data.now() + self.length
                kept = await renew_claims(conn, self.token, ids, until)
            self.report.renewed += 1
            gone = set(ids) - kept
            if gone:
                self.lost |= gone
                self.held -= gone
                log.warning("%d notice leases were lost: not sent by this process", len(gone))
            since = self._claimed_since
            self.until = until if since is None else min(until, since)

    async def may_send(self, outbox_id: int) -> bool:
        """Whether this notice is still the round's to send: its lease confirmed with at
        least SEND_MARGIN of it left; else renewed first, as long as the database takes."""
        margin = self.margin
        pause = RETRY_FIRST
        while outbox_id not in self.lost and self.short(self.app.bot_data.now(), margin):
            try:
                await self.renew(if_within=margin)
            except Exception:
                log.warning("could not renew notice leases, sending waits", exc_info=True)
                await asyncio.sleep(pause)
                pause = min(2 * pause, RETRY_MAX)
        if outbox_id in self.lost:
            self.report.lost += 1
            return False
        return True

    async def run(self) -> None:
        every = self.length.total_seconds() * RENEW_EVERY
        while not self.closing.is_set():
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see SharedInbox
                async with asyncio.timeout(every):
                    await self.closing.wait()
            if self.closing.is_set() or not self.held:
                continue
            try:
                await self.renew()
            except Exception:
                # Sends check their lease before they go: none goes out unconfirmed.
                log.warning("could not renew notice leases, trying again", exc_info=True)


def _failed(rounds: list[asyncio.Task[None]]) -> bool:
    return any(r.done() and r.exception() is not None for r in rounds)


@dataclass
class _Unsent:
    """Notices claimed and not through yet, over every batch in flight. The next batch is
    claimed when this falls to ``low_water``: counted per batch, a batch smaller than that
    (NOTICE_BATCH_SIZE's 500 at 1,000/s) had the next claimed at once, and the next, until
    every due notice was leased, with leases running out before their turn came."""

    low_water: int
    count: int = 0
    low: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, n: int) -> None:
        self.count += n
        self._check()

    def through(self, n: int = 1) -> None:
        self.count -= n
        self._check()

    def _check(self) -> None:
        if self.count <= self.low_water:
            self.low.set()
        else:
            self.low.clear()


@dataclass
class _Batch:
    notices: list[Claimed]
    names: dict[str, dict[str, str]]
    owned: set[int]  # chats whose thread an agent owns now
    labels: dict[tuple[Any, ...], str] = field(default_factory=dict)
    ranges: dict[int, int] = field(default_factory=dict)  # line id -> days of its ETA range


def batch_limit(settings: Settings) -> int:
    """Notices claimed at once: NOTICE_BATCH_SIZE, at most what the rate sends in
    BATCH_LEASE_SHARE of a lease (renewals cover what a slow Bot API adds)."""
    fits = math.floor(settings.send_rate_per_second * settings.lease_seconds * BATCH_LEASE_SHARE)
    return max(1, min(settings.notice_batch_size, fits))


async def _claim(
    app: BotApplication, sender: _Sender, report: DeliveryReport, lease: _Lease
) -> _Batch | None:
    settings = app.bot_data.settings
    now = app.bot_data.now()
    # The round's own notices must still be leased at ``now``, or this claim would take the
    # unsent rest of a batch that outlasted its lease (and send it twice).
    if lease.short(now, timedelta(0)):
        await lease.renew(if_within=timedelta(0))
    async with app.bot_data.store.begin() as conn:
        notices = await claim_due(
            conn,
            worker=sender.worker,
            now=now,
            lease=lease.length,
            limit=batch_limit(settings),
            token=lease.token,
        )
    if not notices:
        return None
    lease.claimed([n.outbox_id for n in notices], now + lease.length)
    report.claimed += len(notices)
    names = await _names(app, notices)
    # One connection for the whole batch: a lookup per notice, all at once, drained the pool.
    owned = await _agent_owned(app, {n.chat_id for n in notices if n.chat_id})
    return _Batch(notices, names, owned, ranges=await _ranges(app, notices))


async def _send_batch(
    app: BotApplication,
    sender: _Sender,
    batch: _Batch,
    results: _Results,
    chats: dict[int, asyncio.Future[None]],
    unsent: _Unsent,
) -> None:
    by_chat: dict[int, list[Claimed]] = defaultdict(list)
    for notice in batch.notices:
        by_chat[notice.chat_id].append(notice)
    # A chat still busy with the previous batch's notices gets these after them, in order and
    # one per_chat interval apart: every chat of the batch takes its place now.
    loop = asyncio.get_running_loop()
    turns = []
    for chat_id, items in by_chat.items():
        done: asyncio.Future[None] = loop.create_future()
        turns.append((items, chats.get(chat_id), done))
        chats[chat_id] = done
        done.add_done_callback(partial(_forget, chats, chat_id))
    # Chats start a few at a time, as sends finish: started all at once, a batch's thousands
    # of first steps (each rendering its notice) ran in one turn of the event loop, the
    # pacer's timers fired late and the slots in between were lost.
    starting = asyncio.Semaphore(2 * sender.max_in_flight)
    tasks = []
    try:
        for items, before, done in turns:
            await starting.acquire()
            tasks.append(
                asyncio.create_task(
                    _to_chat(app, sender, items, batch, results, before, done, starting, unsent)
                )
            )
        await asyncio.gather(*tasks)
    finally:
        for items, _, done in turns[len(tasks) :]:
            done.set_result(None)  # never started: nobody waits for it
            unsent.through(len(items))


def _forget(
    chats: dict[int, asyncio.Future[None]], chat_id: int, done: asyncio.Future[None]
) -> None:
    if chats.get(chat_id) is done:
        del chats[chat_id]


Step = Callable[[Any], Awaitable[None]]


class _Results:
    """Outcomes written back in small batches by one task, so sends never wait on the
    database and a kill repeats little. A write the database refused is tried again with
    everything that came in meanwhile, until it is taken: never dropped. After a refusal the
    sent marks go first, in a transaction of their own, so that another result the database
    keeps refusing cannot hold them back."""

    def __init__(self, app: BotApplication, report: DeliveryReport, lease: _Lease) -> None:
        self.app = app
        self.report = report
        self.lease = lease
        self.pending: list[tuple[int | None, Step]] = []
        self.closing = asyncio.Event()
        self.sent: list[int] = []
        self.refused = 0  # writes refused in a row

    def add(self, step: Step, outbox_id: int | None = None) -> None:
        self.pending.append((outbox_id, step))

    def sent_now(self, outbox_id: int) -> None:
        self.sent.append(outbox_id)

    async def flush(self) -> None:
        steps, self.pending = self.pending, []
        sent, self.sent = self.sent, []
        if not steps and not sent:
            return
        parts = [(sent, steps)] if not self.refused else [(sent, []), ([], steps)]
        for i, (marks, rest) in enumerate(parts):
            try:
                await self._write(marks, rest)
            except BaseException:
                # In front of what came in meanwhile, in their order: all of it next time.
                self.sent[:0] = [nid for part in parts[i:] for nid in part[0]]
                self.pending[:0] = [step for part in parts[i:] for step in part[1]]
                self.refused += 1
                raise
        self.refused = 0

    async def _write(self, sent: list[int], steps: list[tuple[int | None, Step]]) -> None:
        if not sent and not steps:
            return
        async with self.app.bot_data.store.begin() as conn:
            if sent:
                await finish(conn, sent, "sent", at=self.app.bot_data.now())
            for _, step in steps:
                await step(conn)
        self.lease.released(sent)
        self.lease.released([nid for nid, _ in steps if nid is not None])

    async def run(self) -> None:
        # Woken at once by the end of the round: a sleep made every round last up to
        # FLUSH_SECONDS longer than its sends.
        pause = RETRY_FIRST
        while True:
            closing = self.closing.is_set()
            if not closing:
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: see SharedInbox
                    async with asyncio.timeout(FLUSH_SECONDS):
                        await self.closing.wait()
            try:
                await self.flush()
            except Exception:
                log.warning("could not record notice results, trying again", exc_info=True)
                await asyncio.sleep(pause)
                pause = min(2 * pause, RETRY_MAX)
                continue
            pause = RETRY_FIRST
            # The round is over and a write after it found nothing left (what came in while
            # the last one was writing is in it).
            if closing and not self.pending and not self.sent:
                return


async def _to_chat(
    app: BotApplication,
    sender: _Sender,
    items: list[Claimed],
    batch: _Batch,
    results: _Results,
    before: asyncio.Future[None] | None,
    done: asyncio.Future[None],
    starting: asyncio.Semaphore,
    unsent: _Unsent,
) -> None:
    try:
        if before is not None:
            await before
        for i, notice in enumerate(items):
            try:
                await _one(app, sender, notice, batch, results)
            finally:
                unsent.through()
                if i == 0:
                    starting.release()
    finally:
        done.set_result(None)


# PTB's encoding of disable_web_page_preview=True.
_NO_PREVIEW = json.dumps({"is_disabled": True})


def _markup(
    app: BotApplication, language: str, rows: tuple[tuple[ButtonSpec, ...], ...], batch: _Batch
) -> str:
    """The inline keyboard as JSON (InlineKeyboardMarkup.to_json without the objects); a
    label is rendered once per batch and language."""
    keyboard = []
    for row in rows:
        buttons = []
        for spec in row:
            args = spec[2] if len(spec) == 3 else {}
            key = (language, spec[0], *sorted(args.items()))
            label = batch.labels.get(key)
            if label is None:
                label = batch.labels[key] = app.bot_data.renderer.label(spec[0], language, **args)
            buttons.append({"callback_data": spec[1], "text": label})
        keyboard.append(buttons)
    return json.dumps({"inline_keyboard": keyboard})


async def _send(sender: _Sender, chat_id: int, text: str, markup: str | None) -> None:
    """sendMessage through the request layer, with the parameters encoded as Bot.send_message
    encodes them (each a JSON text). Through Bot.send_message every notice built PTB's
    parameter objects from a keyboard object and parsed the answer into a Message nobody
    reads: about a third of the sender's CPU at 1,000/s. The request layer raises what
    send_message would (RetryAfter, Forbidden, BadRequest, NetworkError ...)."""
    values = [
        ("chat_id", str(chat_id)),
        ("text", text),
        ("link_preview_options", _NO_PREVIEW),
        ("parse_mode", "HTML"),
    ]
    if markup is not None:
        values.append(("reply_markup", markup))
    data = RequestData([RequestParameter(name, value, None) for name, value in values])
    await sender.bot.request.post(f"{sender.bot.base_url}/sendMessage", data)


async def _one(
    app: BotApplication,
    sender: _Sender,
    notice: Claimed,
    batch: _Batch,
    results: _Results,
) -> None:
    report = results.report
    lease = results.lease
    nid = notice.outbox_id
    if nid in lease.lost:
        report.lost += 1
        return
    if notice.chat_id == 0:
        report.no_chat += 1
        results.add(partial(finish, outbox_ids=[nid], status="no_chat"), nid)
        return
    if notice.unreachable:
        report.unreachable += 1
        results.add(
            partial(finish, outbox_ids=[nid], status="dead", error="customer unreachable"), nid
        )
        return
    language = notice.language or app.bot_data.settings.default_language
    rendered = await _render(app, notice, batch.names, language, batch.ranges)
    if rendered is None:
        report.skipped += 1
        results.add(
            partial(finish, outbox_ids=[nid], status="skipped", error="nothing to tell"), nid
        )
        return

    handoff = await _agent_route(app, notice.chat_id) if notice.chat_id in batch.owned else None
    if handoff is not None:
        route, post = handoff
        if post is not None and not await lease.may_send(nid):
            return
        if post is not None and await post(app, notice.chat_id, rendered.text):
            report.to_agents += 1
            results.sent_now(nid)
            if rendered.offer_id is not None:
                await _shown(results, rendered, "agent_topic")
            return
        report.held += 1
        until = app.bot_data.now() + HOLD
        results.add(
            lambda conn: retry_later(
                conn,
                [nid],
                until,
                error=f"held: agent owns the thread ({route})",
                refund_attempt=True,
                holder=lease.token,
            ),
            nid,
        )
        return

    markup = _markup(app, language, rendered.rows, batch) if rendered.rows else None
    attempts_429 = 0
    while True:
        await sender.chat_wait(notice.chat_id)
        try:
            async with sender.in_flight:
                await sender.slot()
                # Checked last, as late as it can be: a notice whose lease is not confirmed
                # may be another holder's by now.
                if not await lease.may_send(nid):
                    return
                sender.chat_sent(notice.chat_id)
                await _send(sender, notice.chat_id, rendered.text, markup)
        except RetryAfter as exc:
            report.rate_limited += 1
            attempts_429 += 1
            wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            # A 429 is about the whole bot, not this chat: everyone waits.
            sender.paused_until = max(sender.paused_until, time.monotonic() + seconds)
            if attempts_429 <= 3:
                continue
            until = app.bot_data.now() + timedelta(seconds=seconds)
            report.retried += 1
            results.add(
                partial(
                    retry_later,
                    outbox_ids=[nid],
                    not_before=until,
                    error="429",
                    refund_attempt=True,
                    holder=lease.token,
                ),
                nid,
            )
            return
        except Forbidden as exc:
            report.unreachable += 1
            customer_id = notice.customer_id
            error = str(exc)
            at = app.bot_data.now()

            results.add(
                partial(_blocked, nid=nid, customer_id=customer_id, at=at, error=error), nid
            )
            return
        except BadRequest as exc:
            report.failed += 1
            error = str(exc)
            results.add(partial(finish, outbox_ids=[nid], status="failed", error=error), nid)
            return
        except (NetworkError, TelegramError) as exc:
            # 5xx and timeouts: maybe delivered, maybe not; try again after a backoff.
            error = f"{type(exc).__name__}: {exc}"
            if notice.attempts >= app.bot_data.settings.notice_max_attempts:
                report.failed += 1
                results.add(partial(finish, outbox_ids=[nid], status="failed", error=error), nid)
                return
            report.retried += 1
            backoff = min(timedelta(seconds=2**notice.attempts), MAX_BACKOFF)
            until = app.bot_data.now() + backoff
            results.add(
                partial(
                    retry_later,
                    outbox_ids=[nid],
                    not_before=until,
                    error=error,
                    holder=lease.token,
                ),
                nid,
            )
            return
        report.sent += 1
        results.sent_now(nid)
        if rendered.offer_id is not None:
            await _shown(results, rendered, "telegram")
        return


async def _blocked(
    conn: Any, *, nid: int, customer_id: int | None, at: datetime, error: str
) -> None:
    if customer_id is not None:
        await mark_unreachable(conn, customer_id, at)
    await finish(conn, [nid], "dead", error=error)


async def _shown(results: _Results, rendered: Rendered, channel: str) -> None:
    offer_id = rendered.offer_id
    assert offer_id is not None
    at = results.app.bot_data.now()
    buttons = [spec[1] for row in rendered.rows for spec in row]
    results.add(
        lambda conn: record_shown(
            conn, offer_id, text=rendered.text, buttons=buttons, channel=channel, at=at
        )
    )


async def _agent_owned(app: BotApplication, chat_ids: set[int]) -> set[int]:
    """The chats of a batch whose thread an agent owns, looked up on one connection: the
    chats with a handoff not closed, a query per 900 chats (a query per chat took longer
    than sending at 1,000/s), each confirmed by the handoff capability's own rule."""
    try:
        handoffs = importlib.import_module("store.handoffs")
    except ImportError:
        return set()
    active = getattr(handoffs, "active_handoff", None)
    if active is None or not chat_ids:
        return set()
    h = handoffs_table.c
    ordered = sorted(chat_ids)
    owned: set[int] = set()
    async with app.bot_data.store.connect() as conn:
        for i in range(0, len(ordered), 900):
            maybe = await conn.scalars(
                select(h.chat_id).where(h.chat_id.in_(ordered[i : i + 900]), h.state != "closed")
            )
            for chat_id in sorted(int(c) for c in maybe):
                if await active(conn, chat_id):
                    owned.add(chat_id)
    return owned


AgentRoute = tuple[str, Callable[[Any, int, str], Awaitable[bool]] | None]


async def _agent_route(app: BotApplication, chat_id: int) -> AgentRoute | None:
    """While an agent owns the customer's thread, notices go to the agent's topic. The
    handoff capability lives in its own modules; without them nobody owns a thread."""
    try:
        handoffs = importlib.import_module("store.handoffs")
    except ImportError:
        return None
    active = getattr(handoffs, "active_handoff", None)
    if active is None:
        return None
    async with app.bot_data.store.connect() as conn:
        found = await active(conn, chat_id)
    if not found:
        return None
    try:
        post = getattr(importlib.import_module("bot.handlers.handoff"), "post_to_topic", None)
    except ImportError:
        post = None
    return ("topic", post)


# --- rendering ---------------------------------------------------------------------------


async def _names(app: BotApplication, batch: Sequence[Claimed]) -> dict[str, dict[str, str]]:
    skus: set[str] = set()
    for n in batch:
        if n.kind == ORDER_UPDATE:
            skus.update(line["sku"] for line in n.payload["lines"])
        elif n.kind == BACK_IN_STOCK:
            skus.add(n.payload["sku"])
    if not skus:
        return {}
    found: dict[str, dict[str, str]] = {}
    cols = (
        products.c.sku,
        products.c.name_en,
        products.c.name_de,
        products.c.name_es,
        products.c.name_ru,
    )
    async with app.bot_data.store.connect() as conn:
        sku_list = sorted(skus)
        for i in range(0, len(sku_list), 900):
            for r in await conn.execute(
                select(*cols).where(products.c.sku.in_(sku_list[i : i + 900]))
            ):
                found[r.sku] = names_of(r)
    return found


async def _ranges(app: BotApplication, batch: Sequence[Claimed]) -> dict[int, int]:
    """Days of the ETA range (store.insights) of each dated line the batch tells a new date."""
    ids = [
        int(line["line_id"])
        for n in batch
        if n.kind == ORDER_UPDATE
        for line in n.payload["lines"]
        if line.get("new") and "line_id" in line
    ]
    if not ids:
        return {}
    async with app.bot_data.store.connect() as conn:
        return await line_range_days(conn, ids)


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


async def _render(
    app: BotApplication,
    notice: Claimed,
    names: dict[str, dict[str, str]],
    language: str,
    ranges: dict[int, int] | None = None,
) -> Rendered | None:
    renderer = app.bot_data.renderer
    p = notice.payload
    if notice.kind == ORDER_UPDATE:
        lines = []
        for line in p["lines"]:
            view: dict[str, Any] = {
                "ready": 0,
                "shipped": 0,
                "cancelled": 0,
                "carrier": None,
                "tracking": None,
                **line,
            }
            view["name"] = pick_name(names.get(line["sku"], {"en": line["sku"]}), language)
            view["old"] = _day(line.get("old"))
            view["new"] = _day(line.get("new"))
            days = (ranges or {}).get(int(line.get("line_id") or 0))
            view["until"] = view["new"] + timedelta(days=days) if view["new"] and days else None
            view["shipped_on"] = _day(line.get("shipped_on"))
            view["moved"] = "old" in line or "new" in line
            if view["moved"] and not notice.notify_delays:
                view["moved"] = False
            if not notice.notify_shipping:
                view["ready"] = view["shipped"] = 0
            if view["moved"] or view.get("ready") or view.get("shipped") or view.get("cancelled"):
                lines.append(view)
        if not lines:
            return None
        text = renderer.text(
            "notice_order.j2", language, order_number=p["order_number"], lines=lines
        )
        rows: tuple[tuple[ButtonSpec, ...], ...] = (
            (("order", f"o:{p['order_number']}", {"number": p["order_number"]}),),
            (("notifications", "ntf:menu"),),
        )
        return Rendered(text, rows)
    if notice.kind == BACK_IN_STOCK:
        if not notice.notify_back_in_stock:
            return None
        name = pick_name(names.get(p["sku"], {"en": p["sku"]}), language)
        text = renderer.text("notice_back_in_stock.j2", language, name=name)
        return Rendered(text, ((("product", f"p:{p['sku']}", {"name": name}),),))
    if notice.kind in (DELAY_OFFER, DELAY_CANCELLED):
        return await _render_delay(app, notice, language)
    log.warning("unknown notice kind %s", notice.kind)
    return None


async def _render_delay(app: BotApplication, notice: Claimed, language: str) -> Rendered | None:
    from store.catalog import alternatives_in_stock

    renderer = app.bot_data.renderer
    offer_id = int(notice.payload["offer_id"])
    if notice.customer_id is None:
        return None
    async with app.bot_data.store.connect() as conn:
        offer = await offer_for(conn, offer_id, notice.customer_id)
        if offer is None:
            return None
        name = await _product_name(conn, offer.sku, language)
        alternatives = (
            await alternatives_in_stock(conn, offer.sku, limit=1)
            if notice.kind == DELAY_OFFER
            else []
        )
    if notice.kind == DELAY_CANCELLED:
        qty = int(notice.payload.get("qty") or 0)
        text = renderer.text(
            "delay_auto_cancelled.j2",
            language,
            offer=offer,
            name=name,
            qty=qty,
            refund=qty * offer.unit_price_minor,
        )
        rows: tuple[tuple[ButtonSpec, ...], ...] = (
            (("order", f"o:{offer.order_number}", {"number": offer.order_number}),),
        )
        return Rendered(text, rows)
    from bot.handlers.delays import offer_rows

    if offer.status not in ("open", "consented") or not offer.latest:
        return None  # answered or replaced before it could be sent
    text = renderer.text(
        "delay_offer.j2",
        language,
        offer=offer,
        name=name,
        refund=offer.qty_waiting * offer.unit_price_minor,
    )
    return Rendered(text, offer_rows(offer, has_alternatives=bool(alternatives)), offer_id)


async def _product_name(conn: Any, sku: str, language: str) -> str:
    row = (
        await conn.execute(
            select(
                products.c.name_en, products.c.name_de, products.c.name_es, products.c.name_ru
            ).where(products.c.sku == sku)
        )
    ).first()
    return pick_name(names_of(row), language) if row is not None else sku
