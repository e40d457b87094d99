"""Issue #14: a process killed (SIGKILL) in the middle of a batched first pass over a store of
2,000 late lines, once inside a batch of the delay policy and once inside a batch of the notice
queueing: the batches it committed stay done, the one it was in leaves nothing behind, and a
restart finishes the pass with nothing lost or made twice (the same offers and notices as the
policy and the notices from scratch on a copy taken before the kills)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from store import open_store
from store.delays import apply_delay_policy
from store.marks import DELAY, NOTICE, mark_lines
from store.outbox import ORDER_UPDATE, queue_notices
from store.schema import (
    chats,
    delay_offers,
    follow_on_cursors,
    follow_on_marks,
    order_lines,
    orders,
    outbox,
)
from tests.store.helpers import seed_catalog
from tests.store.policy_helpers import D0, POLICY, T0, clone, policy_state
from tests.store.policy_proc import NOW, TODAY

ROOT = Path(__file__).resolve().parents[2]
LINES = 2000
BATCH = 100
MARKED = range(1, LINES + 1, 10)  # 200 lines a change marked; the rest only the scan finds
DIE_IN = 5  # batches 1-2 take the marks, 3-4 scan lines 1-200, the kill comes inside 5
NOTICE_DIE_IN = 2  # the notices' batch 1 takes 100 marks, the kill comes inside 2


def _dated(line_id: int) -> bool:
    return (line_id - 1) % 3 != 0  # every 3rd line undated


def _late(line_id: int) -> bool:
    # Every third line was promised for day 100: dated 15 to 60 days out, it is not late.
    return line_id % 3 != 2


async def _proc(url: str, *flags: str) -> tuple[int, str]:
    return await _proc_batch(url, BATCH, *flags)


async def _proc_batch(url: str, batch: int, *flags: str) -> tuple[int, str]:
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store.policy_proc",
        url,
        "--batch",
        str(batch),
        *flags,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await p.communicate()
    assert not err or b"Traceback" not in err, err.decode()
    return int(p.returncode or 0), out.decode()


async def _bulk_load(conn: AsyncConnection, lines: int, *, dated: Callable[[int], bool]) -> None:
    """``lines`` one-line orders of the 5 customers, written the way a bulk load writes
    (store.demo): no marks, the first pass scans. Every customer has a chat, linked before
    these lines came (a link marks the lines it finds for the notices). A dated line is 5 to
    50 days late unless _late says it was promised for day 100; an undated one waits."""
    await seed_catalog(conn, customers=5)
    await conn.execute(
        insert(chats),
        [
            {"chat_id": 1000 + c, "customer_id": c, "created_at": T0, "updated_at": T0}
            for c in range(1, 6)
        ],
    )
    for start in range(0, lines, 10_000):
        part = range(start, min(lines, start + 10_000))
        await conn.execute(
            insert(orders),
            [
                {
                    "order_number": str(200_000 + i),
                    "customer_id": 1 + i % 5,
                    "placed_at": T0,
                    "priority": 0,
                    "currency": "EUR",
                }
                for i in part
            ],
        )
        await conn.execute(
            insert(order_lines),
            [
                {
                    "order_id": i + 1,
                    "line_no": 1,
                    "sku": "KET-0001",
                    "qty_ordered": 1,
                    "qty_waiting": 1,
                    "unit_price_minor": 2999,
                    "queued_at": T0,
                    "promised_date": D0 + timedelta(days=10 if _late(i + 1) else 100),
                    "projected_date": D0 + timedelta(days=15 + i % 46) if dated(i + 1) else None,
                }
                for i in part
            ],
        )


async def test_a_kill_inside_a_batch_of_the_first_pass_loses_nothing(
    db_url: str, request: pytest.FixtureRequest
) -> None:
    s = await open_store(db_url)
    async with s.begin() as conn:
        await _bulk_load(conn, LINES, dated=_dated)
        await mark_lines(conn, MARKED)
    await s.close()
    before = await clone(db_url, request, "before")

    code, out = await _proc(db_url, "--die-in-batch", str(DIE_IN))
    assert code == -signal.SIGKILL, out
    assert json.loads(out.splitlines()[-1]) == {"dying": DIE_IN}

    m = follow_on_marks.c
    c = follow_on_cursors.c
    s = await open_store(db_url, migrate_schema=False)
    async with s.connect() as conn:
        offers = await conn.scalar(select(func.count()).select_from(delay_offers))
        notices = await conn.scalar(select(func.count()).select_from(outbox))
        marks = await conn.scalar(select(func.count()).where(m.stage == DELAY))
        cursor = await conn.scalar(select(c.next_line_id).where(c.name == DELAY))
    await s.close()
    # Four batches committed, the fifth's work gone with it: the 200 marked lines, then
    # lines 1-200 of the scan, 20 of which were marked lines offered already. Every customer
    # has a chat: each offer is told.
    assert (marks, cursor) == (0, 2 * BATCH + 1)
    looked_at = set(MARKED) | set(range(1, 2 * BATCH + 1))
    assert offers == notices == sum(1 for line_id in looked_at if _late(line_id)) == 253

    # Again, the policy to its end and then a batch of the notices; killed in the second.
    code, out = await _proc(db_url, "--die-in-notice-batch", str(NOTICE_DIE_IN))
    assert code == -signal.SIGKILL, out
    s = await open_store(db_url, migrate_schema=False)
    async with s.connect() as conn:
        offers = await conn.scalar(select(func.count()).select_from(delay_offers))
        updates = await conn.scalar(select(func.count()).where(outbox.c.kind == ORDER_UPDATE))
        marks = await conn.scalar(select(func.count()).where(m.stage == NOTICE))
        cursor = await conn.scalar(select(c.next_line_id).where(c.name == NOTICE))
    await s.close()
    # The offers told the late lines' dates; the lines that are not late wait untold, one
    # notice per order. The first batch told the orders of 100 marked lines; the second's
    # went with it.
    late = sum(1 for line_id in range(1, LINES + 1) if _late(line_id))
    assert offers == late
    done = (NOTICE_DIE_IN - 1) * BATCH
    told = sum(1 for line_id in MARKED[:done] if not _late(line_id))
    assert (updates, marks, cursor) == (told, len(MARKED) - done, 0)
    assert told == 33

    code, out = await _proc(db_url)
    assert code == 0, out
    assert json.loads(out.splitlines()[-1]) == {
        "offered": 0,
        "batches": 1,
        "lines": 0,
        "notices": LINES - late - told,
    }

    states = await _finished_and_from_scratch(db_url, before)
    assert len(states[0]["offers"]) == late
    assert len(states[0]["notices"]) == late + told + json.loads(out.splitlines()[-1])["notices"]
    assert states[0] == states[1]


async def _finished_and_from_scratch(db_url: str, before: str) -> list[dict[str, Any]]:
    """The policy's state of the store the restart finished, and of the copy taken before
    the kills with the policy and the notices run on it from scratch."""
    states = []
    for url in (db_url, before):
        s = await open_store(url, migrate_schema=False)
        if url == before:
            async with s.begin() as conn:
                await apply_delay_policy(conn, today=TODAY, now=NOW, policy=POLICY)
                await queue_notices(conn, now=NOW)
        async with s.connect() as conn:
            states.append(await policy_state(conn))
        await s.close()
    return states


BIG = 50_000
BIG_BATCH = 1000


async def test_a_kill_in_the_middle_of_a_first_pass_over_50000_late_lines_loses_nothing(
    db_url: str, request: pytest.FixtureRequest
) -> None:
    """The issue's size: 50,000 late lines of customers with a chat, written the way a bulk
    load writes (no marks), every third moved without being late. Killed inside the 26th
    batch of the policy's first pass, then inside the 3rd of the notices'; a restart finishes
    both, and the offers, notices and told marks are those of the policy and the notices from
    scratch on a copy taken before the kills."""
    s = await open_store(db_url)
    async with s.begin() as conn:
        await _bulk_load(conn, BIG, dated=lambda _: True)
    await s.close()
    before = await clone(db_url, request, "before")
    late = sum(1 for line_id in range(1, BIG + 1) if _late(line_id))

    code, out = await _proc_batch(db_url, BIG_BATCH, "--die-in-batch", "26")
    assert code == -signal.SIGKILL, out
    s = await open_store(db_url, migrate_schema=False)
    async with s.connect() as conn:
        offers = await conn.scalar(select(func.count()).select_from(delay_offers))
        cursor = await conn.scalar(
            select(follow_on_cursors.c.next_line_id).where(follow_on_cursors.c.name == DELAY)
        )
    await s.close()
    # 25 batches of 1,000 lines committed; the 26th's offers went with it.
    assert cursor == 25 * BIG_BATCH + 1
    assert offers == sum(1 for line_id in range(1, 25 * BIG_BATCH + 1) if _late(line_id))

    code, out = await _proc_batch(db_url, BIG_BATCH, "--die-in-notice-batch", "3")
    assert code == -signal.SIGKILL, out
    s = await open_store(db_url, migrate_schema=False)
    async with s.connect() as conn:
        offers = await conn.scalar(select(func.count()).select_from(delay_offers))
        updates = await conn.scalar(select(func.count()).where(outbox.c.kind == ORDER_UPDATE))
        cursor = await conn.scalar(
            select(follow_on_cursors.c.next_line_id).where(follow_on_cursors.c.name == NOTICE)
        )
    await s.close()
    # The policy ran to its end; two notice batches of the first pass committed, the third's
    # notices went with it: the orders of lines 1-2,000 that are not late are told.
    assert offers == late
    assert (updates, cursor) == (sum(1 for i in range(1, 2 * BIG_BATCH + 1) if not _late(i)), 2001)

    code, out = await _proc_batch(db_url, BIG_BATCH)
    assert code == 0, out
    states = await _finished_and_from_scratch(db_url, before)
    assert len(states[0]["offers"]) == late
    assert len(states[0]["notices"]) == BIG  # each late line's offer, each other line's move
    assert states[0] == states[1]
