"""Agents take over: one forum topic per customer in the shop's support group.

While a handoff is active the customer's messages are copied into their topic and agents'
messages in the topic are copied back; the bot says nothing of its own to the customer.
Everything that must survive a restart (who owns the thread, deadlines, which copy belongs
to which message) is in the store; the check job only reads deadlines from there.

The modules, in the order they import each other:
common (constants, business hours, agent-side texts) -> topic (card, posting, opening the
topic) -> relay (messages both ways) -> escalation (to a person and back) -> customers (the
customer's side meanwhile) -> agents (the support group) -> timeouts (the periodic check)
-> setup (start-up check, registration). bot.handlers.handoff is the capability's face to
the rest of the bot.
"""
