# ruff: noqa: E501  (a hand-run script: long report lines)
"""Issue #14: the delay policy's deadline day on the 1M-order store. Its offers were all made
by the first pass on one day, so 1.26M of them fall due together (answer-by 2026-12-09). The
policy's batches (store.delays.run_delay_policy) decide every offer due on the next day; then
the projection's batches walk the queues the cancellations changed, with their follow-on
(store.delays.run_follow_on, as backorder-admin runs it). Measured from outside:
another process asks for the write lock (BEGIN IMMEDIATE, then ROLLBACK) every 20 ms, and its
longest wait is the longest write transaction it met. Measured from inside: wall and CPU
seconds, and offers decided per second.
Run by hand on a copy of a demo store; prints figures, asserts nothing.

    .venv/bin/python bench/bench_deadlines.py [STORE.sqlite3] [--shown] [--bot] [--seconds 120]
        [--code ROOT] [--work DIR]
    .venv/bin/python bench/bench_deadlines.py --postgresql postgresql+asyncpg://USER@HOST/postgres
        [--size medium] [--shown]

By default no offer was shown (the demo store links no chat), so each one goes to the agents
('never_shown'). --shown: every one reached its customer first, so the policy cancels the
lines ('no_answer', DELAY_NO_ANSWER_ACTION=cancel). --bot: in the batches of the bot's tick
(bot.notices.run_policy: POLICY_BATCH lines each, POLICY_LINES a tick; ticks back to back,
where the bot has 2 s between them and delivers), not an admin command's. --seconds: stop the policy after this
long and report the pace. --code is the checkout to measure (an older one gives the "before"
figures: `git archive main store | tar -x -C /tmp/before`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._probe import probed_worker  # noqa: E402
from bench.bench_import_orders import MIGRATE  # noqa: E402

WORK = """
import asyncio, sys, time
from datetime import date, datetime, timedelta, UTC
from store import open_store
from store.cli import follow_on_settings
from store.delays import run_delay_policy, run_follow_on
class Enough(Exception):
    pass
async def go(db, today, seconds, bot):
    s = await open_store(f"sqlite+aiosqlite:///{db}")
    f = follow_on_settings()
    now = datetime.combine(today, datetime.min.time(), UTC) + timedelta(hours=9)
    print(f"@begin {time.time()}", flush=True)
    cpu, t = time.process_time(), time.perf_counter()
    decided = [0, 0, 0, 0]
    def seen(run):
        decided[0] += run.cancelled
        decided[1] += run.to_agents
        decided[2] += run.closed
        decided[3] += 1
        if time.perf_counter() - t > seconds:
            raise Enough
    whole = True
    try:
        if bot:
            # The bot's tick (bot.notices.run_policy): fixed batches, so many a tick.
            from bot.notices import POLICY_BATCH, POLICY_LINES
            ticks = []
            while True:
                t1 = time.perf_counter()
                run = await run_delay_policy(s, today=today, now=now, policy=f.policy, batch_size=POLICY_BATCH, max_batches=POLICY_LINES // POLICY_BATCH, on_batch=seen)
                ticks.append(time.perf_counter() - t1)
                if not run.more:
                    break
            print(f"bot ticks: {len(ticks)}, {sum(decided[:3]) / len(ticks):.0f} offers a tick, a tick's policy round {sorted(ticks)[len(ticks) // 2]:.2f} s (median)", flush=True)
        else:
            await run_delay_policy(s, today=today, now=now, policy=f.policy, on_batch=seen)
    except Enough:
        whole = False
    took = time.perf_counter() - t
    print(f"@policy {time.time()}", flush=True)
    n = sum(decided[:3])
    print(f"policy: {n} offers decided ({decided[0]} cancelled, {decided[1]} to agents, {decided[2]} closed) in {decided[3]} batches, {took:.1f} s, {time.process_time() - cpu:.1f} s CPU: {n / took:.0f} offers/s{'' if whole else f' (stopped after {seconds:.0f} s)'}", flush=True)
    if whole:
        cpu, t = time.process_time(), time.perf_counter()
        # As backorder-admin and the bot's tick run it: the walks with their follow-on.
        run = await run_follow_on(s, today=today, now=now, policy=f.policy, threshold_days=f.threshold_days)
        print(f"projection: {run.lines} lines in {run.batches} batches (their follow-on: {run.followed} lines, {run.offered} offered, {run.notices} notices), {time.perf_counter() - t:.1f} s, {time.process_time() - cpu:.1f} s CPU", flush=True)
    print(f"@end {time.time()}", flush=True)
    await s.close()
asyncio.run(go(sys.argv[1], date.fromisoformat(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "bot"))
"""


async def pg_deadlines(server: str, size: str, shown: bool) -> None:
    """The same on PostgreSQL: a copy of the demo store of ``size`` (bench_store's), its
    first policy pass (not measured), then the policy's batches on the day after the answer-by
    day most offers share, in this process, timed batch by batch."""
    from datetime import UTC, datetime, timedelta

    from bench_store import _postgresql_copy  # type: ignore[import-not-found]
    from sqlalchemy import func, select, update

    from store import open_store
    from store.cli import follow_on_settings
    from store.delays import run_delay_policy
    from store.schema import delay_offers

    url = await _postgresql_copy(server, size, vacuum=False)
    s = await open_store(url)
    f = follow_on_settings()
    now = datetime.now(UTC)
    first = await run_delay_policy(s, today=now.astimezone(f.zone).date(), now=now, policy=f.policy)
    d = delay_offers.c
    due = (d.status == "open", d.consent_needed.is_(True))
    async with s.begin() as conn:
        if shown:
            await conn.execute(update(delay_offers).where(*due).values(shown_at=now))
        day, count = (
            await conn.execute(
                select(d.answer_by, func.count())
                .where(*due)
                .group_by(d.answer_by)
                .order_by(func.count().desc())
                .limit(1)
            )
        ).one()
    print(f"PostgreSQL {size}: first pass made {first.offered} offers; {count} due by {day}")
    took: list[float] = []
    run_batch = s.run_batch

    async def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return await run_batch(*a, **k)
        finally:
            took.append(time.perf_counter() - t)

    s.run_batch = timed  # type: ignore[method-assign]
    t = time.perf_counter()
    run = await run_delay_policy(
        s, today=day + timedelta(days=1), now=now + timedelta(days=8), policy=f.policy
    )
    wall = time.perf_counter() - t
    took.sort()
    n = run.cancelled + run.to_agents + run.closed
    print(
        f"policy: {n} offers decided ({run.cancelled} cancelled, {run.to_agents} to agents,"
        f" {run.closed} closed) in {run.batches} batches, {wall:.1f} s: {n / wall:.0f} offers/s;"
        f" batches: longest {took[-1] * 1000:.0f} ms, p99 {took[int(len(took) * 0.99)] * 1000:.0f}"
        f" ms, median {took[len(took) // 2] * 1000:.0f} ms"
    )
    await s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "store", type=Path, nargs="?", default=Path("/work/stores/large-passed.sqlite3")
    )
    ap.add_argument("--postgresql", metavar="URL", help="a server: its database postgres is used")
    ap.add_argument("--size", default="medium")
    ap.add_argument("--shown", action="store_true")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--bot", action="store_true")
    ap.add_argument("--code", type=Path, default=ROOT)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if args.postgresql:
        import asyncio

        sys.path.insert(0, str(ROOT / "bench"))
        asyncio.run(pg_deadlines(args.postgresql, args.size, args.shown))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "deadlines.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(args.store, db)
    os.chmod(db, 0o644)
    env = {**os.environ, "PYTHONPATH": str(args.code)}
    subprocess.run([sys.executable, "-c", MIGRATE, str(db)], cwd=args.code, env=env, check=True)
    with sqlite3.connect(db) as conn:
        if args.shown:
            conn.execute(
                "UPDATE delay_offers SET shown_at = '2026-12-01 10:00:00'"
                " WHERE status = 'open' AND consent_needed"
            )
        # The day after the answer-by day most offers share.
        (day, due) = conn.execute(
            "SELECT answer_by, count(*) FROM delay_offers WHERE status = 'open' AND consent_needed"
            " GROUP BY answer_by ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        (today,) = conn.execute("SELECT date(?, '+1 day')", (day,)).fetchone()
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(
        f"code {args.code}; {due} offers due by {day}, decided on {today}; load {os.getloadavg()}"
    )
    (args.work / "deadlines_work.py").write_text(WORK)
    probed_worker(
        str(db),
        [
            sys.executable,
            str(args.work / "deadlines_work.py"),
            str(db),
            today,
            str(args.seconds),
            "bot" if args.bot else "admin",
        ],
        cwd=args.code,
        env=env,
        phases=(
            ("the policy's batches", "begin", "policy"),
            ("the projection's batches", "policy", "end"),
        ),
    )
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
