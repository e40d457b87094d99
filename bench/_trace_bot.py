# ruff: noqa: E501  (a hand-run probe: long report lines)
"""run_bot.py with the stages of the bot's work timed, for the benchmarks (--trace): where
does an update wait? Every 10 s it prints to stderr (the bot's log), per stage, how many,
p50/p99/max in ms and the total seconds:

- ``writer-queue``: waiting for the Store's own writer lock (this process's writers, one at a
  time on SQLite); ``file-lock``: the BEGIN IMMEDIATE (waiting for another process's write
  lock); ``held``: from BEGIN to the end of the transaction; each by caller (module:function);
- ``small-inline`` / ``small-pool``: Store.begin_small on the loop's thread or through the pool;
- ``inbox-save``: a fetched batch saved; ``handler``: an update's handling; ``queued``: an
  update's wait from its batch's save to its handling's start;
- ``tick-policy`` / ``tick-deliver``: the scheduler's follow-on and its deliveries;
- ``loop-lag``: how late a 10 ms timer fires (the event loop busy between awaits).

Monkeypatches only; the bot's code is unchanged.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bot.inbox  # noqa: E402
import bot.notices  # noqa: E402
import bot.updates  # noqa: E402
import store.db  # noqa: E402

SAMPLES: dict[str, list[float]] = defaultdict(list)
_arrived: dict[int, float] = {}
_started = False


def note(stage: str, seconds: float) -> None:
    SAMPLES[stage].append(seconds)


def _caller(depth: int = 3) -> str:
    frame = sys._getframe(depth)
    for _ in range(6):
        mod = frame.f_globals.get("__name__", "?")
        if mod not in ("contextlib", "store.db", __name__):
            return f"{mod}:{frame.f_code.co_name}"
        if frame.f_back is None:
            break
        frame = frame.f_back
    return "?"


_cpu = [time.process_time(), 0.0, time.monotonic()]


def _report() -> None:
    got = {k: v for k, v in SAMPLES.items() if v}
    SAMPLES.clear()
    cpu, loop = time.process_time(), time.thread_time()
    wall = time.monotonic()
    handled = len(got.get("handler", ()))
    lines = [
        f"TRACE {time.strftime('%H:%M:%S')} cpu {cpu - _cpu[0]:.2f} s (loop thread"
        f" {loop - _cpu[1]:.2f} s) in {wall - _cpu[2]:.1f} s wall, {handled} updates:"
        f" {(cpu - _cpu[0]) / max(1, handled) * 1e3:.2f} ms cpu/update"
    ]
    _cpu[:] = [cpu, loop, wall]
    for stage in sorted(got):
        v = sorted(got[stage])
        n = len(v)
        lines.append(
            f"  {stage:60s} n={n:6d} p50={v[n // 2] * 1e3:8.1f} p99={v[min(n - 1, int(n * 0.99))] * 1e3:8.1f}"
            f" max={v[-1] * 1e3:8.1f} sum={sum(v):7.2f}s"
        )
    print("\n".join(lines), file=sys.stderr, flush=True)


_beat = [time.monotonic()]
STALLS: dict[str, int] = defaultdict(int)


def _watchdog(main_id: int) -> None:
    """While the loop is more than 50 ms late, sample what its thread runs every 10 ms."""
    while True:
        time.sleep(0.01)
        if time.monotonic() - _beat[0] < 0.05:
            continue
        frame = sys._current_frames().get(main_id)
        chain: list[str] = []
        while frame is not None and len(chain) < 40:
            mod = frame.f_globals.get("__name__", "?")
            if mod.startswith(("bot", "store")) and mod != __name__:
                chain.append(f"{mod}:{frame.f_code.co_name}:{frame.f_lineno}")
            frame = frame.f_back
        STALLS[" < ".join(chain[:4]) or "(outside bot/store)"] += 1


def _report_stalls() -> None:
    top = sorted(STALLS.items(), key=lambda kv: -kv[1])[:8]
    STALLS.clear()
    for where, n in top:
        print(f"  STALL x{n:4d} (10 ms each): {where}", file=sys.stderr, flush=True)


async def _monitor() -> None:
    import threading

    threading.Thread(target=_watchdog, args=(threading.get_ident(),), daemon=True).start()
    _cpu[1] = time.thread_time()
    last = time.monotonic()
    while True:
        t = time.monotonic()
        _beat[0] = t
        await asyncio.sleep(0.01)
        _beat[0] = time.monotonic()
        note("loop-lag", time.monotonic() - t - 0.01)
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            _report()
            _report_stalls()


_orig_begin = store.db.Store.begin


class TimedLock(asyncio.Lock):
    acquired_at = 0.0

    async def acquire(self) -> Any:
        got = await super().acquire()
        self.acquired_at = time.perf_counter()
        return got


_Turns = getattr(store.db, "_WriterTurns", None)
if _Turns is not None:  # the writers' turns of this checkout: timed in place
    _orig_acquire = _Turns.acquire

    async def _timed_acquire(self: Any) -> None:
        await _orig_acquire(self)
        self.acquired_at = time.perf_counter()

    _Turns.acquire = _timed_acquire


@asynccontextmanager
async def begin(self: Any, **options: Any) -> Any:
    global _started
    if not _started:
        _started = True
        asyncio.get_running_loop().create_task(_monitor())
    who = _caller()
    lock = self._one_writer
    if type(lock) is asyncio.Lock and not lock.locked():
        lock = self._one_writer = TimedLock()
    t0 = time.perf_counter()
    async with _orig_begin(self, **options) as conn:
        t2 = time.perf_counter()
        t1 = getattr(lock, "acquired_at", t0)
        note(f"writer-queue {who}", t1 - t0)
        note(f"file-lock {who}", t2 - t1)
        try:
            yield conn
        finally:
            note(f"held {who}", time.perf_counter() - t2)


store.db.Store.begin = begin  # type: ignore[method-assign]

_orig_small = store.db.Store.begin_small


@asynccontextmanager
async def begin_small(self: Any, *, counted: bool = True) -> Any:
    who = _caller()
    t0 = time.perf_counter()
    async with _orig_small(self, counted=counted) as conn:
        kind = "small-inline" if type(conn).__name__ == "_InlineConnection" else "small-pool"
        note(f"{kind}-begin {who}", time.perf_counter() - t0)
        yield conn
    note(f"{kind}-total {who}", time.perf_counter() - t0)


store.db.Store.begin_small = begin_small  # type: ignore[method-assign]

_orig_read = store.db.Store.read
_orig_connect = store.db.Store.connect
_pooled = [0]


@asynccontextmanager
async def connect(self: Any) -> Any:
    _pooled[0] += 1
    async with _orig_connect(self) as conn:
        yield conn


async def read(self: Any, query: Any) -> Any:
    t, before = time.perf_counter(), _pooled[0]
    try:
        return await _orig_read(self, query)
    finally:
        note("read-pool" if _pooled[0] != before else "read-inline", time.perf_counter() - t)


store.db.Store.read = read  # type: ignore[method-assign]
store.db.Store.connect = connect  # type: ignore[method-assign]

_orig_received = bot.inbox.Inbox.received


async def received(self: Any, updates: list[dict[str, Any]]) -> None:
    t = time.perf_counter()
    await _orig_received(self, updates)
    done = time.perf_counter()
    note("inbox-save", done - t)
    for u in updates:
        _arrived[int(u["update_id"])] = done


bot.inbox.Inbox.received = received  # type: ignore[method-assign]

_orig_timed = bot.updates.timed


async def timed(update: Any, handling: Any) -> Any:
    t = time.perf_counter()
    arrived = _arrived.pop(getattr(update, "update_id", -1), None)
    if arrived is not None:
        note("queued", t - arrived)
    try:
        return await _orig_timed(update, handling)
    finally:
        note("handler", time.perf_counter() - t)


bot.updates.timed = timed

_orig_run_policy = bot.notices.run_policy
_orig_deliver = bot.notices.deliver_due


async def run_policy(app: Any) -> None:
    t = time.perf_counter()
    try:
        await _orig_run_policy(app)
    finally:
        note("tick-policy", time.perf_counter() - t)


async def deliver_due(app: Any, **kw: Any) -> Any:
    t = time.perf_counter()
    try:
        return await _orig_deliver(app, **kw)
    finally:
        note("tick-deliver", time.perf_counter() - t)


bot.notices.run_policy = run_policy
bot.notices.deliver_due = deliver_due

if __name__ == "__main__":
    import runpy

    sys.argv = [str(ROOT / "run_bot.py")]
    runpy.run_path(str(ROOT / "run_bot.py"), run_name="__main__")
