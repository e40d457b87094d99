# ruff: noqa: E501  (a hand-run script: long report lines, blocking file setup)
"""Issue #14, a big shop's working day: what a change and its follow-on work (the delay policy,
the notices) cost on a large store, and how long they keep every other writer waiting. Run by
hand; prints figures, asserts nothing.

    .venv/bin/python bench/bench_follow_on.py STORE.sqlite3 [--code ROOT] [--orders 2000]
        [--timeout 900]
    .venv/bin/python bench/bench_follow_on.py --postgresql SERVER_URL [--size medium]
        [--date-change]

STORE is a demo store (store.demo, e.g. bench/bench_store.py's cached one) at any migration
the code under --code can upgrade; each run works on a copy. --code is the checkout whose
`backorder-admin` runs (default: this one; an older checkout gives the "before" figures, e.g.
`git archive <commit> store | tar -x -C /tmp/before`). Two steps, one after the other on the
copy, each a `backorder-admin` process of its own:

1. the first policy pass over the whole store: the batches of `catch-up` and then its
   queue_notices, each measured on its own; with an older checkout its queue_after_change, the
   pass every command ran in one transaction;
2. `import orders` of a file of ORDERS new orders (one or two lines each), with the follow-on.

Meanwhile a probe process asks for the write lock (BEGIN IMMEDIATE, then ROLLBACK) every 20 ms,
polling as the project's writers do (bench/_probe.py):
the longest it waited is the longest write transaction another writer (the bot) met.

Figures (2026-12-02, 2 shared cores, other work running; the demo stores of store.demo, seed 7,
today 2026-01-15, never passed by the policy):

| store | step | before (1dc4e4a) | after |
|---|---|---|---|
| large: 1,949,796 lines, 1,359,186 late | first pass | 333.5 s, the lock held 262.7 s | 413.5 s in 7,800 batches of 250; longest wait 0.71 s, p99 236 ms (2.87 s once, at the start: the migration to 0010); then queue_notices 12.9 s (94,861 notices), 1.63 s |
| large | import 2,000 orders + follow-on | 128.9 s, the lock held 101.9 s | 49.8 s: the import's own transaction 35.0 s, the follow-on after it ~4 s, waits <= 0.33 s |
| medium: 192,947 lines, 138,426 late | first pass | 22.3 s, the lock held 17.3 s | 28.1 s in 772 batches; longest wait 0.26 s, p99 234 ms; then queue_notices 1.5 s |
| medium | import 2,000 orders + follow-on | 41.0 s, the lock held 38.5 s | 36.4 s: the import's own transaction 32.9 s, the follow-on ~3 s |
| medium | the same, the file placed whole (78a3ebe) | | 4.9 s: the import's own transaction 2.84 s, the follow-on ~2 s (first pass in 27.8 s: the same load as the row above) |

The policy's offers made in SQL, batches sized by time (session 7, firstpass; "before" is
d1836ab, its row by row offers in batches of 250; load average 8-25 on 2 cores, so CPU seconds
are the steadier figure):

| store | step | before (d1836ab) | after |
|---|---|---|---|
| medium | first pass: policy batches | 35.8 s (5,390 lines/s), load 7-9; longest wait 0.33 s, p99 238 ms; 72.8 s wall / 16.4 s CPU in a run of its own at load 9 | 13.7 s (14,080 lines/s) at load 18, 63 batches; 18.2 s wall / 4.2 s CPU at load 10 |
| medium | then the notices' batches | 21.0 s, longest wait 0.46 s, p99 351 ms | 4.2 s (0.7-1.1 s CPU), 21 batches; longest wait 0.49 s, p99 243 ms |
| large | first pass: policy batches | 703.5 s at load 8-15 (413 s lighter), longest wait 1.32 s | 167.6 s (11,630 lines/s) at load 10-12, 1,857 batches; longest wait 0.59 s, p99 180 ms (6.1 s once, at 1 s: the migration of the raw store) |
| large | then the notices' batches | 231.8 s, longest wait 0.90 s | 23.1 s, 270 batches; longest wait 0.23 s, p99 144 ms |
| medium, final code (226d35f+) | policy / notices | | 9.6 s, CPU 3.4 s, 93 batches (longest wait 0.49 s at 3 s, p99 230 ms) / 2.6 s, CPU 1.2 s; load 7 |
| large, final code | policy / notices | | 207.2 s (9,410 lines/s), CPU 56.0 s, 2,171 batches, longest wait 0.62 s after the migration's 5.4 s, p99 193 ms / 42.7 s, CPU 11.5 s, p99 195 ms, longest 0.85 s; load 15-16 |
| PostgreSQL medium (--postgresql) | policy / notices | | 15.7 s, 12,267 lines/s (this process 3.0 s CPU), longest batch 239 ms / 4.7 s, 40,848 lines/s, longest batch 374 ms; load 10.8. Before the offers were joined within the batch's lines (a seq scan of delay_offers per batch): 2,617 lines/s |
"""

from __future__ import annotations

import argparse
import csv
import itertools
import multiprocessing as mp
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._probe import lock_probe  # noqa: E402

CLI = "import sys; from store.cli import main; sys.exit(main(sys.argv[1:]))"


def cli(db: Path, *argv: str) -> list[str]:
    return [sys.executable, "-c", CLI, "--db", f"sqlite+aiosqlite:///{db}", *argv]


def run_step(name: str, db: Path, argv: list[str], code: Path, timeout: float) -> None:
    stop = mp.Event()
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    prober = mp.Process(target=lock_probe, args=(str(db), stop, q))
    prober.start()
    t = time.perf_counter()
    began = time.time()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            argv,
            cwd=code,
            env={**os.environ, "PYTHONPATH": str(code)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        outcome = f"exit {done.returncode}"
        lines = (done.stdout + done.stderr).strip().splitlines()
    except subprocess.TimeoutExpired:
        outcome, lines = f"killed after {timeout:.0f} s (not finished)", []
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The step's process and its children (the prober is still running: not counted).
    cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    stop.set()
    asked = q.get()
    prober.join()
    waits = sorted(w for _, w in asked)
    longest = waits[-1] if waits else 0.0
    p99 = waits[min(len(waits) - 1, round(0.99 * (len(waits) - 1)))] if waits else 0.0
    over = sum(1 for w in waits if w > 1)
    top = ", ".join(
        f"{w:.2f} s at {at - began:.0f} s" for at, w in sorted(asked, key=lambda a: -a[1])[:3]
    )
    print(
        f"{name:<34} {took:8.1f} s  {outcome}; CPU {cpu_s:.1f} s; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'':<34} another writer's BEGIN IMMEDIATE: longest wait {longest:.2f} s, p99 {p99 * 1000:.0f} ms, {over} of {len(waits)} waits over 1 s; longest: {top}"
    )
    for line in lines[-4:]:
        print(f"{'':<34} | {line[:150]}")


def orders_file(db: Path, path: Path, n: int) -> None:
    conn = sqlite3.connect(db)
    skus = [r[0] for r in conn.execute("SELECT sku FROM products WHERE active AND backorderable")]
    customers = conn.execute("SELECT max(customer_id) FROM customers").fetchone()[0]
    first = (
        int(conn.execute("SELECT max(CAST(order_number AS INTEGER)) FROM orders").fetchone()[0]) + 1
    )
    conn.close()
    rng = random.Random(14)
    placed = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["order_number", "customer_id", "placed_at", "line_no", "sku", "qty"])
        for i in range(n):
            customer = rng.randint(1, customers)
            for no, sku in enumerate(rng.sample(skus, 1 + (i % 3 == 0)), start=1):
                w.writerow([first + i, customer, placed, no, sku, rng.randint(1, 3)])


async def pg_pass(server: str, size: str) -> None:
    """The first pass on PostgreSQL: the demo store of ``size`` built once on ``server``
    (bench_store.py's cache), a copy of it passed by the policy's batches, then the notices'.
    PostgreSQL has no database-wide write lock to probe: the longest batch (one transaction)
    stands for what another writer of the same rows could meet."""
    sys.path.insert(0, str(ROOT))
    from bench_store import _postgresql_copy  # type: ignore[import-not-found]

    from store import open_store
    from store.cli import follow_on_settings
    from store.delays import run_delay_policy
    from store.outbox import run_notices

    url = await _postgresql_copy(server, size, vacuum=False)
    s = await open_store(url)
    f = follow_on_settings()
    now = datetime.now(UTC)
    marks: list[float] = []
    for name in ("policy", "notices"):
        marks[:] = [time.perf_counter()]
        t, cpu = time.perf_counter(), time.process_time()
        if name == "policy":
            run = await run_delay_policy(
                s,
                today=now.astimezone(f.zone).date(),
                now=now,
                policy=f.policy,
                on_batch=lambda _: marks.append(time.perf_counter()),
            )
            what = f"{run.offered:,} offered"
        else:
            told = await run_notices(
                s, now=now, on_batch=lambda _: marks.append(time.perf_counter())
            )
            run, what = told, f"{told.notices:,} notices"  # type: ignore[assignment]
        took = time.perf_counter() - t
        longest = max(b - a for a, b in itertools.pairwise(marks))
        print(
            f"PostgreSQL {size}, {name}: {run.lines:,} lines in {run.batches} batches, {what}:"
            f" {took:.1f} s, {run.lines / took:,.0f} lines/s; this process's CPU"
            f" {time.process_time() - cpu:.1f} s; longest batch {longest * 1000:.0f} ms;"
            f" load average {os.getloadavg()[0]:.1f}"
        )
    await s.close()


# SKUs whose restocks slip in pg_date_change: the medium demo store has no hot SKU.
SKUS = 60


async def pg_date_change(server: str, size: str, fused: bool) -> None:
    """A restock date change on PostgreSQL and its follow-on: a copy of the demo store of
    ``size`` made to wait on SKUS restocks and passed by the policy and the notices (not
    measured), then the SKUS restocks slip by 20 days in one change that walks no line itself
    (INLINE_LINES 0, as for queues longer than it), and its projection, policy and notices run
    as backorder-admin runs them (``fused``: the walks with their follow-on,
    store.delays.run_follow_on; else the projection, the policy, the notices one after
    another), measured as one."""
    sys.path.insert(0, str(ROOT))
    from bench_store import _postgresql_copy  # type: ignore[import-not-found]
    from sqlalchemy import delete, func, select, update

    import store.backorders as b
    from store import open_store
    from store.cli import follow_on_settings
    from store.delays import run_delay_policy
    from store.outbox import run_notices
    from store.schema import follow_on_marks, order_lines, restocks

    url = await _postgresql_copy(server, size, vacuum=False)
    s = await open_store(url)
    f = follow_on_settings()
    now = datetime.now(UTC)
    today = now.astimezone(f.zone).date()
    ol = order_lines.c
    r = restocks.c
    t = time.perf_counter()
    # The setup, not measured: the SKUS SKUs with the most waiting lines each get their
    # earliest open restock made to cover the whole queue (as bench_date_change's hot SKU),
    # projected from scratch, the marks of the setup dropped; then the first pass.
    chosen: list[str] = []
    async with s.begin() as conn:
        top = (
            await conn.execute(
                select(ol.sku, func.sum(ol.qty_waiting))
                .where(ol.qty_waiting > 0)
                .group_by(ol.sku)
                .order_by(func.count().desc(), ol.sku)
                .limit(SKUS)
            )
        ).all()
        for sku, units in top:
            rid = await conn.scalar(
                select(r.restock_id)
                .where(r.sku == sku, r.status == "open")
                .order_by(r.expected_date, r.restock_id)
                .limit(1)
            )
            if rid is None:
                continue
            await conn.execute(
                update(restocks).where(r.restock_id == rid).values(qty=r.qty + int(units))
            )
            await b.project_dates(conn, sku)
            chosen.append(rid)
        await conn.execute(delete(follow_on_marks))
    await run_delay_policy(s, today=today, now=now, policy=f.policy)
    await run_notices(s, now=now)
    async with s.connect() as conn:
        waiting = int(
            await conn.scalar(
                select(func.count()).where(ol.qty_waiting > 0, ol.waits_for_restock_id.in_(chosen))
            )
            or 0
        )
    print(f"PostgreSQL {size}: setup and first pass (not measured) {time.perf_counter() - t:.1f} s")
    marks: list[float] = []

    def seen(_: object) -> None:
        marks.append(time.perf_counter())

    t, cpu = time.perf_counter(), time.process_time()
    marks[:] = [t]
    b.INLINE_LINES = 0
    async with s.begin() as conn:
        for rid in chosen:
            row = await b._restock(conn, rid)
            await b.change_restock_date(conn, rid, row.expected_date + timedelta(days=20), "bench")
    change = time.perf_counter() - t
    marks.append(time.perf_counter())
    said = []
    if fused:
        from store.delays import run_follow_on

        fr = await run_follow_on(
            s, today=today, now=now, policy=f.policy, threshold_days=f.threshold_days, on_batch=seen
        )
        said.append(
            f"walks with their follow-on {fr.batches} batches, {fr.moved:,} moved, {fr.followed:,} followed"
        )
    else:
        pr = await b.run_projection(s, on_batch=seen)
        said.append(f"projection {pr.batches} batches, {pr.moved:,} moved")
    d = await run_delay_policy(s, today=today, now=now, policy=f.policy, on_batch=seen)
    n = await run_notices(s, threshold_days=f.threshold_days, now=now, on_batch=seen)
    took = time.perf_counter() - t
    said.append(f"then policy {d.batches} batches; notices {n.batches} batches")
    longest = max(b2 - a for a, b2 in itertools.pairwise(marks))
    print(
        f"PostgreSQL {size}, date change of {len(chosen)} restocks ({waiting:,} lines waiting for them),"
        f" {'fused' if fused else 'unfused'}: change {change * 1000:.0f} ms; "
        + "; ".join(said)
        + f"; in all {took:.2f} s; this process's CPU {time.process_time() - cpu:.1f} s;"
        f" longest batch {longest * 1000:.0f} ms; load average {os.getloadavg()[0]:.1f}"
    )
    await s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path, nargs="?")
    ap.add_argument(
        "--postgresql",
        metavar="SERVER_URL",
        help="instead: the first pass on PostgreSQL, on the demo store of --size",
    )
    ap.add_argument("--size", default="medium")
    ap.add_argument(
        "--date-change",
        action="store_true",
        help="with --postgresql: a restock date change and its follow-on, unfused then fused",
    )
    ap.add_argument("--code", type=Path, default=ROOT)
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--passed",
        action="store_true",
        help="STORE has had its first pass (a copy of an earlier run's): only the changes",
    )
    args = ap.parse_args()
    if args.postgresql:
        import asyncio

        if args.date_change:
            for fused in (False, True):
                asyncio.run(pg_date_change(args.postgresql, args.size, fused))
            return
        asyncio.run(pg_pass(args.postgresql, args.size))
        return
    if args.store is None:
        ap.error("STORE is needed (or --postgresql)")
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "follow-on.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    t = time.perf_counter()
    shutil.copy(args.store, db)
    src = sqlite3.connect(db)
    lines, late = src.execute(
        "SELECT count(*), sum(qty_waiting > 0 AND (projected_date IS NULL OR promised_date IS NULL OR projected_date > promised_date)) FROM order_lines"
    ).fetchone()
    src.close()
    print(
        f"store: {args.store.name}, {lines:,} lines, {late:,} waiting and late (copied in {time.perf_counter() - t:.0f} s); code: {args.code}"
    )
    batched = (args.code / "store" / "marks.py").exists()
    if batched and not args.passed:
        # The policy's batches and the notices (store.outbox.queue_notices, one transaction)
        # apart, as catch-up runs them one after the other.
        for title, body in (
            (
                "first pass: policy batches",
                "    from store.cli import follow_on_settings\n"
                "    from store.delays import run_delay_policy\n"
                "    from datetime import UTC, datetime\n"
                "    f = follow_on_settings(); now = datetime.now(UTC)\n"
                "    r = await run_delay_policy(s, today=now.astimezone(f.zone).date(), now=now, policy=f.policy)\n"
                "    print(f'{r.offered} offered, {r.lines} lines in {r.batches} batches')\n",
            ),
            (
                "then the notices' batches",
                "    from store.outbox import run_notices\n"
                "    r = await run_notices(s)\n"
                "    print(f'{r.notices} notices, {r.lines} lines in {r.batches} batches')\n",
            )
            if (args.code / "store" / "marks.py").read_text().count("NOTICE")
            else (
                "then queue_notices",
                "    from store.outbox import queue_notices\n"
                "    async with s.begin() as conn:\n"
                "        print(await queue_notices(conn))\n",
            ),
        ):
            script = args.work / "step.py"
            script.write_text(
                "import asyncio, sys\n"
                "from store import open_store\n"
                "async def go():\n"
                "    s = await open_store(sys.argv[1])\n" + body + "    await s.close()\n"
                "asyncio.run(go())\n"
            )
            run_step(
                title,
                db,
                [sys.executable, str(script), f"sqlite+aiosqlite:///{db}"],
                args.code,
                args.timeout,
            )
    elif not batched:
        script = (
            "import asyncio, sys\n"
            "from store import open_store\n"
            "from store.cli import queue_after_change\n"
            "async def go():\n"
            "    s = await open_store(sys.argv[1])\n"
            "    async with s.begin() as conn:\n"
            "        await queue_after_change(conn)\n"
            "    await s.close()\n"
            "asyncio.run(go())\n"
        )
        (args.work / "old_pass.py").write_text(script)
        old_pass = [sys.executable, str(args.work / "old_pass.py"), f"sqlite+aiosqlite:///{db}"]
        run_step("first pass (one transaction)", db, old_pass, args.code, args.timeout)
    csv_path = args.work / "orders-2000.csv"
    orders_file(db, csv_path, args.orders)
    run_step(
        f"import {args.orders} orders + follow-on",
        db,
        cli(db, "import", "orders", str(csv_path)),
        args.code,
        args.timeout,
    )
    if batched:
        run_step("status", db, cli(db, "status"), args.code, args.timeout)
    # The open restock with the most waiting lines behind it slips by 20 days.
    src = sqlite3.connect(db)
    rid, waiting, when = src.execute(
        "SELECT r.restock_id, count(*), r.expected_date FROM restocks r JOIN order_lines l"
        " ON l.waits_for_restock_id = r.restock_id AND l.qty_waiting > 0"
        " WHERE r.status = 'open' GROUP BY r.restock_id ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    src.close()
    later = (datetime.fromisoformat(when) + timedelta(days=20)).date().isoformat()
    run_step(
        f"restock-date ({waiting} lines) + follow-on",
        db,
        cli(db, "restock-date", rid, later, "--reason", "bench"),
        args.code,
        args.timeout,
    )


if __name__ == "__main__":
    main()
