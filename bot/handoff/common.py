"""Shared pieces of the handoff: constants, business hours, agent-side texts, the customer."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from telegram import Message, User
from telegram.constants import ChatMemberStatus
from telegram.ext import CallbackContext

from bot.context import BotApplication
from bot.i18n import choose_language
from bot.render import ButtonSpec
from bot.settings import Settings
from store.chats import chat_of
from store.handoffs import Handoff
from store.queries import Customer, customer_of

log = logging.getLogger("bot.handlers.handoff")


HANDOFF_GROUP = -1


CARD_ORDERS = 5  # orders on the card; the rest behind /orders


SWEEP_BATCH = 100


CANNED = ("checking", "supplier", "refund", "anything_else")


AGENT_STATUSES = {
    "members": {
        ChatMemberStatus.OWNER,
        ChatMemberStatus.ADMINISTRATOR,
        ChatMemberStatus.MEMBER,
        ChatMemberStatus.RESTRICTED,
    },
    "admins": {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR},
}


# After this many misses in a row an escalation counts as "the bot misunderstood".
MISSES_MEAN_MISUNDERSTOOD = 2


_PRESS = re.compile(r"^ag:(o|c|r|x|cl|cy|cn|rs):(\d{1,12})(?::([\w]{1,32}))?(?::(\d{1,4}))?\Z")


AppOrContext = BotApplication | CallbackContext[Any, Any, Any, Any]


def _app(context_or_app: AppOrContext) -> BotApplication:
    if isinstance(context_or_app, CallbackContext):
        return context_or_app.application  # type: ignore[return-value]
    return context_or_app


def _is_open(settings: Settings, at: datetime) -> bool:
    local = at.astimezone(settings.zone)
    opens, closes = settings.open_hours
    return local.weekday() in settings.open_days and opens <= local.time() < closes


def next_opening(settings: Settings, at: datetime) -> datetime:
    """The first opening of the team's hours strictly after ``at`` (a week at most away)."""
    local = at.astimezone(settings.zone)
    opens, _ = settings.open_hours
    for days in range(8):
        day = local.date() + timedelta(days=days)
        start = datetime.combine(day, opens, tzinfo=settings.zone)
        if day.weekday() in settings.open_days and start > local:
            return start
    raise ValueError("no business day in the week")  # unreachable: settings require one day


def answer_deadline(settings: Settings, start: datetime, minutes: int) -> datetime:
    """``start`` plus ``minutes`` of business time: the clock only runs while the team works."""
    left = timedelta(minutes=minutes)
    at = start.astimezone(settings.zone)
    _, closes = settings.open_hours
    for _ in range(400):  # bounded: one step per opening, more than a year of them
        if not _is_open(settings, at):
            at = next_opening(settings, at)
        end = datetime.combine(at.date(), closes, tzinfo=settings.zone)
        if end - at >= left:
            return at + left
        left -= end - at
        at = end
    return at + left


def _agent_language(app: BotApplication) -> str:
    return app.bot_data.settings.default_language


def _agent_text(app: BotApplication, template: str, **values: Any) -> str:
    return app.bot_data.renderer.text(template, _agent_language(app), **values)


def _tools(app: BotApplication, handoff_id: int) -> Any:
    rows: list[list[ButtonSpec]] = [
        [("agent_orders", f"ag:o:{handoff_id}"), ("agent_cancel", f"ag:c:{handoff_id}")],
        [("agent_canned", f"ag:r:{handoff_id}"), ("agent_close", f"ag:x:{handoff_id}")],
    ]
    return app.bot_data.renderer.keyboard(_agent_language(app), rows)


async def _customer_language(app: BotApplication, conn: AsyncConnection, h: Handoff) -> str:
    chat = await chat_of(conn, h.chat_id)
    return choose_language(
        chat.language if chat else None,
        h.telegram_language,
        app.bot_data.settings.default_language,
    )


def _display_name(user: User | None) -> str:
    if user is None:
        return "?"
    return " ".join(part for part in (user.first_name, user.last_name) if part) or "?"


async def _customer(conn: AsyncConnection, h: Handoff) -> Customer | None:
    chat = await chat_of(conn, h.chat_id)
    if chat is None or chat.customer_id is None:
        return None
    return await customer_of(conn, chat.customer_id)


def _topic_name(app: BotApplication, h: Handoff, customer: Customer | None, state: str) -> str:
    label = customer.name if customer else h.customer_name
    # Telegram caps topic names at 128 characters; the icon and the id need a few.
    return app.bot_data.renderer.plain(
        "agent_topic.j2",
        "name",
        _agent_language(app),
        state=state,
        label=label[:100],
        customer_id=customer.customer_id if customer else None,
    )


@dataclass(frozen=True)
class _Who:
    """The customer as Telegram shows them."""

    name: str
    username: str | None
    language_code: str | None


def _is_command(message: Message) -> bool:
    return bool(message.text and message.text.startswith("/"))


def _agent_name(message: Message) -> str | None:
    if message.sender_chat is not None:
        return None  # an anonymous admin writes as the group
    return message.from_user.first_name if message.from_user else None
