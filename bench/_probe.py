"""The outside measure of a write transaction's length on a SQLite file: another process asks
for the write lock (BEGIN IMMEDIATE, then ROLLBACK) every 20 ms and records how long it
waited. Shared by the benches of issue #14."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from multiprocessing.synchronize import Event


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
