# ruff: noqa: E501  (a hand-run script: long report lines, blocking file setup)
"""Issue #14, the change path: a restock date change that moves ~100,000 waiting lines on the
1M-order store, and what follows it (the projection, the delay policy, the notices), each
measured on its own; meanwhile a probe process asks for the write lock (BEGIN IMMEDIATE, then
ROLLBACK) every 20 ms, polling as the project's writers do (bench/_probe.py; --busy-handler: in
SQLite's busy handler, as a tool would): its longest wait is the longest write transaction
another writer met.
Run by hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_date_change.py [STORE] [--code ROOT] [--work /tmp/changes]
        [--import-orders 2000] [--unfused]

STORE (default /work/stores/large-passed.sqlite3) is copied to WORK. The setup, not measured:
the hot SKU KET-0002's restock PO-029680 is made to cover its whole queue (qty 200,000, so
~94,000 waiting lines wait for it), the SKU projected from scratch, and the marks this setup
left deleted (a store where that was the state all along, passed by the policy). Measured:
`PO-029680` slips by 20 days (store.backorders.change_restock_date in its own transaction),
then the follow-on: the projection's batches (when the code has them: store.backorders.
run_projection), the delay policy's, the notices'; with store.delays.run_follow_on (and no
--unfused), the projection's batches do the policy and the notices of the lines they move
themselves, and the policy's and the notices' own batches only what is left. --code is the checkout to measure (an
older one gives the "before" figures: `git archive main store | tar -x -C /tmp/before`).
--linked P: P percent of the SKU's waiting customers get a chat in the setup, told of everything
so far; only they are sent notices (the demo store links no one: a customer without a chat is
told nothing, and nothing is stored for them).
--import-orders N: then an import of N new orders (bench_follow_on's file) with its follow-on,
measured the same way.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._probe import lock_probe  # noqa: E402

SKU = "KET-0002"
RESTOCK = "PO-029680"

SETUP = """
import asyncio, sys
from store import open_store
from store.backorders import project_dates
from sqlalchemy import text
async def go():
    s = await open_store(sys.argv[1])
    async with s.begin() as conn:
        await conn.execute(text("UPDATE restocks SET qty = 200000 WHERE restock_id = :r"), {"r": sys.argv[2]})
        p = await project_dates(conn, sys.argv[3])
        await conn.execute(text("DELETE FROM follow_on_marks"))
        # A share of the SKU's waiting customers linked to a chat, told of everything so far
        # (as if linked all along): their notices are written, the others' are not.
        percent = int(sys.argv[4])
        mine = (
            "SELECT DISTINCT o.customer_id FROM order_lines l JOIN orders o ON o.order_id = l.order_id"
            " WHERE l.sku = :sku AND l.qty_waiting > 0 AND o.customer_id % 100 < :percent"
            " AND o.customer_id NOT IN (SELECT customer_id FROM chats WHERE customer_id IS NOT NULL)"
        )
        linked = await conn.execute(text(
            "INSERT INTO chats (chat_id, language, customer_id, misses, created_at, updated_at)"
            f" SELECT 7000000000 + customer_id, 'en', customer_id, 0, datetime('now'), datetime('now') FROM ({mine})"
        ), {"sku": sys.argv[3], "percent": percent})
        await conn.execute(text(
            "UPDATE order_lines SET last_told_date = projected_date, last_told_at = datetime('now'),"
            " told_ready_qty = qty_allocated + qty_shipped, told_shipped_qty = qty_shipped,"
            " told_cancelled_qty = qty_cancelled WHERE order_id IN (SELECT o.order_id FROM orders o"
            " JOIN chats c ON c.customer_id = o.customer_id)"
        ))
    print(f"setup: {p.waiting_lines} waiting, {p.undated_lines} undated, {len(p.moved)} moved by the setup; {linked.rowcount} customers linked ({percent}%)")
    await s.close()
asyncio.run(go())
"""

WORK = """
import asyncio, sys, time
from datetime import UTC, datetime, timedelta
from store import open_store
import store.backorders as b
from store.cli import follow_on_settings
from store.delays import run_delay_policy
from store.outbox import run_notices
async def go():
    s = await open_store(sys.argv[1])
    f = follow_on_settings(); now = datetime.now(UTC); today = now.astimezone(f.zone).date()
    mode = sys.argv[2]
    if mode != "date":
        from pathlib import Path
        from store.imports import apply_file, parse_file
        parsed = parse_file("orders", Path(sys.argv[3]))  # before the transaction, as the CLI
    cpu = time.process_time()
    print(f"@phase change {time.time()}", flush=True)
    t = t0 = time.perf_counter()
    async with s.begin() as conn:
        if mode == "date":
            r = await b._restock(conn, sys.argv[3])
            proj = await b.change_restock_date(conn, sys.argv[3], r.expected_date + timedelta(days=20), "bench")
            said = f"{len(proj.moved)} moved in the change" if proj is not None else "unchanged"
        else:
            try:
                res = await apply_file(conn, "orders", Path(sys.argv[3]), parsed=parsed)
            except TypeError:  # a checkout before apply_file took the parsed file
                res = await apply_file(conn, "orders", Path(sys.argv[3]))
            said = f"{res.changed} orders"
    print(f"change txn: {(time.perf_counter() - t) * 1000:.0f} ms ({said})", flush=True)
    longest = 0.0
    moved = 0
    def seen(run):
        nonlocal longest
        longest = max(longest, getattr(run, "seconds", 0.0))
    import store.delays as dl
    if hasattr(dl, "run_follow_on") and "--unfused" not in sys.argv:
        print(f"@phase follow {time.time()}", flush=True)
        t = time.perf_counter()
        fr = await dl.run_follow_on(s, today=today, now=now, policy=f.policy, threshold_days=f.threshold_days)
        moved = fr.moved
        print(f"projection with its follow-on: {time.perf_counter() - t:.2f} s, {fr.batches} batches, {fr.lines} lines walked, {fr.moved} moved, {fr.followed} followed in the batches ({fr.offered} offered, {fr.notices} notices)", flush=True)
    elif hasattr(b, "run_projection"):
        print(f"@phase projection {time.time()}", flush=True)
        t = time.perf_counter()
        p = await b.run_projection(s, on_batch=seen)
        moved = p.moved
        print(f"projection: {time.perf_counter() - t:.2f} s, {p.batches} batches, {p.lines} lines walked, {p.moved} moved, longest batch {longest * 1000:.0f} ms", flush=True)
    print(f"@phase policy {time.time()}", flush=True)
    t = time.perf_counter()
    d = await run_delay_policy(s, today=today, now=now, policy=f.policy)
    print(f"policy: {time.perf_counter() - t:.2f} s, {d.lines} lines in {d.batches} batches, {d.offered} offered", flush=True)
    print(f"@phase notices {time.time()}", flush=True)
    t = time.perf_counter()
    n = await run_notices(s, threshold_days=f.threshold_days, now=now)
    print(f"notices: {time.perf_counter() - t:.2f} s, {n.notices} queued, {n.lines} lines in {n.batches} batches", flush=True)
    print(f"@phase end {time.time()}", flush=True)
    print(f"change and follow-on: {time.perf_counter() - t0:.2f} s", flush=True)
    print(f"cpu: {time.process_time() - cpu:.1f} s in the worker", flush=True)
    await s.close()
asyncio.run(go())
"""


def run(
    code: Path, argv: list[str], db: Path | None, timeout: float = 1800, busy_handler: bool = False
) -> None:
    stop = mp.Event()
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    prober = mp.Process(target=lock_probe, args=(str(db), stop, q, busy_handler)) if db else None
    if prober:
        prober.start()
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    took = time.perf_counter() - t
    phases: list[tuple[str, float]] = []
    for line in (done.stdout + done.stderr).strip().splitlines()[-20:]:
        if line.startswith("@phase "):
            _, name, at = line.split()
            phases.append((name, float(at)))
            continue
        print(f"  | {line[:200]}")
    print(f"  wall {took:.1f} s, exit {done.returncode}")
    if prober:
        stop.set()
        asked = q.get()
        prober.join()
        waits = sorted(w for _, w in asked)
        p99 = waits[min(len(waits) - 1, round(0.99 * (len(waits) - 1)))] if waits else 0.0
        print(
            f"  probe: longest BEGIN IMMEDIATE wait {waits[-1] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, {len(waits)} waits"
        )
        for (name, start), (_, end) in itertools.pairwise(phases):
            during = sorted(w for at, w in asked if start <= at < end)
            if during:
                print(
                    f"    during {name:<10}: longest wait {during[-1] * 1000:.0f} ms, {sum(w > 0.25 for w in during)} of {len(during)} over 250 ms"
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "store", type=Path, nargs="?", default=Path("/work/stores/large-passed.sqlite3")
    )
    ap.add_argument("--code", type=Path, default=ROOT)
    ap.add_argument("--work", type=Path, default=Path("/tmp/changes"))
    ap.add_argument("--import-orders", type=int, default=0)
    ap.add_argument(
        "--unfused", action="store_true", help="projection, policy, notices one after another"
    )
    ap.add_argument(
        "--linked",
        type=int,
        default=0,
        help="percent of the SKU's waiting customers linked to a chat (the demo store has none)",
    )
    ap.add_argument(
        "--busy-handler",
        action="store_true",
        help="the probe waits in SQLite's busy handler, as a tool would, not polling as ours do",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "date-change.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    t = time.perf_counter()
    shutil.copy(args.store, db)
    os.chmod(db, 0o644)
    url = f"sqlite+aiosqlite:///{db}"
    print(
        f"store {args.store} copied in {time.perf_counter() - t:.0f} s; code {args.code}; load {os.getloadavg()}"
    )
    (args.work / "setup.py").write_text(SETUP)
    (args.work / "work.py").write_text(WORK)
    print("setup (migrations, the queue made, not measured)")
    run(args.code, [str(args.work / "setup.py"), url, RESTOCK, SKU, str(args.linked)], None)
    print(f"restock-date {RESTOCK} +20 days, then the follow-on")
    unfused = ["--unfused"] if args.unfused else []
    run(
        args.code,
        [str(args.work / "work.py"), url, "date", RESTOCK, *unfused],
        db,
        busy_handler=args.busy_handler,
    )
    if args.import_orders:
        from bench.bench_follow_on import orders_file

        csv_path = args.work / f"orders-{args.import_orders}.csv"
        orders_file(db, csv_path, args.import_orders)
        print(f"import {args.import_orders} orders, then the follow-on")
        run(
            args.code,
            [str(args.work / "work.py"), url, "import", str(csv_path)],
            db,
            busy_handler=args.busy_handler,
        )
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
