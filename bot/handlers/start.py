"""/start and /help: the greeting and what the bot can do."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import BotApplication, BotContext
from bot.reply import MAIN_MENU, acknowledge, send
from store.chats import touch_chat


async def start(update: Update, context: BotContext) -> None:
    await greet(update, context)


async def greet(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    if chat is not None and await context.chat(chat.id) is None:
        async with context.own_chat_write() as conn:
            await touch_chat(conn, chat.id)
    user = update.effective_user
    await send(
        update,
        context,
        "start.j2",
        rows=MAIN_MENU,
        name=user.first_name if user else None,
        shop=context.settings.shop_name,
    )


async def show_help(update: Update, context: BotContext) -> None:
    await acknowledge(update)
    await send(update, context, "help.j2", rows=MAIN_MENU)


def register(app: BotApplication) -> None:
    private = filters.ChatType.PRIVATE
    app.add_handler(CommandHandler("start", start, filters=private))
    app.add_handler(CommandHandler("help", show_help, filters=private))
    app.add_handler(CallbackQueryHandler(show_help, pattern=r"^m:help\Z"))
