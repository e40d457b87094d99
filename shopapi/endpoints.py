"""The shop API's endpoints: what every route behind the bearer tokens shares. A route group
(shopapi.handlers, a platform's own group) registers its endpoints with ``add_endpoint``; the
request's token, rate, body and models are checked here, the work is done by the group's
``apply``, and a refusal is answered in one JSON form (``Refused``). The server that assembles
the groups into one application is shopapi.server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from bot.settings import Settings
from shopapi.auth import RateLimit, Tokens, retry_after
from shopapi.openapi import Endpoint
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


def _answer(
    status: int, errors: list[tuple[str, str]], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"errors": [{"field": f, "message": m} for f, m in errors]},
        status=status,
        headers=headers,
    )


@web.middleware
async def json_errors(
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
