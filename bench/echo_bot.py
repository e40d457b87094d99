"""The reference for bench_e2e.py: a bare PTB echo bot with PTB's default settings (httpx,
one update at a time). BOT_TOKEN and BOT_API_BASE_URL from the environment.

With ``ECHO_FLOOR=1``: the same echo on the bot's own request layer (aiohttp, JSON bodies) and
64 updates at once (each chat's in order, as the bot keeps them), with the bot's collector
thresholds: what PTB itself costs per update on
the bot's stack, the floor under anything the full bot can reach."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.message is not None and update.message.text is not None:
        await update.message.reply_text(update.message.text)


def main() -> None:
    builder = Application.builder().token(os.environ["BOT_TOKEN"])
    builder.base_url(os.environ["BOT_API_BASE_URL"])
    if os.environ.get("ECHO_FLOOR"):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from bot.app import tune_collector
        from bot.request import AiohttpRequest
        from bot.updates import ChatOrderedProcessor

        builder.request(AiohttpRequest(connection_pool_size=64, json_body=True))
        builder.get_updates_request(AiohttpRequest(connection_pool_size=1, read_timeout=40))
        builder.concurrent_updates(ChatOrderedProcessor(64))
        tune_collector()
    app = builder.build()
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.run_polling(allowed_updates=Update.ALL_TYPES)


if __name__ == "__main__":
    main()
