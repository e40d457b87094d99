"""/language: choose the language with buttons; the choice is kept in the store."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import BotApplication, BotContext
from bot.reply import MAIN_MENU, acknowledge, chat_id_of, send
from bot.settings import SUPPORTED_LANGUAGES
from store.chats import set_chat_language


async def choose(update: Update, context: BotContext) -> None:
    await acknowledge(update)
    language = await context.language_for(update)
    options = [
        ("language_option", f"lang:{code}", {"code": code, "current": language})
        for code in SUPPORTED_LANGUAGES
    ]
    await send(
        update, context, "language_choose.j2", rows=[options[:2], options[2:]], language=language
    )


async def chosen(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None  # guaranteed by the pattern
    language = query.data.removeprefix("lang:")
    async with context.own_chat_write() as conn:
        chat = await set_chat_language(conn, chat_id_of(update), language)
    context.remember(chat)
    await acknowledge(update)
    await send(update, context, "language_set.j2", rows=MAIN_MENU, language=language)


def register(app: BotApplication) -> None:
    app.add_handler(CommandHandler("language", choose, filters=filters.ChatType.PRIVATE))
    app.add_handler(CallbackQueryHandler(choose, pattern=r"^m:lang\Z"))
    # Only the four codes we ship match; anything else falls through to the stale-button reply.
    codes = "|".join(SUPPORTED_LANGUAGES)
    app.add_handler(CallbackQueryHandler(chosen, pattern=rf"^lang:({codes})\Z"))
