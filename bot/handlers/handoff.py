"""Agents take over: one forum topic per customer in the shop's support group.

While a handoff is active the customer's messages are copied into their topic and agents'
messages in the topic are copied back; the bot says nothing of its own to the customer.
Everything that must survive a restart (who owns the thread, deadlines, which copy belongs
to which message) is in the store; the check job only reads deadlines from there.

Handlers of this module run in HANDOFF_GROUP, before every other group, so that neither a
customer message during a handoff nor anything from the support group reaches the
customer-facing handlers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from babel.dates import format_skeleton, format_time
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncConnection
from telegram import CallbackQuery, Message, Update, User
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import (
    ApplicationHandlerStop,
    CallbackContext,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import BotApplication, BotContext
from bot.i18n import choose_language
from bot.render import ButtonSpec
from bot.reply import MAIN_MENU, acknowledge
from bot.settings import Settings
from store.backorders import cancel_line
from store.chats import chat_of, reset_misses
from store.errors import StoreError
from store.events import log_event
from store.handoffs import (
    Handoff,
    active_handoff,
    card_digest,
    cards_to_check,
    claim_handoff,
    claim_no_answer_notice,
    claim_topic_lease,
    close_handoff,
    date_changes,
    due_idle,
    due_no_answer,
    escalations_of,
    find_customer_chat,
    handoff_by_id,
    handoff_by_thread,
    handoff_of,
    held_messages,
    hold_message,
    is_detached_topic,
    link_message,
    linked_chat,
    linked_copy,
    record_agent_message,
    record_customer_message,
    set_card,
    set_card_digest,
    set_customer_blocked,
    set_topic,
    take_held,
    with_held,
    without_topic,
)
from store.queries import Customer, customer_of, order_of, orders_of

log = logging.getLogger(__name__)

HANDOFF_GROUP = -1
CARD_ORDERS = 5  # orders on the card; the rest behind /orders
SWEEP_BATCH = 100
CANNED = ("checking", "supplier", "refund", "anything_else")
AGENT_STATUSES = {
    "members": {
        ChatMemberStatus.OWNER,
        ChatMemberStatus.ADMINISTRATOR,
        ChatMemberStatus.MEMBER,
        ChatMemberStatus.RESTRICTED,
    },
    "admins": {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR},
}
# After this many misses in a row an escalation counts as "the bot misunderstood".
MISSES_MEAN_MISUNDERSTOOD = 2
_PRESS = re.compile(r"^ag:(o|c|r|x|cl|cy|cn|rs):(\d{1,12})(?::([\w]{1,32}))?(?::(\d{1,4}))?$")

AppOrContext = BotApplication | CallbackContext[Any, Any, Any, Any]


def _app(context_or_app: AppOrContext) -> BotApplication:
    if isinstance(context_or_app, CallbackContext):
        return context_or_app.application  # type: ignore[return-value]
    return context_or_app


# --- business hours ----------------------------------------------------------------------


def _is_open(settings: Settings, at: datetime) -> bool:
    local = at.astimezone(settings.zone)
    opens, closes = settings.open_hours
    return local.weekday() in settings.open_days and opens <= local.time() < closes


def next_opening(settings: Settings, at: datetime) -> datetime:
    """The first opening of the team's hours strictly after ``at`` (a week at most away)."""
    local = at.astimezone(settings.zone)
    opens, _ = settings.open_hours
    for days in range(8):
        day = local.date() + timedelta(days=days)
        start = datetime.combine(day, opens, tzinfo=settings.zone)
        if day.weekday() in settings.open_days and start > local:
            return start
    raise ValueError("no business day in the week")  # unreachable: settings require one day


def answer_deadline(settings: Settings, start: datetime, minutes: int) -> datetime:
    """``start`` plus ``minutes`` of business time: the clock only runs while the team works."""
    left = timedelta(minutes=minutes)
    at = start.astimezone(settings.zone)
    _, closes = settings.open_hours
    for _ in range(400):  # bounded: one step per opening, more than a year of them
        if not _is_open(settings, at):
            at = next_opening(settings, at)
        end = datetime.combine(at.date(), closes, tzinfo=settings.zone)
        if end - at >= left:
            return at + left
        left -= end - at
        at = end
    return at + left


# --- texts ---------------------------------------------------------------------------------


def _agent_language(app: BotApplication) -> str:
    return app.bot_data.settings.default_language


def _agent_text(app: BotApplication, template: str, **values: Any) -> str:
    return app.bot_data.renderer.text(template, _agent_language(app), **values)


def _tools(app: BotApplication, handoff_id: int) -> Any:
    rows: list[list[ButtonSpec]] = [
        [("agent_orders", f"ag:o:{handoff_id}"), ("agent_cancel", f"ag:c:{handoff_id}")],
        [("agent_canned", f"ag:r:{handoff_id}"), ("agent_close", f"ag:x:{handoff_id}")],
    ]
    return app.bot_data.renderer.keyboard(_agent_language(app), rows)


async def _customer_language(app: BotApplication, conn: AsyncConnection, h: Handoff) -> str:
    chat = await chat_of(conn, h.chat_id)
    return choose_language(
        chat.language if chat else None,
        h.telegram_language,
        app.bot_data.settings.default_language,
    )


def _display_name(user: User | None) -> str:
    if user is None:
        return "?"
    return " ".join(part for part in (user.first_name, user.last_name) if part) or "?"


async def _customer(conn: AsyncConnection, h: Handoff) -> Customer | None:
    chat = await chat_of(conn, h.chat_id)
    if chat is None or chat.customer_id is None:
        return None
    return await customer_of(conn, chat.customer_id)


def _topic_name(app: BotApplication, h: Handoff, customer: Customer | None, state: str) -> str:
    label = customer.name if customer else h.customer_name
    # Telegram caps topic names at 128 characters; the icon and the id need a few.
    return app.bot_data.renderer.plain(
        "agent_topic.j2",
        "name",
        _agent_language(app),
        state=state,
        label=label[:100],
        customer_id=customer.customer_id if customer else None,
    )


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


# --- talking to the topic and to the customer ----------------------------------------------


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


# --- escalation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Who:
    """The customer as Telegram shows them."""

    name: str
    username: str | None
    language_code: str | None


async def escalate(update: Update, context: BotContext, reason: str) -> None:
    """Hand the customer's chat to a person (reason: asked, misunderstood, delay_policy,
    agent_pulled). Safe to call twice at once, from any process: one topic, one card."""
    chat = update.effective_chat
    if chat is None or chat.type != ChatType.PRIVATE:
        return
    user = update.effective_user
    who = _Who(
        _display_name(user),
        user.username if user else None,
        user.language_code if user else None,
    )
    message = update.message
    trigger = message if message is not None and not _is_command(message) else None
    await _escalate(
        _app(context), chat.id, reason, who, trigger=trigger, query=update.callback_query
    )


def _is_command(message: Message) -> bool:
    return bool(message.text and message.text.startswith("/"))


async def _escalate(
    app: BotApplication,
    chat_id: int,
    reason: str,
    who: _Who,
    *,
    trigger: Message | None = None,
    query: CallbackQuery | None = None,
) -> Handoff | None:
    settings = app.bot_data.settings
    store = app.bot_data.store
    renderer = app.bot_data.renderer
    if settings.support_chat_id is None:
        async with store.connect() as conn:
            saved = await chat_of(conn, chat_id)
        language = choose_language(
            saved.language if saved else None, who.language_code, settings.default_language
        )
        if query is not None:
            await query.answer()
        await app.bot.send_message(
            chat_id,
            renderer.text("handoff_unavailable.j2", language, contact=settings.support_contact),
            reply_markup=renderer.keyboard(language, MAIN_MENU),
        )
        return None
    now = app.bot_data.now()
    async with store.begin() as conn:
        claim = await claim_handoff(
            conn,
            chat_id,
            support_chat_id=settings.support_chat_id,
            reason=reason,
            now=now,
            no_answer_due_at=answer_deadline(settings, now, settings.no_answer_minutes),
            customer_name=who.name,
            username=who.username,
            telegram_language=who.language_code,
        )
        await reset_misses(conn, chat_id)
    h = claim.handoff
    if not claim.started:
        # Already with a person: what the customer just did belongs in the topic.
        if query is not None:
            async with store.connect() as conn:
                language = await _customer_language(app, conn, h)
            await query.answer(renderer.text("handoff_busy.j2", language))
        elif trigger is not None:
            await _relay_from_customer(app, h, trigger)
        return h
    if claim.needs_topic:
        opened_topic = await _open_topic(app, h)
        if opened_topic is None:
            async with store.begin() as conn:
                await close_handoff(conn, h.handoff_id, now=now, by="failed")
            if query is not None:
                await query.answer()
            language = choose_language(None, who.language_code, settings.default_language)
            await app.bot.send_message(
                chat_id,
                renderer.text("handoff_unavailable.j2", language, contact=settings.support_contact),
                reply_markup=renderer.keyboard(language, MAIN_MENU),
            )
            return None
        h = opened_topic
    else:
        await _set_topic_state(app, h, "waiting", reopen=True)
    await _post_card(app, h, reason)
    if claim.moved_from is not None:
        await _notice(app, h, "moved", old=claim.moved_from, new=h.chat_id)
    await _relay_held(app, h)
    if trigger is not None:
        await _relay_from_customer(app, h, trigger)
    if query is not None:
        await query.answer()
    await _tell_started(app, h, reason)
    return h


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


async def ask_for_agent(update: Update, context: BotContext) -> None:
    """/agent and the menu's "Talk to a person"."""
    reason = "asked"
    if update.effective_chat is not None:
        async with context.store.connect() as conn:
            chat = await chat_of(conn, update.effective_chat.id)
        if chat is not None and chat.misses >= MISSES_MEAN_MISUNDERSTOOD:
            reason = "misunderstood"
    await escalate(update, context, reason)


# --- customer side while a person owns the thread ------------------------------------------


async def _relay_from_customer(app: BotApplication, h: Handoff, message: Message) -> None:
    if h.thread_id is None:
        # The topic is being opened (or its opener crashed: the sweep opens it): hold the
        # message, it is relayed once the topic exists.
        now = app.bot_data.now()
        async with app.bot_data.store.begin() as conn:
            await hold_message(conn, h.handoff_id, (message.chat_id, message.message_id), now)
            current = await handoff_by_id(conn, h.handoff_id)
        if current is not None and current.thread_id is not None:
            await _relay_held(app, current)  # it opened meanwhile
        return
    try:
        copy = await app.bot.copy_message(
            h.support_chat_id, message.chat_id, message.message_id, message_thread_id=h.thread_id
        )
    except TelegramError as exc:
        log.error("could not copy a message of chat %s to its topic: %s", h.chat_id, exc)
        return
    now = app.bot_data.now()
    async with app.bot_data.store.begin() as conn:
        await link_message(
            conn,
            h.handoff_id,
            (message.chat_id, message.message_id),
            (h.support_chat_id, copy.message_id),
            now,
        )
        flipped = await record_customer_message(conn, h.handoff_id, now)
    if flipped:
        await _set_topic_state(app, h, "waiting")


async def _follow_edit(
    app: BotApplication, message: Message, text_html: str | None, caption_html: str | None
) -> bool:
    """Edit the relayed copy of ``message``. False when there is none to edit."""
    async with app.bot_data.store.connect() as conn:
        copy = await linked_copy(conn, message.chat_id, message.message_id)
    if copy is None:
        return False
    try:
        if text_html is not None:
            await app.bot.edit_message_text(text_html, chat_id=copy[0], message_id=copy[1])
        elif caption_html is not None:
            await app.bot.edit_message_caption(
                chat_id=copy[0], message_id=copy[1], caption=caption_html
            )
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            log.warning("could not follow an edit in chat %s: %s", copy[0], exc)
            return False
    return True


async def intercept_customer_message(update: Update, context: BotContext) -> None:
    """While a person owns the thread, the customer's messages go to the topic, nowhere else."""
    chat = update.effective_chat
    message = update.effective_message
    if chat is None or message is None:
        return
    async with context.store.connect() as conn:
        h = await active_handoff(conn, chat.id)
    if h is None:
        return
    if update.edited_message is not None:
        await _follow_edit(
            _app(context),
            message,
            message.text_html if message.text else None,
            message.caption_html if message.caption else None,
        )
    else:
        await _relay_from_customer(_app(context), h, message)
    raise ApplicationHandlerStop


async def intercept_customer_press(update: Update, context: BotContext) -> None:
    """An old button pressed during a handoff: a short note, and nothing else happens."""
    query = update.callback_query
    if query is None or query.message is None or query.message.chat.type != ChatType.PRIVATE:
        return
    async with context.store.connect() as conn:
        h = await active_handoff(conn, query.message.chat.id)
        if h is None:
            return
        language = await _customer_language(_app(context), conn, h)
    await query.answer(context.renderer.text("handoff_busy.j2", language))
    raise ApplicationHandlerStop


async def customer_choice(update: Update, context: BotContext) -> None:
    """After "nobody answered yet": back to the bot, or keep waiting."""
    query = update.callback_query
    assert query is not None and query.data is not None
    app = _app(context)
    choice, _, handoff_id = query.data.removeprefix("h:").partition(":")
    chat_id = query.message.chat.id if query.message else None
    async with context.store.connect() as conn:
        h = await handoff_by_id(conn, int(handoff_id))
    if h is None or h.chat_id != chat_id or not h.active:
        await query.answer(
            context.renderer.text("stale_button.j2", await context.language_for(update))
        )
        raise ApplicationHandlerStop
    if choice == "wait":
        async with context.store.connect() as conn:
            language = await _customer_language(app, conn, h)
        await query.answer(context.renderer.text("handoff_keep_waiting.j2", language))
        await _drop_buttons(query)
    else:
        await acknowledge(update)
        await _drop_buttons(query)
        await hand_back(app, h, "customer")
    raise ApplicationHandlerStop


async def _drop_buttons(query: CallbackQuery) -> None:
    with contextlib.suppress(BadRequest):  # already without buttons
        await query.edit_message_reply_markup(None)


async def customer_membership(update: Update, context: BotContext) -> None:
    """The customer blocked or unblocked the bot: the topic should know."""
    member = update.my_chat_member
    if member is None or member.chat.type != ChatType.PRIVATE:
        return
    blocked = member.new_chat_member.status == ChatMemberStatus.BANNED
    async with context.store.begin() as conn:
        changed = await set_customer_blocked(conn, member.chat.id, blocked)
        h = await active_handoff(conn, member.chat.id)
    if changed and h is not None:
        await _notice(_app(context), h, "blocked" if blocked else "unblocked")


# --- hand back -----------------------------------------------------------------------------


async def hand_back(
    context_or_app: AppOrContext, h: Handoff, by: str, agent_name: str | None = None
) -> bool:
    """Close the thread: the topic closes and the customer is told the bot is back.
    False when it was closed already (by another agent, process or the idle check)."""
    app = _app(context_or_app)
    async with app.bot_data.store.begin() as conn:
        closed = await close_handoff(
            conn, h.handoff_id, now=app.bot_data.now(), by=by, agent_name=agent_name
        )
        if closed is not None:
            await log_event(conn, "handoff_closed", chat_id=h.chat_id, by=by)
    if closed is None:
        return False
    await _notice(
        app,
        closed,
        f"closed_{by}",
        name=agent_name,
        hours=app.bot_data.settings.idle_handback_hours,
    )
    await _set_topic_state(app, closed, "closed")
    if not closed.customer_blocked:
        rows: list[list[ButtonSpec]] = [[("agent", "m:agent")], *map(list, MAIN_MENU)]
        await _to_customer(app, closed, "handoff_back.j2", rows=rows, by=by)
    return True


async def sweep_handoffs(context_or_app: AppOrContext) -> None:
    """The timeouts: tell customers nobody answered yet, hand idle threads back.

    Deadlines live in the store and every step is a conditional update, so any number of
    processes can run this at once and each customer hears each thing once."""
    app = _app(context_or_app)
    settings = app.bot_data.settings
    now = app.bot_data.now()
    async with app.bot_data.store.connect() as conn:
        unanswered = await due_no_answer(conn, now, limit=SWEEP_BATCH)
        idle = await due_idle(
            conn, now - timedelta(hours=settings.idle_handback_hours), limit=SWEEP_BATCH
        )
    for h in unanswered:
        async with app.bot_data.store.begin() as conn:
            mine = await claim_no_answer_notice(conn, h.handoff_id, now)
        if not mine:
            continue
        await _notice(app, h, "no_answer", minutes=settings.no_answer_minutes)
        if not h.customer_blocked:
            rows: list[list[ButtonSpec]] = [
                [("back_to_bot", f"h:back:{h.handoff_id}")],
                [("keep_waiting", f"h:wait:{h.handoff_id}")],
            ]
            await _to_customer(app, h, "handoff_no_answer.j2", rows=rows)
    for h in idle:
        await hand_back(app, h, "idle")
    await _recover_topics(app, now)
    await _refresh_cards(app, now)


async def _recover_topics(app: BotApplication, now: datetime) -> None:
    """Open the topics a crashed process claimed but never opened, post their cards, relay
    what the customer wrote meanwhile and tell the customer; relay anything still held."""
    store = app.bot_data.store
    async with store.connect() as conn:
        missing = await without_topic(conn, now, limit=SWEEP_BATCH)
    for h in missing:
        async with store.begin() as conn:
            mine = await claim_topic_lease(conn, h.handoff_id, now)
        if not mine:
            continue
        opened = await _open_topic(app, h)
        if opened is None or opened.thread_id is None:
            continue  # the lease runs out and the next sweep tries again
        await _post_card(app, opened, opened.reason)
        await _relay_held(app, opened)
        if not opened.customer_blocked:
            await _tell_started(app, opened, opened.reason)
    async with store.connect() as conn:
        pending = await with_held(conn, limit=SWEEP_BATCH)
    for h in pending:
        await _relay_held(app, h)


async def _refresh_cards(app: BotApplication, now: datetime) -> None:
    """Cards follow the store: receipts, date changes and cancellations that reached no
    notice (and so no post_to_topic) still show up on the card within one sweep."""
    async with app.bot_data.store.begin() as conn:
        open_cards = await cards_to_check(conn, now, limit=SWEEP_BATCH)
    for h in open_cards:
        await refresh_card(app, h.chat_id, force=False)


async def _sweep_job(context: BotContext) -> None:
    try:
        await sweep_handoffs(context)
    except Exception:
        # The next run tries again; one failing run must not stop the job.
        log.exception("handoff check failed")


# --- the support group: agents -------------------------------------------------------------


async def _is_agent(app: BotApplication, user: User | None) -> bool:
    settings = app.bot_data.settings
    if user is None or user.is_bot or settings.support_chat_id is None:
        return False
    try:
        member = await app.bot.get_chat_member(settings.support_chat_id, user.id)
    except TelegramError:
        return False
    return member.status in AGENT_STATUSES[settings.agents]


def _agent_name(message: Message) -> str | None:
    if message.sender_chat is not None:
        return None  # an anonymous admin writes as the group
    return message.from_user.first_name if message.from_user else None


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


def _signed(app: BotApplication, html: str, message: Message, language: str) -> str:
    """The agent's words as the customer gets them: signed, in the customer's language."""
    settings = app.bot_data.settings
    name = _agent_name(message)
    if not settings.agent_signature or not name:
        return html
    return app.bot_data.renderer.text(
        "handoff_signed.j2",
        language,
        text=Markup(html),
        name=name,
        shop=settings.shop_name,
    )


async def _relay_to_customer(app: BotApplication, h: Handoff, message: Message) -> None:
    settings = app.bot_data.settings
    signing = settings.agent_signature and _agent_name(message) is not None
    async with app.bot_data.store.connect() as conn:
        language = await _customer_language(app, conn, h)
    try:
        if signing and message.text:
            sent = await app.bot.send_message(
                h.chat_id, _signed(app, message.text_html, message, language)
            )
            copy_id = sent.message_id
        elif signing and not message.sticker and not message.video_note:
            caption = _signed(
                app, message.caption_html if message.caption else "", message, language
            )
            copy_id = (
                await app.bot.copy_message(
                    h.chat_id, message.chat_id, message.message_id, caption=caption
                )
            ).message_id
        else:
            copy_id = (
                await app.bot.copy_message(h.chat_id, message.chat_id, message.message_id)
            ).message_id
    except TelegramError as exc:
        await _undelivered(app, h, exc)
        return
    now = app.bot_data.now()
    async with app.bot_data.store.begin() as conn:
        await link_message(
            conn, h.handoff_id, (message.chat_id, message.message_id), (h.chat_id, copy_id), now
        )
        flipped = await record_agent_message(conn, h.handoff_id, now)
        if h.customer_blocked:
            await set_customer_blocked(conn, h.chat_id, False)
    if flipped:
        await _set_topic_state(app, h, "answered")


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
        await query.answer(_agent_text(app, "agent_notice.j2", kind="not_agent"), show_alert=True)
        raise ApplicationHandlerStop
    match = _PRESS.match(query.data)
    async with context.store.connect() as conn:
        h = await handoff_by_id(conn, int(match[2])) if match else None
    if match is None or h is None or h.support_chat_id != settings.support_chat_id:
        await query.answer(_agent_text(app, "agent_notice.j2", kind="stale"))
        raise ApplicationHandlerStop
    await query.answer()
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


# --- start-up ------------------------------------------------------------------------------


async def check_support_group(app: BotApplication) -> list[str]:
    """Check that the bot can run topics in the support group; log what is missing.

    Returns the problems (empty when all is well) so tests and tools can show them."""
    settings = app.bot_data.settings
    if settings.support_chat_id is None:
        log.warning(
            "SUPPORT_CHAT_ID is not set: customers who ask for a person are told that nobody "
            "is available in this chat and how else to reach the shop (SUPPORT_CONTACT)"
        )
        return ["SUPPORT_CHAT_ID is not set"]
    problems: list[str] = []
    try:
        chat = await app.bot.get_chat(settings.support_chat_id)
        member = await app.bot.get_chat_member(settings.support_chat_id, app.bot.id)
    except TelegramError as exc:
        problems.append(f"the bot cannot see the chat ({exc.message}); add the bot to the group")
    else:
        if chat.type != ChatType.SUPERGROUP:
            problems.append("it is not a supergroup")
        if not chat.is_forum:
            problems.append("topics are off; turn on Topics in the group's settings")
        if member.status != ChatMemberStatus.ADMINISTRATOR:
            problems.append("the bot is not an administrator of the group")
        elif not getattr(member, "can_manage_topics", False):
            problems.append("the bot lacks the administrator right Manage topics")
    if problems:
        log.error(
            "SUPPORT_CHAT_ID %s: agents cannot take over chats: %s",
            settings.support_chat_id,
            "; ".join(problems),
        )
    else:
        log.info("support group %s (%s) is ready for handoffs", chat.title, chat.id)
    return problems


# --- registration --------------------------------------------------------------------------


def register(app: BotApplication) -> None:
    settings = app.bot_data.settings
    private = filters.ChatType.PRIVATE
    content = ~filters.StatusUpdate.ALL & (
        filters.UpdateType.MESSAGE | filters.UpdateType.EDITED_MESSAGE
    )
    group = HANDOFF_GROUP
    # One handler per group runs, the first that matches: the specific ones come first.
    app.add_handler(
        CallbackQueryHandler(customer_choice, pattern=r"^h:(back|wait):\d{1,12}$"), group
    )
    # Agents: only in the support group, so nobody else's "/close" means anything.
    if settings.support_chat_id is not None:
        support = filters.Chat(settings.support_chat_id)
        for name, callback in (
            ("close", agent_close),
            ("orders", agent_orders),
            ("cancel", agent_cancel),
            ("canned", agent_canned),
            ("pull", agent_pull),
        ):
            app.add_handler(CommandHandler(name, callback, filters=support), group)
        app.add_handler(CallbackQueryHandler(agent_press, pattern=r"^ag:"), group)
        app.add_handler(MessageHandler(support & content, agent_message), group)
    # Customers while a person owns their thread.
    app.add_handler(MessageHandler(private & content, intercept_customer_message), group)
    app.add_handler(CallbackQueryHandler(intercept_customer_press, pattern=r"^(?!ag:)"), group)
    app.add_handler(ChatMemberHandler(customer_membership, ChatMemberHandler.MY_CHAT_MEMBER), group)
    app.add_handler(CommandHandler("agent", ask_for_agent, filters=private))
    app.add_handler(CallbackQueryHandler(ask_for_agent, pattern=r"^m:agent$"))
    if app.job_queue is not None:
        app.job_queue.run_repeating(
            _sweep_job,
            interval=settings.handoff_check_seconds,
            first=settings.handoff_check_seconds,
            name="handoff-check",
        )
