"""The order view tells what it shows: a notice about the same order must not repeat it right
after (a shipment queued before the chat was linked, or one still waiting to be sent)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import func, select

from bot.context import BotApplication
from bot.notices import deliver_due, run_policy
from sandbox.client import SandboxClient
from store import Store
from store.backorders import ship
from store.schema import outbox
from tests.conftest import NO_CHAT_PACE, link_customer

QUIET = 0.15
JOHN, JOHN_CHAT = 2, 702  # demo customer 2: order 100004, one kettle ready to ship

SHOWN = (
    "Order 100004 · placed Aug 31, 2026 · €51.78\n\n"
    "Steel Kettle 1.7 l × 2\n"
    "🚚 Shipped on November 25 with DHL, tracking JD0001"
)


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


@pytest.fixture
def bot_environ() -> dict[str, str]:
    return {"QUIET_HOURS": "off"}


async def _ship(store: Store) -> None:
    async with store.begin() as conn:
        await ship(
            conn,
            "SHP-T1",
            "100004",
            carrier="DHL",
            tracking_number="JD0001",
            shipped_on=date(2026, 11, 25),
        )


async def _last_id(store: Store) -> int:
    async with store.connect() as conn:
        return int(await conn.scalar(select(func.coalesce(func.max(outbox.c.outbox_id), 0))) or 0)


async def _statuses(store: Store, after: int) -> list[tuple[str, str | None]]:
    """Notices about order 100004 queued after outbox row ``after`` (the demo's changes to
    John's other order are queued too, and told)."""
    async with store.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.status, outbox.c.last_error, outbox.c.payload)
            .where(outbox.c.customer_id == JOHN, outbox.c.outbox_id > after)
            .order_by(outbox.c.outbox_id)
        )
        return [
            (r.status, r.last_error)
            for r in rows
            if json.loads(r.payload).get("order_number") == "100004"
        ]


async def _told_about_100004(tg: SandboxClient) -> list[str]:
    return [
        m["text"] for m in await tg.transcript(JOHN_CHAT) if m["from_bot"] and "100004" in m["text"]
    ]


async def test_a_shipment_queued_before_the_link_is_not_told_again_after_the_view(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    before = await _last_id(store)
    await _ship(store)
    await run_policy(bot)  # nobody to tell yet: the lines stay untold, nothing is stored
    assert await _statuses(store, before) == []
    await link_customer(tg, store, JOHN_CHAT, JOHN, "en")
    [view] = await tg.say(JOHN_CHAT, "/orders 100004", quiet=QUIET)
    assert view["text"] == SHOWN
    await run_policy(bot)
    await deliver_due(bot)
    assert await _statuses(store, before) == []  # the view told it: no notice repeats it
    # it was followed by "🚚 Order 100004 ... Shipped on November 25 ..."
    assert await _told_about_100004(tg) == [SHOWN]


async def test_a_notice_still_waiting_is_dropped_when_the_view_showed_it(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    await link_customer(tg, store, JOHN_CHAT, JOHN, "en")
    before = await _last_id(store)
    await _ship(store)
    await run_policy(bot)
    assert await _statuses(store, before) == [("pending", None)]
    [view] = await tg.say(JOHN_CHAT, "/orders 100004", quiet=QUIET)
    assert view["text"] == SHOWN
    await deliver_due(bot)
    assert await _statuses(store, before) == [("superseded", "shown in the order view")]
    assert await _told_about_100004(tg) == [SHOWN]
