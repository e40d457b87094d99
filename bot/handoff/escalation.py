"""Handing the customer's chat to a person, and back to the bot."""

from __future__ import annotations

from telegram import CallbackQuery, Message, Update
from telegram.constants import ChatType

from bot.context import BotApplication, BotContext
from bot.handoff.common import (
    MISSES_MEAN_MISUNDERSTOOD,
    AppOrContext,
    _app,
    _customer_language,
    _display_name,
    _is_command,
    _Who,
    answer_deadline,
)
from bot.handoff.relay import _relay_from_customer
from bot.handoff.topic import (
    _notice,
    _open_topic,
    _post_card,
    _relay_held,
    _set_topic_state,
    _tell_started,
    _to_customer,
)
from bot.i18n import choose_language
from bot.reply import MAIN_MENU, answer_press
from store.chats import chat_of, reset_misses
from store.events import log_event
from store.handoffs import (
    Handoff,
    claim_handoff,
    close_handoff,
)


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
            await answer_press(query)
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
            await answer_press(query, renderer.text("handoff_busy.j2", language))
        elif trigger is not None:
            await _relay_from_customer(app, h, trigger)
        return h
    if claim.needs_topic:
        opened_topic = await _open_topic(app, h)
        if opened_topic is None:
            async with store.begin() as conn:
                await close_handoff(conn, h.handoff_id, now=now, by="failed")
            if query is not None:
                await answer_press(query)
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
        await answer_press(query)
    await _tell_started(app, h, reason)
    return h


async def ask_for_agent(update: Update, context: BotContext) -> None:
    """/agent and the menu's "Talk to a person"."""
    reason = "asked"
    if update.effective_chat is not None:
        chat = await context.chat(update.effective_chat.id)
        if chat is not None and chat.misses >= MISSES_MEAN_MISUNDERSTOOD:
            reason = "misunderstood"
    await escalate(update, context, reason)


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
        # The menu has "Talk to a person" already: the text points at it, once.
        await _to_customer(app, closed, "handoff_back.j2", rows=MAIN_MENU, by=by)
    return True
