"""Telegram's flood limits and injected faults."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

FaultKind = Literal["429", "5xx", "slow", "drop", "drop_after", "hold"]
FAULT_KINDS: tuple[str, ...] = ("429", "5xx", "slow", "drop", "drop_after", "hold")


@dataclass
class Limits:
    """Flood limits; rates are tokens per second, bursts the bucket size."""

    enabled: bool = True
    private_per_sec: float = 1.0
    private_burst: int = 3
    group_per_min: float = 20.0
    group_burst: int = 20
    global_per_sec: float = 30.0
    global_burst: int = 30

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Bucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is free (0 when one is free now)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            return 0.0
        return (1 - self.tokens) / self.rate if self.rate > 0 else 3600.0

    def take(self) -> None:
        self.tokens -= 1


class RateLimiter:
    """Token buckets per chat and one global; a send that finds no token gets a retry_after."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._chats: dict[int, _Bucket] = {}
        self._global: _Bucket | None = None

    def configure(self, **changes: Any) -> Limits:
        for key, value in changes.items():
            if value is None:
                continue
            if not hasattr(self.limits, key):
                raise ValueError(f"unknown limit {key!r}")
            setattr(self.limits, key, type(getattr(self.limits, key))(value))
        self.reset()
        return self.limits

    def reset(self) -> None:
        self._chats.clear()
        self._global = None

    def check(self, chat_id: int, is_private: bool, count_chat: bool = True) -> int:
        """Take a token for the chat (and the global bucket); return 0 or seconds to retry."""
        lim = self.limits
        if not lim.enabled:
            return 0
        now = time.monotonic()
        if self._global is None:
            self._global = _Bucket(lim.global_per_sec, lim.global_burst, now)
        wait = self._global.wait_time(now)
        bucket: _Bucket | None = None
        if count_chat:
            bucket = self._chats.get(chat_id)
            if bucket is None:
                if len(self._chats) > 100_000:
                    self._chats.clear()  # full buckets carry no state worth keeping
                if is_private:
                    bucket = _Bucket(lim.private_per_sec, lim.private_burst, now)
                else:
                    bucket = _Bucket(lim.group_per_min / 60.0, lim.group_burst, now)
                self._chats[chat_id] = bucket
            wait = max(wait, bucket.wait_time(now))
        if wait > 0:
            return max(1, math.ceil(wait))
        self._global.take()
        if bucket is not None:
            bucket.take()
        return 0


@dataclass
class Fault:
    kind: str
    method: str | None = None  # lower-case Bot API method name, None for every method
    chat_id: int | None = None  # only calls whose chat_id is this chat, None for every call
    count: int | None = None  # calls left, None for unlimited within the duration
    until: float | None = None  # monotonic deadline
    retry_after: int = 5
    delay: float = 1.0
    status: int = 500
    id: int = 0
    hits: int = 0
    held: int = 0  # "hold": calls waiting now for the fault's release
    # "hold": set by release (or clear): the held calls go on, the later ones pass through.
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    def public(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "released"}
        d["remaining_seconds"] = (
            None if self.until is None else max(0.0, self.until - time.monotonic())
        )
        del d["until"]
        return d


@dataclass
class FaultInjector:
    faults: list[Fault] = field(default_factory=list)
    _next_id: int = 1

    def add(
        self,
        kind: str,
        method: str | None = None,
        count: int | None = None,
        duration: float | None = None,
        retry_after: int = 5,
        delay: float = 1.0,
        status: int = 500,
        chat_id: int | None = None,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if count is None and duration is None:
            count = 1
        fault = Fault(
            kind=kind,
            method=method.lower() if method else None,
            count=count,
            until=None if duration is None else time.monotonic() + duration,
            retry_after=retry_after,
            delay=delay,
            status=status,
            chat_id=chat_id,
            id=self._next_id,
        )
        self._next_id += 1
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        for fault in self.faults:
            fault.released.set()
        self.faults.clear()

    def release(self, fault_id: int) -> Fault | None:
        """Let the calls a "hold" fault holds go on; the fault ends."""
        for fault in self.faults:
            if fault.id == fault_id:
                fault.released.set()
                return fault
        return None

    async def hold(self, fault: Fault) -> None:
        """A "hold" fault's call waits here until the fault is released."""
        fault.held += 1
        try:
            await fault.released.wait()
        finally:
            fault.held -= 1

    def take(self, method: str, chat_id: object = None) -> Fault | None:
        """The first live fault for this method (and this call's chat, for faults scoped to
        one), consuming one of its calls. A fault used up stays listed while it holds calls."""
        now = time.monotonic()

        def live(f: Fault) -> bool:
            return (
                (f.count is None or f.count > 0)
                and (f.until is None or f.until > now)
                and not f.released.is_set()
            )

        self.faults = [f for f in self.faults if f.held or live(f)]
        for fault in self.faults:
            if not live(fault):
                continue
            if fault.method is not None and fault.method != method:
                continue
            if fault.chat_id is not None and str(fault.chat_id) != str(chat_id):
                continue
            if fault.count is not None:
                fault.count -= 1
            fault.hits += 1
            return fault
        return None
