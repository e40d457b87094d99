"""The customer's topic: the context card, posting there, telling the customer, opening it."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

from babel.dates import format_skeleton, format_time
from sqlalchemy.ext.asyncio import AsyncConnection
from telegram import Message
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.context import BotApplication
from bot.handoff.common import (
    CARD_ORDERS,
    AppOrContext,
    _agent_language,
    _agent_text,
    _app,
    _customer,
    _customer_language,
    _is_open,
    _tools,
    _topic_name,
    log,
    next_opening,
)
from bot.render import ButtonSpec
from store.events import log_event
from store.handoffs import (
    Handoff,
    active_handoff,
    card_digest,
    date_changes,
    escalations_of,
    handoff_by_id,
    held_messages,
    link_message,
    set_card,
    set_card_digest,
    set_customer_blocked,
    set_topic,
    take_held,
)
from store.queries import orders_of


async def _card(app: BotApplication, conn: AsyncConnection, h: Handoff) -> str:
    language = _agent_language(app)
    customer = await _customer(conn, h)
    orders = (
        await orders_of(conn, customer.customer_id, limit=CARD_ORDERS + 1, language=language)
        if customer
        else []
    )
    restocks = [
        line.waits_for.restock_id
        for order in orders
        for line in order.lines
        if line.waits_for is not None
    ]
    history = await date_changes(conn, restocks)
    escalations = await escalations_of(conn, h.handoff_id, limit=4)
    return _agent_text(
        app,
        "agent_card.j2",
        handoff=h,
        customer=customer,
        customer_language=app.bot_data.renderer.label(
            "language_option",
            language,
            code=await _customer_language(app, conn, h),
            current=None,
        ),
        orders=orders[:CARD_ORDERS],
        more_orders=len(orders) > CARD_ORDERS,
        history=history,
        earlier=escalations[1:],
    )


async def _to_topic(app: BotApplication, h: Handoff, text: str, markup: Any = None) -> int | None:
    if h.thread_id is None:
        return None
    try:
        sent = await app.bot.send_message(
            h.support_chat_id, text, message_thread_id=h.thread_id, reply_markup=markup
        )
    except TelegramError as exc:
        log.error("could not post in topic %s of chat %s: %s", h.thread_id, h.chat_id, exc)
        return None
    return sent.message_id


async def _notice(app: BotApplication, h: Handoff, kind: str, **values: Any) -> None:
    await _to_topic(app, h, _agent_text(app, "agent_notice.j2", kind=kind, **values))


async def _undelivered(app: BotApplication, h: Handoff, exc: TelegramError) -> None:
    """Say in the topic why the customer did not get something."""
    if isinstance(exc, Forbidden):
        async with app.bot_data.store.begin() as conn:
            await set_customer_blocked(conn, h.chat_id, True)
        await _notice(app, h, "undelivered_blocked")
    else:
        await _notice(app, h, "undelivered", reason=exc.message)


async def _to_customer(
    app: BotApplication,
    h: Handoff,
    template: str,
    rows: Sequence[Sequence[ButtonSpec]] = (),
    **values: Any,
) -> Message | None:
    async with app.bot_data.store.connect() as conn:
        language = await _customer_language(app, conn, h)
    renderer = app.bot_data.renderer
    try:
        return await app.bot.send_message(
            h.chat_id,
            renderer.text(template, language, **values),
            reply_markup=renderer.keyboard(language, rows) if rows else None,
        )
    except TelegramError as exc:
        await _undelivered(app, h, exc)
        return None


async def _set_topic_state(
    app: BotApplication, h: Handoff, state: str, *, reopen: bool = False
) -> None:
    if h.thread_id is None:
        return
    async with app.bot_data.store.connect() as conn:
        customer = await _customer(conn, h)
    bot = app.bot
    try:
        await bot.edit_forum_topic(
            h.support_chat_id, h.thread_id, name=_topic_name(app, h, customer, state)
        )
    except BadRequest as exc:
        if "not_modified" not in exc.message.lower():
            log.warning("could not rename topic %s: %s", h.thread_id, exc)
    try:
        if state == "closed":
            await bot.close_forum_topic(h.support_chat_id, h.thread_id)
        elif reopen:
            await bot.reopen_forum_topic(h.support_chat_id, h.thread_id)
    except BadRequest as exc:
        if "not_modified" not in exc.message.lower():
            log.warning("could not close or reopen topic %s: %s", h.thread_id, exc)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def refresh_card(context_or_app: AppOrContext, chat_id: int, *, force: bool = True) -> None:
    """Bring the context card of the chat's active handoff up to date (orders, dates).

    With ``force`` False the card is edited only when what it shows has changed since it
    was last posted or edited (the sweep's check)."""
    app = _app(context_or_app)
    async with app.bot_data.store.connect() as conn:
        h = await active_handoff(conn, chat_id)
        if h is None or h.card_message_id is None:
            return
        text = await _card(app, conn, h)
        unchanged = await card_digest(conn, h.handoff_id) == _digest(text)
    if unchanged and not force:
        return
    async with app.bot_data.store.begin() as conn:
        await set_card_digest(conn, h.handoff_id, _digest(text), app.bot_data.now())
    try:
        await app.bot.edit_message_text(
            text,
            chat_id=h.support_chat_id,
            message_id=h.card_message_id,
            reply_markup=_tools(app, h.handoff_id),
        )
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            log.warning("could not update the card of chat %s: %s", chat_id, exc)


async def post_to_topic(context_or_app: AppOrContext, chat_id: int, text_html: str) -> bool:
    """Post a rendered notice into the customer's topic instead of the customer's chat.

    False when no person owns the chat now (or the topic could not take it): then the
    caller sends the notice to the customer as usual."""
    app = _app(context_or_app)
    async with app.bot_data.store.connect() as conn:
        h = await active_handoff(conn, chat_id)
    if h is None or await _to_topic(app, h, text_html) is None:
        return False
    await refresh_card(app, chat_id)
    return True


async def _open_topic(app: BotApplication, h: Handoff) -> Handoff | None:
    """Open the handoff's topic. None when Telegram refused (logged)."""
    store = app.bot_data.store
    async with store.connect() as conn:
        name = _topic_name(app, h, await _customer(conn, h), "waiting")
    try:
        topic = await app.bot.create_forum_topic(h.support_chat_id, name)
    except TelegramError as exc:
        log.error("cannot open a topic in the support group %s: %s", h.support_chat_id, exc)
        return None
    async with store.begin() as conn:
        found = await set_topic(conn, h.handoff_id, topic.message_thread_id)
    if found is not None:
        return found
    # Another process (the sweep) opened it meanwhile: ours is surplus.
    with contextlib.suppress(TelegramError):
        await app.bot.delete_forum_topic(h.support_chat_id, topic.message_thread_id)
    async with store.connect() as conn:
        return await handoff_by_id(conn, h.handoff_id)


async def _post_card(app: BotApplication, h: Handoff, reason: str) -> None:
    store = app.bot_data.store
    async with store.connect() as conn:
        card = await _card(app, conn, h)
    card_id = await _to_topic(app, h, card, _tools(app, h.handoff_id))
    if card_id is not None:
        async with store.begin() as conn:
            await set_card(conn, h.handoff_id, card_id, _digest(card))
            await log_event(conn, "handoff_started", reason=reason, chat_id=h.chat_id)


async def _relay_held(app: BotApplication, h: Handoff) -> None:
    """Relay, oldest first, the customer's messages that came before the topic existed."""
    if h.thread_id is None:
        return
    store = app.bot_data.store
    async with store.connect() as conn:
        held = await held_messages(conn, h.handoff_id)
    for held_id, source_chat, source_message in held:
        async with store.begin() as conn:
            mine = await take_held(conn, held_id)
        if not mine:
            continue  # another process relays it
        try:
            copy = await app.bot.copy_message(
                h.support_chat_id, source_chat, source_message, message_thread_id=h.thread_id
            )
        except TelegramError as exc:
            log.error("could not relay a held message of chat %s: %s", h.chat_id, exc)
            continue
        async with store.begin() as conn:
            await link_message(
                conn,
                h.handoff_id,
                (source_chat, source_message),
                (h.support_chat_id, copy.message_id),
                app.bot_data.now(),
            )


async def _tell_started(app: BotApplication, h: Handoff, reason: str) -> None:
    settings = app.bot_data.settings
    now = app.bot_data.now()
    opened = _is_open(settings, now)
    async with app.bot_data.store.connect() as conn:
        language = await _customer_language(app, conn, h)
    back = next_opening(settings, now) if not opened else None
    await _to_customer(
        app,
        h,
        "handoff_started.j2",
        reason=reason,
        minutes=settings.no_answer_minutes,
        back_day=format_skeleton("MMMMEEEEd", back.astimezone(settings.zone), locale=language)
        if back
        else None,
        back_time=format_time(back, "short", tzinfo=settings.zone, locale=language)
        if back
        else None,
    )
