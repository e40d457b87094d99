"""What the bot says when nothing else understood the update. Registered last."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, MessageHandler, filters

from bot.context import BotApplication, BotContext
from bot.render import shop_examples
from bot.reply import MAIN_MENU, chat_id_of, send, stale_press
from store.chats import record_miss

# After this many misses in a row the bot stops guessing and offers a person.
MISSES_BEFORE_OFFERING_A_PERSON = 2
OFFER_A_PERSON = ((("agent", "m:agent"),), MAIN_MENU[0], MAIN_MENU[2])


async def not_understood(update: Update, context: BotContext) -> None:
    async with context.own_chat_write() as conn:
        chat = await record_miss(conn, chat_id_of(update), update.update_id)
    context.remember(chat)
    if chat.misses >= MISSES_BEFORE_OFFERING_A_PERSON:
        await send(update, context, "fallback_offer_agent.j2", rows=OFFER_A_PERSON)
    else:
        language = await context.language_for(update)
        examples = await shop_examples(context.store, language)
        await send(update, context, "fallback.j2", rows=MAIN_MENU, language=language, **examples)


async def stale_button(update: Update, context: BotContext) -> None:
    """A press nobody recognised: forged, or from a keyboard of an older version."""
    await stale_press(update, context)


def register(app: BotApplication) -> None:
    private = filters.ChatType.PRIVATE
    app.add_handler(MessageHandler(private & ~filters.UpdateType.EDITED_MESSAGE, not_understood))
    app.add_handler(CallbackQueryHandler(stale_button))
