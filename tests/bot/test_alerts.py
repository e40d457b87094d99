"""Alerts to the team (#18) through the sandbox: the ops topic opened at start-up; an alert is
told once, stays quiet while its condition holds, is told again after it ended and came back,
and waits for the morning in quiet hours."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bot.context import BotApplication
from bot.ops import open_topic, ops_thread, refresh
from bot.ops.alerts import run_check
from bot.settings import SettingsError, load_settings
from sandbox.client import SandboxClient
from store import Store
from store.insights import alert_conditions, alerts, claim_untold, set_reorder_point, sync_alerts
from store.schema import stock
from tests.conftest import Clock

SUPPORT = -1001999000018
MARIA = 9001


@pytest.fixture
async def support(tg: SandboxClient) -> int:
    await tg.create_user(MARIA, first_name="Maria")
    await tg.create_supergroup("Support", chat_id=SUPPORT, administrators=[MARIA])
    return SUPPORT


@pytest.fixture
def bot_environ(support: int) -> dict[str, str]:
    return {"SUPPORT_CHAT_ID": str(support), "NOTICE_JOB_INTERVAL_SECONDS": "0"}


async def demo_alerts_told(bot: BotApplication, store: Store) -> None:
    """The demo shop's own conditions (many SKUs' demand over supply), told already."""
    now = bot.bot_data.now()
    await refresh(bot)
    async with store.connect() as conn:
        conditions = await alert_conditions(conn, now)
    async with store.begin() as conn:
        await sync_alerts(conn, conditions, now)
        await claim_untold(conn, now, limit=100_000)


async def topic_texts(tg: SandboxClient, thread: int) -> list[str]:
    messages: list[dict[str, Any]] = await tg.transcript(SUPPORT, message_thread_id=thread)
    return [m["text"] for m in messages if m.get("text")]


async def reorder_point(store: Store, sku: str, point: int | None) -> None:
    async with store.begin() as conn:
        await set_reorder_point(conn, sku, point)


async def test_an_alert_fires_once_stays_quiet_and_fires_again_when_it_returns(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    thread = await ops_thread(bot)
    assert thread is not None
    await demo_alerts_told(bot, store)
    async with store.connect() as conn:
        free = await conn.scalar(
            select(stock.c.on_hand - stock.c.allocated).where(stock.c.sku == "KET-0001")
        )
    assert free == 20
    said = (
        "🔔 Alerts\n"
        "📉 KET-0001: 20 free, below its reorder point of 30."
    )  # fmt: skip
    await reorder_point(store, "KET-0001", 30)
    assert await run_check(bot) == 1
    assert await topic_texts(tg, thread) == [said]
    # While it holds: nothing more.
    clock.advance(minutes=15)
    assert await run_check(bot) == 0
    assert await topic_texts(tg, thread) == [said]
    # It ends (the point is lowered): cleared, nothing said.
    await reorder_point(store, "KET-0001", 10)
    clock.advance(minutes=15)
    assert await run_check(bot) == 0
    async with store.connect() as conn:
        (row,) = [a for a in await alerts(conn) if a.key == "reorder:KET-0001"]
    assert (row.active, row.cleared_at) == (False, clock.now)
    # It comes back: said again.
    await reorder_point(store, "KET-0001", 30)
    clock.advance(minutes=15)
    assert await run_check(bot) == 1
    assert await topic_texts(tg, thread) == [said, said]
    # Quiet hours: a new condition at 22:00 waits for the morning.
    clock.advance(hours=10, minutes=15)  # 22:00 in the shop's zone
    await reorder_point(store, "COF-0001", 1)
    assert await run_check(bot) == 0
    assert await topic_texts(tg, thread) == [said, said]
    clock.advance(hours=10, minutes=30)  # 08:30
    assert await run_check(bot) == 1
    assert await topic_texts(tg, thread) == [
        said,
        said,
        "🔔 Alerts\n📉 COF-0001: 0 free, below its reorder point of 1.",
    ]


async def test_the_ops_topic_opens_once_and_a_first_check_tells_many_alerts_in_one_message(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    topics = await tg.topics(SUPPORT)
    thread = await ops_thread(bot)
    assert thread is not None
    assert [(t["name"], t["message_thread_id"]) for t in topics] == [("📊 Backorder ops", thread)]
    # Another start (a restart, a second process) finds it in the store.
    assert await open_topic(bot) == thread
    assert len(await tg.topics(SUPPORT)) == 1
    told = await run_check(bot)
    async with store.connect() as conn:
        active = await alerts(conn, active_only=True, limit=100_000)
    assert told == len(active) > 20
    [text] = await topic_texts(tg, thread)
    lines = text.split("\n")
    assert lines[0] == "🔔 Alerts" and len(lines) == 22
    assert lines[-1] == f"…and {told - 20} more: backorder-admin report alerts lists them all."
    assert await run_check(bot) == 0


def test_no_ops_topic_when_it_is_off() -> None:
    on = load_settings({"SUPPORT_CHAT_ID": str(SUPPORT)})
    off = load_settings({"SUPPORT_CHAT_ID": str(SUPPORT), "OPS_TOPIC": "false"})
    assert (on.ops_chat_id, off.ops_chat_id, load_settings({}).ops_chat_id) == (SUPPORT, None, None)
    with pytest.raises(SettingsError, match="DIGEST_TIME"):
        load_settings({"DIGEST_TIME": "25:00"})
