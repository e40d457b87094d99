"""Cancelling what has not shipped: pick an order, pick a line (or all), confirm.

Every step re-reads the order through the customer-scoped store query, so a forged or stale
button (another customer's order, a line that shipped meanwhile) changes nothing.
"""

from __future__ import annotations

import re

from telegram import Update
from telegram.ext import CallbackQueryHandler

from bot.context import BotApplication, BotContext
from bot.handlers.account import begin_verification
from bot.handlers.order_view import ORDERS_SHOWN, linked_customer, show_order
from bot.render import ButtonSpec
from bot.reply import MAIN_MENU, acknowledge, send, stale_press
from store.backorders import cancel_line, cancel_order
from store.errors import StoreError
from store.outbox import mark_cancellation_told
from store.queries import Order, OrderLine, order_of, orders_of

CANCEL_REASON = "customer, in the bot"
_PRESS = re.compile(r"^(cx|cxl|cxy|cxo|cxoy):(\d{1,20})(?::(\d{1,4}))?\Z")


def _cancellable(line: OrderLine) -> int:
    return line.qty_waiting + line.qty_allocated


async def begin_cancel(update: Update, context: BotContext, number: str | None) -> None:
    """Free text "cancel …": straight to the order's lines, or first the choice of order."""
    customer_id = await linked_customer(update, context)
    if customer_id is None:
        await begin_verification(update, context, number)
        return
    if number:
        await _pick_line(update, context, customer_id, number)
        return
    language = await context.language_for(update)
    async with context.store.connect() as conn:
        orders = await orders_of(conn, customer_id, open_only=True, limit=ORDERS_SHOWN)
    specs: list[ButtonSpec] = [
        ("order", f"cx:{o.order_number}", {"number": o.order_number}) for o in orders
    ]
    rows = [specs[i : i + 2] for i in range(0, len(specs), 2)]
    await send(
        update,
        context,
        "cancel_pick_order.j2",
        rows=[*rows, *MAIN_MENU],
        language=language,
        orders=orders,
    )


async def _pick_line(update: Update, context: BotContext, customer_id: int, number: str) -> None:
    language = await context.language_for(update)
    order = await _order(context, customer_id, number, language)
    if order is None:
        await show_order(update, context, customer_id, number)  # says "not found" the usual way
        return
    lines = [line for line in order.lines if _cancellable(line)]
    if not lines:
        await send(
            update, context, "cancel_nothing.j2", rows=MAIN_MENU, language=language, number=number
        )
        return
    rows: list[list[ButtonSpec]] = [
        [("cancel_line", f"cxl:{number}:{line.line_no}", {"name": line.name})] for line in lines
    ]
    if len(lines) > 1:
        rows.append([("cancel_order", f"cxo:{number}")])
    rows.append([("keep", f"o:{number}")])
    await send(update, context, "cancel_pick_line.j2", rows=rows, language=language, order=order)


async def on_press(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None
    match = _PRESS.match(query.data)
    customer_id = await linked_customer(update, context)
    if match is None or customer_id is None:
        await stale_press(update, context)
        return
    step, number, line_no = match.group(1), match.group(2), match.group(3)
    language = await context.language_for(update)
    order = await _order(context, customer_id, number, language)
    line = _line(order, line_no)
    whole = step in ("cxo", "cxoy")
    if order is None or (not whole and line is None and step != "cx"):
        await stale_press(update, context)
        return
    if step == "cx":
        await acknowledge(update)
        await _pick_line(update, context, customer_id, number)
        return
    refund = _refund(order, None if whole else line)
    if refund == 0:
        await stale_press(update, context)
        return
    values = {
        "order": order,
        "line": None if whole else line,
        "refund": refund,
        "qty": _cancellable(line) if line is not None else 0,
    }
    await acknowledge(update)
    if step in ("cxl", "cxo"):
        confirm = f"cxoy:{number}" if whole else f"cxy:{number}:{line_no}"
        rows: list[list[ButtonSpec]] = [[("confirm_cancel", confirm), ("keep", f"o:{number}")]]
        await send(update, context, "cancel_confirm.j2", rows=rows, language=language, **values)
        return
    try:
        async with context.store.begin() as conn:
            if whole:
                await cancel_order(conn, number, customer_id=customer_id, reason=CANCEL_REASON)
            else:
                assert line is not None
                await cancel_line(
                    conn, number, line.line_no, customer_id=customer_id, reason=CANCEL_REASON
                )
            # The customer is told right here (cancel_done.j2): mark the cancellation told so
            # the scheduler sends no "❌ cancelled" notice repeating it.
            told_line = None if whole or line is None else line.line_no
            await mark_cancellation_told(conn, number, customer_id, told_line)
    except StoreError:
        await stale_press(update, context)
        return
    await send(
        update,
        context,
        "cancel_done.j2",
        rows=[[("orders", "m:orders")], *MAIN_MENU[1:]],
        language=language,
        **values,
    )


async def _order(context: BotContext, customer_id: int, number: str, language: str) -> Order | None:
    async with context.store.connect() as conn:
        return await order_of(conn, customer_id, number, language=language)


def _line(order: Order | None, line_no: str | None) -> OrderLine | None:
    if order is None or line_no is None:
        return None
    found = [ln for ln in order.lines if str(ln.line_no) == line_no and _cancellable(ln)]
    return found[0] if found else None


def _refund(order: Order, line: OrderLine | None) -> int:
    lines = [line] if line is not None else list(order.lines)
    return sum(_cancellable(ln) * ln.unit_price_minor for ln in lines)


def register(app: BotApplication) -> None:
    app.add_handler(CallbackQueryHandler(on_press, pattern=r"^cx"))
