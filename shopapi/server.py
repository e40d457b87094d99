"""The aiohttp server: the API's routes and whatever other route groups are given to it.

``build_web_app(settings, store, routes=[...])`` makes the application. The shop API's own
routes (``shopapi.handlers.shop_routes``) are always there; each of ``routes`` is a function
that adds its group to the application (``app.router.add_get(...)``), reaching the store,
settings and clock through ``app[API]`` (an ``ApiContext``). A group that wants its endpoints
in the OpenAPI document and behind the bearer tokens registers them with ``add_endpoint``; one
with its own authentication (a platform's signed webhooks) or none (an operator's probes) adds
plain aiohttp routes.

In the bot's process, ``attach_to_bot`` starts the server with the bot (after its post_init,
so the deep links carry the bot's own username) and stops it before the store closes;
``python -m shopapi`` runs it alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from bot.settings import Settings
from shopapi.auth import RateLimit, Tokens, parse_tokens, retry_after
from shopapi.openapi import Endpoint, document
from store.cli import FollowOnSettings, follow_on
from store.db import Store
from store.errors import Conflict, NotFound, StoreError, db_reason, is_busy

log = logging.getLogger("shopapi")

# A request's body: a batch of 1,000 order lines is about 100 KiB.
MAX_BODY_BYTES = 1024 * 1024
OPENAPI_PATH = "/api/openapi.json"


class Refused(Exception):
    """An answer other than 200: ``status`` with one message per field."""

    def __init__(
        self, status: int, errors: list[tuple[str, str]], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(errors[0][1] if errors else str(status))
        self.status = status
        self.errors = errors
        self.headers = headers or {}


def refused(error: StoreError, where: str, *, in_path: bool = False) -> Refused:
    """A store's refusal as an answer: what a path names and is missing is 404, a conflict
    with what the store holds 409, any other refusal of the request's content 422."""
    if isinstance(error, NotFound) and in_path:
        return Refused(404, [(where, str(error))])
    if isinstance(error, Conflict):
        return Refused(409, [(where, str(error))])
    return Refused(422, [(where, str(error))])


# The seconds this request waited for the follow-on work (its Server-Timing header).
FOLLOW_ON_SECONDS: ContextVar[float] = ContextVar("follow_on_seconds", default=0.0)


class FollowOn:
    """``store.cli.follow_on`` after each change, shared: a request that committed waits
    for a run that started after its commit; requests that commit while one runs share the
    next. Its failure (the store busy past its timeout) does not fail the change, which is
    committed: its marks stay, and the next run or the bot's own job does the work."""

    def __init__(self, store: Store, settings: FollowOnSettings, now: Callable[[], datetime]):
        self._store = store
        self._settings = settings
        self._now = now
        self._asked = 0
        self._done = 0
        self._task: asyncio.Task[None] | None = None

    async def settle(self) -> None:
        began = time.perf_counter()
        try:
            await self._settle()
        finally:
            FOLLOW_ON_SECONDS.set(FOLLOW_ON_SECONDS.get() + time.perf_counter() - began)

    async def _settle(self) -> None:
        self._asked += 1
        mine = self._asked
        while self._done < mine:
            if self._task is None:
                self._task = asyncio.create_task(self._run(self._asked))
            try:
                await asyncio.shield(self._task)
            except Exception:
                log.warning("api: follow-on work failed; the bot's job or the next change does it")
                return

    async def _run(self, upto: int) -> None:
        try:
            await follow_on(self._store, self._settings, now=self._now(), show=False)
            self._done = max(self._done, upto)
        finally:
            self._task = None


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    tokens: Tokens
    limit: RateLimit
    follow_on: FollowOn
    now: Callable[[], datetime]
    bot_username: Callable[[], str]
    endpoints: list[Endpoint] = field(default_factory=list)


API = web.AppKey("api", ApiContext)


def follow_on_settings(settings: Settings) -> FollowOnSettings:
    """The delay policy and notice settings, as backorder-admin reads them."""
    return FollowOnSettings(settings.delay_policy, settings.zone, settings.notice_threshold_days)


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
    from shopapi.handlers import shop_routes

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
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[*middlewares, _json_errors])
    app[API] = context
    shop_routes(app)
    for add in routes:
        add(app)
    app.router.add_get(OPENAPI_PATH, _openapi)
    return app


async def _openapi(request: web.Request) -> web.Response:
    doc = document(request.app[API].endpoints, title="backorder-bot shop API", version="1")
    return web.json_response(doc)


def _answer(
    status: int, errors: list[tuple[str, str]], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"errors": [{"field": f, "message": m} for f, m in errors]},
        status=status,
        headers=headers,
    )


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (no such path, method not allowed) in the API's JSON form."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if not request.path.startswith("/api/") or e.status < 400:
            raise
        return _answer(
            e.status,
            [("path", e.reason)],
            headers={"Allow": e.headers["Allow"]} if "Allow" in e.headers else None,
        )


def field_name(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _message(error: Any) -> str:
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("too_short", "string_too_short"):
        if isinstance(given, str):
            return "empty"
        n = ctx.get("min_length")
        return f"at least {n} item{'' if n == 1 else 's'}"
    if kind in ("too_long", "string_too_long"):
        if isinstance(given, str):
            return f"longer than {ctx.get('max_length'):,} characters ({len(given):,})"
        return f"more than {ctx.get('max_length'):,} items"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "not a whole number"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']:,}, got {given}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']:,}, got {given}"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "missing"
    return str(error["msg"]).removeprefix("Value error, ")


def validation_errors(
    e: ValidationError, prefix: tuple[int | str, ...] = ()
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for error in e.errors():
        message = _message(error)
        loc = (*prefix, *error["loc"])
        if not error["loc"] and ": " in message and message.split(": ", 1)[0].endswith("]"):
            # A rule over the whole list names its item itself ("orders[3]: duplicate id ...").
            where, message = message.split(": ", 1)
            out.append((where, message))
            continue
        out.append((field_name(loc), message))
    return out


def add_endpoint(
    app: web.Application,
    endpoint: Endpoint,
    apply: Callable[[ApiContext, Any, Any], Awaitable[BaseModel]],
) -> None:
    """Route ``endpoint`` behind the bearer tokens, the rate limit and the body limit, with
    its path and body validated by its models; ``apply(context, path, body)`` does the work
    and returns the answer (raising Refused or a StoreError for a refusal)."""
    context = app[API]
    context.endpoints.append(endpoint)

    async def handle(request: web.Request) -> web.StreamResponse:
        began = time.perf_counter()
        name = context.tokens.name_of(request.headers.get("Authorization"))
        if name is None:
            why = "no token" if "Authorization" not in request.headers else "wrong token"
            log.warning("api %s %s: 401 (%s)", request.method, endpoint.path, why)
            return _answer(
                401,
                [("Authorization", "a bearer token of this shop's API_TOKENS is needed")],
                headers={"WWW-Authenticate": "Bearer"},
            )
        FOLLOW_ON_SECONDS.set(0.0)
        try:
            answer = await _handle(context, endpoint, apply, name, request)
            response = web.json_response(answer.model_dump(mode="json"))
        except Refused as r:
            response = _answer(r.status, r.errors, r.headers)
        total = time.perf_counter() - began
        # For the shop system's own monitoring (and bench_api): the change and its follow-on.
        response.headers["Server-Timing"] = (
            f"total;dur={total * 1000:.1f}, follow-on;dur={FOLLOW_ON_SECONDS.get() * 1000:.1f}"
        )
        log.info(
            "api %s %s by %s: %d in %.1f ms",
            request.method,
            endpoint.path,
            name,
            response.status,
            total * 1000,
        )
        return response

    app.router.add_route(endpoint.method, endpoint.path, handle)


async def _handle(
    context: ApiContext,
    endpoint: Endpoint,
    apply: Callable[[ApiContext, Any, Any], Awaitable[BaseModel]],
    name: str,
    request: web.Request,
) -> BaseModel:
    wait = context.limit.take(name)
    if wait:
        raise Refused(
            429,
            [("Authorization", f"more than {context.limit.rate:g} requests a second")],
            headers={"Retry-After": retry_after(wait)},
        )
    now = context.now()
    path = body = None
    if endpoint.path_model is not None:
        try:
            path = endpoint.path_model.model_validate(
                dict(request.match_info), strict=False, context={"now": now}
            )
        except ValidationError as e:
            raise Refused(422, validation_errors(e)) from None
    if endpoint.body is not None:
        body = await _body(request, endpoint.body, now)
    try:
        try:
            return await apply(context, path, body)
        except IntegrityError:
            # Another request inserted the same id between this one's check and its insert
            # (two processes, or PostgreSQL's concurrent transactions): this one's transaction
            # was rolled back whole, and once more it finds that id, as a replay does.
            return await apply(context, path, body)
    except StoreError as e:
        raise refused(e, "body") from None
    except DBAPIError as e:
        if is_busy(e):
            raise Refused(
                503,
                [("body", "the store is busy with another writer; nothing written, try again")],
                headers={"Retry-After": "1"},
            ) from None
        log.error("api %s %s: the store failed: %s", request.method, endpoint.path, db_reason(e))
        raise Refused(503, [("body", "the store failed; nothing written")]) from None
    except SQLAlchemyError as e:
        log.error("api %s %s: the store failed: %s", request.method, endpoint.path, db_reason(e))
        raise Refused(503, [("body", "the store failed; nothing written")]) from None


async def _body(request: web.Request, model: type[BaseModel], now: datetime) -> BaseModel:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Refused(413, [("body", f"larger than {MAX_BODY_BYTES:,} bytes")])
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, [("body", f"larger than {MAX_BODY_BYTES:,} bytes")]) from None
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise Refused(400, [("body", f"not JSON: {str(e)[:100]}")]) from None
    if not isinstance(parsed, dict):
        raise Refused(422, [("body", "must be a JSON object")])
    try:
        return model.model_validate(parsed, context={"now": now})
    except ValidationError as e:
        raise Refused(422, validation_errors(e)) from None


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
