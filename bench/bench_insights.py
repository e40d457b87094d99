"""Issue #18: computing the suppliers' track records and every waiting line's cause on a large
store, and how long that keeps other writers waiting. Run by hand; prints figures, asserts
nothing.

    .venv/bin/python bench/bench_insights.py STORE.sqlite3 [--batch 500] [--history 500]

STORE is a demo store (e.g. /tmp/bench-large.sqlite3, the 1M-order one); the run works on a
COPY of it in a temporary folder and never opens the original. The copy is migrated, given
the demo's supplier habits as a history of past deliveries (store.demo.HABITS, HISTORY per
supplier on its own SKUs: the 1M-order demo makes 500) unless it has one, and then:

1. refresh_records: every supplier's and SKU's record, read without the write lock, written
   in batches;
2. refresh_causes: the causes of every waiting line, BATCH SKUs a range, each range read
   without the lock and written in a transaction of its own;
3. snapshot_causes and the alerts' conditions (read) for the digest.

Meanwhile a probe process asks for the write lock (BEGIN IMMEDIATE, then ROLLBACK) every 20 ms:
the longest it waited is the longest time the refresh kept another writer (the bot) waiting.

Figures (2026-12-02, 2 shared cores, load 9-12 from other work; /tmp/bench-large.sqlite3:
1,698,340 waiting lines, 31,263 SKU/restock pairs, 6,000 past deliveries added):

| run | records | causes (40 batches of 500 SKUs) | longest write | probe's longest wait (p99) |
|---|---|---|---|---|
| batches of 2,000 SKUs, records 2,000 | 2.09 s | 7.69 s | 421 ms | 489 ms (86 ms) |
| 500 / 1,000 (5 runs) | 1.3-2.2 s | 2.5-9.0 s | 42-477 ms | 143-469 ms (12-44 ms) |
| 500 / 500 (2 runs) | 1.5-1.7 s | 2.4-2.9 s | 38-91 ms | 27-659 ms (10-27 ms) |

The probe's longest waits beyond the longest write are the machine's: its own 20 ms sleeps
ended up to 231 ms late in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from multiprocessing.synchronize import Event
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from store import open_store  # noqa: E402
from store.demo import _slip  # noqa: E402
from store.insights import (  # noqa: E402
    CAUSE_BATCH,
    alert_conditions,
    refresh_causes,
    refresh_records,
    snapshot_causes,
)


def probe(path: str, stop: Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    conn = sqlite3.connect(path, timeout=3600, isolation_level=None)
    waits: list[float] = []
    late: list[float] = []  # how much later than asked its sleeps ended: the machine's noise
    while not stop.is_set():
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        waits.append(time.perf_counter() - t)
        conn.execute("ROLLBACK")
        t = time.perf_counter()
        time.sleep(0.02)
        late.append(time.perf_counter() - t - 0.02)
    conn.close()
    out.put((waits, late))


def add_history(path: Path, per_supplier: int, seed: int = 7) -> int:
    """The demo's supplier habits as past deliveries, on a store made before they existed."""
    conn = sqlite3.connect(path)
    have = conn.execute("SELECT count(*) FROM restocks WHERE restock_id LIKE 'HIST-%'").fetchone()[
        0
    ]
    if have:
        conn.close()
        return 0
    skus = [r[0] for r in conn.execute("SELECT sku FROM products ORDER BY rowid")]
    rng = random.Random(seed + 18)
    today = date.today()
    rows, changes = [], []
    for supplier in range(1, 13):
        own = skus[supplier - 1 :: 12]
        for n in range(per_supplier):
            first = today - timedelta(days=rng.randint(60, 400))
            arrived = first + timedelta(days=_slip(rng, supplier))
            created = first - timedelta(days=14 + supplier)
            rid = f"HIST-{supplier:02d}-{n:05d}"
            received = datetime.combine(arrived, dtime(10)).isoformat(sep=" ")
            rows.append(
                (rid, f"SUP-{supplier:02d}", rng.choice(own), 10, arrived.isoformat(),
                 "received", 10, received,
                 datetime.combine(created, dtime(9)).isoformat(sep=" "), received)
            )  # fmt: skip
            if arrived > first and rng.random() < 0.7:
                when = datetime.combine(first - timedelta(days=2), dtime(8)).isoformat(sep=" ")
                changes.append(
                    (rid, first.isoformat(), arrived.isoformat(), "supplier delay", when)
                )
    conn.executemany(
        "INSERT INTO restocks (restock_id, supplier_id, sku, qty, expected_date, status,"
        " qty_received, received_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.executemany(
        "INSERT INTO restock_date_changes (restock_id, old_date, new_date, reason, changed_at)"
        " VALUES (?,?,?,?,?)",
        changes,
    )
    conn.commit()
    conn.close()
    return len(rows)


async def run(path: Path, batch: int) -> None:
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    try:
        t = time.perf_counter()
        recs = await refresh_records(store)
        t_records = time.perf_counter() - t
        t = time.perf_counter()
        causes = await refresh_causes(store, batch=batch)
        t_causes = time.perf_counter() - t
        t = time.perf_counter()
        async with store.begin() as conn:
            counts = await snapshot_causes(conn, date.today())
        async with store.connect() as conn:
            conditions = await alert_conditions(conn, datetime.now(UTC))
        t_after = time.perf_counter() - t
    finally:
        await store.close()
    print(
        f"records: {recs.rows} (suppliers + SKUs) in {t_records:.2f} s, {recs.batches} write"
        f" batches, longest write {recs.longest_write * 1000:.0f} ms"
    )
    print(
        f"causes: {causes.lines:,} waiting lines in {causes.rows:,} SKU/restock pairs in"
        f" {t_causes:.2f} s, {causes.batches} batches of {batch} SKUs, longest write"
        f" {causes.longest_write * 1000:.0f} ms"
    )
    print("by cause: " + ", ".join(f"{c.cause} {c.lines:,}" for c in counts))
    print(f"snapshot + alert conditions ({len(conditions):,}): {t_after:.2f} s")
    print("causes' writes (ms): " + " ".join(f"{w * 1000:.0f}" for w in causes.writes))
    print(f"records + causes: {t_records + t_causes:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--batch", type=int, default=CAUSE_BATCH)
    ap.add_argument("--history", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        copy = Path(tmp) / "insights.sqlite3"
        shutil.copyfile(args.store, copy)  # the original is never opened
        # Migrated first (its own step, not measured), then the history.
        asyncio.run(_migrate(copy))
        added = add_history(copy, args.history)
        print(f"copy of {args.store}; {added} past deliveries added")
        stop = mp.Event()
        out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        p = mp.Process(target=probe, args=(str(copy), stop, out))
        p.start()
        time.sleep(0.2)
        try:
            asyncio.run(run(copy, args.batch))
        finally:
            stop.set()
            waits, late = out.get()
            p.join()
        waits.sort()
        late.sort()
        print(
            f"probe: {len(waits)} asks for the write lock; longest wait {waits[-1] * 1000:.0f} ms,"
            f" p99 {waits[int(len(waits) * 0.99)] * 1000:.0f} ms; its 20 ms sleeps ended up to"
            f" {late[-1] * 1000:.0f} ms late (p99 {late[int(len(late) * 0.99)] * 1000:.0f} ms):"
            " the machine's share of any wait"
        )


async def _migrate(path: Path) -> None:
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    await store.close()


if __name__ == "__main__":
    main()
