""" "Is this in stock?": a product by SKU or name, its availability, alternatives, "notify me"."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection
from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.context import BotApplication, BotContext
from bot.handlers.order_view import linked_customer
from bot.render import ButtonSpec, shop_examples
from bot.reply import MAIN_MENU, acknowledge, send, stale_press
from store.catalog import (
    Availability,
    Product,
    StockState,
    alternatives_in_stock,
    availability,
    find_products,
    product_by_sku,
)
from store.chats import subscribe_back_in_stock, touch_chat
from store.queries import order_of, orders_of

MATCHES_SHOWN = 5
ALTERNATIVES_SHOWN = 3
# A best match this far ahead of the runner-up is the answer; closer calls get buttons.
CLEAR_LEAD = 12.0
# Product words are cut before searching: a name is never this long, a paste may be.
MAX_QUERY_CHARS = 200


@dataclass(frozen=True)
class AlternativeGroup:
    product: Product
    alternatives: list[Product]


async def stock_question(
    update: Update, context: BotContext, words: str | None, *, guessed: bool = False
) -> bool:
    """Answer a stock question. `guessed`: the words only looked like a product name, so when
    nothing matches say nothing and return False (the caller treats it as not understood)."""
    words = (words or "").strip()[:MAX_QUERY_CHARS]
    if not words:
        await ask_which_product(update, context)
        return True
    language = await context.language_for(update)
    index = await context.store.product_index()
    built = index.generation
    matches = await find_products(index, words, limit=MATCHES_SHOWN, language=language)
    if not matches:
        index = await context.store.product_index(current=True)
        if index.generation != built:
            matches = await find_products(index, words, limit=MATCHES_SHOWN, language=language)
    if not matches:
        if guessed:
            return False
        examples = await shop_examples(context.store, language)
        await send(
            update,
            context,
            "stock_not_found.j2",
            rows=MAIN_MENU,
            language=language,
            words=words,
            **examples,
        )
    elif len(matches) == 1 or matches[0].score - matches[1].score >= CLEAR_LEAD:
        await show_product(update, context, matches[0].sku, language=language)
    else:
        rows = _product_rows([(m.sku, m.name) for m in matches])
        await send(
            update,
            context,
            "stock_choose.j2",
            rows=[*rows, *MAIN_MENU],
            language=language,
            words=words,
        )
    return True


async def show_product(
    update: Update, context: BotContext, sku: str, *, language: str | None = None
) -> bool:
    """The availability answer for one SKU; False when there is no such product."""
    language = language or await context.language_for(update)

    async def answer(
        conn: AsyncConnection,
    ) -> tuple[Product | None, Availability | None, list[Product]]:
        product = await product_by_sku(conn, sku, language)
        state = await availability(conn, sku)
        if product is None or state is None:
            return product, state, []
        alternatives = (
            await alternatives_in_stock(conn, sku, limit=ALTERNATIVES_SHOWN, language=language)
            if state.state in (StockState.OUT_OF_STOCK, StockState.DISCONTINUED)
            else []
        )
        return product, state, alternatives

    product, state, alternatives = await context.store.read(answer)
    if product is None or state is None:
        return False
    rows = _product_rows([(alt.sku, alt.name) for alt in alternatives])
    if state.state is StockState.OUT_OF_STOCK:
        rows.insert(0, [("notify_me", f"n:{product.sku}")])
    await send(
        update,
        context,
        "stock_answer.j2",
        rows=[*rows, *MAIN_MENU],
        language=language,
        product=product,
        availability=state,
        alternatives=alternatives,
    )
    return True


async def alternatives_for(update: Update, context: BotContext, words: str | None) -> None:
    """Alternatives for the named product, else for everything the customer is waiting for."""
    if words:
        await stock_question(update, context, words)
        return
    customer_id = await linked_customer(update, context)
    if customer_id is None:
        await ask_which_product(update, context)
        return
    language = await context.language_for(update)

    async def waiting_groups(conn: AsyncConnection) -> list[AlternativeGroup]:
        orders = await orders_of(conn, customer_id, open_only=True, language=language)
        return await _groups(
            conn, [ln.sku for o in orders for ln in o.lines if ln.qty_waiting], language
        )

    groups = await context.store.read(waiting_groups)
    await _send_groups(update, context, groups, language)


async def order_alternatives(update: Update, context: BotContext) -> None:
    """`alt:o:<number>`: alternatives for the waiting lines of one of the chat's orders."""
    query = update.callback_query
    assert query is not None and query.data is not None
    customer_id = await linked_customer(update, context)
    language = await context.language_for(update)
    async with context.store.connect() as conn:
        order = (
            await order_of(conn, customer_id, query.data.removeprefix("alt:o:"), language)
            if customer_id is not None
            else None
        )
        skus = [ln.sku for ln in order.lines if ln.qty_waiting] if order else []
        groups = await _groups(conn, skus, language) if skus else []
    if not groups:
        await stale_press(update, context)
        return
    await acknowledge(update)
    await _send_groups(update, context, groups, language)


async def _groups(conn: AsyncConnection, skus: list[str], language: str) -> list[AlternativeGroup]:
    groups = []
    for sku in dict.fromkeys(skus):  # each product once, in order
        product = await product_by_sku(conn, sku, language)
        if product is not None:
            alternatives = await alternatives_in_stock(
                conn, sku, limit=ALTERNATIVES_SHOWN, language=language
            )
            groups.append(AlternativeGroup(product, alternatives))
    return groups


async def _send_groups(
    update: Update, context: BotContext, groups: list[AlternativeGroup], language: str
) -> None:
    rows = _product_rows(
        [(alt.sku, alt.name) for group in groups for alt in group.alternatives][:MATCHES_SHOWN]
    )
    await send(
        update,
        context,
        "alternatives.j2",
        rows=[*rows, *MAIN_MENU],
        language=language,
        groups=groups,
    )


def _product_rows(products: list[tuple[str, str]]) -> list[list[ButtonSpec]]:
    """One product a row: names are long, and a row of two would cut them off."""
    return [[("product", f"p:{sku}", {"name": name})] for sku, name in products]


async def stock_command(update: Update, context: BotContext) -> None:
    await stock_question(update, context, " ".join(context.args or []))


async def stock_button(update: Update, context: BotContext) -> None:
    await acknowledge(update)
    await ask_which_product(update, context)


async def ask_which_product(update: Update, context: BotContext) -> None:
    language = await context.language_for(update)
    examples = await shop_examples(context.store, language)
    await send(update, context, "stock_ask.j2", rows=MAIN_MENU, language=language, **examples)


async def product_button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    language = await context.language_for(update)
    async with context.store.connect() as conn:
        known = await product_by_sku(conn, query.data.removeprefix("p:")) is not None
    if not known:
        await stale_press(update, context)
        return
    await acknowledge(update)
    await show_product(update, context, query.data.removeprefix("p:"), language=language)


async def notify_button(update: Update, context: BotContext) -> None:
    """`n:<sku>`: only for a product that still cannot be bought; otherwise show its state."""
    query = update.callback_query
    assert query is not None and query.data is not None and update.effective_chat is not None
    sku = query.data.removeprefix("n:")
    language = await context.language_for(update)
    async with context.store.begin() as conn:
        product = await product_by_sku(conn, sku, language)
        state = await availability(conn, sku)
        if product is None or state is None or state.state is StockState.DISCONTINUED:
            product = None
        elif state.state is StockState.OUT_OF_STOCK:
            await touch_chat(conn, update.effective_chat.id)
            added = await subscribe_back_in_stock(conn, update.effective_chat.id, sku)
    if product is None:
        await stale_press(update, context)
        return
    await acknowledge(update)
    if state is not None and state.state is not StockState.OUT_OF_STOCK:
        # It came back between the answer and the press: the news beats the subscription.
        await show_product(update, context, sku, language=language)
        return
    await send(
        update,
        context,
        "stock_subscribed.j2",
        rows=MAIN_MENU,
        language=language,
        name=product.name,
        already=not added,
    )


def register(app: BotApplication) -> None:
    app.add_handler(CommandHandler("stock", stock_command, filters=filters.ChatType.PRIVATE))
    app.add_handler(CallbackQueryHandler(stock_button, pattern=r"^m:stock\Z"))
    sku = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}"
    app.add_handler(CallbackQueryHandler(product_button, pattern=rf"^p:{sku}\Z"))
    app.add_handler(CallbackQueryHandler(notify_button, pattern=rf"^n:{sku}\Z"))
    app.add_handler(CallbackQueryHandler(order_alternatives, pattern=r"^alt:o:\d{1,20}\Z"))
