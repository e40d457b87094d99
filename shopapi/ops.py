"""The operators' endpoints, served beside the shop API on API_PORT:

- GET /healthz: the process answers (200 {"status": "ok"}); no store, no Telegram.
- GET /readyz: the store answers, its schema is at the newest migration, and the Bot API
  answers (check_bot_api): 200 {"status": "ready", "checks": {...}}, else 503 with each
  check's result, so the probe's log says which failed.
- GET /metrics: Prometheus text format (prometheus-client) of bot.metrics.REGISTRY; the store's
  gauges (outbox backlog and oldest due notice, open handoffs and oldest unanswered one) are
  read from the store at each scrape.

`metrics_middleware` counts every request of the app it is installed on by endpoint (the
route's pattern, never the raw path: bounded labels), method and status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Connection, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import metrics
from store.db import Store, alembic_config
from store.outbox import PENDING
from store.schema import handoff_escalations, handoffs, outbox

log = logging.getLogger(__name__)

# A probe that hangs is worse than one that fails: each check answers within this.
CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class StoreGauges:
    outbox_backlog: int
    oldest_due_seconds: float
    handoffs_open: int
    oldest_unanswered_seconds: float


def _age(since: datetime | None, now: datetime) -> float:
    if since is None:
        return 0.0
    if since.tzinfo is None:  # a SQLite aggregate comes back without the column's type
        since = since.replace(tzinfo=UTC)
    return max(0.0, (now - since).total_seconds())


async def store_gauges(conn: AsyncConnection, now: datetime) -> StoreGauges:
    o = outbox.c
    backlog = await conn.scalar(select(func.count()).where(o.status == PENDING))
    oldest_due = await conn.scalar(
        select(func.min(o.not_before)).where(o.status == PENDING, o.not_before <= now)
    )
    h = handoffs.c
    open_ = await conn.scalar(select(func.count()).where(h.state != "closed"))
    # An escalation still open whose thread waits and no agent has answered since it began.
    e = handoff_escalations.c
    unanswered = await conn.scalar(
        select(func.min(e.started_at))
        .select_from(handoff_escalations.join(handoffs, h.handoff_id == e.handoff_id))
        .where(e.ended_at.is_(None), h.state == "waiting", h.answered_at.is_(None))
    )
    return StoreGauges(
        int(backlog or 0), _age(oldest_due, now), int(open_ or 0), _age(unanswered, now)
    )


def _revision(sync_conn: Connection) -> tuple[str | None, set[str]]:
    current = MigrationContext.configure(sync_conn).get_current_revision()
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    return current, heads


async def _check_store(store: Store) -> str:
    async with store.connect() as conn:
        await conn.execute(text("SELECT 1"))
        current, heads = await conn.run_sync(_revision)
    if current not in heads:
        return f"migrations: at {current}, newest is {', '.join(sorted(heads))}"
    return "ok"


async def _within(check: Awaitable[str], what: str) -> str:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            return await check
    except TimeoutError:
        return f"{what}: no answer within {CHECK_SECONDS:g} s"
    except Exception as e:
        # The class only: a driver's message may carry the database URL.
        log.warning("readyz: %s failed: %s", what, type(e).__name__)
        return f"{what}: {type(e).__name__}"


async def _bot_api(check_bot_api: Callable[[], Awaitable[bool]]) -> str:
    return "ok" if await check_bot_api() else "bot api: not reachable"


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    route = request.match_info.route
    endpoint = route.resource.canonical if route.resource is not None else "unmatched"
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        metrics.API_REQUESTS.labels(endpoint, request.method, str(status)).inc()
        metrics.API_SECONDS.labels(endpoint).observe(time.perf_counter() - start)


def add_ops_routes(
    app: web.Application,
    *,
    store: Store,
    check_bot_api: Callable[[], Awaitable[bool]],
    now: Callable[[], datetime] | None = None,
) -> None:
    """/healthz, /readyz and /metrics on ``app``. ``check_bot_api``: True when the Bot API
    answers (the bot's getMe); ``now``: the clock the gauges' ages are taken against."""
    clock = now or (lambda: datetime.now(UTC))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        store_check, api_check = await asyncio.gather(
            _within(_check_store(store), "store"), _within(_bot_api(check_bot_api), "bot api")
        )
        checks = {"store": store_check, "bot_api": api_check}
        ready = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

    async def metrics_page(request: web.Request) -> web.Response:
        try:
            async with store.connect() as conn:
                g = await store_gauges(conn, clock())
        except Exception as e:
            # The counters are still worth a scrape; the store's trouble shows in /readyz.
            log.warning("metrics: the store's gauges were not read: %s", type(e).__name__)
        else:
            metrics.OUTBOX_BACKLOG.set(g.outbox_backlog)
            metrics.OUTBOX_OLDEST_DUE.set(g.oldest_due_seconds)
            metrics.HANDOFFS_OPEN.set(g.handoffs_open)
            metrics.HANDOFF_OLDEST_UNANSWERED.set(g.oldest_unanswered_seconds)
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)


def bot_api_check(bot: object) -> Callable[[], Awaitable[bool]]:
    """check_bot_api for a PTB Bot: getMe answers."""
    from telegram import Bot
    from telegram.error import TelegramError

    assert isinstance(bot, Bot)

    async def check() -> bool:
        try:
            await bot.get_me()
        except TelegramError:
            return False
        return True

    return check


__all__ = [
    "StoreGauges",
    "add_ops_routes",
    "bot_api_check",
    "metrics_middleware",
    "store_gauges",
]
