"""An aiohttp request layer for PTB: a `telegram.request.BaseRequest` on one ClientSession.

Why not PTB's default HTTPXRequest: under concurrency httpcore's connection-pool bookkeeping
dominates the bot's CPU (encode/httpx#3215); with 256 updates in flight an echo bot ran at
~250 updates/s on httpx and ~2,500/s on aiohttp on the same machine.

Timeouts map onto aiohttp's as follows: ``pool_timeout`` bounds the wait for a free connection
of the pool (aiohttp's ``connect``, which also covers establishing it), ``connect_timeout`` the
TCP connect (``sock_connect``), ``read_timeout`` the wait for each read of the answer
(``sock_read``). aiohttp has no write timeout; a Bot API request body is small, and the
pool/connect/read bounds keep every request finite. Timeouts raise `telegram.error.TimedOut`,
every other transport failure `telegram.error.NetworkError`, as HTTPXRequest does.

``server_error_retries=n`` sends a request again, up to n times with a growing pause, when
Telegram answered 5xx or the connection could not be opened: in both cases nothing was done,
so a reply is not lost to a passing outage (PTB retries only 429s). A timeout or a connection
lost after the request went out is not retried: Telegram may have sent the message, and a
customer must not read it twice.

``json_body=True`` sends the parameters as one JSON object (application/json, which the Bot
API accepts for every request without files; each value the JSON text PTB encoded) instead
of a urlencoded form: aiohttp's form encoding cost about a third of a notice send's CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

from bot.settings import Settings

__all__ = ["AiohttpRequest"]

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}


class AiohttpRequest(BaseRequest):
    """``AiohttpRequest(connection_pool_size=64, read_timeout=10, ...)``; same meaning of the
    arguments as HTTPXRequest's. The session is opened by `initialize` (PTB calls it from
    ``Bot.initialize``) or by the first request, and closed by `shutdown`; both may be called
    more than once, and `initialize` after `shutdown` opens a new one."""

    __slots__ = (
        "_connect_timeout",
        "_json_body",
        "_media_write_timeout",
        "_pool_size",
        "_pool_timeout",
        "_read_timeout",
        "_server_error_retries",
        "_session",
        "_write_timeout",
    )

    def __init__(
        self,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
        json_body: bool = False,
        server_error_retries: int = 0,
    ) -> None:
        if connection_pool_size < 1:
            raise ValueError("connection_pool_size must be at least 1")
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._json_body = json_body
        self._server_error_retries = server_error_retries
        self._session: aiohttp.ClientSession | None = None

    @property
    def connection_pool_size(self) -> int:
        return self._pool_size

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._open()

    async def shutdown(self) -> None:
        session = self._session
        if session is not None and not session.closed:
            await session.close()
            # Give the transports' close callbacks a turn, so nothing is reported unclosed.
            await asyncio.sleep(0)

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None:
            # Like HTTPXRequest, usable without initialize (a Bot that never ran initialize).
            session = self._open()
        elif session.closed:
            raise RuntimeError("This AiohttpRequest is shut down; initialize it again")
        if isinstance(read_timeout, DefaultValue):
            read_timeout = self._read_timeout
        if isinstance(connect_timeout, DefaultValue):
            connect_timeout = self._connect_timeout
        if isinstance(pool_timeout, DefaultValue):
            pool_timeout = self._pool_timeout
        # write_timeout is accepted for the interface; aiohttp has no such bound (see above).

        data: Any = None
        headers = None
        if request_data is not None:
            files = request_data.multipart_data
            if files:
                form = aiohttp.FormData(quote_fields=False)
                for name, value in request_data.json_parameters.items():
                    form.add_field(name, value)
                for name, (filename, content, mimetype) in files.items():
                    form.add_field(name, content, filename=filename, content_type=mimetype)
                data = form
            elif self._json_body:
                data = request_data.json_payload
                headers = _JSON
            else:
                data = request_data.json_parameters

        acquire = None
        if pool_timeout is not None or connect_timeout is not None:
            acquire = (pool_timeout or 0.0) + (connect_timeout or 0.0)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=acquire, sock_connect=connect_timeout, sock_read=read_timeout
        )
        # FormData can be sent only once: an upload is not retried.
        retries = 0 if isinstance(data, aiohttp.FormData) else self._server_error_retries
        for attempt in range(retries + 1):
            try:
                async with session.request(
                    method, url, data=data, headers=headers, timeout=timeout
                ) as response:
                    status, body = response.status, await response.read()
            except aiohttp.ClientConnectorError as err:
                if attempt < retries:
                    await asyncio.sleep(_pause(attempt))
                    continue
                raise NetworkError(f"aiohttp.{err.__class__.__name__}: {err}") from err
            except TimeoutError as err:
                # aiohttp's ServerTimeoutError and ConnectionTimeoutError are TimeoutErrors too.
                raise TimedOut from err
            except aiohttp.ClientError as err:
                raise NetworkError(f"aiohttp.{err.__class__.__name__}: {err}") from err
            if status < 500 or attempt == retries:
                return status, body
            # The method only: the URL carries the bot's token.
            log.info(
                "%s answered %s; trying again (%s of %s)",
                url.rsplit("/", 1)[-1],
                status,
                attempt + 1,
                retries,
            )
            await asyncio.sleep(_pause(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")


def _pause(attempt: int) -> float:
    return min(0.25 * 2**attempt, 2.0)


def request_for(
    settings: Settings,
    *,
    pool: int,
    read_timeout: float | None = None,
    json_body: bool = False,
    server_error_retries: int = 0,
) -> BaseRequest:
    """The HTTP layer REQUEST_LAYER names, with the bot's timeouts (read_timeout: default too);
    ``json_body`` and ``server_error_retries`` where the layer can (aiohttp)."""
    layer: Callable[..., BaseRequest] = (
        HTTPXRequest
        if settings.request_layer == "httpx"
        else partial(AiohttpRequest, json_body=json_body, server_error_retries=server_error_retries)
    )
    timeout = settings.request_timeout
    return layer(
        connection_pool_size=pool,
        read_timeout=timeout if read_timeout is None else read_timeout,
        write_timeout=timeout,
        connect_timeout=timeout,
        pool_timeout=timeout,
    )
