"""Leases that a batch outlives (issue #13).

A batch of notices can take longer than its lease: the Bot API answers slowly, the database is
held by an import. Its holder renews the lease while it sends, so its unsent rest is never
claimed again and nobody hears twice (before: 331 duplicates in a fan-out of 3,338 with
LEASE_SECONDS=10). A holder that finds a lease lost (another process took the notices once
it ran out) does not send them. The bot's clock moves with real time here, so leases run out
as they would in production."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bot.context import BotApplication
from bot.notices import deliver_due, run_policy
from sandbox.client import SandboxClient
from store import Store
from store.backorders import change_restock_date
from store.schema import outbox
from tests.bot.notice_helpers import CUSTOMER_BASE, RESTOCK, day, seed, sends_per_chat
from tests.conftest import Clock


@dataclass
class RunningClock(Clock):
    """The test clock, moving with real time from START: leases run out as they would."""

    started: float = field(default_factory=time.monotonic)

    def __call__(self) -> datetime:
        return self.now + timedelta(seconds=time.monotonic() - self.started)


@pytest.fixture
def clock() -> Clock:
    return RunningClock()


async def statuses(store: Store) -> dict[str, int]:
    async with store.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.status, func.count())
            .where(outbox.c.customer_id >= CUSTOMER_BASE)
            .group_by(outbox.c.status)
        )
        return {r[0]: r[1] for r in rows}


async def slip(bot: BotApplication, store: Store) -> None:
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)


SLOW_FANOUT = 260


@pytest.mark.parametrize(
    "bot_environ",
    [
        {
            "NOTICE_JOB_INTERVAL_SECONDS": "0",
            "LEASE_SECONDS": "5",  # the shortest allowed
            "SEND_RATE_PER_SECOND": "100",
            "NOTICE_BATCH_SIZE": "250",  # 2.5 s of the rate: half a lease
        }
    ],
)
async def test_a_batch_slower_than_its_lease_is_sent_once(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    made = await seed(store, tg, SLOW_FANOUT)
    await slip(bot, store)
    # Every answer takes 2 s: 64 sends in flight deliver 32/s, so the first batch of 250
    # takes about 8 s, longer than its 5 s lease, and the next (the last 10) is claimed after
    # its lease ran out. Before, that claim took the first batch's unsent rest and sent it again.
    await tg.inject_fault("slow", method="sendMessage", duration=600, delay=2.0)
    report = await deliver_due(bot)
    # Each notice claimed once, sent once, none lost to another holder.
    assert (report.claimed, report.sent, report.lost, report.failed, report.retried) == (
        SLOW_FANOUT,
        SLOW_FANOUT,
        0,
        0,
        0,
    )
    assert report.renewed > 0  # the fan-out did outlast a lease
    sends = await sends_per_chat(tg)
    assert sends == {chat: 1 for _, chat, _ in made}
    assert await statuses(store) == {"sent": SLOW_FANOUT}
    assert (await deliver_due(bot)).claimed == 0


LOST = 100


@pytest.mark.parametrize(
    "bot_environ",
    [
        {
            "NOTICE_JOB_INTERVAL_SECONDS": "0",
            "LEASE_SECONDS": "5",
            "SEND_RATE_PER_SECOND": "100",  # 64 sends in flight at most (aiohttp)
            "NOTICE_BATCH_SIZE": "100",
        }
    ],
)
async def test_a_holder_that_lost_its_lease_does_not_send_those_notices(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    made = await seed(store, tg, LOST)
    await slip(bot, store)
    # The first 64 sends (all the sends in flight there may be) are answered in 6 s; the
    # others wait for their places meanwhile.
    await tg.inject_fault("slow", method="sendMessage", count=64, delay=6.0)
    round_ = asyncio.create_task(deliver_due(bot))
    o = outbox.c
    mine = o.customer_id >= CUSTOMER_BASE
    async with asyncio.timeout(30):
        while await count(store, mine, o.attempts > 0) < LOST:
            assert not round_.done(), round_.result()
            await asyncio.sleep(0.02)
    # Another process takes over the last 20 (as it would once their lease ran out): they
    # are its to send now.
    async with store.begin() as conn:
        ids = list(
            await conn.scalars(select(o.outbox_id).where(mine).order_by(o.outbox_id).offset(80))
        )
        await conn.execute(
            update(outbox)
            .where(o.outbox_id.in_(ids))
            .values(claimed_by="another process", claimed_until=clock() + timedelta(minutes=1))
        )
    # A whole lease later by the holder's clock: whatever it renewed before, it renews again
    # before its next send, and learns which it lost.
    clock.advance(seconds=5)
    report = await round_
    assert (report.claimed, report.sent, report.lost) == (LOST, 80, 20)
    assert await sends_per_chat(tg) == {chat: 1 for _, chat, _ in made[:80]}
    async with store.connect() as conn:
        rows = (
            await conn.execute(
                select(o.status, o.claimed_by).where(o.outbox_id.in_(ids)).distinct()
            )
        ).all()
    assert [tuple(r) for r in rows] == [("pending", "another process")]
    assert await statuses(store) == {"sent": 80, "pending": 20}


async def count(store: Store, *where: Any) -> int:
    async with store.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(outbox).where(*where)) or 0)
