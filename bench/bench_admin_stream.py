# ruff: noqa: ASYNC240  (a hand-run script: long report lines, blocking file setup)
"""Issue #14, a big shop's working day: the shop's operations change the store while the bot
serves its customers. Run by hand on a copy of a store; prints figures, asserts nothing.

    .venv/bin/python bench/bench_admin_stream.py STORE.sqlite3 [--minutes 5] [--rate 100]
        [--chats 2000] [--orders 2000] [--work DIR]

STORE (e.g. the 1M-order demo store after its first pass: bench_follow_on.py leaves one as
DIR/follow-on.sqlite3) is copied; half of --chats are linked to its customers. The real bot
(``run_bot.py``, its scheduler on: NOTICE_JOB_INTERVAL_SECONDS=10) serves --rate updates/s of
bench_e2e.py's mix through the sandbox (``python -m sandbox --no-limits``) for --minutes, with
bench_e2e's driver. Meanwhile, every minute, `backorder-admin` processes run one after another:
an import of --orders new orders, 10 restock date changes and 10 receipts, each with its
follow-on (the delay policy and the notices, in batches).

Prints: the reply latency p50/p95/p99 and unanswered updates, the apologies the bot sent, the
lines of its log that say "database is locked", and each admin command's time and exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    LINKED_BASE,
    STRANGER_BASE,
    Driver,
    Phase,
    Proc,
    add_users,
    apology_openings,
    drain,
    enqueue,
    free_port,
    link_chats,
    owed_told,
    pct,
    settle_links,
    start_bot,
    start_sandbox,
    wait_ready,
)
from bench.bench_follow_on import cli, orders_file  # noqa: E402
from sandbox.client import SandboxClient  # noqa: E402


def admin(db: Path, *argv: str) -> tuple[str, float, int, str]:
    t = time.perf_counter()
    done = subprocess.run(cli(db, *argv), cwd=ROOT, capture_output=True, text=True)
    last = (done.stdout + done.stderr).strip().splitlines()
    return argv[0], time.perf_counter() - t, done.returncode, last[-1] if last else ""


def restocks(db: Path, n: int, rng: random.Random) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT restock_id, expected_date FROM restocks WHERE status = 'open' ORDER BY restock_id"
    ).fetchall()
    conn.close()
    return rng.sample(rows, min(n, len(rows)))


def stream(db: Path, work: Path, minutes: int, orders: int, log: list[Any], stop: float) -> None:
    """The admin side, in a thread: per minute an import, 10 date changes, 10 receipts."""
    rng = random.Random(14)
    for minute in range(minutes):
        began = time.monotonic()
        if began >= stop:
            return
        path = work / f"stream-{minute}.csv"
        orders_file(db, path, orders)
        log.append(admin(db, "import", "orders", str(path)))
        for rid, when in restocks(db, 10, rng):
            later = date.fromisoformat(when) + timedelta(days=rng.randint(3, 30))
            log.append(admin(db, "restock-date", rid, later.isoformat(), "--reason", "bench"))
        for rid, _ in restocks(db, 10, rng):
            log.append(admin(db, "receive", rid))
        spent = time.monotonic() - began
        print(f"  minute {minute + 1}: the admin commands took {spent:.1f} s", flush=True)
        time.sleep(max(0.0, 60 - spent))


async def run(args: argparse.Namespace) -> None:
    args.work.mkdir(parents=True, exist_ok=True)
    db = args.work / "stream.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(args.store, db)
    numbers = await link_chats(db, args.chats // 2)
    # Linking 1,000 customers at one instant marks their lines, which no shop does: pay that
    # follow-on here, apart, and let the bot deliver its notices during the warm-up, so the
    # measured minutes hold the admin stream's work, not the bench's set-up (bench_api too).
    if args.unsettled:
        print("the linking's follow-on left to the bot's first ticks, inside the measured minutes")
    else:
        began = time.perf_counter()
        await settle_links(db)
        print(f"the linking's follow-on before the bot starts: {time.perf_counter() - began:.1f} s")
    chats = [LINKED_BASE + i for i in range(len(numbers))] + [
        STRANGER_BASE + i for i in range(args.chats - len(numbers))
    ]
    random.Random(3).shuffle(chats)
    port = free_port()
    sandbox = start_sandbox(port, args.work / "stream-sandbox.log")
    bot_log = args.work / "stream-bot.log"
    bot: Proc | None = None
    log: list[Any] = []
    apologies_of = apology_openings()
    try:
        async with SandboxClient(f"http://127.0.0.1:{port}", timeout=120) as client:
            await add_users(client, chats)
            bot = start_bot(port, db, bot_log, trace=args.trace)
            await wait_ready(client, bot)
            warm = Phase("warm-up", None)
            await enqueue(client, [{"user_id": c, "text": "hello"} for c in chats], warm)
            await drain(client, 0)
            left = await owed_told(db)
            await drain(client, 0)
            print(f"warmed up ({left} notices to the bench's chats still pending)", flush=True)
            phase = Phase(f"{args.rate:g}/s", args.rate, since_seq=(await client.stats())["calls"])
            seconds = 60 * args.minutes
            stop = time.monotonic() + seconds
            admin_side = asyncio.create_task(
                asyncio.to_thread(stream, db, args.work, args.minutes, args.orders, log, stop)
            )
            driver = Driver(client, chats, numbers)
            await driver.offer(phase, args.rate, seconds)
            apologies = await driver.finish(phase, apologies_of)
            await admin_side
    finally:
        if bot is not None:
            bot.stop()
        sandbox.stop()
    locked = [
        line
        for line in bot_log.read_text(errors="replace").splitlines()
        if "database is locked" in line
    ]
    print(
        f"bot: {len(phase.sent):,} updates at {args.rate:g}/s over {args.minutes} min:"
        f" p50 {pct(phase.latencies, 0.5):.0f} ms, p95 {pct(phase.latencies, 0.95):.0f} ms,"
        f" p99 {pct(phase.latencies, 0.99):.0f} ms, {phase.missing} unanswered;"
        f" {apologies} apologies; {len(locked)} 'database is locked' lines in its log"
    )
    by: dict[str, list[float]] = {}
    for name, took, _code, _ in log:
        by.setdefault(name, []).append(took)
    failed = [entry for entry in log if entry[2] != 0]
    for name, times in by.items():
        print(
            f"admin {name}: {len(times)} runs, {sum(times) / len(times):.1f} s on average,"
            f" longest {max(times):.1f} s (each with its follow-on)"
        )
    for name, took, code, last in failed[:10]:
        print(f"  failed: {name} exit {code} after {took:.1f} s: {last[:150]}")
    for line in locked[:5]:
        print(f"  log: {line[:200]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=Path)
    ap.add_argument("--minutes", type=int, default=5)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--chats", type=int, default=2000)
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--trace", action="store_true", help="the bot's stages timed in its log (_trace_bot.py)"
    )
    ap.add_argument(
        "--unsettled",
        action="store_true",
        help="no settle_links: the bot's own tick makes the linked chats' offers and notices",
    )
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
