"""Every handler of the bot, registered in one place.

Order matters: PTB runs the first matching handler of a group. Commands and buttons with
specific patterns come first (account before start, so that `/start <code>` links before the
plain `/start` greets); free text (conversation) comes after every command and button; the
fallback, which matches any private message and any press, must come last or it would swallow
everything.

handoff registers most of its handlers in group -1 (handoff.HANDOFF_GROUP), which PTB runs
before group 0: while a person owns a customer's thread, that customer's messages and presses
are relayed to the support topic there and stop (ApplicationHandlerStop), so no other module
answers; updates from the support group (agents) are handled and stopped there too. Without
an active handoff nothing in group -1 matches and group 0 runs as usual. /agent and the
"m:agent" button are ordinary group-0 handlers of handoff.
"""

from __future__ import annotations

from bot.context import BotApplication
from bot.handlers import (
    account,
    cancel,
    conversation,
    delays,
    errors,
    fallback,
    handoff,
    language,
    notifications,
    orders,
    start,
    stock,
)


def register_all(app: BotApplication) -> None:
    for module in (account, start, language, orders, stock, cancel, notifications, delays, handoff):
        module.register(app)
    conversation.register(app)
    fallback.register(app)
    errors.register(app)
