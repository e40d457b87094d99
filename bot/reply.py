"""Sending rendered texts: the one way handlers speak to a chat."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from telegram import CallbackQuery, Update
from telegram.error import BadRequest
from telegram.request import BaseRequest

from bot.context import BotContext
from bot.render import ButtonSpec

log = logging.getLogger(__name__)

# The buttons that make sense when nothing more specific does.
MAIN_MENU: tuple[tuple[ButtonSpec, ...], ...] = (
    (("orders", "m:orders"), ("stock", "m:stock")),
    (("agent", "m:agent"),),
    (("help", "m:help"), ("language", "m:lang")),
)


def chat_id_of(update: Update) -> int:
    """The chat of an update that handlers registered for chats receive (never None there)."""
    if update.effective_chat is None:
        raise ValueError(f"update {update.update_id} has no chat")
    return update.effective_chat.id


async def send(
    update: Update,
    context: BotContext,
    template: str,
    *,
    rows: Sequence[Sequence[ButtonSpec]] = (),
    language: str | None = None,
    **values: Any,
) -> None:
    """Render a template in the reader's language and send it to the update's chat."""
    chat = update.effective_chat
    if chat is None:
        return
    language = language or await context.language_for(update)
    text = context.renderer.text(template, language, **values)
    markup = context.renderer.keyboard(language, rows) if rows else None
    thread_id = update.effective_message.message_thread_id if update.effective_message else None
    # What Bot.send_message does, less turning Telegram's answer into a Message that nobody
    # reads: with the keyboard and the entities in it, 8.5% of all the bot's CPU in the probe.
    # _post fills in the Defaults (parse mode, link previews: the keys given DEFAULT_NONE)
    # and goes through the rate limiter and its retries as send_message would.
    await context.bot._post(
        "sendMessage",
        {
            "chat_id": chat.id,
            "text": text,
            "parse_mode": BaseRequest.DEFAULT_NONE,
            "link_preview_options": BaseRequest.DEFAULT_NONE,
            "reply_markup": markup,
            "message_thread_id": thread_id,
        },
    )


async def answer_press(
    query: CallbackQuery, text: str | None = None, *, show_alert: bool = False
) -> bool:
    """Answer a press (stop its spinner, show ``text``); False when Telegram no longer takes
    the answer. A press that waited past Telegram's answer window (a backlog, or replayed
    from the inbox after a restart) used to fail its handler at this first step: the customer
    got the apology instead of what they asked for."""
    try:
        await query.answer(text, show_alert=show_alert)
    except BadRequest as exc:
        log.info("press %s not answered: %s", query.id, exc.message)
        return False
    return True


async def acknowledge(update: Update) -> None:
    """Stop the button's spinner; a press must always be answered, even if nothing else happens."""
    if update.callback_query is not None:
        await answer_press(update.callback_query)


async def stale_press(update: Update, context: BotContext) -> None:
    """A press that no longer fits the store (forged, stale, or not this chat's): say so."""
    query = update.callback_query
    if query is None:
        return
    language = await context.language_for(update)
    text = context.renderer.text("stale_button.j2", language)
    if not await answer_press(query, text):
        await send(update, context, "stale_button.j2", rows=MAIN_MENU, language=language)
