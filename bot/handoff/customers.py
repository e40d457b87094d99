"""The customer's side while a person owns the thread."""

from __future__ import annotations

import contextlib

from telegram import CallbackQuery, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest
from telegram.ext import ApplicationHandlerStop

from bot.context import BotContext
from bot.handoff.common import _app, _customer_language
from bot.handoff.escalation import hand_back
from bot.handoff.relay import _follow_edit, _relay_from_customer
from bot.handoff.topic import _notice
from bot.reply import acknowledge, answer_press
from store.handoffs import (
    active_handoff,
    handoff_by_id,
    set_customer_blocked,
)


async def intercept_customer_message(update: Update, context: BotContext) -> None:
    """While a person owns the thread, the customer's messages go to the topic, nowhere else."""
    chat = update.effective_chat
    message = update.effective_message
    if chat is None or message is None or not (await context.chat_state(chat.id)).in_handoff:
        return
    async with context.store.connect() as conn:
        h = await active_handoff(conn, chat.id)
    if h is None:
        return
    if update.edited_message is not None:
        await _follow_edit(
            _app(context),
            message,
            message.text_html if message.text else None,
            message.caption_html if message.caption else None,
        )
    else:
        await _relay_from_customer(_app(context), h, message)
    raise ApplicationHandlerStop


async def intercept_customer_press(update: Update, context: BotContext) -> None:
    """An old button pressed during a handoff: a short note, and nothing else happens."""
    query = update.callback_query
    if query is None or query.message is None or query.message.chat.type != ChatType.PRIVATE:
        return
    if not (await context.chat_state(query.message.chat.id)).in_handoff:
        return
    async with context.store.connect() as conn:
        h = await active_handoff(conn, query.message.chat.id)
        if h is None:
            return
        language = await _customer_language(_app(context), conn, h)
    await answer_press(query, context.renderer.text("handoff_busy.j2", language))
    raise ApplicationHandlerStop


async def customer_choice(update: Update, context: BotContext) -> None:
    """After "nobody answered yet": back to the bot, or keep waiting."""
    query = update.callback_query
    assert query is not None and query.data is not None
    app = _app(context)
    choice, _, handoff_id = query.data.removeprefix("h:").partition(":")
    chat_id = query.message.chat.id if query.message else None
    async with context.store.connect() as conn:
        h = await handoff_by_id(conn, int(handoff_id))
    if h is None or h.chat_id != chat_id or not h.active:
        await answer_press(
            query, context.renderer.text("stale_button.j2", await context.language_for(update))
        )
        raise ApplicationHandlerStop
    if choice == "wait":
        async with context.store.connect() as conn:
            language = await _customer_language(app, conn, h)
        await answer_press(query, context.renderer.text("handoff_keep_waiting.j2", language))
        await _drop_buttons(query)
    else:
        await acknowledge(update)
        await _drop_buttons(query)
        await hand_back(app, h, "customer")
    raise ApplicationHandlerStop


async def _drop_buttons(query: CallbackQuery) -> None:
    with contextlib.suppress(BadRequest):  # already without buttons
        await query.edit_message_reply_markup(None)


async def customer_membership(update: Update, context: BotContext) -> None:
    """The customer blocked or unblocked the bot: the topic should know."""
    member = update.my_chat_member
    if member is None or member.chat.type != ChatType.PRIVATE:
        return
    blocked = member.new_chat_member.status == ChatMemberStatus.BANNED
    async with context.store.begin() as conn:
        changed = await set_customer_blocked(conn, member.chat.id, blocked)
        h = await active_handoff(conn, member.chat.id)
    if changed and h is not None:
        await _notice(_app(context), h, "blocked" if blocked else "unblocked")
