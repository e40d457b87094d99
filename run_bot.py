"""Start the bot.

With BOT_TOKEN set it talks to Telegram (long polling, or webhooks when WEBHOOK_URL is set).
Without a token it starts the local sandbox Bot API with its web playground, fills the
database with demo data if it is empty, and runs the bot against the sandbox.
"""

from __future__ import annotations

import asyncio
import faulthandler
import fcntl
import logging
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from telegram import Update

from bot.app import build_application, freeze_after_start, tune_collector
from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings
from store.db import Store, create_engine_for, migrate
from store.demo import fill_demo, is_empty
from store.inbox import last_update_id
from store.links import DEVELOPMENT_SECRET

log = logging.getLogger("backorder-bot")


@dataclass(frozen=True)
class _SandboxHandle:
    url: str
    api_base: str
    file_base: str
    token: str
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop


def _start_sandbox(settings: Settings, first_update_id: int) -> _SandboxHandle:
    """Run the sandbox on a thread of its own, so PTB keeps the main thread and its signals."""
    from sandbox import Sandbox
    from sandbox import Settings as SandboxSettings

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    sandbox = Sandbox(settings=SandboxSettings(first_update_id=first_update_id))
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sandbox.start(settings.sandbox_host, settings.sandbox_port))
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(sandbox.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="sandbox", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    return _SandboxHandle(
        sandbox.url, sandbox.api_base, sandbox.file_base, sandbox.token, thread, loop
    )


async def _prepare_demo(settings: Settings) -> int:
    """The database migrated, and filled with demo data if empty; the highest update id it
    has saved, which the sandbox's ids must go past (a bot restarted on the same database
    dropped a new sandbox's first updates, ids 1, 2, ..., as ones it had answered)."""
    engine = create_engine_for(settings.database_url)
    store = Store(engine, settings.database_url)
    try:
        await migrate(engine)
        async with store.connect() as conn:
            empty = await is_empty(conn)
            last = await last_update_id(conn)
        if empty:
            log.info("empty database: loading %s demo data", settings.demo_size)
            await fill_demo(store, size=settings.demo_size)
        return last
    finally:
        await store.close()


# --- sandbox only: the support group, so the playground shows the agents' side ------------

SANDBOX_SUPPORT_CHAT_ID = -1001000000999
SANDBOX_AGENT_ID = 900001


async def _sandbox_support_group(sandbox: _SandboxHandle, settings: Settings) -> Settings:
    """Create a forum supergroup with one agent in the sandbox and point the bot at it,
    unless SUPPORT_CHAT_ID names one already."""
    if settings.support_chat_id is not None:
        return settings
    from sandbox.client import SandboxClient

    async with SandboxClient(sandbox.url) as client:
        await client.create_user(SANDBOX_AGENT_ID, first_name="Agent")
        await client.create_supergroup(
            "Support", chat_id=SANDBOX_SUPPORT_CHAT_ID, administrators=[SANDBOX_AGENT_ID]
        )
    return settings.model_copy(update={"support_chat_id": SANDBOX_SUPPORT_CHAT_ID})


def _secrets(settings: Settings) -> list[str]:
    """What the log must never show (the sandbox's token is added once the sandbox runs)."""
    values = [settings.bot_token, settings.webhook_secret, settings.shopify_webhook_secret]
    if not settings.sandboxed:  # in the sandbox it may be short, or the README's
        values.append(settings.link_secret)
    from shopapi.auth import parse_tokens

    tokens = list(parse_tokens(settings.api_tokens.get_secret_value()).values())
    return [value.get_secret_value() for value in values if value is not None] + tokens


def _webhook_secret(settings: Settings) -> str:
    """WEBHOOK_SECRET, or a random one for this run: PTB's webhook server then answers 403 to
    any request without it, so only Telegram (told it by setWebhook) can deliver updates."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value()
    log.info("webhook: no WEBHOOK_SECRET set; using a random secret token for this run")
    # 256 bits in Telegram's alphabet for it (A-Z, a-z, 0-9, _ and -).
    return secrets.token_urlsafe(32)


def _one_process_on_sqlite(url: str) -> TextIO | str | None:
    """On a SQLite file, a lock beside it for as long as this process runs (the system lets
    it go when the process ends, however it ends): the open lock file, or the line that
    refuses a second process. None on anything else.

    Several processes share a bot only on PostgreSQL (bot/shared.py): on SQLite each would
    replay the others' unanswered updates, answer the same chat out of order and pace its
    sends alone."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = Path(str(parsed.database))
    database.parent.mkdir(parents=True, exist_ok=True)
    handle = (database.parent / f"{database.name}.bot-lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return (
            f"another bot process runs on {database}; SQLite serves one bot process"
            " (several share a bot on PostgreSQL: DATABASE_URL=postgresql+asyncpg://...)"
        )
    return handle


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"backorder-bot: invalid setting {exc}", file=sys.stderr)
        return 2
    lock = _one_process_on_sqlite(settings.database_url)
    if isinstance(lock, str):
        print(f"backorder-bot: {lock}", file=sys.stderr)
        return 1
    redactor = configure_logging(
        settings.log_level, _secrets(settings), json_lines=settings.log_format == "json"
    )
    # `kill -USR1 <pid>`: every thread's stack on stderr, for a process that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    sandbox: _SandboxHandle | None = None
    if settings.sandboxed:
        last_update = asyncio.run(_prepare_demo(settings))
        try:
            sandbox = _start_sandbox(settings, first_update_id=last_update + 1)
        except OSError as exc:
            print(f"backorder-bot: cannot start the sandbox: {exc}", file=sys.stderr)
            return 1
        settings = settings.model_copy(
            update={
                "bot_token": SecretStr(sandbox.token),
                "bot_api_base_url": sandbox.api_base,
                "bot_api_file_url": sandbox.file_base,
            }
        )
        redactor.hide(sandbox.token)
        if settings.link_secret.get_secret_value() == DEVELOPMENT_SECRET:
            log.warning(
                "sandbox mode: link codes are signed with the development secret, which anyone"
                " can read in the README; with a BOT_TOKEN the bot needs a LINK_SECRET of its own"
            )
        settings = asyncio.run(_sandbox_support_group(sandbox, settings))

    store = Store(create_engine_for(settings.database_url), settings.database_url)
    app = build_application(settings, store)
    if settings.api_port is not None:
        from shopapi.server import attach_to_bot

        attach_to_bot(app, settings, store)
    tune_collector()
    freeze_after_start(app)
    if sandbox is not None:
        print(f"Sandbox playground: {sandbox.url}/  (Ctrl+C to stop)", flush=True)
    try:
        if settings.webhook_url:
            secret = _webhook_secret(settings)
            redactor.hide(secret)
            app.run_webhook(
                listen=settings.webhook_listen,
                port=settings.webhook_port,
                url_path=urlparse(settings.webhook_url).path.lstrip("/"),
                webhook_url=settings.webhook_url,
                secret_token=secret,
                allowed_updates=Update.ALL_TYPES,
            )
        else:
            app.run_polling(allowed_updates=Update.ALL_TYPES)
    finally:
        if sandbox is not None:
            sandbox.loop.call_soon_threadsafe(sandbox.loop.stop)
            sandbox.thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
