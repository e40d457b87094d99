"""The scheduler, end to end through the sandbox: date changes reach customers first,
coalesced, within limits, around quiet hours and the customers' own choices."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from bot.context import BotApplication
from bot.notices import deliver_due, run_policy
from sandbox.client import SandboxClient
from store import Store
from store.backorders import change_restock_date
from store.schema import outbox
from tests.bot.notice_helpers import CUSTOMER_BASE, RESTOCK, day, seed
from tests.conftest import buttons

QUIET = 0.15

SLIPPED = (
    "📦 Order {number}\n\nDesk Lamp\n"
    "📅 Now ships around December 20 (in 3 weeks), 2 weeks later than the December 6 we gave"
    " you.\n\n"
    "Sorry for the wait."
)


@pytest.fixture
def bot_environ() -> dict[str, str]:
    return {"NOTICE_JOB_INTERVAL_SECONDS": "0"}


async def last_message(tg: SandboxClient, chat_id: int) -> dict[str, Any]:
    return (await tg.transcript(chat_id))[-1]


async def statuses(store: Store) -> dict[str, int]:
    async with store.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.status, func.count())
            .where(outbox.c.customer_id >= CUSTOMER_BASE)
            .group_by(outbox.c.status)
        )
        return {r[0]: r[1] for r in rows}


async def test_a_slipped_date_reaches_every_waiting_customer_once(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    made = await seed(store, tg, 5)
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    await run_policy(bot)  # the same change again queues nothing new
    report = await deliver_due(bot)
    assert (report.sent, report.claimed) == (5, 5)
    for _, chat, number in made:
        [message] = await tg.transcript(chat)
        assert message["text"] == SLIPPED.format(number=number)
        assert buttons(message) == [
            [(f"📦 Order {number}", f"o:{number}")],
            [("🔔 Notification settings", "ntf:menu")],
        ]
    assert await statuses(store) == {"sent": 5}
    assert (await deliver_due(bot)).claimed == 0
