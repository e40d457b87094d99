"""The aiohttp server: the API's routes and whatever other route groups are given to it.

``build_web_app(settings, store, routes=[...])`` makes the application. The shop API's own
routes (``shopapi.handlers.shop_routes``) are always there; each of ``routes`` is a function
that adds its group to the application (``app.router.add_get(...)``), reaching the store,
settings and clock through ``app[API]`` (an ``ApiContext``). A group that wants its endpoints
in the OpenAPI document and behind the bearer tokens registers them with
``shopapi.endpoints.add_endpoint``; one with its own authentication (a platform's signed
webhooks) or none (an operator's probes) adds plain aiohttp routes.

In the bot's process, ``attach_to_bot`` starts the server with the bot (after its post_init,
so the deep links carry the bot's own username) and stops it before the store closes;
``python -m shopapi`` runs it alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.settings import Settings
from shopapi.auth import RateLimit, Tokens, parse_tokens
from shopapi.endpoints import (
    API,
    MAX_BODY_BYTES,
    OPENAPI_PATH,
    ApiContext,
    FollowOn,
    follow_on_settings,
    json_errors,
)
from shopapi.handlers import shop_routes
from shopapi.openapi import document
from store.db import Store

log = logging.getLogger("shopapi")


def build_web_app(
    settings: Settings,
    store: Store,
    *,
    routes: Sequence[Callable[[web.Application], None]] = (),
    now: Callable[[], datetime] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    bot_username: Callable[[], str] | None = None,
    middlewares: Sequence[Any] = (),
) -> web.Application:
    """The API server's application: the shop API under /api/ with its OpenAPI document at
    /api/openapi.json, then each of ``routes`` (a function adding its group of routes).
    ``now`` (aware UTC) is the clock requests are checked against and the follow-on runs at;
    ``monotonic`` paces each token's rate; ``bot_username`` gives the username deep links
    name (default: BOT_USERNAME); ``middlewares`` run around every route (the operators'
    request metrics)."""
    clock = now or (lambda: datetime.now(UTC))
    rate = settings.api_rate_per_second
    context = ApiContext(
        settings=settings,
        store=store,
        tokens=Tokens(parse_tokens(settings.api_tokens.get_secret_value())),
        limit=RateLimit(rate, max(1.0, rate), monotonic),
        follow_on=FollowOn(store, follow_on_settings(settings), clock),
        now=clock,
        bot_username=bot_username or (lambda: settings.bot_username),
    )
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[*middlewares, json_errors])
    app[API] = context
    shop_routes(app)
    for add in routes:
        add(app)
    app.router.add_get(OPENAPI_PATH, _openapi)
    return app


async def _openapi(request: web.Request) -> web.Response:
    doc = document(request.app[API].endpoints, title="backorder-bot shop API", version="1")
    return web.json_response(doc)


async def start_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port (0: any free port) until ``runner.cleanup()``."""
    # No access log: the API logs each request itself, with the integration's name.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def served_beside(
    settings: Settings, store: Store, check_bot_api: Callable[[], Awaitable[bool]]
) -> list[Callable[[web.Application], None]]:
    """The route groups served on API_PORT beside the shop API: the operators' /healthz,
    /readyz and /metrics (shopapi.ops), and Shopify's webhooks when SHOPIFY_WEBHOOK_SECRET is
    set (shopapi.shopify)."""
    from shopapi.ops import add_ops_routes
    from shopapi.shopify import add_shopify_routes, store_follow_on

    groups: list[Callable[[web.Application], None]] = [
        lambda app: add_ops_routes(app, store=store, check_bot_api=check_bot_api)
    ]
    if settings.shopify_webhook_secret is not None:
        secret = settings.shopify_webhook_secret.get_secret_value()
        groups.append(
            lambda app: add_shopify_routes(
                app, store=store, secret=secret, follow_on=store_follow_on(store)
            )
        )
    return groups


def attach_to_bot(bot_app: Any, settings: Settings, store: Store) -> None:
    """Run the API server in the bot's process (its event loop) from the bot's post_init to
    its post_shutdown, the server stopping before the store closes; the operators' endpoints
    and Shopify's webhooks beside it (``served_beside``)."""
    from shopapi.ops import bot_api_check, metrics_middleware

    started, stopped = bot_app.post_init, bot_app.post_shutdown
    runner: list[web.AppRunner] = []

    async def post_init(app: Any) -> None:
        if started is not None:
            await started(app)
        web_app = build_web_app(
            settings,
            store,
            routes=served_beside(settings, store, bot_api_check(app.bot)),
            bot_username=lambda: str(app.bot.username),
            middlewares=[metrics_middleware],
        )
        assert settings.api_port is not None
        runner.append(await start_server(web_app, settings.api_listen, settings.api_port))
        log.info("api: listening on %s:%d", settings.api_listen, settings.api_port)

    async def post_shutdown(app: Any) -> None:
        for r in runner:
            await r.cleanup()
        if stopped is not None:
            await stopped(app)

    bot_app.post_init = post_init
    bot_app.post_shutdown = post_shutdown
