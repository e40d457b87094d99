"""The HTTP server: the Bot API, the control API, the playground and webhook delivery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from sandbox import _control
from sandbox._botapi import FILE_MARK, UPLOAD_SIZE, Params, call
from sandbox._limits import Limits
from sandbox._world import ApiError, Settings, World, now

_STATIC = Path(__file__).parent / "static"
_LOG = logging.getLogger("sandbox")
_MAX_LOGGED_VALUE = 300  # characters of a parameter kept in the call log


class Sandbox:
    """A local Telegram Bot API with a control API for tests, the playground and benchmarks."""

    def __init__(
        self,
        token: str = "123456:SANDBOX-TOKEN",
        bot_username: str = "backorder_demo_bot",
        bot_first_name: str = "Backorder Demo",
        settings: Settings | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.token = token
        self._world = World(token, bot_username, bot_first_name, settings or Settings())
        if limits is not None:
            self._world.limiter.limits = limits
        self._runner: web.AppRunner | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._closing = False
        self._host = "127.0.0.1"
        self._port = 0

    @property
    def settings(self) -> Settings:
        return self._world.settings

    @property
    def limits(self) -> Limits:
        return self._world.limiter.limits

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self._host}:{self._port}"

    @property
    def api_base(self) -> str:
        """The value for PTB's ``ApplicationBuilder().base_url(...)``."""
        return f"{self.url}/bot"

    @property
    def file_base(self) -> str:
        """The value for PTB's ``ApplicationBuilder().base_file_url(...)``."""
        return f"{self.url}/file/bot"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(
            client_max_size=50 * 1024 * 1024, middlewares=[_control.control_errors]
        )
        _control.install(app, self._world)
        app.router.add_route("*", "/bot{token}/{method}", self._bot_api)
        app.router.add_get("/file/bot{token}/{path:.*}", self._file)
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", _STATIC)
        # Long polls end at shutdown on their own; a short grace period is enough.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self._host = host
        self._port = int(runner.addresses[0][1])
        self._closing = False
        self._delivery = asyncio.create_task(self._deliver_webhooks())

    async def stop(self) -> None:
        self._closing = True
        self._world.closing = True
        self._world.updates_signal.fire()
        self._world.messages_signal.fire()
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
            self._delivery = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Sandbox:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- HTTP handlers -------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(_STATIC / "index.html")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response(_unauthorized(), status=401)
        return web.Response(body=b"FAKE", content_type="application/octet-stream")

    async def _bot_api(self, request: web.Request) -> web.StreamResponse:
        world = self._world
        if request.match_info["token"] != self.token:
            return web.json_response(_unauthorized(), status=401)
        method = request.match_info["method"]
        try:
            raw = await _read_params(request)
        except ApiError as err:
            world.log_call(method, {}, err.code, err.description)
            return web.json_response(err.payload(), status=err.code)
        fault = world.faults.take(method.lower(), raw.get("chat_id"))
        if fault is not None:
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "hold":
                await world.faults.hold(fault)
            elif fault.kind == "drop":
                world.log_call(method, _loggable(raw), 0, "connection dropped (fault)")
                return _drop(request)
            elif fault.kind == "429":
                flood = ApiError(
                    429,
                    f"Too Many Requests: retry after {fault.retry_after}",
                    retry_after=fault.retry_after,
                )
                world.log_call(method, _loggable(raw), 429, flood.description)
                return web.json_response(flood.payload(), status=429)
            elif fault.kind == "5xx":
                description = "Bad Gateway" if fault.status == 502 else "Internal Server Error"
                world.log_call(method, _loggable(raw), fault.status, description)
                body = {"ok": False, "error_code": fault.status, "description": description}
                return web.json_response(body, status=fault.status)
        try:
            result = await call(world, method, Params(raw))
        except ApiError as err:
            world.log_call(method, _loggable(raw), err.code, err.description)
            return web.json_response(err.payload(), status=err.code)
        except Exception:
            _LOG.exception("sandbox failed on %s", method)
            world.log_call(method, _loggable(raw), 500, "Internal Server Error")
            body = {"ok": False, "error_code": 500, "description": "Internal Server Error"}
            return web.json_response(body, status=500)
        world.log_call(method, _loggable(raw), 200, "")
        if fault is not None and fault.kind == "drop_after":
            return _drop(request)
        return web.json_response(
            {"ok": True, "result": result}, dumps=lambda o: json.dumps(o, ensure_ascii=False)
        )

    # --- webhooks ------------------------------------------------------------------------

    async def _deliver_webhooks(self) -> None:
        """Post queued updates to the webhook one at a time, in order, retrying on failure."""
        world = self._world
        backoff = 0.0
        async with aiohttp.ClientSession() as session:
            while not self._closing:
                hook = world.webhook
                if hook is None or not world.updates:
                    await world.updates_signal.wait_for(
                        lambda: (
                            self._closing or (world.webhook is not None and bool(world.updates))
                        ),
                        60.0,
                    )
                    continue
                update = world.updates[0]
                headers = {}
                if hook.secret_token:
                    headers["X-Telegram-Bot-Api-Secret-Token"] = hook.secret_token
                error: str
                try:
                    async with session.post(
                        hook.url,
                        json=update,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as resp:
                        await resp.read()
                        if 200 <= resp.status < 300:
                            if world.updates and world.updates[0] is update:
                                world.updates.popleft()
                            backoff = 0.0
                            continue
                        error = f"Wrong response from the webhook: {resp.status} {resp.reason}"
                except aiohttp.ClientConnectorError:
                    error = "Connection refused"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = f"Connection error: {type(exc).__name__}"
                hook.last_error_date = now()
                hook.last_error_message = error
                backoff = min(2.0, backoff * 2 or 0.05)
                await asyncio.sleep(backoff)


def _unauthorized() -> dict[str, Any]:
    return {"ok": False, "error_code": 401, "description": "Unauthorized"}


def _drop(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Nothing reaches the client; the response only satisfies aiohttp.
    return web.Response(status=204)


async def _read_params(request: web.Request) -> dict[str, Any]:
    raw: dict[str, Any] = dict(request.query)
    if not request.can_read_body:
        return raw
    ctype = request.content_type
    if ctype == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse JSON object") from None
        if isinstance(body, dict):
            raw.update(body)
    elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            raw[key] = FILE_MARK if isinstance(value, web.FileField) else value
            if isinstance(value, web.FileField):
                # What was uploaded, kept as its size (the message's file_size) for tests.
                raw[UPLOAD_SIZE + key] = len(value.file.read())
    return raw


def _loggable(raw: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        if isinstance(value, str) and len(value) > _MAX_LOGGED_VALUE:
            value = value[:_MAX_LOGGED_VALUE] + "…"
        out[key] = value
    return out
