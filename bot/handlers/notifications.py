"""What the bot may tell a customer first: /notifications with toggles, and "stop everything".

"Stop" is honoured at once and offers an undo: a customer who asks for silence should not
have to confirm it, and one who did it by mistake gets it back with one tap. Delay-option
offers still come after a stop, because they carry a decision the customer is owed (and
without an answer the item is cancelled).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy import update as sql_update
from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, TypeHandler

from bot.context import BotApplication, BotContext
from bot.notices import schedule
from bot.render import ButtonSpec
from bot.reply import acknowledge, send
from store.chats import chat_of
from store.outbox import reachable_again
from store.schema import back_in_stock_subscriptions, customers, utcnow

# Before everything else (handoff's group -1 stops the updates it relays): a customer who had
# blocked the bot (a 403 stopped their notices) and writes or unblocks again is reachable.
REACHABLE_GROUP = -2

TOPICS = {"delays": "notify_delays", "stock": "notify_back_in_stock", "ship": "notify_shipping"}


async def _prefs(context: BotContext, chat_id: int) -> tuple[int | None, dict[str, bool]]:
    async with context.store.connect() as conn:
        chat = await chat_of(conn, chat_id)
        if chat is None or chat.customer_id is None:
            return None, {}
        row = (
            await conn.execute(
                select(*(customers.c[col] for col in TOPICS.values())).where(
                    customers.c.customer_id == chat.customer_id
                )
            )
        ).first()
    if row is None:
        return None, {}
    return chat.customer_id, {topic: bool(row._mapping[col]) for topic, col in TOPICS.items()}


async def _set(context: BotContext, customer_id: int, values: dict[str, Any]) -> None:
    async with context.store.begin() as conn:
        await conn.execute(
            sql_update(customers).where(customers.c.customer_id == customer_id).values(**values)
        )


def _menu_rows(prefs: dict[str, bool]) -> tuple[tuple[ButtonSpec, ...], ...]:
    rows: list[tuple[ButtonSpec, ...]] = [
        ((f"notify_{topic}", f"ntf:t:{topic}", {"on": on}),) for topic, on in prefs.items()
    ]
    if any(prefs.values()):
        rows.append((("notify_stop_all", "ntf:off"),))
    else:
        rows.append((("notify_all_on", "ntf:on"),))
    return tuple(rows)


async def show_menu(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    if chat is None:
        return
    await acknowledge(update)
    customer_id, prefs = await _prefs(context, chat.id)
    if customer_id is None:
        await send(
            update,
            context,
            "notifications_not_linked.j2",
            rows=((("account_link", "acc:link"),),),
        )
        return
    await send(update, context, "notifications_menu.j2", rows=_menu_rows(prefs), prefs=prefs)


async def stop_all(update: Update, context: BotContext) -> None:
    """Switch every update off for this chat's customer and offer an undo. Called by the
    /notifications button and by the free-text dispatcher ("stop sending me updates")."""
    chat = update.effective_chat
    if chat is None:
        return
    await acknowledge(update)
    customer_id, _ = await _prefs(context, chat.id)
    async with context.store.begin() as conn:
        # "Notify me" requests of this chat are updates too.
        await conn.execute(
            sql_update(back_in_stock_subscriptions)
            .where(
                back_in_stock_subscriptions.c.chat_id == chat.id,
                back_in_stock_subscriptions.c.notified_at.is_(None),
            )
            .values(notified_at=utcnow())
        )
    if customer_id is not None:
        await _set(context, customer_id, {col: False for col in TOPICS.values()})
    rows: tuple[tuple[ButtonSpec, ...], ...] = (
        ((("notify_undo", "ntf:on"),),) if customer_id is not None else ()
    )
    await send(update, context, "notifications_stopped.j2", rows=rows)


async def button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    chat = update.effective_chat
    assert query is not None and query.data is not None and chat is not None
    if query.data == "ntf:menu":
        await show_menu(update, context)
        return
    if query.data == "ntf:off":
        await stop_all(update, context)
        return
    customer_id, prefs = await _prefs(context, chat.id)
    if customer_id is None:
        await show_menu(update, context)
        return
    if query.data == "ntf:on":
        await _set(context, customer_id, {col: True for col in TOPICS.values()})
        prefs = dict.fromkeys(prefs, True)
    else:
        topic = query.data.removeprefix("ntf:t:")
        prefs[topic] = not prefs[topic]
        await _set(context, customer_id, {TOPICS[topic]: prefs[topic]})
    await acknowledge(update)
    language = await context.language_for(update)
    text = context.renderer.text("notifications_menu.j2", language, prefs=prefs)
    markup = context.renderer.keyboard(language, _menu_rows(prefs))
    if query.message is not None and query.data != "ntf:on":
        await query.edit_message_text(text, reply_markup=markup)
    else:
        await send(update, context, "notifications_menu.j2", rows=_menu_rows(prefs), prefs=prefs)


async def writes_again(update: Update, context: BotContext) -> None:
    chat = update.effective_chat
    if chat is None or chat.type != "private":
        return
    member = update.my_chat_member
    if member is not None and member.new_chat_member.status != "member":
        return  # blocking is learnt from the 403, not here
    if not (await context.chat_state(chat.id)).unreachable:
        return
    async with context.store.begin() as conn:
        await reachable_again(conn, chat.id)


def register(app: BotApplication) -> None:
    app.add_handler(TypeHandler(Update, writes_again), group=REACHABLE_GROUP)
    app.add_handler(CommandHandler("notifications", show_menu))
    app.add_handler(
        CallbackQueryHandler(button, pattern=r"^ntf:(menu|off|on|t:(delays|stock|ship))\Z")
    )
    schedule(app)
