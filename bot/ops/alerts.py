"""The ops check and the jobs of the shop team's side: every OPS_CHECK_MINUTES the track records
and causes are refreshed (bot.ops.refresh), then the alerts: each condition is told once while it
holds, again only after it ended and came back, and never in quiet hours (it waits for the
morning). The digest (bot.ops.digest) goes out once a day at DIGEST_TIME.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from telegram.error import TelegramError

from bot.context import BotApplication, BotContext
from bot.notices import in_quiet_hours
from bot.ops import open_topic, ops_thread, refresh
from bot.ops.digest import send_digest
from bot.shared import leased
from store.insights import AlertRules, alert_conditions, claim_untold, sync_alerts
from store.schema import ops_alerts

log = logging.getLogger("bot.ops")

# Alerts told in full in a check's message; the rest (up to CLAIM_LIMIT) are counted.
ALERTS_PER_MESSAGE = 20
CLAIM_LIMIT = 10_000


async def run_check(app: BotApplication, *, refresh_first: bool = True) -> int:
    """Refresh, record which alerts hold, and tell the new ones in the ops topic (not in quiet
    hours). Returns the alerts told."""
    settings = app.bot_data.settings
    store = app.bot_data.store
    if refresh_first:
        await refresh(app)
    now = app.bot_data.now()
    rules = AlertRules(default_reorder_point=settings.reorder_point_default)
    async with store.connect() as conn:
        conditions = await alert_conditions(conn, now, rules)
    async with store.begin() as conn:
        await sync_alerts(conn, conditions, now)
    thread = await ops_thread(app)
    if thread is None or settings.ops_chat_id is None or in_quiet_hours(app, now):
        return 0
    async with store.begin() as conn:
        batch = await claim_untold(conn, now, limit=CLAIM_LIMIT)
    if not batch:
        return 0
    # One message a check: the first alerts in full, the count of the rest (a big shop's
    # first check finds thousands; the report lists them all).
    text = app.bot_data.renderer.text(
        "ops_alerts.j2",
        settings.default_language,
        alerts=batch[:ALERTS_PER_MESSAGE],
        more=len(batch) - len(batch[:ALERTS_PER_MESSAGE]),
    )
    try:
        await app.bot.send_message(settings.ops_chat_id, text, message_thread_id=thread)
    except TelegramError as exc:
        log.warning("ops alerts not sent, the next check tries again: %s", exc)
        async with store.begin() as conn:
            await conn.execute(
                ops_alerts.update()
                .where(ops_alerts.c.key.in_([a.key for a in batch]))
                .values(told_at=None)
            )
        return 0
    return len(batch)


async def _check_job(context: BotContext) -> None:
    app: BotApplication = context.application  # type: ignore[assignment]
    try:
        await run_check(app)
    except Exception:
        log.exception("ops check failed; the next one tries again")


async def _digest_job(context: BotContext) -> None:
    app: BotApplication = context.application  # type: ignore[assignment]
    try:
        await send_digest(app)
    except Exception:
        log.exception("the daily digest failed")


async def start(app: BotApplication) -> None:
    """At start-up: the ops topic, then the jobs. The check runs without a topic too: the
    order view's ETA ranges need the track records it refreshes."""
    settings = app.bot_data.settings
    if settings.ops_chat_id is not None:
        await open_topic(app)
    if app.job_queue is None:
        return
    if settings.ops_check_minutes > 0:
        every = timedelta(minutes=settings.ops_check_minutes)
        # One process a round: the refresh reads every waiting line (bot.shared.JobLeases).
        app.job_queue.run_repeating(
            leased("ops-check", _check_job), interval=every, first=every, name="ops-check",
            job_kwargs={"max_instances": 1},
        )  # fmt: skip
    if settings.digest_time != "off" and settings.ops_chat_id is not None:
        at = datetime.strptime(settings.digest_time, "%H:%M").time().replace(tzinfo=settings.zone)
        app.job_queue.run_daily(_digest_job, time=at, name="ops-digest")
