"""The bot as its own process, built the way run_bot.py builds it (settings from the
environment, the store, build_application, long polling), for tests that kill it."""

from __future__ import annotations

import logging
import sys

from telegram import Update

from bot.app import build_application
from bot.settings import load_settings
from store.db import Store, create_engine_for


def main() -> int:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr)
    store = Store(create_engine_for(settings.database_url), settings.database_url)
    app = build_application(settings, store)
    app.run_polling(allowed_updates=Update.ALL_TYPES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
