"""Every handler of the bot, registered in one place.

Order matters: PTB runs the first matching handler of a group. Commands and buttons with
specific patterns come first; the fallback, which matches any private message and any press,
must come last or it would swallow everything.
"""

from __future__ import annotations

from bot.context import BotApplication
from bot.handlers import account, delays, errors, fallback, language, notifications, start


def register_all(app: BotApplication) -> None:
    for module in (account, start, language, notifications, delays):
        module.register(app)
    fallback.register(app)
    errors.register(app)
