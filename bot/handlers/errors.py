"""The error handler: log the failure, tell the user politely, keep running.

The log names the update by its id, its kind and its chat, never by its content: an update
carries what the customer wrote (e-mail addresses, postcodes, phone numbers).
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import Forbidden, TelegramError

from bot.context import BotApplication, BotContext
from bot.reply import MAIN_MENU, send

log = logging.getLogger(__name__)


async def on_error(update: object, context: BotContext) -> None:
    log.error("update %s failed", _describe(update), exc_info=context.error)
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    if isinstance(context.error, Forbidden):
        return  # the user blocked the bot: there is nobody to apologise to
    try:
        await send(update, context, "error.j2", rows=MAIN_MENU)
    except TelegramError:
        log.warning("could not tell chat %s about the failure", update.effective_chat.id)
    except Exception:
        # The apology itself failed (the store may be what broke); the log above has the cause.
        log.exception("apology failed for chat %s", update.effective_chat.id)


def _describe(update: object) -> str:
    if update is None:  # a job's or the polling loop's failure
        return "None"
    if not isinstance(update, Update):
        return f"of type {type(update).__name__}"  # its repr could hold anything
    kind = next((k for k in Update.ALL_TYPES if getattr(update, k, None) is not None), "unknown")
    chat, user = update.effective_chat, update.effective_user
    where = f", chat {chat.id}" if chat else f", user {user.id}" if user else ""
    return f"{update.update_id} ({kind}{where})"


def register(app: BotApplication) -> None:
    app.add_error_handler(on_error)
