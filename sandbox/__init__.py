"""A local stand-in for the Telegram Bot API, with a control API and a web playground."""

from sandbox._limits import Limits
from sandbox._server import Sandbox
from sandbox._world import Settings

__all__ = ["Limits", "Sandbox", "Settings"]
