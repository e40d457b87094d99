"""Start-up check of the support group and registration of the handlers."""

from __future__ import annotations

from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError
from telegram.ext import (
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.context import BotApplication
from bot.handoff.agents import (
    agent_cancel,
    agent_canned,
    agent_close,
    agent_message,
    agent_orders,
    agent_press,
    agent_pull,
)
from bot.handoff.common import HANDOFF_GROUP, log
from bot.handoff.customers import (
    customer_choice,
    customer_membership,
    intercept_customer_message,
    intercept_customer_press,
)
from bot.handoff.escalation import ask_for_agent
from bot.handoff.timeouts import _sweep_job
from bot.shared import leased


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


def register(app: BotApplication) -> None:
    settings = app.bot_data.settings
    private = filters.ChatType.PRIVATE
    content = ~filters.StatusUpdate.ALL & (
        filters.UpdateType.MESSAGE | filters.UpdateType.EDITED_MESSAGE
    )
    group = HANDOFF_GROUP
    # One handler per group runs, the first that matches: the specific ones come first.
    app.add_handler(
        CallbackQueryHandler(customer_choice, pattern=r"^h:(back|wait):\d{1,12}\Z"), group
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
    app.add_handler(CallbackQueryHandler(ask_for_agent, pattern=r"^m:agent\Z"))
    if app.job_queue is not None:
        # One process a round (bot.shared.JobLeases); every step is safe twice all the same.
        app.job_queue.run_repeating(
            leased("handoff-check", _sweep_job),
            interval=settings.handoff_check_seconds,
            first=settings.handoff_check_seconds,
            name="handoff-check",
        )
