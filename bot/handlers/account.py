"""Linking a Telegram chat to a customer: deep links from order e-mails, or an order number
plus the e-mail address (or postcode) on it; /unlink; /link; /cancel.

The question the bot is waiting on lives in the store (``chats.pending``), never in memory,
so the answer may reach any bot process. Replies never reveal whether an order exists.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from telegram import Update
from telegram.error import TelegramError
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import BotApplication, BotContext
from bot.handlers import order_view
from bot.handlers.fallback import stale_button
from bot.render import ButtonSpec, shop_examples
from bot.reply import MAIN_MENU, acknowledge, chat_id_of, send
from bot.understanding import Intent, Understanding, understand
from store.chats import (
    ProofCheck,
    chat_of,
    clear_pending,
    consume_link_token,
    link_chat,
    proof_check,
    record_verification_attempt,
    set_pending,
    touch_chat,
    unlink_chat,
    verify_order_owner,
)
from store.links import read_link_code
from store.queries import Customer, customer_of
from store.schema import chats, orders

log = logging.getLogger(__name__)

ORDER_STEP = "order_number"
PROOF_STEP = "proof"
# Before every other group: PTB runs one handler per group, and handoff owns group -1, so
# sharing it would let one of us swallow the other's update. Nothing here stops propagation.
ABANDON_GROUP = -2

LINK: ButtonSpec = ("account_link", "acc:link")
CANCEL_ROW: tuple[tuple[ButtonSpec, ...], ...] = ((("account_cancel", "acc:cancel"),),)
LINK_MENU: tuple[tuple[ButtonSpec, ...], ...] = ((LINK,), *MAIN_MENU)

# Loose on purpose: the store decides whether it matches; this only catches what cannot be an
# address or a postcode, so a slip of the keyboard does not cost one of the hourly attempts.
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_POSTCODE_RE = re.compile(r"[0-9A-Za-z](?:[0-9A-Za-z -]{0,10}[0-9A-Za-z])?")
_EMAIL_MAX = 254

# Intents that mean the customer has moved on to another question, which the normal
# dispatcher should answer instead of reading it as the answer to ours. Only when certain:
# understanding guesses "stock" for any words, and a mistyped address is words too.
_ELSEWHERE = frozenset(
    {Intent.STOCK, Intent.AGENT, Intent.HELP, Intent.ALTERNATIVES, Intent.STOP_NOTIFICATIONS}
)
_CERTAIN = 0.99

Outcome = Literal["linked", "no_match", "limited", "wait"]


# --- deep links -------------------------------------------------------------------------------


async def start_with_code(update: Update, context: BotContext) -> None:
    """``/start <code>``: the link from an order e-mail or the order page."""
    chat_id = chat_id_of(update)
    code = context.args[0] if context.args else ""
    link = read_link_code(context.settings.link_secret.get_secret_value(), code)
    proof = context.settings.link_proof
    if link is None:
        await send(update, context, "account_link_invalid.j2", rows=LINK_MENU, proof=proof)
        return
    if link.expired(context.now()):
        await send(update, context, "account_link_expired.j2", rows=LINK_MENU, proof=proof)
        return

    moved_from: int | None = None
    switched = False
    async with context.store.begin() as conn:
        chat = await chat_of(conn, chat_id)
        customer = await customer_of(conn, link.customer_id)
        order_number = None
        if customer is not None and link.order_id is not None:
            order_number = await conn.scalar(
                select(orders.c.order_number).where(
                    orders.c.order_id == link.order_id,
                    orders.c.customer_id == link.customer_id,
                )
            )
        if customer is None:
            # Signed by us for a customer who is gone: as useless as a forged code.
            template = "account_link_invalid.j2"
        elif chat is not None and chat.customer_id == link.customer_id:
            # The owner opened their e-mail link again: nothing to link, just answer them.
            template = None
        elif not await consume_link_token(conn, link.token_id, link.expires_at):
            template = "account_link_used.j2"
        else:
            template = "account_linked.j2"
            moved_from = await _linked_chat(conn, link.customer_id, other_than=chat_id)
            switched = chat is not None and chat.customer_id is not None
            await link_chat(conn, chat_id, link.customer_id)
            await clear_pending(conn, chat_id)

    if template in ("account_link_invalid.j2", "account_link_used.j2"):
        await send(update, context, template, rows=LINK_MENU, proof=proof)
        return
    assert customer is not None
    # One message: "linked" on top of the orders it opens to.
    linked = order_view.Linked(customer.name, switched) if template == "account_linked.j2" else None
    if order_number is not None:
        await order_view.show_order(
            update, context, customer.customer_id, order_number, linked=linked
        )
    else:
        await order_view.show_open_orders(update, context, customer.customer_id, linked=linked)
    if linked is not None:
        await _tell_previous_chat(context, moved_from)


async def _linked_chat(conn: AsyncConnection, customer_id: int, *, other_than: int) -> int | None:
    found = await conn.scalar(
        select(chats.c.chat_id).where(
            chats.c.customer_id == customer_id, chats.c.chat_id != other_than
        )
    )
    return int(found) if found is not None else None


async def _tell_previous_chat(context: BotContext, chat_id: int | None) -> None:
    """The customer's other Telegram account just lost the link: if that was not their own
    doing, this message is how they find out."""
    if chat_id is None:
        return
    async with context.store.connect() as conn:
        chat = await chat_of(conn, chat_id)
    language = (chat.language if chat else None) or context.settings.default_language
    text = context.renderer.text("account_moved_away.j2", language)
    try:
        await context.bot.send_message(
            chat_id, text, reply_markup=context.renderer.keyboard(language, LINK_MENU)
        )
    except TelegramError:
        # Blocked or gone: the link has moved either way, and the new chat was told.
        log.info("could not tell chat %s that its link moved", chat_id)


# --- verification by order number and proof --------------------------------------------------


async def begin_verification(update: Update, context: BotContext, order_number: str | None) -> None:
    """Start linking this chat: ask for the order number, or, when known, for the proof."""
    chat_id = chat_id_of(update)
    check: ProofCheck | None = None
    async with context.own_chat_write() as conn:
        chat = await touch_chat(conn, chat_id)
        if chat.customer_id is not None:
            state = "linked"
        elif order_number is None:
            await set_pending(conn, chat_id, ORDER_STEP, at=context.now())
            state = "ask_order"
        else:
            check = await _check(conn, context, chat_id, order_number)
            if check.chat_limited:
                await clear_pending(conn, chat_id)
                state = "limited"
            else:
                # Waiting or not, the proof is what comes next: sent after the wait, it counts.
                await set_pending(conn, chat_id, PROOF_STEP, order_number, at=context.now())
                state = "ask_proof" if check.allowed else "wait"
    if state == "linked":
        await send(
            update,
            context,
            "account_already_linked.j2",
            rows=((("account_unlink", "acc:unlink"),), *MAIN_MENU),
        )
    elif state == "ask_order":
        await send(update, context, "account_ask_order.j2", rows=CANCEL_ROW)
    elif state == "limited":
        await send(update, context, "account_rate_limited.j2", rows=MAIN_MENU)
    elif state == "wait":
        assert order_number is not None and check is not None
        await _tell_wait(update, context, order_number, check)
    else:
        await _ask_proof(update, context, order_number)


async def _tell_wait(
    update: Update, context: BotContext, order_number: str, check: ProofCheck
) -> None:
    # Whole minutes, rounded up: a proof sent when the minutes told are over is taken.
    minutes = max(1, math.ceil(check.order_wait / timedelta(minutes=1)))
    await send(
        update,
        context,
        "account_order_wait.j2",
        rows=CANCEL_ROW,
        number=order_number,
        minutes=minutes,
        proof=context.settings.link_proof,
    )


async def _ask_proof(update: Update, context: BotContext, order_number: str | None) -> None:
    await send(
        update,
        context,
        "account_ask_proof.j2",
        rows=CANCEL_ROW,
        number=order_number,
        proof=context.settings.link_proof,
    )


async def continue_pending(update: Update, context: BotContext) -> bool:
    """Take a private text message as the answer to the question this chat was asked.

    The free-text dispatcher calls this first; True means the message was consumed.
    """
    message = update.effective_message
    chat = update.effective_chat
    if message is None or message.text is None or chat is None or chat.type != chat.PRIVATE:
        return False
    state = await context.chat(chat.id)
    if state is None or state.pending not in (ORDER_STEP, PROOF_STEP):
        return False  # nothing asked, or another module's question
    text = message.text
    if state.pending_step(context.now()) is None or text.lstrip().startswith("/"):
        # Stale, or the customer went elsewhere with a command: the question is withdrawn.
        async with context.own_chat_write() as conn:
            await clear_pending(conn, chat.id)
        return False
    if state.pending == PROOF_STEP and state.pending_order:
        return await _answer_proof(update, context, state.pending_order, text)
    return await _answer_order_number(update, context, text)


async def _answer_order_number(update: Update, context: BotContext, text: str) -> bool:
    understood = understand(text)
    if understood.order_number is None:
        if understood.intent is Intent.ORDER_STATUS:
            # "Where is my order?" asked again (or replayed after a restart, the step it saved
            # already there): the question itself, not its "that was not a number" form.
            await begin_verification(update, context, None)
            return True
        return await _not_an_answer(update, context, understood, "account_ask_order_again.j2")
    await begin_verification(update, context, understood.order_number)
    return True


async def _answer_proof(update: Update, context: BotContext, order_number: str, text: str) -> bool:
    proof = context.settings.link_proof
    value = text.strip()
    if not _looks_like_proof(proof, value):
        understood = understand(text)
        if understood.order_number is not None:
            # "Sorry, it's 100123": a corrected number, asked about afresh; the same number
            # again (or replayed after a restart): the proof is asked for as the first time.
            await begin_verification(update, context, understood.order_number)
            return True
        return await _not_an_answer(update, context, understood, "account_ask_proof_again.j2")

    chat_id = chat_id_of(update)
    outcome: Outcome
    moved_from: int | None = None
    customer_id: int | None = None
    customer: Customer | None = None
    check: ProofCheck | None = None
    # A few one-row statements: on the loop's thread when the file is free (Store.begin_small).
    # The check, the proof and the attempt's row in one transaction: see proof_check.
    async with context.store.begin_small() as conn:
        # A write first, so the counts are read under the file's write lock on every path
        # (proof_check); whatever comes next is set again below.
        await clear_pending(conn, chat_id)
        # Checked before the proof, so a chat at its limit learns nothing from trying more.
        check = await _check(conn, context, chat_id, order_number)
        if check.chat_limited:
            outcome = "limited"
        elif not check.allowed:
            # Not checked, so not counted: the question stays, for the proof after the wait.
            await set_pending(conn, chat_id, PROOF_STEP, order_number, at=context.now())
            outcome = "wait"
        else:
            customer_id = await verify_order_owner(
                conn,
                order_number,
                email=value if proof == "email" else None,
                postcode=value if proof == "postcode" else None,
            )
            await record_verification_attempt(
                conn, chat_id, order_number, customer_id is not None, at=context.now()
            )
            if customer_id is None:
                # Back to the first question: either half of the pair may be the wrong one.
                await set_pending(conn, chat_id, ORDER_STEP, at=context.now())
                outcome = "no_match"
            else:
                moved_from = await _linked_chat(conn, customer_id, other_than=chat_id)
                await link_chat(conn, chat_id, customer_id)
                customer = await customer_of(conn, customer_id)
                outcome = "linked"

    if outcome == "limited":
        await send(update, context, "account_rate_limited.j2", rows=MAIN_MENU)
    elif outcome == "wait":
        assert check is not None
        await _tell_wait(update, context, order_number, check)
    elif outcome == "no_match":
        await send(update, context, "account_no_match.j2", rows=CANCEL_ROW, proof=proof)
    else:
        assert customer is not None and customer_id is not None
        linked = order_view.Linked(customer.name, switched=False)
        await order_view.show_order(update, context, customer_id, order_number, linked=linked)
        await _tell_previous_chat(context, moved_from)
    return True


def _looks_like_proof(proof: str, value: str) -> bool:
    if proof == "postcode":
        return _POSTCODE_RE.fullmatch(value) is not None
    return len(value) <= _EMAIL_MAX and _EMAIL_RE.fullmatch(value) is not None


async def _not_an_answer(
    update: Update, context: BotContext, understood: Understanding, ask_again: str
) -> bool:
    """A message that does not answer the question: a change of mind, another question, or a
    slip, which is asked again and costs no attempt."""
    chat_id = chat_id_of(update)
    if understood.intent == Intent.CANCEL:
        async with context.own_chat_write() as conn:
            await clear_pending(conn, chat_id)
        await send(update, context, "account_cancelled.j2", rows=MAIN_MENU)
        return True
    if understood.intent in _ELSEWHERE and understood.confidence >= _CERTAIN:
        async with context.own_chat_write() as conn:
            await clear_pending(conn, chat_id)
        return False
    language = await context.language_for(update)
    examples = await shop_examples(context.store, language)
    await send(
        update,
        context,
        ask_again,
        rows=CANCEL_ROW,
        language=language,
        proof=context.settings.link_proof,
        **examples,
    )
    return True


async def _check(
    conn: AsyncConnection, context: BotContext, chat_id: int, order_number: str
) -> ProofCheck:
    return await proof_check(
        conn,
        chat_id,
        order_number,
        allowance=context.settings.verification_attempts_per_hour,
        now=context.now(),
    )


# --- commands and buttons ---------------------------------------------------------------------


async def link_command(update: Update, context: BotContext) -> None:
    """/link and the "Link my account" button."""
    await acknowledge(update)
    await begin_verification(update, context, None)


async def unlink_command(update: Update, context: BotContext) -> None:
    """/unlink and its button: ask first, with the customer id in the button to re-check."""
    await acknowledge(update)
    chat = await context.chat(chat_id_of(update))
    if chat is None or chat.customer_id is None:
        await send(update, context, "account_not_linked.j2", rows=LINK_MENU)
        return
    await send(
        update,
        context,
        "account_unlink_confirm.j2",
        rows=(
            (
                ("account_unlink_yes", f"acc:unlink:{chat.customer_id}"),
                ("keep", "acc:keep"),
            ),
        ),
    )


async def unlink_confirmed(update: Update, context: BotContext) -> None:
    query = update.callback_query
    assert query is not None and query.data is not None  # guaranteed by the pattern
    customer_id = int(query.data.rsplit(":", 1)[1])
    chat_id = chat_id_of(update)
    async with context.store.begin() as conn:
        chat = await chat_of(conn, chat_id)
        current = chat is not None and chat.customer_id == customer_id
        if current:
            await unlink_chat(conn, chat_id)
            await clear_pending(conn, chat_id)
    if not current:
        # Pressed twice, or the chat was linked elsewhere since the question was asked.
        await stale_button(update, context)
        return
    await acknowledge(update)
    await send(update, context, "account_unlinked.j2", rows=LINK_MENU)


async def keep_linked(update: Update, context: BotContext) -> None:
    chat = await context.chat(chat_id_of(update))
    if chat is None or chat.customer_id is None:
        await stale_button(update, context)
        return
    await acknowledge(update)
    await send(update, context, "account_kept.j2", rows=MAIN_MENU)


async def cancel(update: Update, context: BotContext) -> None:
    """/cancel and the Cancel button: withdraw the question, if one is open."""
    chat_id = chat_id_of(update)
    async with context.own_chat_write() as conn:
        chat = await chat_of(conn, chat_id)
        open_step = chat is not None and chat.pending_step(context.now()) in (
            ORDER_STEP,
            PROOF_STEP,
        )
        if open_step:
            await clear_pending(conn, chat_id)
    if update.callback_query is not None and not open_step:
        await stale_button(update, context)
        return
    await acknowledge(update)
    template = "account_cancelled.j2" if open_step else "account_nothing_to_cancel.j2"
    await send(update, context, template, rows=MAIN_MENU)


async def abandon_pending(update: Update, context: BotContext) -> None:
    """Any other command or button press moves on from our question; the handler it was meant
    for still runs (this one sits in an earlier group)."""
    chat = update.effective_chat
    if chat is None:
        return
    state = await context.chat(chat.id)
    if state is not None and state.pending in (ORDER_STEP, PROOF_STEP):
        async with context.own_chat_write() as conn:
            await clear_pending(conn, chat.id)


def register(app: BotApplication) -> None:
    private = filters.ChatType.PRIVATE
    # /cancel is left to its own handler, which must still see the step it cancels.
    app.add_handler(
        MessageHandler(private & filters.COMMAND & ~filters.Regex(r"^/cancel\b"), abandon_pending),
        group=ABANDON_GROUP,
    )
    app.add_handler(
        CallbackQueryHandler(abandon_pending, pattern=r"^(?!acc:)"), group=ABANDON_GROUP
    )

    app.add_handler(CommandHandler("start", start_with_code, filters=private, has_args=True))
    app.add_handler(CommandHandler("link", link_command, filters=private))
    app.add_handler(CommandHandler("unlink", unlink_command, filters=private))
    app.add_handler(CommandHandler("cancel", cancel, filters=private))
    app.add_handler(CallbackQueryHandler(link_command, pattern=r"^acc:link\Z"))
    app.add_handler(CallbackQueryHandler(unlink_command, pattern=r"^acc:unlink\Z"))
    app.add_handler(CallbackQueryHandler(unlink_confirmed, pattern=r"^acc:unlink:[0-9]{1,10}\Z"))
    app.add_handler(CallbackQueryHandler(keep_linked, pattern=r"^acc:keep\Z"))
    app.add_handler(CallbackQueryHandler(cancel, pattern=r"^acc:cancel\Z"))


__all__ = ["begin_verification", "continue_pending", "register"]
