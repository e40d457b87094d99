"""The error handler: log the failure with its update, tell the user politely, keep running."""

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
    if isinstance(update, Update):
        return str(update.to_dict())
    return repr(update)


def register(app: BotApplication) -> None:
    app.add_error_handler(on_error)
