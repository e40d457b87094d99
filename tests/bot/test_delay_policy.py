"""Long delays under the FTC Mail Order Rule, end to end: the delay-option notice, silent
consent within 30 days, explicit consent beyond and for every further delay, cancellation at
the answer-by day, the buttons (re-checked on every press), alternatives, the record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.context import BotApplication
from bot.notices import deliver_due, run_policy
from sandbox.client import SandboxClient
from store import Store
from store.backorders import cancel_restock, change_restock_date, set_stock
from store.delays import DelayPolicy, apply_delay_policy, consent_report
from store.schema import delay_offers, order_lines, orders, outbox, restocks
from tests.bot.notice_helpers import ALT, CUSTOMER_BASE, RESTOCK, day, quiet_demo, seed
from tests.conftest import NO_CHAT_PACE, Clock, buttons

QUIET = 0.15


@pytest.fixture
def chat_pace_environ() -> dict[str, str]:
    return NO_CHAT_PACE  # the answers are this module's subject, not their pace


@pytest.fixture(autouse=True)
async def _no_demo_delays(store: Store) -> None:
    await quiet_demo(store)


STALE = "This is no longer available."


def offer_text(number: str, new: str, tail: str) -> str:
    return (
        f"⏳ Order {number}: Desk Lamp can't ship by December 6 as promised.\n"
        f"{new}\n"
        "Sorry for the wait.\n\n"
        "You can cancel this item now for a full, prompt refund of €25.00.\n"
        f"{tail}"
    )


def offer_buttons(offer_id: int, alternatives: bool = False) -> list[list[tuple[str, str]]]:
    rows = [
        [("⏳ Keep waiting", f"dly:keep:{offer_id}")],
        [("✖️ Cancel this item, full refund", f"dly:cancel:{offer_id}")],
    ]
    if alternatives:
        rows.append([("🔁 See what's in stock now", f"dly:alt:{offer_id}")])
    return rows


async def offers(store: Store) -> list[Any]:
    async with store.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(delay_offers)
                    .where(delay_offers.c.customer_id >= CUSTOMER_BASE)
                    .order_by(delay_offers.c.offer_id)
                )
            ).all()
        )


async def waiting(store: Store, number: str) -> tuple[int, int]:
    async with store.connect() as conn:
        row = (
            await conn.execute(
                select(order_lines.c.qty_waiting, order_lines.c.qty_cancelled)
                .select_from(order_lines.join(orders))
                .where(orders.c.order_number == number)
            )
        ).one()
    return row.qty_waiting, row.qty_cancelled


async def slip(bot: BotApplication, store: Store, to: int) -> None:
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(to), "supplier delay")
    await run_policy(bot)
    await deliver_due(bot)


async def test_a_first_delay_within_30_days_needs_no_answer(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    [(_, chat, number)] = await seed(store, tg, 1, promised_in_days=None)
    await slip(bot, store, 24)  # 6 -> 20 December: 14 days late, a definite date
    [message] = await tg.transcript(chat)
    [offer] = await offers(store)
    assert message["text"] == offer_text(
        number,
        "New date: around December 20 (in 3 weeks).",
        "If you're happy to wait, you don't need to do anything.",
    )
    assert buttons(message) == offer_buttons(offer.offer_id)
    assert (offer.seq, offer.consent_needed, offer.answer_by, offer.status) == (
        1,
        False,
        None,
        "open",
    )
    # The record: what was shown, the buttons offered, when and where.
    assert offer.shown_text.replace("<b>", "").replace("</b>", "") == message["text"]
    assert json.loads(offer.buttons) == [
        f"dly:keep:{offer.offer_id}",
        f"dly:cancel:{offer.offer_id}",
    ]
    assert (offer.channel, offer.shown_at) == ("telegram", clock.now)
    # Silence is consent: days pass, nothing is cancelled, nothing more is said.
    clock.now = datetime(2026, 12, 19, 10, 0, tzinfo=UTC)
    await run_policy(bot)
    await deliver_due(bot)
    assert await waiting(store, number) == (1, 0)
    assert len(await tg.transcript(chat)) == 1
    async with store.connect() as conn:
        report = await consent_report(conn)
    assert (report.awaiting, report.consented) == (0, 1)


async def test_a_long_delay_needs_consent_and_is_cancelled_without_it(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    made = await seed(store, tg, 2, promised_in_days=None)
    (_, keeper, keeper_number), (_, silent, silent_number) = made
    await slip(bot, store, 60)  # 6 December -> 25 January: 50 days late
    [message] = await tg.transcript(keeper)
    first, second = await offers(store)
    assert message["text"] == offer_text(
        keeper_number,
        "New date: around January 25 (in 2 months).",
        "Please tell us by January 25 if you want to keep waiting. If we don't hear from you by"
        " then, we'll cancel it and refund you in full.",
    )
    assert (first.consent_needed, str(first.answer_by)) == (True, "2027-01-25")
    answered, [reply] = await tg.press(keeper, message["message_id"], f"dly:keep:{first.offer_id}")
    assert answered["answered"]
    assert reply["text"] == (
        f"👍 Thanks: Desk Lamp stays on order {keeper_number}.\n"
        "It ships around January 25 (in 2 months). I'll tell you if that changes.\n"
        "You can still cancel it any time for a full refund."
    )
    [kept] = [m for m in await tg.transcript(keeper) if m["message_id"] == message["message_id"]]
    assert buttons(kept) == []  # answered: the buttons are gone
    # The answer-by day passes: the silent customer's item is cancelled and they are told.
    clock.now = datetime(2027, 1, 25, 22, 59, tzinfo=UTC)  # still the 25th in Berlin
    await run_policy(bot)
    assert await waiting(store, silent_number) == (1, 0)
    clock.now = datetime(2027, 1, 25, 23, 30, tzinfo=UTC)  # the 26th: quiet hours
    await run_policy(bot)
    await run_policy(bot)  # idempotent
    clock.now = datetime(2027, 1, 26, 9, 0, tzinfo=UTC)
    assert (await deliver_due(bot)).sent == 1
    assert await waiting(store, silent_number) == (0, 1)
    assert await waiting(store, keeper_number) == (1, 0)
    told = (await tg.transcript(silent))[-1]
    assert told["text"] == (
        f"❌ Order {silent_number}: we've cancelled Desk Lamp, because it's still delayed and"
        " we didn't hear from you that you want to wait.\n"
        "Your full refund of €25.00 is on its way. Sorry we couldn't deliver it in time."
    )
    assert buttons(told) == [[(f"📦 Order {silent_number}", f"o:{silent_number}")]]
    first, second = await offers(store)
    assert (first.status, first.answer, first.answer_channel) == ("consented", "keep", "telegram")
    assert (second.status, second.answer, second.answer_channel) == (
        "cancelled",
        "no_answer",
        "policy",
    )
    # No second "❌ cancelled" order notice for the same cancellation.
    await run_policy(bot)
    assert (await deliver_due(bot)).claimed == 0
    async with store.connect() as conn:
        report = await consent_report(conn)
    assert (report.awaiting, report.consented, report.cancelled_for_delay) == (0, 1, 1)


async def test_an_unknown_date_needs_consent_with_a_week_at_least(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(_, chat, number)] = await seed(store, tg, 1, promised_in_days=None)
    async with store.begin() as conn:
        await cancel_restock(conn, RESTOCK, "supplier gone")
    await run_policy(bot)
    await deliver_due(bot)
    [message] = await tg.transcript(chat)
    assert message["text"] == offer_text(
        number,
        "We don't know the new date yet: the supplier hasn't confirmed the next delivery.",
        "Please tell us by December 6 if you want to keep waiting. If we don't hear from you by"
        " then, we'll cancel it and refund you in full.",
    )
    [offer] = await offers(store)
    assert (offer.consent_needed, offer.revised_date, str(offer.answer_by)) == (
        True,
        None,
        "2026-12-06",
    )


async def test_a_second_delay_needs_consent_and_the_old_buttons_go_stale(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    [(_, chat, number)] = await seed(store, tg, 1, promised_in_days=None)
    await slip(bot, store, 24)
    [old_message] = await tg.transcript(chat)
    await slip(bot, store, 31)  # again: 27 December
    first, second = await offers(store)
    assert (first.status, second.seq, second.consent_needed, str(second.answer_by)) == (
        "superseded",
        2,
        True,
        "2026-12-27",
    )
    new_message = (await tg.transcript(chat))[-1]
    assert new_message["text"] == offer_text(
        number,
        "New date: around December 27 (in 1 month).",
        "Please tell us by December 27 if you want to keep waiting. If we don't hear from you by"
        " then, we'll cancel it and refund you in full.",
    )
    answered, replies = await tg.press(
        chat, old_message["message_id"], f"dly:keep:{first.offer_id}", quiet=QUIET, timeout=1.0
    )
    assert (answered["answer"]["text"], replies) == (STALE, [])
    assert [o.status for o in await offers(store)] == ["superseded", "open"]
    clock.now = datetime(2026, 12, 28, 9, 0, tzinfo=UTC)
    await run_policy(bot)
    assert await waiting(store, number) == (0, 1)


async def test_no_cancel_when_the_date_came_back_in_time(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    [(_, _, number)] = await seed(store, tg, 1, promised_in_days=None)
    await slip(bot, store, 60)
    await slip(bot, store, 9)  # the supplier is early after all: 5 December, before the promise
    clock.now = datetime(2027, 1, 27, 9, 0, tzinfo=UTC)
    await run_policy(bot)
    assert await waiting(store, number) == (1, 0)
    [offer] = await offers(store)
    assert offer.status == "closed"


async def test_no_answer_goes_to_the_agents_when_the_shop_says_so(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(_, _, number)] = await seed(store, tg, 1, promised_in_days=None)
    await slip(bot, store, 60)
    policy = DelayPolicy(no_answer_action="agents")
    async with store.begin() as conn:
        run = await apply_delay_policy(conn, today=day(61), policy=policy)
    assert (run.cancelled, run.to_agents) == (0, 1)
    assert await waiting(store, number) == (1, 0)
    [offer] = await offers(store)
    assert (offer.status, offer.answer) == ("to_agents", "no_answer")


async def test_an_offer_that_never_reached_the_customer_goes_to_the_agents(
    bot: BotApplication, tg: SandboxClient, store: Store, clock: Clock
) -> None:
    [(_, chat, number)] = await seed(store, tg, 1, promised_in_days=None)
    await tg.block(chat)  # the offer cannot be delivered
    await slip(bot, store, 60)
    [offer] = await offers(store)
    assert offer.shown_at is None
    clock.now = datetime(2027, 1, 27, 9, 0, tzinfo=UTC)  # past the answer-by day
    await run_policy(bot)
    assert await waiting(store, number) == (1, 0)  # not cancelled behind their back
    [offer] = await offers(store)
    assert (offer.status, offer.answer) == ("to_agents", "never_shown")


async def test_cancel_button_cancels_once_and_says_the_refund(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(_, chat, number)] = await seed(store, tg, 1, promised_in_days=None)
    await slip(bot, store, 60)
    [message] = await tg.transcript(chat)
    [offer] = await offers(store)
    _, [reply] = await tg.press(chat, message["message_id"], f"dly:cancel:{offer.offer_id}")
    assert reply["text"] == (
        f"Done: Desk Lamp in order {number} is cancelled.\nYou'll get a full refund of €25.00."
    )
    assert buttons(reply) == [[(f"📦 Order {number}", f"o:{number}")]]
    assert await waiting(store, number) == (0, 1)
    answered, replies = await tg.press(
        chat,
        message["message_id"],
        f"dly:cancel:{offer.offer_id}",
        forge=True,
        quiet=QUIET,
        timeout=1.0,
    )
    assert (answered["answer"]["text"], replies) == (STALE, [])
    await run_policy(bot)
    assert (await deliver_due(bot)).claimed == 0  # no "❌ cancelled" notice on top
    [offer] = await offers(store)
    assert (offer.status, offer.answer, offer.answer_channel) == (
        "cancelled",
        "cancel_line",
        "telegram",
    )


async def test_forged_presses_change_nothing(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    (_, chat, _), (_, _, other_number) = await seed(store, tg, 2, promised_in_days=None)
    async with store.begin() as conn:
        await set_stock(conn, ALT, 3)
    await slip(bot, store, 60)
    [message] = await tg.transcript(chat)
    mine, theirs = await offers(store)
    for data in (
        f"dly:cancel:{theirs.offer_id}",  # someone else's offer
        f"dly:keep:{theirs.offer_id}",
        "dly:keep:99999",  # no such offer
        "dly:keep:abc",  # malformed
        f"dly:swap:{mine.offer_id}:QQT-9999",  # not an alternative
        f"dly:swap:{mine.offer_id}:{mine.offer_id}",
    ):
        answered, replies = await tg.press(
            chat, message["message_id"], data, forge=True, quiet=QUIET, timeout=1.0
        )
        assert (data, answered["answer"]["text"], replies) == (data, STALE, [])
    assert await waiting(store, other_number) == (1, 0)
    assert [o.status for o in await offers(store)] == ["open", "open"]


async def test_alternatives_swap_only_after_confirmation(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    [(cid, chat, number)] = await seed(store, tg, 1, promised_in_days=None)
    async with store.begin() as conn:
        await set_stock(conn, ALT, 3)
    await slip(bot, store, 60)
    [message] = await tg.transcript(chat)
    [offer] = await offers(store)
    assert buttons(message) == offer_buttons(offer.offer_id, alternatives=True)
    _, [alts] = await tg.press(chat, message["message_id"], f"dly:alt:{offer.offer_id}")
    assert alts["text"] == (
        "In stock now instead of Desk Lamp:\n• Clip Lamp: €19.00, ships now\n"
        "Tap one to swap, or keep waiting."
    )
    assert buttons(alts) == [
        [("🔁 Clip Lamp", f"dly:pick:{offer.offer_id}:{ALT}")],
        [("⏳ Keep waiting", f"dly:keep:{offer.offer_id}")],
        [("✖️ Cancel this item, full refund", f"dly:cancel:{offer.offer_id}")],
    ]
    _, [confirm] = await tg.press(chat, alts["message_id"], f"dly:pick:{offer.offer_id}:{ALT}")
    assert confirm["text"] == (
        "Swap Desk Lamp for Clip Lamp (€19.00)?\n"
        f"Desk Lamp in order {number} will be cancelled with a full refund, and I'll place a new"
        " order for Clip Lamp, which ships now."
    )
    assert await waiting(store, number) == (1, 0)  # nothing changed yet
    _, [done] = await tg.press(chat, confirm["message_id"], f"dly:swap:{offer.offer_id}:{ALT}")
    async with store.connect() as conn:
        new_number = await conn.scalar(
            select(orders.c.order_number).where(
                orders.c.customer_id == cid, orders.c.order_number != number
            )
        )
    assert done["text"] == (
        f"Done: new order {new_number} for 1 × Clip Lamp is placed.\n"
        f"Desk Lamp in order {number} is cancelled, and you'll get a full refund for it."
    )
    assert await waiting(store, number) == (0, 1)
    [offer] = await offers(store)
    assert (offer.status, offer.answer, json.loads(offer.answer_detail)) == (
        "cancelled",
        "alternative",
        {"new_order": new_number, "sku": ALT},
    )
    await run_policy(bot)
    assert (await deliver_due(bot)).claimed == 0  # the reply said it all
    async with store.connect() as conn:
        assert (
            await conn.scalar(select(outbox.c.outbox_id).where(outbox.c.status == "pending"))
            is None
        )


async def test_a_cancel_press_that_frees_a_restocks_unit_tells_the_next_in_line(
    bot: BotApplication, tg: SandboxClient, store: Store
) -> None:
    # The press queues nothing itself (a scan of every untold line would hold a big store's
    # writers): it marks what it touched, and the scheduler's tick tells the next in line.
    (_, first, first_number), (_, second, second_number) = await seed(
        store, tg, 2, promised_in_days=None
    )
    async with store.begin() as conn:
        await conn.execute(restocks.update().where(restocks.c.restock_id == RESTOCK).values(qty=1))
    await slip(bot, store, 60)  # one unit on 25 January for the first; no date for the second
    [offer_first, _] = await offers(store)
    [message] = await tg.transcript(first)
    [before] = await tg.transcript(second)
    assert "\nWe don't know the new date yet" in before["text"]
    count = select(func.count()).select_from(outbox).where(outbox.c.chat_id == second)
    async with store.connect() as conn:
        told_before = await conn.scalar(count)
    _, [reply] = await tg.press(first, message["message_id"], f"dly:cancel:{offer_first.offer_id}")
    assert reply["text"].startswith(f"Done: Desk Lamp in order {first_number} is cancelled.")
    async with store.connect() as conn:
        assert await conn.scalar(count) == told_before  # not in the press's own transaction
    await run_policy(bot)
    await deliver_due(bot)
    [_, news] = await tg.transcript(second)
    assert news["text"] == (
        f"📦 Order {second_number}\n\nDesk Lamp\n"
        "📅 Now has a date: ships around January 25 (in 2 months)."
    )
