"""Free text: understand what the customer wants and hand it to the capability that answers it.

Runs for every private text message that is not a command, after the account module has had
the chance to take it as the answer to a question it asked (a pending step in the store).
"""

from __future__ import annotations

import weakref

from telegram import Update
from telegram.ext import MessageHandler, filters

from bot.context import BotApplication, BotContext
from bot.handlers import account, cancel, fallback, handoff, notifications, orders, start, stock
from bot.reply import MAIN_MENU, chat_id_of, send
from bot.understanding import Intent, ProductWords, Understanding, load_lexicon, understand_all
from store.catalog import ProductIndex
from store.chats import reset_misses

# understand() gives a bare product-looking phrase this confidence; a real question scores higher.
GUESS_CONFIDENCE = 0.5


async def on_text(update: Update, context: BotContext) -> None:
    message = update.effective_message
    if message is None or message.text is None or update.effective_chat is None:
        return
    if await account.continue_pending(update, context):
        return
    meanings = understand_all(message.text, await _catalog_words(context))
    if len(meanings) > 1:
        # "where is my order 100004 and is the kettle in stock?": each answered, in order
        await _reset_misses(update, context)
        if await orders.linked_customer(update, context) is None:
            # An unlinked chat is asked to prove the order is theirs: the answer it can have
            # now comes first and the question last, where the customer replies to it.
            meanings.sort(key=lambda m: m.intent is Intent.ORDER_STATUS)
        for meaning in meanings:
            await _answer(update, context, meaning)
        return
    meaning = meanings[0]
    if meaning.intent is Intent.UNKNOWN:
        await fallback.not_understood(update, context)
        return
    if meaning.intent is Intent.STOCK and meaning.confidence <= GUESS_CONFIDENCE:
        # A few unknown words read as a product name only if the catalog agrees.
        if not await stock.stock_question(update, context, meaning.product_words, guessed=True):
            await fallback.not_understood(update, context)
            return
        await _reset_misses(update, context)
        return
    await _reset_misses(update, context)
    await _answer(update, context, meaning)


# The words of the catalog's names, made again when the index is built again (a new catalog).
_WORDS_OF: weakref.WeakKeyDictionary[ProductIndex, tuple[int, ProductWords]] = (
    weakref.WeakKeyDictionary()
)


async def _catalog_words(context: BotContext) -> ProductWords:
    """What the understanding needs of the catalog: which words are a product's."""
    index = await context.store.product_index()
    made = _WORDS_OF.get(index)
    if made is None or made[0] != index.generation:
        made = (index.generation, ProductWords.of_names(index.names()))
        _WORDS_OF[index] = made
    return made[1]


async def _answer(update: Update, context: BotContext, meaning: Understanding) -> None:
    match meaning.intent:
        case Intent.ORDER_STATUS:
            await orders.where_is_my_order(update, context, meaning.order_number)
        case Intent.STOCK:
            await stock.stock_question(update, context, meaning.product_words)
        case Intent.CANCEL:
            await cancel.begin_cancel(update, context, meaning.order_number)
        case Intent.ALTERNATIVES:
            await stock.alternatives_for(update, context, meaning.product_words)
        case Intent.AGENT:
            await handoff.escalate(update, context, "asked")
        case Intent.STOP_NOTIFICATIONS:
            await notifications.stop_all(update, context)
        case Intent.GREETING:
            await start.greet(update, context)
        case Intent.HELP:
            await start.show_help(update, context)
        case Intent.THANKS:
            await send(update, context, "thanks.j2", rows=MAIN_MENU)


async def _reset_misses(update: Update, context: BotContext) -> None:
    """Understood: the count of misses starts again. Written only when there is one to reset,
    so an ordinary message costs no write transaction."""
    chat_id = chat_id_of(update)
    chat = await context.chat(chat_id)
    if chat is not None and chat.misses == 0:
        return
    async with context.own_chat_write() as conn:
        chat = await reset_misses(conn, chat_id)  # creates the chat when needed
    context.remember(chat)


def register(app: BotApplication) -> None:
    # The shop's words, before the first message is read (the settings checked the file).
    load_lexicon(app.bot_data.settings.lexicon_file)
    text = filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND
    app.add_handler(MessageHandler(text & ~filters.UpdateType.EDITED_MESSAGE, on_text))
