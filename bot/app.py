"""The application factory: everything Telegram-facing is assembled here, and only here."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from telegram import BotCommand, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.ext import (
    AIORateLimiter,
    ApplicationBuilder,
    BaseRateLimiter,
    ContextTypes,
    Defaults,
)

from bot.context import BotApplication, BotContext, BotData
from bot.handlers import register_all
from bot.handlers.handoff import check_support_group
from bot.inbox import Inbox, InboxRequest
from bot.metrics import counted
from bot.ops.alerts import start as ops_start
from bot.render import Renderer
from bot.request import request_for
from bot.settings import SUPPORTED_LANGUAGES, Settings
from bot.shared import (
    SharedInbox,
    SharedRateLimiter,
    close_job_leases,
    is_shared,
    worker_name,
)
from bot.updates import ChatOrderedProcessor, UpdateIntake
from store.db import Store, migrate

log = logging.getLogger(__name__)

# PTB 22 warns on every 429 unless durations are opted in to timedelta, which its next major
# version makes the default; nothing of ours reads them as numbers.
os.environ.setdefault("PTB_TIMEDELTA", "true")

# Shown in Telegram's command menu; each description is a macro of commands.j2.
COMMANDS = ("orders", "stock", "agent", "language", "help")


def tune_collector() -> None:
    """Collect cyclic garbage less often, for a whole process that runs the bot. With the
    defaults (700, 10, 10) a busy bot ran a full collection every few seconds over every
    object it holds (templates, the product index, PTB's objects): 50-150 ms with the event
    loop stopped, and the notice pacer lost those slots (bench_notices at 1,000/s: 96.3% of
    the rate delivered, 98.5% with these). Young garbage is still collected every 10,000
    allocations."""
    gc.set_threshold(10_000, 10, 10)


def freeze_after_start(app: BotApplication) -> None:
    """Once the bot is up, set aside everything it holds for good (modules, templates, the
    product index, built now rather than at the first stock question) from the collector.
    A full collection still came every 10-20 s at 200 updates/s and went over about 200,000
    such objects: 115-135 ms with the event loop stopped, every time the largest of the
    bench's replies' latencies. For a whole process that runs the bot, never for tests."""
    started = app.post_init

    async def post_init(app: BotApplication) -> None:
        if started is not None:
            await started(app)
        await app.bot_data.store.product_index()
        gc.collect()
        gc.freeze()

    app.post_init = post_init


def build_application(
    settings: Settings, store: Store, *, now: Callable[[], datetime] | None = None
) -> BotApplication:
    """Assemble the bot. `now` (aware, UTC) replaces the clock: tests move time with it."""
    if settings.bot_token is None:
        raise ValueError("build_application needs a token; run_bot.py supplies the sandbox's")
    # JSON bodies: aiohttp's form encoding cost more CPU than the rest of a send. A 5xx is
    # sent again (nothing was done); PTB itself retries only 429s.
    request = request_for(
        settings,
        pool=64,
        read_timeout=settings.request_timeout,
        json_body=True,
        server_error_retries=settings.max_retries,
    )
    counted(request, "reply")
    clock = now or (lambda: datetime.now(UTC))
    # Every fetched update is in the store before Telegram hears it arrived (bot/inbox.py).
    webhook = settings.webhook_url is not None
    # On PostgreSQL several processes may share the bot (bot/shared.py): they claim the
    # inbox's updates chat by chat and share the send pace.
    shared = is_shared(store)
    inbox = (
        SharedInbox(
            store,
            clock,
            worker=worker_name(settings.worker_name),
            lease=settings.update_lease_seconds,
            max_chats=settings.concurrent_updates,
            webhook=webhook,
        )
        if shared
        else Inbox(store, clock, webhook=webhook)
    )
    # Several processes: the token's pace and each chat's are the database's (a chat's
    # pace is shared with the notices and with every other process's sends to it).
    limiter: BaseRateLimiter[Any] = (
        SharedRateLimiter(
            store,
            settings.replies_per_second,
            settings.max_retries,
            per_chat=settings.per_chat_interval_seconds,
        )
        if shared and (settings.replies_per_second > 0 or settings.per_chat_interval_seconds > 0)
        else AIORateLimiter(
            max_retries=settings.max_retries,
            overall_max_rate=settings.replies_per_second,
            overall_time_period=1,
        )
    )
    # Long polling holds its connection for the poll's timeout (PTB adds it to read_timeout).
    updates_request = InboxRequest(
        request_for(settings, pool=1, read_timeout=settings.request_timeout + 30), inbox
    )
    intake = UpdateIntake(settings.intake_limit, inbox)
    app: BotApplication = (
        ApplicationBuilder()
        .token(settings.bot_token.get_secret_value())
        .base_url(settings.bot_api_base_url)
        .base_file_url(settings.bot_api_file_url)
        .request(request)
        .get_updates_request(updates_request)
        .update_queue(intake)
        # Up to CONCURRENT_UPDATES at once; one chat's updates one after another, in order.
        .concurrent_updates(ChatOrderedProcessor(settings.concurrent_updates, intake))
        .context_types(ContextTypes(context=BotContext, bot_data=BotData))
        .defaults(
            Defaults(
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
        )
        .rate_limiter(limiter)
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    app.bot_data.settings = settings
    app.bot_data.store = store
    app.bot_data.now = clock
    app.bot_data.renderer = Renderer(
        settings.zone, lambda: clock().astimezone(settings.zone).date()
    )
    register_all(app)
    return app


async def _post_init(app: BotApplication) -> None:
    # Migrations are idempotent, so every process brings the schema up to date on start.
    await migrate(app.bot_data.store.engine)
    renderer = app.bot_data.renderer
    default = app.bot_data.settings.default_language
    # Telegram shows the commands without a language code to users of any other language.
    for language, code in [(default, None), *((lang, lang) for lang in SUPPORTED_LANGUAGES)]:
        commands = [
            BotCommand(name, renderer.plain("commands.j2", name, language)) for name in COMMANDS
        ]
        await app.bot.set_my_commands(commands, language_code=code)
    await check_support_group(app)
    await ops_start(app)  # the ops topic and its jobs (#18)
    # Before polling starts (run_polling and the tests start it after post_init), so what the
    # last process left unanswered comes before anything new, in each chat's order.
    intake = _intake(app)
    if intake.inbox is not None:
        await intake.inbox.replay(app.bot, intake)
    log.info("bot @%s is up", app.bot.username)


def _intake(app: BotApplication) -> UpdateIntake:
    intake = app.update_queue
    assert isinstance(intake, UpdateIntake)
    return intake


async def _post_shutdown(app: BotApplication) -> None:
    from bot.notices import close

    inbox = _intake(app).inbox
    await close_job_leases(app)
    if inbox is not None:
        await inbox.close()
    await close(app)
    await app.bot_data.store.close()
