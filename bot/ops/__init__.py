"""The shop team's side (#18): alerts (bot.ops.alerts) and a daily digest (bot.ops.digest) in an
ops topic of the support group. This module holds what both use: the topic and the refresh.

The topic is opened at start-up, like the customers' topics are on escalation, and kept in the
store (ops_state) so that every process and every restart writes to the same one. A job every
OPS_CHECK_MINUTES refreshes the suppliers' track records and the causes of waiting lines (in
short batches, store.insights), then the alerts: each condition is told once while it holds,
again only after it ended and came back, and never in quiet hours (it waits for the morning).
The digest goes out once a day at DIGEST_TIME, with a chart of waiting lines by cause.
"""

from __future__ import annotations

import contextlib
import logging

from telegram.error import TelegramError

from bot.context import BotApplication
from store.insights import (
    claim_state,
    refresh_causes,
    refresh_records,
    snapshot_causes,
    state_of,
)

log = logging.getLogger(__name__)


def _topic_key(chat_id: int) -> str:
    return f"ops_topic:{chat_id}"


async def ops_thread(app: BotApplication) -> int | None:
    """The ops topic's thread in the support group, None when there is none."""
    chat_id = app.bot_data.settings.ops_chat_id
    if chat_id is None:
        return None
    async with app.bot_data.store.connect() as conn:
        value = await state_of(conn, _topic_key(chat_id))
    return int(value) if value is not None else None


async def open_topic(app: BotApplication) -> int | None:
    """Open the ops topic unless the store knows it already; its thread id."""
    settings = app.bot_data.settings
    chat_id = settings.ops_chat_id
    if chat_id is None:
        return None
    known = await ops_thread(app)
    if known is not None:
        return known
    name = app.bot_data.renderer.plain("ops.j2", "topic_name", settings.default_language)
    try:
        topic = await app.bot.create_forum_topic(chat_id, name)
    except TelegramError as exc:
        log.error("cannot open the ops topic in the support group %s: %s", chat_id, exc)
        return None
    now = app.bot_data.now()
    async with app.bot_data.store.begin() as conn:
        mine = await claim_state(conn, _topic_key(chat_id), str(topic.message_thread_id), now)
    if mine:
        return topic.message_thread_id
    # Another process opened it meanwhile: ours is surplus.
    with contextlib.suppress(TelegramError):
        await app.bot.delete_forum_topic(chat_id, topic.message_thread_id)
    return await ops_thread(app)


async def refresh(app: BotApplication) -> None:
    """Track records, causes and today's snapshot of them, each in short batches."""
    settings = app.bot_data.settings
    store = app.bot_data.store
    await refresh_records(
        store, min_deliveries=settings.insights_min_deliveries, zone=settings.zone
    )
    await refresh_causes(store, now=app.bot_data.now())
    async with store.begin() as conn:
        await snapshot_causes(conn, app.bot_data.now().astimezone(settings.zone).date())
