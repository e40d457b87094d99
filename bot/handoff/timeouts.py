"""The periodic check: no-answer notices, idle hand-backs, missing topics, current cards."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.context import BotApplication, BotContext
from bot.handoff.common import SWEEP_BATCH, AppOrContext, _app, log
from bot.handoff.escalation import hand_back
from bot.handoff.topic import (
    _notice,
    _open_topic,
    _post_card,
    _relay_held,
    _tell_started,
    _to_customer,
    refresh_card,
)
from bot.render import ButtonSpec
from store.handoffs import (
    cards_to_check,
    claim_no_answer_notice,
    claim_topic_lease,
    due_idle,
    due_no_answer,
    with_held,
    without_topic,
)


async def sweep_handoffs(context_or_app: AppOrContext) -> None:
    """The timeouts: tell customers nobody answered yet, hand idle threads back.

    Deadlines live in the store and every step is a conditional update, so any number of
    processes can run this at once and each customer hears each thing once."""
    app = _app(context_or_app)
    settings = app.bot_data.settings
    now = app.bot_data.now()
    async with app.bot_data.store.connect() as conn:
        unanswered = await due_no_answer(conn, now, limit=SWEEP_BATCH)
        idle = await due_idle(
            conn, now - timedelta(hours=settings.idle_handback_hours), limit=SWEEP_BATCH
        )
    for h in unanswered:
        async with app.bot_data.store.begin() as conn:
            mine = await claim_no_answer_notice(conn, h.handoff_id, now)
        if not mine:
            continue
        await _notice(app, h, "no_answer", minutes=settings.no_answer_minutes)
        if not h.customer_blocked:
            rows: list[list[ButtonSpec]] = [
                [("back_to_bot", f"h:back:{h.handoff_id}")],
                [("keep_waiting", f"h:wait:{h.handoff_id}")],
            ]
            await _to_customer(app, h, "handoff_no_answer.j2", rows=rows)
    for h in idle:
        await hand_back(app, h, "idle")
    await _recover_topics(app, now)
    await _refresh_cards(app, now)


async def _recover_topics(app: BotApplication, now: datetime) -> None:
    """Open the topics a crashed process claimed but never opened, post their cards, relay
    what the customer wrote meanwhile and tell the customer; relay anything still held."""
    store = app.bot_data.store
    async with store.connect() as conn:
        missing = await without_topic(conn, now, limit=SWEEP_BATCH)
    for h in missing:
        async with store.begin() as conn:
            mine = await claim_topic_lease(conn, h.handoff_id, now)
        if not mine:
            continue
        opened = await _open_topic(app, h)
        if opened is None or opened.thread_id is None:
            continue  # the lease runs out and the next sweep tries again
        await _post_card(app, opened, opened.reason)
        await _relay_held(app, opened)
        if not opened.customer_blocked:
            await _tell_started(app, opened, opened.reason)
    async with store.connect() as conn:
        pending = await with_held(conn, limit=SWEEP_BATCH)
    for h in pending:
        await _relay_held(app, h)


async def _refresh_cards(app: BotApplication, now: datetime) -> None:
    """Cards follow the store: receipts, date changes and cancellations that reached no
    notice (and so no post_to_topic) still show up on the card within one sweep."""
    async with app.bot_data.store.begin() as conn:
        open_cards = await cards_to_check(conn, now, limit=SWEEP_BATCH)
    for h in open_cards:
        await refresh_card(app, h.chat_id, force=False)


async def _sweep_job(context: BotContext) -> None:
    try:
        await sweep_handoffs(context)
    except Exception:
        # The next run tries again; one failing run must not stop the job.
        log.exception("handoff check failed")
