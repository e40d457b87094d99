"""Presses on a delay-option notice: keep waiting, cancel the item or the order, alternatives.

Every press is checked again against the store before anything changes: the offer must be the
chat's linked customer's, the newest for its line, still open, the line still waiting and
still late. Anything else gets the polite "no longer available" and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from telegram import Update
from telegram.ext import CallbackQueryHandler

from bot.context import BotApplication, BotContext
from bot.render import ButtonSpec
from bot.reply import acknowledge, send, stale_press
from store.backorders import NewLine, place_order
from store.catalog import alternatives_in_stock, normalize_sku
from store.chats import chat_of
from store.delays import (
    Offer,
    answer_alternative,
    answer_cancel,
    answer_keep,
    next_order_number,
    offer_for,
    still_current,
)
from store.schema import order_lines

CHANNEL = "telegram"
PATTERN = re.compile(r"^dly:(keep|cancel|order|alt|pick|swap):(\d{1,12})(?::([A-Z0-9-]{1,32}))?\Z")


def offer_rows(offer: Offer, *, has_alternatives: bool) -> tuple[tuple[ButtonSpec, ...], ...]:
    """The buttons of a delay-option notice; also what the offer record lists as offered."""
    rows: list[tuple[ButtonSpec, ...]] = [
        (("delay_keep", f"dly:keep:{offer.offer_id}"),),
        (("delay_cancel_item", f"dly:cancel:{offer.offer_id}"),),
    ]
    if offer.open_lines_in_order > 1:
        rows.append((("cancel_order", f"dly:order:{offer.offer_id}"),))
    if has_alternatives:
        rows.append((("delay_alternatives", f"dly:alt:{offer.offer_id}"),))
    return tuple(rows)


async def delay_button(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None  # guaranteed by the pattern
    match = PATTERN.match(query.data)
    chat = update.effective_chat
    if match is None or chat is None:
        await stale_press(update, context)
        return
    action, offer_id, sku = match.group(1), int(match.group(2)), match.group(3)
    now = context.now()
    language = await context.language_for(update)
    reply: tuple[str, dict[str, Any], Sequence[Sequence[ButtonSpec]]]
    async with context.store.begin() as conn:
        linked = await chat_of(conn, chat.id)
        customer_id = linked.customer_id if linked else None
        offer = await offer_for(conn, offer_id, customer_id) if customer_id else None
        if offer is None or not still_current(offer):
            await stale_press(update, context)
            return
        name = await _name(conn, offer.sku, language)
        if action == "keep":
            await answer_keep(conn, offer, now, CHANNEL)
            reply = ("delay_kept.j2", {"offer": offer, "name": name}, ())
        elif action in ("cancel", "order"):
            whole = action == "order"
            refund = await _refund(conn, offer, whole)
            await answer_cancel(conn, offer, now, CHANNEL, whole_order=whole)
            reply = (
                "delay_cancelled.j2",
                {"offer": offer, "name": name, "whole": whole, "refund": refund},
                ((("order", f"o:{offer.order_number}", {"number": offer.order_number}),),),
            )
        elif action == "alt":
            alts = await alternatives_in_stock(conn, offer.sku, limit=3, language=language)
            rows: list[tuple[ButtonSpec, ...]] = [
                (("delay_pick", f"dly:pick:{offer.offer_id}:{p.sku}", {"name": p.name}),)
                for p in alts
            ]
            rows.append((("delay_keep", f"dly:keep:{offer.offer_id}"),))
            rows.append((("delay_cancel_item", f"dly:cancel:{offer.offer_id}"),))
            reply = ("delay_alternatives.j2", {"name": name, "alternatives": alts}, tuple(rows))
        else:
            assert sku is not None
            alt = await _in_stock_alternative(conn, offer, sku, language)
            if alt is None:
                await stale_press(update, context)
                return
            # With ALTERNATIVE_ACTION=agents there is no swap button: a "swap" press is forged
            # and only hands over to the agents, like a pick.
            if context.settings.alternative_action == "agents":
                await answer_alternative(
                    conn,
                    offer,
                    now,
                    CHANNEL,
                    alt_sku=alt.sku,
                    new_order_number=None,
                    to_agents=True,
                )
                reply = ("delay_alternative_agents.j2", {"name": name, "alt": alt}, ())
            elif action == "pick":
                reply = (
                    "delay_alternative_confirm.j2",
                    {"offer": offer, "name": name, "alt": alt},
                    (
                        (("delay_swap", f"dly:swap:{offer.offer_id}:{alt.sku}"),),
                        (("delay_keep", f"dly:keep:{offer.offer_id}"),),
                    ),
                )
            else:
                qty = offer.qty_waiting
                await answer_cancel(conn, offer, now, CHANNEL, whole_order=False)
                number = await next_order_number(conn)
                await place_order(
                    conn, number, offer.customer_id, [NewLine(alt.sku, qty)], placed_at=now
                )
                await answer_alternative(
                    conn,
                    offer,
                    now,
                    CHANNEL,
                    alt_sku=alt.sku,
                    new_order_number=number,
                    to_agents=False,
                )
                reply = (
                    "delay_swapped.j2",
                    {"offer": offer, "name": name, "alt": alt, "qty": qty, "number": number},
                    ((("order", f"o:{number}", {"number": number}),),),
                )
        # A cancellation here frees stock for others: the lines it touched are marked, and the
        # scheduler's next tick queues their notices from the marks (a scan of every untold
        # line here would stop a big store's writers for seconds on every press).
    await acknowledge(update)
    if action in ("keep", "cancel", "order", "swap") and query.message is not None:
        # The choice is made: the old buttons must not be pressed again by mistake.
        await query.edit_message_reply_markup(None)
    template, values, buttons = reply
    await send(update, context, template, rows=buttons, language=language, **values)


async def _name(conn: object, sku: str, language: str) -> str:
    from store.catalog import names_of, pick_name
    from store.schema import products

    row = (
        await conn.execute(  # type: ignore[attr-defined]
            select(
                products.c.name_en, products.c.name_de, products.c.name_es, products.c.name_ru
            ).where(products.c.sku == sku)
        )
    ).first()
    return pick_name(names_of(row), language) if row is not None else sku


async def _refund(conn: object, offer: Offer, whole: bool) -> int:
    ol = order_lines.c
    q = select(ol.qty_waiting, ol.qty_allocated, ol.unit_price_minor).where(
        ol.order_id == offer.order_id
    )
    if not whole:
        q = q.where(ol.line_id == offer.line_id)
    rows = (await conn.execute(q)).all()  # type: ignore[attr-defined]
    return sum((r.qty_waiting + r.qty_allocated) * r.unit_price_minor for r in rows)


async def _in_stock_alternative(conn: object, offer: Offer, sku: str, language: str):  # type: ignore[no-untyped-def]
    wanted = normalize_sku(sku)
    for p in await alternatives_in_stock(conn, offer.sku, limit=10, language=language):  # type: ignore[arg-type]
        if p.sku == wanted:
            return p
    return None


def register(app: BotApplication) -> None:
    app.add_handler(CallbackQueryHandler(delay_button, pattern=r"^dly:"))
