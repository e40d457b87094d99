"""Delivery under Telegram's flood limits and failures, through the sandbox with its limits on:
a 429 storm is waited out, 5xx and timeouts come back after a backoff, a 403 stops sending to
that customer, a write of results the database refuses is tried again. Nothing is lost and
nothing is sent twice except what may have been delivered."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.context import BotApplication
from bot.notices import deliver_due, run_policy, tick
from sandbox import Limits
from sandbox.client import SandboxClient
from store import Store
from store.backorders import change_restock_date
from store.schema import customers, outbox
from tests.bot.notice_helpers import CUSTOMER_BASE, RESTOCK, day, seed
from tests.conftest import Clock


@pytest.fixture
def sandbox_limits() -> Limits:
    return Limits()  # Telegram's: 30 per second in all, 1 per second per chat


@pytest.fixture
def bot_environ() -> dict[str, str]:
    return {
        "REQUEST_TIMEOUT": "0.5",
        "NOTICE_MAX_ATTEMPTS": "3",
        "NOTICE_JOB_INTERVAL_SECONDS": "0",
    }


async def statuses(store: Store) -> dict[str, int]:
    async with store.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.status, func.count())
            .where(outbox.c.customer_id >= CUSTOMER_BASE)
            .group_by(outbox.c.status)
        )
        return {r[0]: r[1] for r in rows}


async def per_chat(tg: SandboxClient, chats: list[int]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for chat in chats:
        counts[chat] = len(await tg.transcript(chat))
    return counts


async def slip(bot: BotApplication, store: Store, to: int = 24) -> None:
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(to), "supplier delay")
    await run_policy(bot)


async def test_a_429_storm_is_waited_out_and_everyone_hears_once(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    made = await seed(store, tg, 30)
    chats = [chat for _, chat, _ in made]
    await slip(bot, store)
    # Short storms are waited out in the round (retry_after honoured for everyone) ...
    await tg.inject_fault("429", method="sendMessage", count=4, retry_after=1)
    report = await deliver_due(bot)
    assert (report.sent, report.rate_limited) == (30, 4)
    assert await tg.count_429() == 4  # no 429 of our own making on top of the injected ones
    assert set((await per_chat(tg, chats)).values()) == {1}


async def test_a_429_that_outlasts_the_retries_puts_the_notice_back_for_later(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    [(_, chat, _)] = await seed(store, tg, 1)
    await slip(bot, store)
    await tg.inject_fault("429", method="sendMessage", count=4, retry_after=1)
    report = await deliver_due(bot)
    assert (report.sent, report.rate_limited, report.retried) == (0, 4, 1)
    assert await statuses(store) == {"pending": 1}
    assert (await deliver_due(bot)).claimed == 0  # not due before its retry_after
    clock.advance(seconds=1)
    assert (await deliver_due(bot)).sent == 1
    assert await statuses(store) == {"sent": 1}
    assert len(await tg.transcript(chat)) == 1
    async with store.connect() as conn:
        # A 429 is Telegram's pace, not a failed try: it does not count against the notice.
        assert (
            await conn.scalar(
                select(outbox.c.attempts).where(outbox.c.customer_id >= CUSTOMER_BASE)
            )
            == 1
        )


async def test_5xx_and_timeouts_are_retried_with_backoff(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    made = await seed(store, tg, 6)
    chats = [chat for _, chat, _ in made]
    await slip(bot, store)
    await tg.inject_fault("5xx", method="sendMessage", count=2, status=502)
    report = await deliver_due(bot)
    assert (report.sent, report.retried, report.failed) == (4, 2, 0)
    assert await statuses(store) == {"sent": 4, "pending": 2}
    clock.advance(seconds=1)
    assert (await deliver_due(bot)).claimed == 0  # backoff: 2 s after the first try
    clock.advance(seconds=1)
    await tg.inject_fault("slow", method="sendMessage", count=1, delay=1.0)
    report = await deliver_due(bot)
    assert (report.sent, report.retried) == (1, 1)  # the timeout is tried again later
    clock.advance(seconds=4)
    assert (await deliver_due(bot)).sent == 1
    assert await statuses(store) == {"sent": 6}
    counts = await per_chat(tg, chats)
    # A timed-out send may have arrived (here it did): that one chat may hear twice.
    assert sorted(counts.values()) in ([1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 2])


async def test_5xx_forever_gives_up_after_the_attempts_setting(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    await seed(store, tg, 1)
    await slip(bot, store)
    await tg.inject_fault("5xx", method="sendMessage", duration=60)
    tries = 0
    while (await statuses(store)).get("pending"):
        report = await deliver_due(bot)
        tries += report.claimed
        clock.advance(minutes=5)
        assert tries <= 3
    assert tries == 3  # NOTICE_MAX_ATTEMPTS
    assert await statuses(store) == {"failed": 1}


async def test_a_blocked_customer_is_marked_unreachable_and_not_tried_again(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    made = await seed(store, tg, 4)
    blocked = made[1]
    await tg.block(blocked[1])
    await slip(bot, store)
    report = await deliver_due(bot)
    assert (report.sent, report.unreachable) == (3, 1)
    async with store.connect() as conn:
        unreachable = (
            await conn.execute(
                select(customers.c.customer_id).where(customers.c.unreachable_at.is_not(None))
            )
        ).all()
    assert [r.customer_id for r in unreachable] == [blocked[0]]
    calls = len(await tg.calls("sendMessage"))
    await slip(bot, store, 31)
    report = await deliver_due(bot)
    assert (report.sent, report.unreachable) == (3, 1)
    assert len(await tg.calls("sendMessage")) == calls + 3  # no send to the blocked chat
    assert await statuses(store) == {"sent": 6, "dead": 2}


async def refuse_writes(
    conn: AsyncConnection, name: str, event: str, when: str | None = None
) -> None:
    """A trigger ``name`` that makes the database refuse ``event`` on outbox rows (``when``
    NEW is such), in the connection's own dialect, so the bot's own writes run unchanged and
    meet the refusal as they would a disk error."""
    injected = "disk I/O error (injected)"
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql"
            f" AS $$ BEGIN RAISE EXCEPTION '{injected}'; END $$"
        )
        await conn.exec_driver_sql(
            f"CREATE TRIGGER {name} {event} ON outbox FOR EACH ROW"
            + (f" WHEN ({when})" if when else "")
            + f" EXECUTE FUNCTION {name}()"
        )
        return
    await conn.exec_driver_sql(
        f"CREATE TRIGGER {name} {event} ON outbox"
        + (f" WHEN {when}" if when else "")
        + f" BEGIN SELECT RAISE(ABORT, '{injected}'); END"
    )


async def refuse(store: Store, status: str | None) -> None:
    """Make the database refuse to set outbox rows to ``status`` (None: stop refusing)."""
    async with store.begin() as conn:
        on = " ON outbox" if conn.dialect.name == "postgresql" else ""
        await conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS refuse_status{on}")
        if status is not None:
            await refuse_writes(
                conn, "refuse_status", "BEFORE UPDATE OF status", f"NEW.status = '{status}'"
            )


async def test_sends_whose_results_the_database_refused_at_first_are_recorded_not_repeated(
    bot: BotApplication,
    tg: SandboxClient,
    store: Store,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    made = await seed(store, tg, 12)
    chats = [chat for _, chat, _ in made]
    await slip(bot, store)
    # The database refuses to mark notices sent (as a disk error or an import that holds the
    # file past the busy timeout would) until the fault is cleared.
    await refuse(store, "sent")
    caplog.set_level(logging.WARNING, logger="bot.notices")
    round_ = asyncio.create_task(deliver_due(bot))
    # Every notice sent, and the write of their marks refused (at least once).
    for _ in range(600):
        sent = sum((await per_chat(tg, chats)).values())
        if sent == 12 and "could not record notice results" in caplog.text:
            break
        assert not round_.done(), round_.result()
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the round never sent everything and met the refusal")
    assert await statuses(store) == {"pending": 12}
    await refuse(store, None)
    report = await round_
    assert (report.sent, report.claimed) == (12, 12)
    assert await statuses(store) == {"sent": 12}
    # Long after the lease would have run out, nothing is sent again.
    clock.advance(hours=1)
    assert (await deliver_due(bot)).claimed == 0
    assert set((await per_chat(tg, chats)).values()) == {1}


async def test_a_result_the_database_keeps_refusing_does_not_hold_back_the_sent_marks(
    bot: BotApplication, tg: SandboxClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    made = await seed(store, tg, 4)
    blocked = made[1]
    await tg.block(blocked[1])
    await slip(bot, store)
    await refuse(store, "dead")  # the blocked customer's notice cannot be closed
    caplog.set_level(logging.WARNING, logger="bot.notices")
    round_ = asyncio.create_task(deliver_due(bot))
    # The three sent are marked while the other result is still refused, again and again.
    for _ in range(600):
        if await statuses(store) == {"sent": 3, "pending": 1}:
            break
        assert not round_.done(), round_.result()
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the sent marks waited for the refused result: {caplog.text}")
    assert not round_.done()
    await refuse(store, None)
    report = await round_
    assert (report.sent, report.unreachable) == (3, 1)
    assert await statuses(store) == {"sent": 3, "dead": 1}


async def test_a_tick_whose_queueing_fails_still_delivers_what_was_queued(
    bot: BotApplication, tg: SandboxClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    made = await seed(store, tg, 3)
    await slip(bot, store)  # three notices queued
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(31), "supplier delay")
        # The next change's notices cannot be written (a disk error, an import holding the
        # file past the busy timeout).
        await refuse_writes(conn, "refuse_queueing", "BEFORE INSERT")
    caplog.set_level(logging.WARNING, logger="bot.notices")
    await tick(SimpleNamespace(application=bot))  # type: ignore[arg-type]
    # The round went on: what was queued before is delivered, once each.
    assert "notice queueing failed" in caplog.text
    assert "notice round failed" not in caplog.text
    assert await statuses(store) == {"sent": 3}
    assert set((await per_chat(tg, [chat for _, chat, _ in made])).values()) == {1}
