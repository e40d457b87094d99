"""The outside measure of a write transaction's length on a SQLite file: another process asks
for the write lock (BEGIN IMMEDIATE, then ROLLBACK) every 20 ms and records how long it
waited. Shared by the benches of issue #14."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Event
from pathlib import Path


def lock_probe(path: str, stop: Event, out: mp.Queue, busy_handler: bool = False) -> None:  # type: ignore[type-arg]
    """Puts the list of (when it asked, wall clock; how long it waited) on ``out`` once
    ``stop`` is set. Polled every half millisecond, as the project's own writers poll
    (store.db.WRITE_POLL_SECONDS), so a wait is the length of what held the lock. With
    ``busy_handler``, SQLite's own handler waits instead, as a tool (the sqlite3 shell) would:
    it sleeps up to 100 ms between its tries, so its waits come in steps of 128, 178, 228,
    328 ... ms whatever the lock's true length, and a short gap between batches is missed."""
    conn = sqlite3.connect(path, timeout=3600 if busy_handler else 0, isolation_level=None)
    waits: list[tuple[float, float]] = []
    while not stop.is_set():
        t = time.perf_counter()
        asked = time.time()
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.0005)
        waits.append((asked, time.perf_counter() - t))
        conn.execute("ROLLBACK")
        time.sleep(0.02)
    conn.close()
    out.put(waits)


def probed_worker(
    db: str,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    phases: Sequence[tuple[str, str, str]],
) -> None:
    """Run the worker ``argv`` (a bench's measured part, in a process of its own) while
    `lock_probe` asks for ``db``'s write lock. The worker's lines are printed, but for its
    marks (``@name <time.time()>``); for each phase (what, from mark, to mark) the probe's
    longest wait and p99 in it."""
    stop = mp.Event()
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    prober = mp.Process(target=lock_probe, args=(db, stop, q))
    prober.start()
    t = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    marks: dict[str, float] = {}
    for line in (done.stdout + done.stderr).strip().splitlines():
        if line.startswith("@"):
            name, at = line[1:].split()
            marks[name] = float(at)
        else:
            print(f"  | {line[:220]}")
    print(f"  wall {took:.1f} s (the worker, with opening the store), exit {done.returncode}")
    stop.set()
    asked = q.get()
    prober.join()
    for what, lo, hi in phases:
        if lo in marks and hi in marks:
            during = sorted(w for at, w in asked if marks[lo] - 0.05 <= at <= marks[hi])
            if during:
                print(
                    f"  probe, {what}: longest BEGIN IMMEDIATE wait {during[-1] * 1000:.0f} ms,"
                    f" p99 {during[int(len(during) * 0.99)] * 1000:.0f} ms ({len(during)} waits)"
                )
