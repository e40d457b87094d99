"""Relaying messages both ways between the customer's chat and their topic, edits included."""

from __future__ import annotations

from markupsafe import Markup
from telegram import Message
from telegram.error import BadRequest, TelegramError

from bot.context import BotApplication
from bot.handoff.common import _agent_name, _customer_language, log
from bot.handoff.topic import _relay_held, _set_topic_state, _undelivered
from store.handoffs import (
    Handoff,
    handoff_by_id,
    hold_message,
    link_message,
    linked_copy,
    record_agent_message,
    record_customer_message,
    set_customer_blocked,
)


async def _relay_from_customer(app: BotApplication, h: Handoff, message: Message) -> None:
    if h.thread_id is None:
        # The topic is being opened (or its opener crashed: the sweep opens it): hold the
        # message, it is relayed once the topic exists.
        now = app.bot_data.now()
        async with app.bot_data.store.begin() as conn:
            await hold_message(conn, h.handoff_id, (message.chat_id, message.message_id), now)
            current = await handoff_by_id(conn, h.handoff_id)
        if current is not None and current.thread_id is not None:
            await _relay_held(app, current)  # it opened meanwhile
        return
    try:
        copy = await app.bot.copy_message(
            h.support_chat_id, message.chat_id, message.message_id, message_thread_id=h.thread_id
        )
    except TelegramError as exc:
        log.error("could not copy a message of chat %s to its topic: %s", h.chat_id, exc)
        return
    now = app.bot_data.now()
    async with app.bot_data.store.begin() as conn:
        await link_message(
            conn,
            h.handoff_id,
            (message.chat_id, message.message_id),
            (h.support_chat_id, copy.message_id),
            now,
        )
        flipped = await record_customer_message(conn, h.handoff_id, now)
    if flipped:
        await _set_topic_state(app, h, "waiting")


async def _follow_edit(
    app: BotApplication, message: Message, text_html: str | None, caption_html: str | None
) -> bool:
    """Edit the relayed copy of ``message``. False when there is none to edit."""
    async with app.bot_data.store.connect() as conn:
        copy = await linked_copy(conn, message.chat_id, message.message_id)
    if copy is None:
        return False
    try:
        if text_html is not None:
            await app.bot.edit_message_text(text_html, chat_id=copy[0], message_id=copy[1])
        elif caption_html is not None:
            await app.bot.edit_message_caption(
                chat_id=copy[0], message_id=copy[1], caption=caption_html
            )
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            log.warning("could not follow an edit in chat %s: %s", copy[0], exc)
            return False
    return True


def _signed(app: BotApplication, html: str, message: Message, language: str) -> str:
    """The agent's words as the customer gets them: signed, in the customer's language."""
    settings = app.bot_data.settings
    name = _agent_name(message)
    if not settings.agent_signature or not name:
        return html
    return app.bot_data.renderer.text(
        "handoff_signed.j2",
        language,
        text=Markup(html),
        name=name,
        shop=settings.shop_name,
    )


async def _relay_to_customer(app: BotApplication, h: Handoff, message: Message) -> None:
    settings = app.bot_data.settings
    signing = settings.agent_signature and _agent_name(message) is not None
    async with app.bot_data.store.connect() as conn:
        language = await _customer_language(app, conn, h)
    try:
        if signing and message.text:
            sent = await app.bot.send_message(
                h.chat_id, _signed(app, message.text_html, message, language)
            )
            copy_id = sent.message_id
        elif signing and not message.sticker and not message.video_note:
            caption = _signed(
                app, message.caption_html if message.caption else "", message, language
            )
            copy_id = (
                await app.bot.copy_message(
                    h.chat_id, message.chat_id, message.message_id, caption=caption
                )
            ).message_id
        else:
            copy_id = (
                await app.bot.copy_message(h.chat_id, message.chat_id, message.message_id)
            ).message_id
    except TelegramError as exc:
        await _undelivered(app, h, exc)
        return
    now = app.bot_data.now()
    async with app.bot_data.store.begin() as conn:
        await link_message(
            conn, h.handoff_id, (message.chat_id, message.message_id), (h.chat_id, copy_id), now
        )
        flipped = await record_agent_message(conn, h.handoff_id, now)
        if h.customer_blocked:
            await set_customer_blocked(conn, h.chat_id, False)
    if flipped:
        await _set_topic_state(app, h, "answered")
