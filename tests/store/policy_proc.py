"""A process that runs the delay policy and then the notice queueing on a store, for the tests
with real processes. DB is a SQLite file's path or a database URL (PostgreSQL).

    python -m tests.store.policy_proc DB --wait --batch N [--no-turn]
        prints {"ready": true}, waits for a line on stdin, then runs the batched policy and
        the batched notices to the end.
    python -m tests.store.policy_proc DB --batch N --die-in-batch K
        commits K-1 batches of the policy, then is killed (SIGKILL, by itself) inside batch K
        after the batch's work and before its commit.
    python -m tests.store.policy_proc DB --batch N --die-in-notice-batch K
        runs the policy to the end, commits K-1 batches of the notices, then is killed inside
        notice batch K.

``--deadlines``: on the day after the last answer-by day of the offers: every one due.
``--no-turn``: the batch's first writes (store.marks.take_turn, and take_marks when there is
no mark) left out, so that processes read the same lines at once and meet at the insert: the
ON CONFLICT path.
Prints one JSON line: what the policy did (with --deadlines, the offers it decided too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

import store.delays
from store import open_store
from store.delays import delay_policy_batch, run_delay_policy
from store.outbox import notice_batch, run_notices
from store.schema import delay_offers, follow_on_cursors, follow_on_marks
from tests.store.policy_helpers import D0, POLICY, T0

TODAY = D0 + timedelta(days=1)
NOW = T0 + timedelta(days=1)


async def _no_turn(conn: AsyncConnection, name: str = "delay") -> int:
    c = follow_on_cursors.c
    return int(await conn.scalar(select(c.next_line_id).where(c.name == name)) or 0)


async def _no_empty_take(conn: AsyncConnection, limit: int) -> list[int]:
    m = follow_on_marks.c
    ids = [int(i) for i in await conn.scalars(select(m.line_id).order_by(m.line_id).limit(limit))]
    if ids:
        await conn.execute(delete(follow_on_marks).where(m.line_id.in_(ids)))
    return ids


async def main(args: argparse.Namespace) -> dict[str, int]:
    if args.no_turn:
        store.delays.take_turn = _no_turn
        store.delays.take_marks = _no_empty_take
    url = args.db if "://" in args.db else f"sqlite+aiosqlite:///{args.db}"
    s = await open_store(url, migrate_schema=False)
    try:
        if args.die_in_batch:
            for _ in range(args.die_in_batch - 1):
                async with s.begin() as conn:
                    await delay_policy_batch(
                        conn, today=TODAY, now=NOW, policy=POLICY, limit=args.batch
                    )
            async with s.begin() as conn:
                await delay_policy_batch(
                    conn, today=TODAY, now=NOW, policy=POLICY, limit=args.batch
                )
                print(json.dumps({"dying": args.die_in_batch}), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        if args.die_in_notice_batch:
            await run_delay_policy(s, today=TODAY, now=NOW, policy=POLICY, batch_size=args.batch)
            for _ in range(args.die_in_notice_batch - 1):
                async with s.begin() as conn:
                    await notice_batch(conn, now=NOW, limit=args.batch)
            async with s.begin() as conn:
                await notice_batch(conn, now=NOW, limit=args.batch)
                print(json.dumps({"dying": args.die_in_notice_batch}), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        if args.wait:
            print(json.dumps({"ready": True}), flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        today, now = TODAY, NOW
        if args.deadlines:
            async with s.connect() as conn:
                last = await conn.scalar(select(func.max(delay_offers.c.answer_by)))
            today, now = last + timedelta(days=1), NOW + (last - TODAY) + timedelta(days=1)
        run = await run_delay_policy(s, today=today, now=now, policy=POLICY, batch_size=args.batch)
        told = await run_notices(s, now=now, batch_size=args.batch)
        done = {
            "offered": run.offered,
            "batches": run.batches,
            "lines": run.lines,
            "notices": told.notices,
        }
        if args.deadlines:
            done.update(cancelled=run.cancelled, to_agents=run.to_agents, closed=run.closed)
        return done
    finally:
        await s.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--no-turn", action="store_true")
    p.add_argument("--die-in-batch", type=int, default=0)
    p.add_argument("--die-in-notice-batch", type=int, default=0)
    p.add_argument("--deadlines", action="store_true")
    result = asyncio.run(main(p.parse_args()))
    print(json.dumps(result), flush=True)
    sys.exit(0)
