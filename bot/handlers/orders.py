""" "Where is my order?": the entry from /orders, the menu, the order buttons and free text.
An unlinked chat proves ownership first (bot.handlers.account); a linked one sees its orders
(bot.handlers.order_view).
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import BotApplication, BotContext
from bot.handlers.account import begin_verification
from bot.handlers.order_view import linked_customer, show_all_orders, show_open_orders, show_order
from bot.reply import acknowledge, stale_press


async def where_is_my_order(update: Update, context: BotContext, number: str | None) -> None:
    """The entry for /orders, the menu and free text: an unlinked chat proves ownership first."""
    customer_id = await linked_customer(update, context)
    if customer_id is None:
        await begin_verification(update, context, number)
    elif number:
        await show_order(update, context, customer_id, number)
    else:
        await show_open_orders(update, context, customer_id)


async def orders_command(update: Update, context: BotContext) -> None:
    number = context.args[0] if context.args else None
    await where_is_my_order(update, context, number if number and number.isdigit() else None)


async def orders_button(update: Update, context: BotContext) -> None:
    await acknowledge(update)
    await where_is_my_order(update, context, None)


async def order_button(update: Update, context: BotContext) -> None:
    """`o:<number>` and `ol:all`: re-checked against the chat's link on every press."""
    query = update.callback_query
    assert query is not None and query.data is not None  # guaranteed by the pattern
    customer_id = await linked_customer(update, context)
    if customer_id is None:
        await stale_press(update, context)
        return
    await acknowledge(update)
    if query.data == "ol:all":
        await show_all_orders(update, context, customer_id)
    else:
        await show_order(update, context, customer_id, query.data.removeprefix("o:"))


def register(app: BotApplication) -> None:
    app.add_handler(CommandHandler("orders", orders_command, filters=filters.ChatType.PRIVATE))
    app.add_handler(CallbackQueryHandler(orders_button, pattern=r"^m:orders\Z"))
    app.add_handler(CallbackQueryHandler(order_button, pattern=r"^(o:\d{1,20}|ol:all)\Z"))
