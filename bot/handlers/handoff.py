"""Agents take over: one forum topic per customer in the shop's support group.

While a handoff is active the customer's messages are copied into their topic and agents'
messages in the topic are copied back; the bot says nothing of its own to the customer.
Everything that must survive a restart (who owns the thread, deadlines, which copy belongs
to which message) is in the store; the check job only reads deadlines from there.

Handlers of this module run in HANDOFF_GROUP, before every other group, so that neither a
customer message during a handoff nor anything from the support group reaches the
customer-facing handlers.

The code lives in the package bot.handoff (see its modules); this module is its face to the
rest of the bot, with the same public names as always.
"""

from __future__ import annotations

from bot.handoff.agents import (
    agent_cancel,
    agent_canned,
    agent_close,
    agent_message,
    agent_orders,
    agent_press,
    agent_pull,
)
from bot.handoff.common import (
    AGENT_STATUSES,
    CANNED,
    CARD_ORDERS,
    HANDOFF_GROUP,
    MISSES_MEAN_MISUNDERSTOOD,
    SWEEP_BATCH,
    AppOrContext,
    answer_deadline,
    next_opening,
)
from bot.handoff.customers import (
    customer_choice,
    customer_membership,
    intercept_customer_message,
    intercept_customer_press,
)
from bot.handoff.escalation import ask_for_agent, escalate, hand_back
from bot.handoff.setup import check_support_group, register
from bot.handoff.timeouts import sweep_handoffs
from bot.handoff.topic import post_to_topic, refresh_card

__all__ = [
    "AGENT_STATUSES",
    "CANNED",
    "CARD_ORDERS",
    "HANDOFF_GROUP",
    "MISSES_MEAN_MISUNDERSTOOD",
    "SWEEP_BATCH",
    "AppOrContext",
    "agent_cancel",
    "agent_canned",
    "agent_close",
    "agent_message",
    "agent_orders",
    "agent_press",
    "agent_pull",
    "answer_deadline",
    "ask_for_agent",
    "check_support_group",
    "customer_choice",
    "customer_membership",
    "escalate",
    "hand_back",
    "intercept_customer_message",
    "intercept_customer_press",
    "next_opening",
    "post_to_topic",
    "refresh_card",
    "register",
    "sweep_handoffs",
]
