"""``python -m shopapi``: the shop API on its own, without the bot (API_PORT, API_TOKENS and
the store's settings as the bot reads them; BOT_USERNAME for the deep links)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings
from shopapi.auth import parse_tokens
from shopapi.ops import metrics_middleware
from shopapi.server import build_web_app, served_beside, start_server
from store import open_store
from store.links import DEVELOPMENT_SECRET

log = logging.getLogger("shopapi")


async def _no_bot_here() -> bool:
    return True


async def serve(settings: Settings) -> None:
    assert settings.api_port is not None
    store = await open_store(settings.database_url)
    try:
        app = build_web_app(
            settings,
            store,
            # No bot runs in this process: /readyz's Bot API check is the bot's own.
            routes=served_beside(settings, store, _no_bot_here),
            middlewares=[metrics_middleware],
        )
        runner = await start_server(app, settings.api_listen, settings.api_port)
        log.info("api: listening on %s:%d", settings.api_listen, settings.api_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()
    finally:
        await store.close()


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"shopapi: invalid setting {exc}", file=sys.stderr)
        return 2
    if settings.api_port is None:
        print("shopapi: invalid setting API_PORT: must be set to run the API", file=sys.stderr)
        return 2
    tokens = list(parse_tokens(settings.api_tokens.get_secret_value()).values())
    secret = settings.link_secret.get_secret_value()
    configure_logging(settings.log_level, [*tokens, secret])
    if secret == DEVELOPMENT_SECRET:
        log.warning(
            "LINK_SECRET is not set: deep links are signed with the development secret, which"
            " only the sandbox accepts"
        )
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
