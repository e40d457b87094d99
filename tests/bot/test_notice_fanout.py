"""A big fan-out at a high rate finishes. Every notice of a round used to start its send at
once: thousands queued for the HTTP pool's connections, waited past the request timeout and
were all put back for a retry (a 5,000-line run at 1,000/s delivered nothing). Sends in flight
are bounded now, and the pacer wakes each waiting send once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bot import notices
from bot.context import BotApplication
from bot.notices import _Sender, deliver_due, run_policy
from sandbox import Limits
from sandbox.client import SandboxClient
from store import Store
from store.backorders import NewLine, change_restock_date, place_order
from store.schema import order_lines, outbox
from tests.bot.notice_helpers import CUSTOMER_BASE, RESTOCK, SKU, day, seed
from tests.conftest import START

FANOUT = 300


@pytest.fixture
def bot_environ() -> dict[str, str]:
    return {
        "NOTICE_JOB_INTERVAL_SECONDS": "0",
        "SEND_RATE_PER_SECOND": "5000",
        "NOTICE_BATCH_SIZE": "1000",
        "REQUEST_TIMEOUT": "5",
    }


async def test_a_fan_out_of_hundreds_at_a_high_rate_is_delivered_promptly(
    bot: BotApplication, tg: SandboxClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unbounded, thousands of sends queued in the HTTP pool and all timed out: sends in
    # flight are bounded.
    for layer in notices.IN_FLIGHT:
        monkeypatch.setitem(notices.IN_FLIGHT, layer, 16)
    monkeypatch.setattr(notices, "ANSWER_SECONDS", 0)
    in_flight = peak = 0
    real_send = notices._send

    async def counting_send(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await real_send(*args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(notices, "_send", counting_send)
    await seed(store, tg, FANOUT)
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    report = await deliver_due(bot)
    # Unbounded, they timed out and were all put back: none retried now, none failed.
    assert (report.claimed, report.sent, report.retried, report.failed) == (FANOUT, FANOUT, 0, 0)
    assert 1 < peak <= 16
    assert (await deliver_due(bot)).claimed == 0


async def test_the_pacer_wakes_each_of_thousands_of_waiting_sends_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Counted, not timed: polling for a free slot woke every waiting send on every slot
    # (minutes for these), a reservation sleeps once until its own slot.
    sleeps: Counter[asyncio.Task[Any] | None] = Counter()
    real_sleep = asyncio.sleep

    async def counting_sleep(delay: float, result: Any = None) -> Any:
        sleeps[asyncio.current_task()] += 1
        return await real_sleep(delay, result)

    monkeypatch.setattr(notices.asyncio, "sleep", counting_sleep)
    sender = _Sender(bot=None, rate=20_000, per_chat=1.0)  # type: ignore[arg-type]
    slots = [asyncio.create_task(sender.slot()) for _ in range(4000)]
    await asyncio.gather(*slots)
    assert max(sleeps.values()) == 1
    assert set(sleeps) <= set(slots)


@pytest.mark.parametrize("sandbox_limits", [Limits()])  # Telegram's: 1 per second per chat
@pytest.mark.parametrize(
    "bot_environ",
    [{"NOTICE_JOB_INTERVAL_SECONDS": "0", "SEND_RATE_PER_SECOND": "100", "NOTICE_BATCH_SIZE": "1"}],
)
async def test_a_chats_notices_in_consecutive_batches_go_one_after_another(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    # The next batch is claimed while this one is still sending: a chat in both gets the
    # second batch's notice only after the first's, a per-chat interval apart (concurrent
    # sends to one chat ran into its flood limit, in any order).
    # Five more orders of the first customer: the restock (two units a customer) covers all.
    (cid, chat, number), *_ = await seed(store, tg, 5)
    numbers = [number]
    async with store.begin() as conn:
        for i in range(5):
            placed = await place_order(
                conn, str(990_100 + i), cid, [NewLine(SKU, 1)], placed_at=START
            )
            await conn.execute(
                update(order_lines)
                .where(order_lines.c.order_id == placed.order_id)
                .values(promised_date=day(60))
            )
            numbers.append(str(990_100 + i))
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    report = await deliver_due(bot)
    assert (report.claimed, report.sent, report.rate_limited) == (10, 10, 0)
    messages = await tg.transcript(chat)
    assert [m["text"].splitlines()[0] for m in messages] == [f"📦 Order {n}" for n in numbers]
    assert await tg.count_429() == 0


@pytest.mark.parametrize(
    "bot_environ",
    [{"NOTICE_JOB_INTERVAL_SECONDS": "0", "SEND_RATE_PER_SECOND": "20", "NOTICE_BATCH_SIZE": "5"}],
)
async def test_batches_smaller_than_a_second_of_sending_are_leased_as_they_are_needed(
    bot: BotApplication, tg: SandboxClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The next batch is claimed when about a second of sending is left over every batch
    # claimed (20 at 20/s), not per batch: a batch of 5 had the next claimed at once, and the
    # next, until all 50 were leased before the first went out.
    await seed(store, tg, 50)
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    # Per send, the notices ever claimed (committed claims) beyond the sends begun before it.
    # Counted, not timed: the code claims only while at most 20 claimed notices are not
    # through, so this is at most 20 + a batch of 5 however fast the sends go. (It used to
    # count the leased rows still pending, which took in the sends whose marks were not
    # written yet: how many depended on the machine's load, 30 on a loaded one.)
    ahead: list[int] = []
    begun = 0
    real_send = notices._send

    async def counting_send(*args: Any, **kwargs: Any) -> Any:
        nonlocal begun
        begun += 1
        async with store.connect() as conn:
            claimed = await conn.scalar(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.customer_id >= CUSTOMER_BASE, outbox.c.attempts > 0)
            )
        # Sends begun by now, this one aside (not through yet): those begun during the read
        # count too, as a claim may have come in behind them.
        ahead.append(int(claimed or 0) - (begun - 1))
        return await real_send(*args, **kwargs)

    monkeypatch.setattr(notices, "_send", counting_send)
    report = await deliver_due(bot)
    assert (report.claimed, report.sent, report.failed) == (50, 50, 0)
    assert len(ahead) == 50
    assert max(ahead) <= 25, ahead
