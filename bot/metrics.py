"""The process's Prometheus metrics (prometheus-client), served at /metrics (shopapi/ops.py).

Counted where they happen, by one call each:
- updates handled, by kind, with their handling time (`timed`, in bot/updates.py);
- Bot API requests of the replies and of the notice sender, by method and outcome: ok, 429,
  5xx, 403, another 4xx status, timeout, network (`counted`, on the request layer each uses);
- the shop API's requests by endpoint, method and status (shopapi.ops.metrics_middleware).
The store's figures (outbox backlog, handoffs) are gauges read from the store at each scrape
(shopapi.ops), so every process reports the same shared numbers.

One registry of its own (`REGISTRY`), not the library's global one: what /metrics shows is
exactly this list, and a test reads a counter's value from it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from telegram import Update
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest

from bot.logs import UPDATE_CONTEXT

REGISTRY = CollectorRegistry(auto_describe=True)

UPDATES = Counter(
    "backorder_updates_handled",
    "Telegram updates handled, by kind (message, callback_query, ...)",
    ["kind"],
    registry=REGISTRY,
)
UPDATE_SECONDS = Histogram(
    "backorder_update_handling_seconds",
    "Time from an update's handling start to its end, by kind",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
TELEGRAM = Counter(
    "backorder_telegram_requests",
    "Bot API requests by channel (reply: the handlers' answers; notice: the notice sender),"
    " method and outcome (ok, 429, 5xx, 403, another 4xx status, timeout, network)",
    ["channel", "method", "outcome"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "backorder_api_requests",
    "HTTP requests to the shop API and the operators' endpoints, by endpoint, method, status",
    ["endpoint", "method", "status"],
    registry=REGISTRY,
)
API_SECONDS = Histogram(
    "backorder_api_request_seconds",
    "Time to answer an HTTP request of the shop API, by endpoint",
    ["endpoint"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "backorder_outbox_backlog", "Notices queued and not sent yet (pending)", registry=REGISTRY
)
OUTBOX_OLDEST_DUE = Gauge(
    "backorder_outbox_oldest_due_seconds",
    "How long the oldest notice that is due now has been due (0: none due)",
    registry=REGISTRY,
)
HANDOFFS_OPEN = Gauge("backorder_handoffs_open", "Handoffs to agents not closed", registry=REGISTRY)
HANDOFF_OLDEST_UNANSWERED = Gauge(
    "backorder_handoff_oldest_unanswered_seconds",
    "Age of the oldest escalation no agent has answered yet (0: none)",
    registry=REGISTRY,
)

T = TypeVar("T")
R = TypeVar("R", bound=BaseRequest)


def update_kind(update: object) -> str:
    """``message``, ``callback_query``, ...: the Update field that is set."""
    if isinstance(update, Update):
        for kind in Update.ALL_TYPES:
            if getattr(update, kind, None) is not None:
                return kind
    return "other"


async def timed(update: object, handling: Awaitable[T]) -> T:
    """Await an update's handling, counting it and its time by kind (failed ones too); the
    log lines written meanwhile carry its update and chat ids (bot.logs.UPDATE_CONTEXT)."""
    start = time.perf_counter()
    chat = update.effective_chat if isinstance(update, Update) else None
    token = UPDATE_CONTEXT.set(
        (update.update_id if isinstance(update, Update) else None, chat.id if chat else None)
    )
    try:
        return await handling
    finally:
        UPDATE_CONTEXT.reset(token)
        kind = update_kind(update)
        UPDATES.labels(kind).inc()
        UPDATE_SECONDS.labels(kind).observe(time.perf_counter() - start)


def outcome(status: int) -> str:
    if 200 <= status <= 299:
        return "ok"
    if status >= 500:
        return "5xx"
    return str(status)  # 429, 403, 400, ...


async def _counted_do_request(self: Any, url: str, method: str, *args: Any, **kwargs: Any) -> Any:
    api_method = url.rsplit("/", 1)[-1]  # the method only: the URL carries the token
    try:
        status, body = await super(type(self), self).do_request(url, method, *args, **kwargs)
    except TimedOut:
        TELEGRAM.labels(self.channel, api_method, "timeout").inc()
        raise
    except NetworkError:
        TELEGRAM.labels(self.channel, api_method, "network").inc()
        raise
    TELEGRAM.labels(self.channel, api_method, outcome(status)).inc()
    return status, body


_COUNTED: dict[tuple[type, str], type] = {}


def counted(request: R, channel: str) -> R:
    """``request`` with its Bot API outcomes counted under ``channel``. It stays an instance
    of its own class (a subclass with no state of its own), so whoever checks which layer the
    bot uses (REQUEST_LAYER) still finds it."""
    base = type(request)
    if base in _COUNTED.values():
        return request  # counted already
    cls = _COUNTED.get((base, channel))
    if cls is None:
        cls = _COUNTED[(base, channel)] = type(
            f"Counted{base.__name__}",
            (base,),
            {"__slots__": (), "channel": channel, "do_request": _counted_do_request},
        )
    request.__class__ = cls
    return request


def value(name: str, **labels: str) -> float:
    """A sample's current value (0 if it was never counted): for tests and benchmarks."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


__all__ = [
    "API_REQUESTS",
    "API_SECONDS",
    "HANDOFFS_OPEN",
    "HANDOFF_OLDEST_UNANSWERED",
    "OUTBOX_BACKLOG",
    "OUTBOX_OLDEST_DUE",
    "REGISTRY",
    "TELEGRAM",
    "UPDATES",
    "UPDATE_SECONDS",
    "counted",
    "timed",
    "update_kind",
    "value",
]
