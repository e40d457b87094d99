"""A linked customer's orders on screen: the list and one order in detail, shared by the
order questions (bot.handlers.orders) and the linking that opens to them (bot.handlers.account).

Every read goes through the store's customer-scoped queries: an order number alone never
reveals anything, so someone else's order and a mistyped one get the same reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Update

from bot.context import BotContext
from bot.render import ButtonSpec
from bot.reply import MAIN_MENU, send
from store.outbox import told_in_order_view
from store.queries import Order, mark_told, order_of, orders_of

# A phone screen's worth; older orders are one "all my orders" tap away.
ORDERS_SHOWN = 6
ALL_ORDERS_SHOWN = 20


@dataclass(frozen=True)
class Linked:
    """The chat was linked just now: the order view says so first, in the same message."""

    name: str
    switched: bool  # it was linked to another customer before


async def linked_customer(update: Update, context: BotContext) -> int | None:
    if update.effective_chat is None:
        return None
    chat = await context.chat(update.effective_chat.id)
    return chat.customer_id if chat else None


async def show_open_orders(
    update: Update, context: BotContext, customer_id: int, *, linked: Linked | None = None
) -> None:
    await _show_orders(update, context, customer_id, open_only=True, linked=linked)


async def show_all_orders(update: Update, context: BotContext, customer_id: int) -> None:
    await _show_orders(update, context, customer_id, open_only=False)


async def _show_orders(
    update: Update,
    context: BotContext,
    customer_id: int,
    *,
    open_only: bool,
    linked: Linked | None = None,
) -> None:
    language = await context.language_for(update)
    limit = ORDERS_SHOWN if open_only else ALL_ORDERS_SHOWN
    orders = await context.store.read(
        lambda conn: orders_of(
            conn, customer_id, open_only=open_only, limit=limit, language=language
        )
    )
    rows: list[list[ButtonSpec]] = _order_buttons(orders)
    if open_only:
        rows.append([("all_orders", "ol:all")])
    await send(
        update,
        context,
        "orders_list.j2",
        rows=[*rows, *MAIN_MENU],
        language=language,
        orders=orders,
        open_only=open_only,
        linked=linked,
    )


async def show_order(
    update: Update,
    context: BotContext,
    customer_id: int,
    order_number: str,
    *,
    linked: Linked | None = None,
) -> None:
    language = await context.language_for(update)
    # Not counted as a write: what changes (when a line's date was last told) is in no reader's
    # cache, and a counted write makes every update in flight read its chat again. A few small
    # statements: on the loop's thread when the file is free (Store.begin_small).
    async with context.store.begin_small(counted=False) as conn:
        order = await order_of(conn, customer_id, order_number, language=language)
        if order is not None:
            # The customer now knows each waiting line's date; a later change is news again.
            told = [line.line_id for line in order.lines if line.qty_waiting]
            await mark_told(conn, told)
            # ... and its shipments, units ready and cancellations: a notice queued before
            # (say, before the chat was linked) must not repeat them right after this view.
            await told_in_order_view(conn, customer_id, order.order_id)
        else:
            open_orders = await orders_of(conn, customer_id, open_only=True, limit=ORDERS_SHOWN)
    if order is None:
        await send(
            update,
            context,
            "order_not_found.j2",
            rows=[*_order_buttons(open_orders), *MAIN_MENU],
            language=language,
            number=order_number,
            linked=linked,
        )
        return
    moved_later = any(
        line.qty_waiting
        and line.last_told_date is not None
        and (line.projected_date is None or line.projected_date > line.last_told_date)
        for line in order.lines
    )
    rows: list[list[ButtonSpec]] = []
    if any(line.qty_waiting or line.qty_allocated for line in order.lines):
        rows.append([("cancel_item", f"cx:{order.order_number}")])
    if any(line.qty_waiting for line in order.lines):
        rows.append([("alternatives", f"alt:o:{order.order_number}")])
    rows.append([("orders", "m:orders")])
    await send(
        update,
        context,
        "order.j2",
        rows=[*rows, *MAIN_MENU[1:]],
        language=language,
        order=order,
        moved_later=moved_later,
        linked=linked,
    )


def _order_buttons(orders: list[Order]) -> list[list[ButtonSpec]]:
    specs: list[ButtonSpec] = [
        ("order", f"o:{o.order_number}", {"number": o.order_number}) for o in orders
    ]
    return [specs[i : i + 2] for i in range(0, len(specs), 2)]
