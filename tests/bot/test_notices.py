"""The scheduler, end to end through the sandbox: date changes reach customers first,
coalesced, within limits, around quiet hours and the customers' own choices."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bot.context import BotApplication
from bot.notices import deliver_due, run_policy
from sandbox.client import SandboxClient
from store import Store
from store.backorders import NewLine, change_restock_date, place_order, receive_restock, ship
from store.chats import link_chat, subscribe_back_in_stock, unlink_chat
from store.schema import customers, order_lines, orders, outbox
from tests.bot.notice_helpers import CHAT_BASE, CUSTOMER_BASE, RESTOCK, SKU, day, seed
from tests.conftest import START, Clock, buttons

QUIET = 0.15

SLIPPED = (
    "📦 Order {number}\n\nDesk Lamp\n"
    "📅 Now ships around December 20 (in 3 weeks), 14 days later than the December 6 we gave"
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


async def test_one_notice_per_order_for_many_lines_and_nothing_under_the_threshold(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    (cid, chat, number), _ = await seed(store, tg, 2)
    async with store.begin() as conn:
        placed = await place_order(
            conn, "990001", cid, [NewLine(SKU, 1), NewLine(SKU, 1)], placed_at=START
        )
        await conn.execute(
            update(order_lines)
            .where(order_lines.c.order_id == placed.order_id)
            .values(promised_date=day(60))
        )
        # A slip of a day is news at the default threshold; both orders move.
        await change_restock_date(conn, RESTOCK, day(11), "supplier delay")
    await run_policy(bot)
    report = await deliver_due(bot)
    assert (report.claimed, report.sent) == (3, 3)  # two orders of one customer, one of another
    first, second = await tg.transcript(chat)
    by_number = {m["text"].split("\n")[0]: m["text"] for m in (first, second)}
    assert by_number["📦 Order 990001"] == (
        "📦 Order 990001\n\nDesk Lamp\n"
        "📅 Now ships around December 7 (in 2 weeks), 1 day later than the December 6 we gave"
        " you.\n\n"
        "Desk Lamp\n"
        "📅 Now ships around December 7 (in 2 weeks), 1 day later than the December 6 we gave"
        " you.\n\n"
        "Sorry for the wait."
    )
    assert f"📦 Order {number}" in by_number
    async with store.connect() as conn:
        rows = (
            await conn.execute(select(outbox.c.payload).where(outbox.c.customer_id == cid))
        ).all()
    assert sorted(len(json.loads(r.payload)["lines"]) for r in rows) == [1, 2]


async def test_quiet_hours_hold_notices_until_morning_and_coalesce_them(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    [(_, chat, number)] = await seed(store, tg, 1)
    clock.now = datetime(2026, 11, 26, 20, 30, tzinfo=UTC)  # 21:30 in Berlin
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(17), "supplier delay")
    await run_policy(bot)
    report = await deliver_due(bot)
    assert report.quiet and report.sent == 0
    clock.now = datetime(2026, 11, 27, 6, 59, tzinfo=UTC)  # 07:59
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay again")
    await run_policy(bot)
    assert (await deliver_due(bot)).quiet
    assert await tg.transcript(chat) == []
    clock.now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)  # 08:00: morning
    report = await deliver_due(bot)
    assert (report.quiet, report.sent) == (False, 1)
    [message] = await tg.transcript(chat)
    # One story: from the date first given to the latest, not two messages.
    assert message["text"] == (
        f"📦 Order {number}\n\nDesk Lamp\n"
        "📅 Now ships around December 20 (in 3 weeks), 14 days later than the December 6 we"
        " gave you.\n\nSorry for the wait."
    )
    assert await statuses(store) == {"sent": 1, "superseded": 1}


async def test_notifications_menu_toggles_and_opt_out_is_honoured(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    made = await seed(store, tg, 2)
    (_, chat, _), (_, other_chat, other_number) = made
    [menu] = await tg.say(chat, "/notifications", quiet=QUIET)
    assert menu["text"] == (
        "🔔 What I tell you about first\n"
        "Tap a topic to switch it on or off.\n\n"
        "Offers to cancel or keep waiting when an item is badly delayed always come, because"
        " they need your answer."
    )
    assert buttons(menu) == [
        [("✅ Date changes", "ntf:t:delays")],
        [("✅ Back in stock", "ntf:t:stock")],
        [("✅ Ready to ship and shipped", "ntf:t:ship")],
        [("🔕 Stop all updates", "ntf:off")],
    ]
    answered, _ = await tg.press(chat, menu["message_id"], "ntf:t:delays", quiet=QUIET)
    assert answered["answered"]
    [edited] = [m for m in await tg.transcript(chat) if m["message_id"] == menu["message_id"]]
    assert buttons(edited)[0] == [("🔕 Date changes", "ntf:t:delays")]
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    report = await deliver_due(bot)
    assert (report.sent, report.skipped) == (1, 1)
    assert [m["text"] for m in await tg.transcript(other_chat)] == [
        SLIPPED.format(number=other_number)
    ]
    assert len(await tg.transcript(chat)) == 2  # the menu and its edit only: nothing new
    assert await statuses(store) == {"sent": 1, "skipped": 1}


async def test_stop_sending_me_updates_in_free_text_stops_them_with_an_undo(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(cid, chat, number)] = await seed(store, tg, 1)
    [reply] = await tg.say(chat, "stop sending me updates", quiet=QUIET)
    assert reply["text"] == (
        "🔕 Done: I won't send you any more updates. You can still ask me anything, any time.\n"
        "Offers to cancel or keep waiting when an item is badly delayed still come, because"
        " they need your answer."
    )
    assert buttons(reply) == [[("↩️ Undo: keep sending updates", "ntf:on")]]
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    assert (await deliver_due(bot)).skipped == 1
    async with store.connect() as conn:
        prefs = (
            await conn.execute(
                select(
                    customers.c.notify_delays,
                    customers.c.notify_back_in_stock,
                    customers.c.notify_shipping,
                ).where(customers.c.customer_id == cid)
            )
        ).one()
    assert tuple(prefs) == (False, False, False)
    _, replies = await tg.press(chat, reply["message_id"], "ntf:on", quiet=QUIET)
    assert [buttons(m) for m in replies] == [
        [
            [("✅ Date changes", "ntf:t:delays")],
            [("✅ Back in stock", "ntf:t:stock")],
            [("✅ Ready to ship and shipped", "ntf:t:ship")],
            [("🔕 Stop all updates", "ntf:off")],
        ]
    ]
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(31), "supplier delay")
    await run_policy(bot)
    assert (await deliver_due(bot)).sent == 1
    assert (await tg.transcript(chat))[-1]["text"].startswith(f"📦 Order {number}\n")


async def test_ready_shipped_and_back_in_stock_notices(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(_, chat, number)] = await seed(store, tg, 1)
    await tg.create_user(CHAT_BASE + 50, first_name="Fan")
    async with store.begin() as conn:
        await subscribe_back_in_stock(conn, CHAT_BASE + 50, SKU)
        await receive_restock(conn, RESTOCK)
    await run_policy(bot)
    assert (await deliver_due(bot)).sent == 2
    [ready] = await tg.transcript(chat)
    assert ready["text"] == f"📦 Order {number}\n\nDesk Lamp\n✅ 1 reserved for you: ready to ship."
    [back] = await tg.transcript(CHAT_BASE + 50)
    assert back["text"] == "🔔 Desk Lamp is back in stock: you can order it now."
    assert buttons(back) == [[("Desk Lamp", f"p:{SKU}")]]
    async with store.begin() as conn:
        await ship(
            conn,
            "SHP-1",
            number,
            carrier="DHL",
            tracking_number="JD0001",
            shipped_on=day(1),
        )
    await run_policy(bot)
    await run_policy(bot)
    assert (await deliver_due(bot)).sent == 1
    shipped = (await tg.transcript(chat))[-1]
    assert shipped["text"] == (
        f"📦 Order {number}\n\nDesk Lamp\n🚚 1 shipped on November 27 with DHL, tracking JD0001."
    )


async def test_a_customers_own_cancel_brings_no_cancelled_notice(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(_, chat, number)] = await seed(store, tg, 1)
    [menu] = await tg.say(chat, "/orders", quiet=QUIET)
    _, [done] = await tg.press(chat, menu["message_id"], f"cxy:{number}:1", forge=True, quiet=QUIET)
    assert done["text"].startswith("Done: Desk Lamp × 1 is cancelled from order")
    async with store.connect() as conn:
        told = (
            await conn.execute(
                select(order_lines.c.qty_cancelled, order_lines.c.told_cancelled_qty)
                .select_from(order_lines.join(orders))
                .where(orders.c.order_number == number)
            )
        ).one()
    assert tuple(told) == (1, 1)
    await run_policy(bot)
    assert (await deliver_due(bot)).claimed == 0
    assert await statuses(store) == {}


async def test_a_customer_who_blocked_the_bot_is_reachable_again_after_writing(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(cid, chat, number)] = await seed(store, tg, 1)
    await tg.block(chat)
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    report = await deliver_due(bot)
    assert (report.sent, report.unreachable) == (0, 1)
    assert await statuses(store) == {"dead": 1}
    async with store.connect() as conn:
        assert (
            await conn.scalar(
                select(customers.c.unreachable_at).where(customers.c.customer_id == cid)
            )
            is not None
        )
    await tg.unblock(chat)
    await tg.say(chat, "hello", quiet=QUIET)
    async with store.connect() as conn:
        assert (
            await conn.scalar(
                select(customers.c.unreachable_at).where(customers.c.customer_id == cid)
            )
            is None
        )
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(31), "supplier delay")
    await run_policy(bot)
    assert (await deliver_due(bot)).sent == 1
    assert (await tg.transcript(chat))[-1]["text"].startswith(f"📦 Order {number}\n")


async def test_a_customer_without_a_chat_is_not_told_and_hears_of_the_move_once_linked(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(cid, chat, number)] = await seed(store, tg, 1)
    async with store.begin() as conn:
        await unlink_chat(conn, chat)
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    report = await deliver_due(bot)
    assert report.claimed == 0
    await run_policy(bot)  # nothing new while they have no chat
    async with store.connect() as conn:
        rows = (
            await conn.execute(select(outbox.c.status).where(outbox.c.customer_id == cid))
        ).all()
        told = await conn.scalar(
            select(order_lines.c.last_told_date)
            .select_from(order_lines.join(orders, orders.c.order_id == order_lines.c.order_id))
            .where(orders.c.order_number == number)
        )
    assert rows == []  # nothing stored that nobody could read
    assert told == day(10)  # still the date they were given
    async with store.begin() as conn:
        await link_chat(conn, chat, cid)
    [reply] = await tg.say(chat, f"/orders {number}", quiet=QUIET)
    assert reply["text"].startswith("Sorry: a delivery date in this order has moved.")
    assert "New date: December 20 instead of December 6 (14 days later)." in reply["text"]
    # The order view told them: no notice repeats it.
    await run_policy(bot)
    assert (await deliver_due(bot)).claimed == 0


async def test_a_customer_who_links_later_gets_the_notice_they_missed(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(cid, chat, number)] = await seed(store, tg, 1)
    async with store.begin() as conn:
        await unlink_chat(conn, chat)
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    await run_policy(bot)
    assert (await deliver_due(bot)).claimed == 0
    async with store.begin() as conn:
        await link_chat(conn, chat, cid)
    await run_policy(bot)
    assert (await deliver_due(bot)).sent == 1
    assert (await last_message(tg, chat))["text"] == SLIPPED.format(number=number)
    await run_policy(bot)
    assert (await deliver_due(bot)).claimed == 0
