"""The support group: agents' messages, commands and the card's tools."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from telegram import Message, Update, User
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop

from bot.context import BotApplication, BotContext
from bot.handoff.common import (
    _PRESS,
    AGENT_STATUSES,
    CANNED,
    _agent_language,
    _agent_name,
    _agent_text,
    _app,
    _customer,
    _customer_language,
    _is_command,
    _Who,
)
from bot.handoff.customers import _drop_buttons
from bot.handoff.escalation import _escalate, hand_back
from bot.handoff.relay import _follow_edit, _relay_to_customer, _signed
from bot.handoff.topic import (
    _notice,
    _set_topic_state,
    _to_customer,
    _to_topic,
    _undelivered,
    refresh_card,
)
from bot.render import ButtonSpec
from bot.reply import answer_press
from store.backorders import cancel_line
from store.errors import StoreError
from store.events import log_event
from store.handoffs import (
    Handoff,
    active_handoff,
    date_changes,
    find_customer_chat,
    handoff_by_id,
    handoff_by_thread,
    handoff_of,
    is_detached_topic,
    linked_chat,
    record_agent_message,
)
from store.queries import Customer, order_of, orders_of


async def _is_agent(app: BotApplication, user: User | None) -> bool:
    settings = app.bot_data.settings
    if user is None or user.is_bot or settings.support_chat_id is None:
        return False
    try:
        member = await app.bot.get_chat_member(settings.support_chat_id, user.id)
    except TelegramError:
        return False
    return member.status in AGENT_STATUSES[settings.agents]


async def _topic_handoff(app: BotApplication, message: Message) -> Handoff | None:
    if not message.is_topic_message or message.message_thread_id is None:
        return None
    async with app.bot_data.store.connect() as conn:
        return await handoff_by_thread(conn, message.chat_id, message.message_thread_id)


async def _in_detached_topic(app: BotApplication, message: Message) -> bool:
    if not message.is_topic_message or message.message_thread_id is None:
        return False
    async with app.bot_data.store.connect() as conn:
        return await is_detached_topic(conn, message.chat_id, message.message_thread_id)


async def _reply(app: BotApplication, message: Message, kind: str, **values: Any) -> None:
    await message.reply_text(_agent_text(app, "agent_notice.j2", kind=kind, **values))


async def _agent_gate(update: Update, context: BotContext) -> Message | None:
    """The agent's message if they may act; None (after saying why) otherwise."""
    message = update.effective_message
    if message is None:
        return None
    anonymous_admin = message.sender_chat is not None and message.sender_chat.id == message.chat_id
    if anonymous_admin or await _is_agent(_app(context), message.from_user):
        return message
    if message.from_user is not None and not message.from_user.is_bot:
        await _reply(_app(context), message, "not_agent")
    return None


async def agent_message(update: Update, context: BotContext) -> None:
    """An agent wrote in a customer's topic: copy it to the customer."""
    app = _app(context)
    message = update.effective_message
    if message is None or _is_command(message):
        raise ApplicationHandlerStop
    h = await _topic_handoff(app, message)
    if h is None:
        if await _in_detached_topic(app, message) and await _agent_gate(update, context):
            await _reply(app, message, "detached")
        raise ApplicationHandlerStop  # the team talking among themselves
    if await _agent_gate(update, context) is None:
        raise ApplicationHandlerStop
    if update.edited_message is not None:
        async with context.store.connect() as conn:
            language = await _customer_language(app, conn, h)
        await _follow_edit(
            app,
            message,
            _signed(app, message.text_html, message, language) if message.text else None,
            _signed(app, message.caption_html, message, language) if message.caption else None,
        )
        raise ApplicationHandlerStop
    if not h.active:
        # Writing in a closed topic takes the customer back from the bot, on the account
        # they are linked from now (the topic follows them there).
        chat_id: int | None = h.chat_id
        if h.customer_id is not None:
            async with context.store.connect() as conn:
                chat_id = await linked_chat(conn, h.customer_id)
        if chat_id is None:
            await _reply(app, message, "detached")
            raise ApplicationHandlerStop
        pulled = await _escalate(
            app, chat_id, "agent_pulled", _Who(h.customer_name, h.username, h.telegram_language)
        )
        if pulled is None:
            raise ApplicationHandlerStop
        h = pulled
    await _relay_to_customer(app, h, message)
    raise ApplicationHandlerStop


async def _command_handoff(update: Update, context: BotContext) -> tuple[Message, Handoff] | None:
    message = await _agent_gate(update, context)
    if message is None:
        return None
    h = await _topic_handoff(_app(context), message)
    if h is None:
        await _reply(_app(context), message, "not_in_topic")
        return None
    return message, h


async def agent_close(update: Update, context: BotContext) -> None:
    found = await _command_handoff(update, context)
    if found is not None:
        message, h = found
        if not await hand_back(_app(context), h, "agent", _agent_name(message)):
            await _reply(_app(context), message, "already_closed")
    raise ApplicationHandlerStop


async def agent_orders(update: Update, context: BotContext) -> None:
    found = await _command_handoff(update, context)
    if found is not None:
        await _show_orders(_app(context), found[1])
    raise ApplicationHandlerStop


async def agent_cancel(update: Update, context: BotContext) -> None:
    found = await _command_handoff(update, context)
    if found is not None:
        message, h = found
        args = context.args or []
        if len(args) == 2 and args[0].isdigit() and args[1].isdigit():
            await _cancel(_app(context), h, args[0], int(args[1]), _agent_name(message))
        else:
            await _pick_line(_app(context), h)
    raise ApplicationHandlerStop


async def agent_canned(update: Update, context: BotContext) -> None:
    found = await _command_handoff(update, context)
    if found is not None:
        message, h = found
        args = context.args or []
        if len(args) == 1 and args[0] in CANNED:
            await _send_canned(_app(context), h, args[0], message)
        else:
            await _canned_menu(_app(context), h)
    raise ApplicationHandlerStop


async def agent_pull(update: Update, context: BotContext) -> None:
    """/pull ORDER|E-MAIL|CHAT-ID: an agent takes a customer's chat from the bot."""
    message = await _agent_gate(update, context)
    if message is not None:
        app = _app(context)
        query = " ".join(context.args or [])
        async with context.store.connect() as conn:
            chat_id = await find_customer_chat(conn, query) if query else None
            current = await active_handoff(conn, chat_id) if chat_id is not None else None
        if chat_id is None:
            await _reply(app, message, "pull_unknown", query=query)
        elif current is not None:
            await _reply(app, message, "already_open", name=current.customer_name)
        else:
            try:
                tg_chat = await app.bot.get_chat(chat_id)
                who = _Who(
                    " ".join(p for p in (tg_chat.first_name, tg_chat.last_name) if p) or "?",
                    tg_chat.username,
                    None,
                )
            except TelegramError:
                who = _Who("?", None, None)
            async with context.store.connect() as conn:
                known = await handoff_of(conn, chat_id)
            if known is not None and who.name == "?":
                who = _Who(known.customer_name, known.username, known.telegram_language)
            await _escalate(app, chat_id, "agent_pulled", who)
    raise ApplicationHandlerStop


async def agent_press(update: Update, context: BotContext) -> None:
    """The card's tools. The press is re-checked: a member of the group, a live handoff."""
    app = _app(context)
    query = update.callback_query
    assert query is not None and query.data is not None
    settings = context.settings
    in_group = query.message is not None and query.message.chat.id == settings.support_chat_id
    if not in_group:
        return  # a forged press elsewhere: the usual "no longer available"
    if not await _is_agent(app, query.from_user):
        await answer_press(
            query, _agent_text(app, "agent_notice.j2", kind="not_agent"), show_alert=True
        )
        raise ApplicationHandlerStop
    match = _PRESS.match(query.data)
    async with context.store.connect() as conn:
        h = await handoff_by_id(conn, int(match[2])) if match else None
    if match is None or h is None or h.support_chat_id != settings.support_chat_id:
        await answer_press(query, _agent_text(app, "agent_notice.j2", kind="stale"))
        raise ApplicationHandlerStop
    await answer_press(query)
    tool, arg, line = match[1], match[3], match[4]
    name = query.from_user.first_name if query.from_user else None
    if tool == "x":
        if not await hand_back(app, h, "agent", name):
            await _notice(app, h, "already_closed")
    elif not h.active:
        await _notice(app, h, "already_closed")
    elif tool == "o":
        await _show_orders(app, h)
    elif tool == "c":
        await _pick_line(app, h)
    elif tool == "cl" and arg and line:
        await _confirm_cancel(app, h, arg, int(line))
    elif tool == "cy" and arg and line:
        await _drop_buttons(query)
        await _cancel(app, h, arg, int(line), name)
    elif tool == "cn":
        await _drop_buttons(query)
    elif tool == "r":
        await _canned_menu(app, h)
    elif tool == "rs" and arg in CANNED:
        await _send_canned(app, h, arg, None, name)
    raise ApplicationHandlerStop


async def _show_orders(app: BotApplication, h: Handoff) -> None:
    async with app.bot_data.store.connect() as conn:
        customer = await _customer(conn, h)
        if customer is None:
            await _notice(app, h, "not_linked")
            return
        orders = await orders_of(
            conn, customer.customer_id, limit=20, language=_agent_language(app)
        )
        restocks = [ln.waits_for.restock_id for o in orders for ln in o.lines if ln.waits_for]
        history = await date_changes(conn, restocks)
    await _to_topic(app, h, _agent_text(app, "agent_orders.j2", orders=orders, history=history))


async def _pick_line(app: BotApplication, h: Handoff) -> None:
    async with app.bot_data.store.connect() as conn:
        customer = await _customer(conn, h)
        orders = (
            await orders_of(
                conn, customer.customer_id, open_only=True, limit=10, language=_agent_language(app)
            )
            if customer
            else []
        )
    if customer is None:
        await _notice(app, h, "not_linked")
        return
    specs: list[ButtonSpec] = []
    for o in orders:
        for ln in o.lines:
            if ln.qty_waiting + ln.qty_allocated:
                values: dict[str, Any] = {
                    "number": o.order_number,
                    "line": ln.line_no,
                    "product": ln.name[:40],
                }
                data = f"ag:cl:{h.handoff_id}:{o.order_number}:{ln.line_no}"
                specs.append(("agent_cancel_line", data, values))
    rows = [[spec] for spec in specs[:20]]
    if not rows:
        await _notice(app, h, "cancel_nothing")
        return
    await _to_topic(
        app,
        h,
        _agent_text(app, "agent_cancel_pick.j2"),
        app.bot_data.renderer.keyboard(_agent_language(app), rows),
    )


async def _line(
    app: BotApplication, h: Handoff, number: str, line_no: int
) -> tuple[Any, Any, Customer] | None:
    async with app.bot_data.store.connect() as conn:
        customer = await _customer(conn, h)
        if customer is None:
            return None
        order = await order_of(conn, customer.customer_id, number, language=_agent_language(app))
    line = next((ln for ln in order.lines if ln.line_no == line_no), None) if order else None
    if order is None or line is None:
        return None
    return order, line, customer


async def _confirm_cancel(app: BotApplication, h: Handoff, number: str, line_no: int) -> None:
    found = await _line(app, h, number, line_no)
    if found is None:
        await _notice(app, h, "line_unknown")
        return
    order, line, _ = found
    if not line.qty_waiting + line.qty_allocated:
        await _notice(app, h, "cancel_nothing")
        return
    rows: list[list[ButtonSpec]] = [
        [
            ("agent_confirm_cancel", f"ag:cy:{h.handoff_id}:{number}:{line_no}"),
            ("agent_keep", f"ag:cn:{h.handoff_id}"),
        ]
    ]
    await _to_topic(
        app,
        h,
        _agent_text(
            app,
            "agent_cancel_confirm.j2",
            order=order,
            line=line,
            qty=line.qty_waiting + line.qty_allocated,
        ),
        app.bot_data.renderer.keyboard(_agent_language(app), rows),
    )


async def _cancel(
    app: BotApplication, h: Handoff, number: str, line_no: int, agent: str | None
) -> None:
    """Cancel a line for the customer: the customer's own checks (their order, something
    not shipped) and records (the store's line_cancelled event), plus who did it."""
    found = await _line(app, h, number, line_no)
    if found is None:
        await _notice(app, h, "line_unknown")
        return
    order, line, customer = found
    try:
        async with app.bot_data.store.begin() as conn:
            result = await cancel_line(
                conn,
                number,
                line_no,
                customer_id=customer.customer_id,
                reason="agent, in the support group",
            )
            if result.changed:
                await log_event(
                    conn,
                    "handoff_line_cancelled",
                    order_id=order.order_id,
                    line_id=line.line_id,
                    customer_id=customer.customer_id,
                    agent=agent,
                    qty=result.cancelled_qty,
                )
    except StoreError:
        await _notice(app, h, "line_unknown")
        return
    if not result.changed:
        await _notice(app, h, "cancel_nothing")
        return
    async with app.bot_data.store.connect() as conn:
        language = await _customer_language(app, conn, h)
    await _notice(app, h, "cancelled", num=result.cancelled_qty, name=line.name, number=number)
    await _to_customer(
        app,
        h,
        "handoff_line_cancelled.j2",
        num=result.cancelled_qty,
        name=line.names.get(language) or line.name,
        number=number,
    )
    await refresh_card(app, h.chat_id)


async def _canned_menu(app: BotApplication, h: Handoff) -> None:
    async with app.bot_data.store.connect() as conn:
        language = await _customer_language(app, conn, h)
    rows: list[list[ButtonSpec]] = [
        [("canned_option", f"ag:rs:{h.handoff_id}:{key}", {"key": key})] for key in CANNED
    ]
    await _to_topic(
        app,
        h,
        _agent_text(
            app,
            "agent_canned_menu.j2",
            customer_language=app.bot_data.renderer.label(
                "language_option", _agent_language(app), code=language, current=None
            ),
        ),
        app.bot_data.renderer.keyboard(_agent_language(app), rows),
    )


async def _send_canned(
    app: BotApplication, h: Handoff, key: str, message: Message | None, name: str | None = None
) -> None:
    settings = app.bot_data.settings
    name = _agent_name(message) if message is not None else name
    async with app.bot_data.store.connect() as conn:
        language = await _customer_language(app, conn, h)
    renderer = app.bot_data.renderer
    text = renderer.text("handoff_canned.j2", language, key=key)
    if settings.agent_signature and name:
        text = renderer.text(
            "handoff_signed.j2",
            language,
            text=Markup(text),
            name=name,
            shop=settings.shop_name,
        )
    try:
        await app.bot.send_message(h.chat_id, text)
    except TelegramError as exc:
        await _undelivered(app, h, exc)
        return
    now = app.bot_data.now()
    async with app.bot_data.store.begin() as conn:
        flipped = await record_agent_message(conn, h.handoff_id, now)
    await _notice(
        app,
        h,
        "canned_sent",
        customer_language=renderer.label(
            "language_option", _agent_language(app), code=language, current=None
        ),
        text=Markup(text),
    )
    if flipped:
        await _set_topic_state(app, h, "answered")
