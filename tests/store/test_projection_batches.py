"""Issue #14, the change path: a change asks for its SKU's projection and walks only the head
of the queue (store.backorders.INLINE_LINES) in its own transaction; the batches walk the rest
from the durable cursor. Whatever the interleaving of changes and partial batches, the lines
the walk has reached (and, once it is done, every line and queue mark) are exactly what the
projection from scratch (project_dates) gives; two processes walking at once, or one killed
inside a batch, walk every line once and move each date once. Batches that do the policy and
the notices of the lines they write (store.delays.follow_on_batch), between any changes, end
with the offers and notices the policy and the notice queueing from scratch give."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

import store.backorders as backorders
from store import Store, open_store
from store.backorders import (
    NewLine,
    cancel_line,
    cancel_restock,
    change_restock_date,
    place_order,
    project_dates,
    projection_batch,
    receive_restock,
    run_projection,
    set_stock,
)
from store.chats import link_chat
from store.delays import (
    apply_delay_policy,
    delay_policy_batch,
    follow_on_batch,
    run_delay_policy,
    run_follow_on,
)
from store.master import add_restock
from store.outbox import notice_batch, queue_notices, run_notices
from store.queries import order_of
from store.schema import events, order_lines, orders, queue_marks, restocks, sku_projections
from tests.store.helpers import T0, seed_catalog
from tests.store.policy_helpers import POLICY, policy_state

ROOT = Path(__file__).resolve().parents[2]
SKUS = ("KET-0001", "KET-0002")
D = date(2026, 2, 1)


async def _lines(conn: AsyncConnection) -> dict[int, tuple[Any, ...]]:
    c = order_lines.c
    rows = await conn.execute(
        select(
            c.line_id, c.sku, c.queue_rank, c.queued_at, c.projected_date, c.waits_for_restock_id
        )
        .where(c.qty_waiting > 0)
        .order_by(c.line_id)
    )
    return {int(r[0]): tuple(r[1:]) for r in rows}


async def _marks(conn: AsyncConnection) -> list[tuple[Any, ...]]:
    m = queue_marks.c
    rows = await conn.execute(select(m.sku, m.line_id, m.lines_before).order_by(m.sku, m.line_id))
    return [tuple(r) for r in rows]


async def _scratch(conn: AsyncConnection) -> tuple[dict[int, tuple[Any, ...]], list[Any]]:
    """The waiting lines and queue marks as the projection from scratch leaves them, in the
    caller's transaction (which the caller rolls back)."""
    for sku in SKUS:
        await project_dates(conn, sku)
    return await _lines(conn), await _marks(conn)


async def _walks(conn: AsyncConnection) -> dict[str, Any]:
    p = sku_projections.c
    rows = await conn.execute(
        select(p.sku, p.after_rank, p.after_at, p.after_line).where(p.pending.is_(True))
    )
    return {r.sku: r for r in rows}


async def _check(s: Store, *, done: bool) -> None:
    """Every line of a SKU with no walk under way, and every line a walk under way has reached,
    holds what the projection from scratch gives; with ``done``, no walk is under way."""
    async with s.begin() as conn:
        now = await _lines(conn)
        marks_now = await _marks(conn)
        walks = await _walks(conn)
        expected, marks_expected = await _scratch(conn)
        await conn.rollback()
    assert set(now) == set(expected)
    if done:
        assert walks == {}
    for line_id, row in now.items():
        sku, rank, at, *_ = row
        w = walks.get(sku)
        reached = w is None or (
            w.after_line is not None
            and (rank, at, line_id) <= (w.after_rank, w.after_at, w.after_line)
        )
        if reached:
            assert row == expected[line_id], (line_id, row, expected[line_id], w)
    if not walks:
        assert marks_now == marks_expected


async def _setup(s: Store, orders_per_sku: int, rng: random.Random, qty: int | None = None) -> None:
    async with s.begin() as conn:
        await seed_catalog(conn, customers=5)
        for i, sku in enumerate(SKUS):
            await add_restock(conn, f"R{i}-1", "SUP-1", sku, 6, D)
            await add_restock(conn, f"R{i}-2", "SUP-1", sku, 15, D + timedelta(days=10))
            await add_restock(conn, f"R{i}-3", "SUP-1", sku, 9, D + timedelta(days=20))
    async with s.begin() as conn:
        for n in range(orders_per_sku * len(SKUS)):
            sku = SKUS[n % len(SKUS)]
            await place_order(
                conn,
                str(100_000 + n),
                1 + n % 5,
                [NewLine(sku, qty or rng.randint(1, 3))],
                placed_at=T0 + timedelta(minutes=n),
            )


async def _waiting_line(conn: AsyncConnection, rng: random.Random) -> tuple[str, int] | None:
    c = order_lines.c
    rows = (
        await conn.execute(
            select(orders.c.order_number, c.line_no)
            .join(orders, orders.c.order_id == c.order_id)
            .where(c.qty_waiting > 0)
            .order_by(c.line_id)
        )
    ).all()
    return None if not rows else tuple(rng.choice(rows))  # type: ignore[return-value]


async def _open_restock(conn: AsyncConnection, rng: random.Random) -> str | None:
    ids = list(
        await conn.scalars(
            select(restocks.c.restock_id)
            .where(restocks.c.status == "open")
            .order_by(restocks.c.restock_id)
        )
    )
    return rng.choice(ids) if ids else None


async def _step(s: Store, rng: random.Random, n: int) -> str:
    kind = rng.choice(
        ["date", "date", "receive", "cancel_restock", "add_restock", "order", "order_ahead",
         "cancel", "stock", "batch", "batch", "batch"]
    )  # fmt: skip
    async with s.begin() as conn:
        if kind == "batch":
            for _ in range(rng.randint(1, 3)):
                await projection_batch(conn, limit=rng.randint(1, 6))
            return kind
        if kind in ("date", "receive", "cancel_restock"):
            rid = await _open_restock(conn, rng)
            if rid is None:
                return "none"
            if kind == "date":
                await change_restock_date(conn, rid, D + timedelta(days=rng.randint(-5, 40)), "x")
            elif kind == "receive":
                await receive_restock(conn, rid, rng.randint(0, 8))
            else:
                await cancel_restock(conn, rid, "x")
        elif kind == "add_restock":
            sku = rng.choice(SKUS)
            await add_restock(
                conn,
                f"N{n}",
                "SUP-1",
                sku,
                rng.randint(1, 12),
                D + timedelta(days=rng.randint(0, 30)),
            )
        elif kind in ("order", "order_ahead"):
            ahead = kind == "order_ahead"
            await place_order(
                conn,
                str(200_000 + n),
                rng.randint(1, 5),
                [NewLine(sku, rng.randint(1, 3)) for sku in rng.sample(SKUS, rng.randint(1, 2))],
                placed_at=T0 + timedelta(minutes=rng.randint(0, 50) if ahead else 1000 + n),
                priority=rng.choice((0, 5)) if ahead else 0,
            )
        elif kind == "cancel":
            line = await _waiting_line(conn, rng)
            if line is None:
                return "none"
            await cancel_line(conn, line[0], line[1], reason="x")
        else:
            sku = rng.choice(SKUS)
            allocated = await conn.scalar(
                select(func.coalesce(func.sum(order_lines.c.qty_allocated), 0)).where(
                    order_lines.c.sku == sku
                )
            )
            await set_stock(conn, sku, int(allocated or 0) + rng.randint(0, 4))
    return kind


@pytest.mark.parametrize("seed", range(6))
async def test_batches_between_any_changes_end_as_the_projection_from_scratch(
    store: Store, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    # A change walks at most this many lines itself: the rest of every queue is the batches'.
    monkeypatch.setattr(backorders, "INLINE_LINES", rng.choice((0, 1, 3)))
    await _setup(store, 14, rng)
    await run_projection(store)
    await _check(store, done=True)
    kinds = []
    for n in range(30):
        kinds.append(await _step(store, rng, n))
        await _check(store, done=False)
    assert kinds.count("batch") > 3 and len(set(kinds)) > 5, kinds
    run = await run_projection(store, batch_size=rng.randint(1, 5))
    assert run.more is False
    await _check(store, done=True)


async def test_a_long_queue_is_projected_after_the_change_commits(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change's own transaction walks INLINE_LINES lines; the order view of a line past
    them shows its old date, and its restock's date as the projection saw it, until a batch
    reaches it; then the new one."""
    monkeypatch.setattr(backorders, "INLINE_LINES", 2)
    # KET-0001: 6 orders of 2 units; R0-1 (6 units) covers orders 1-3, R0-2 orders 4-6.
    await _setup(store, 6, random.Random(1), qty=2)
    async with store.connect() as conn:
        before = await order_of(conn, 1, "100010")  # KET-0001's 6th order
    assert before is not None and before.lines[0].waits_for is not None
    old = before.lines[0].projected_date
    assert (old, before.lines[0].waits_for.restock_id) == (D + timedelta(days=10), "R0-2")
    async with store.begin() as conn:
        proj = await change_restock_date(conn, "R0-2", D + timedelta(days=30), "slip")
    assert proj is not None and proj.pending and proj.waiting_lines == 2 and proj.moved == ()
    async with store.connect() as conn:
        between = await order_of(conn, 1, "100010")
    assert between is not None and between.lines[0].waits_for is not None
    assert between.lines[0].projected_date == old
    assert between.lines[0].waits_for.expected_date == old  # not the restock's new date
    run = await run_projection(store, batch_size=2)
    assert (run.batches, run.lines, run.finished) == (3, 4, 1)  # 6 lines: 2 inline, then 2+2
    async with store.connect() as conn:
        after = await order_of(conn, 1, "100010")
    assert after is not None and after.lines[0].waits_for is not None
    assert after.lines[0].projected_date == D + timedelta(days=20)  # R0-3 comes first now
    assert after.lines[0].waits_for.expected_date == D + timedelta(days=20)
    await _check(store, done=True)


async def test_a_batch_walks_on_to_the_next_queue_with_what_its_limit_leaves(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short queues changed together (a deadline day's cancellations touch thousands of
    SKUs) are walked in one batch while its limit lasts, not one batch a SKU."""
    monkeypatch.setattr(backorders, "INLINE_LINES", 0)
    # 6 waiting lines a SKU, 12 in all.
    await _setup(store, 6, random.Random(3), qty=2)
    await run_projection(store)
    async with store.begin() as conn:
        await change_restock_date(conn, "R0-1", D + timedelta(days=12), "slip")
        await change_restock_date(conn, "R1-2", D + timedelta(days=25), "slip")
    async with store.begin() as conn:
        first = await projection_batch(conn, limit=9)
    # KET-0001's whole queue (6 lines), then KET-0002's first 3 with the 3 left.
    assert (first.batches, first.finished, first.lines, first.more) == (1, 1, 9, True)
    async with store.begin() as conn:
        assert set(await _walks(conn)) == {"KET-0002"}
    async with store.begin() as conn:
        second = await projection_batch(conn, limit=9)
    # KET-0002's last 3 lines; no queue is left to claim.
    assert (second.batches, second.finished, second.lines, second.more) == (1, 1, 3, False)
    await _check(store, done=True)


async def test_a_new_line_at_the_back_of_a_queue_being_walked_is_dated_at_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backorders, "INLINE_LINES", 0)
    await _setup(store, 8, random.Random(2))
    await run_projection(store)
    async with store.begin() as conn:
        await change_restock_date(conn, "R0-1", D + timedelta(days=15), "slip")
    async with store.begin() as conn:
        await projection_batch(conn, limit=3)
    async with store.begin() as conn:
        placed = await place_order(
            conn, "300001", 1, [NewLine("KET-0001", 1)], placed_at=T0 + timedelta(days=1)
        )
        walk = (await _walks(conn))["KET-0001"]
    # The walk goes on from where it was: the new line moved nobody's place.
    assert walk.after_line is not None
    async with store.begin() as conn:
        mine = await conn.scalar(
            select(order_lines.c.projected_date).where(order_lines.c.order_id == placed.order_id)
        )
        _, _ = await _scratch(conn)
        expected = await conn.scalar(
            select(order_lines.c.projected_date).where(order_lines.c.order_id == placed.order_id)
        )
        await conn.rollback()
    assert mine == expected and mine is not None
    await run_projection(store, batch_size=3)
    await _check(store, done=True)


async def test_a_walk_stops_before_it_writes_more_than_it_may(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``most_written``: a batch writes at most that many lines, however many more it may
    walk (the follow-on's batches are sized by the lines they write), and the next batches go
    on from the line it stopped before."""
    monkeypatch.setattr(backorders, "INLINE_LINES", 0)
    await _setup(store, 6, random.Random(1), qty=2)  # KET-0001: R0-1 covers 3 orders, R0-2 3
    await run_projection(store)  # the setup's own walks
    async with store.begin() as conn:
        await change_restock_date(conn, "R0-2", D + timedelta(days=30), "slip")
    async with store.begin() as conn:
        first = await projection_batch(conn, limit=100, mark=False, most_written=2)
    # Lines 1-3 stay on R0-1 and are walked; lines 4 and 5 move; line 6 is left.
    assert (first.lines, first.moved, len(first.written), first.more) == (5, 2, 2, True)
    async with store.begin() as conn:
        rest = await projection_batch(conn, limit=100, mark=False, most_written=2)
    assert (rest.lines, rest.moved, rest.finished) == (1, 1, 1)
    await _check(store, done=False)


async def _follow_equals_scratch(s: Store, rng: random.Random, day: date) -> None:
    """Finish what the changes owe with the batches that follow on (and then the policy's and
    the notices' own batches, for what they left marked): the offers, notices, dates and told
    marks equal the projection, the policy and the notice queueing from scratch, taken first
    in a transaction rolled back."""
    now = datetime.combine(day, time(9), tzinfo=UTC)
    async with s.begin() as conn:
        for sku in SKUS:
            await project_dates(conn, sku)
        await apply_delay_policy(conn, today=day, now=now, policy=POLICY)
        await queue_notices(conn, now=now)
        expected = await policy_state(conn)
        await conn.rollback()
    run = await run_follow_on(s, today=day, now=now, policy=POLICY, batch_size=rng.randint(1, 4))
    assert run.more is False
    await run_delay_policy(s, today=day, now=now, policy=POLICY, batch_size=2)
    await run_notices(s, now=now, batch_size=2)
    async with s.connect() as conn:
        assert await policy_state(conn) == expected
        assert await _walks(conn) == {}


@pytest.mark.parametrize("seed", range(5))
async def test_batches_that_follow_on_end_as_the_policy_and_notices_from_scratch(
    store: Store, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(100 + seed)
    monkeypatch.setattr(backorders, "INLINE_LINES", rng.choice((0, 1, 3)))
    day = D - timedelta(days=30)
    # The walks stamp each moved date with the clock, and a notice's key names the stamp:
    # one clock for the batches and the reference from scratch.
    monkeypatch.setattr(backorders, "utcnow", lambda: datetime.combine(day, time(9), UTC))
    await _setup(store, 10, rng)
    async with store.begin() as conn:
        await link_chat(conn, 1001, 1)
        await link_chat(conn, 1002, 2)
    await _follow_equals_scratch(store, rng, day)
    kinds = []
    followed = 0
    for n in range(30):
        now = datetime.combine(day, time(9), tzinfo=UTC)
        if n == 15:
            # A customer without a chat links one: nothing was stored for them while they had
            # none, and their lines were left untold; now they hear of it all, once.
            async with store.begin() as conn:
                await link_chat(conn, 1003, 3)
        kind = rng.choice(["follow", "follow", "policy", "notices", "days", "change", "change"])
        if kind == "follow":
            async with store.begin() as conn:
                for _ in range(rng.randint(1, 3)):
                    done = await follow_on_batch(
                        conn, today=day, now=now, policy=POLICY, limit=rng.randint(1, 6)
                    )
                    followed += done.followed
        elif kind == "policy":
            async with store.begin() as conn:
                await delay_policy_batch(conn, today=day, now=now, policy=POLICY, limit=2)
        elif kind == "notices":
            async with store.begin() as conn:
                await notice_batch(conn, now=now, limit=2)
        elif kind == "days":
            # Far enough for answer-by days to pass: offers come due, and the batches leave
            # their lines marked (deadlines first).
            day += timedelta(days=rng.randint(1, 20))
        else:
            kind = await _step(store, rng, n)
        kinds.append(kind)
        if n % 10 == 9:
            await _follow_equals_scratch(store, rng, day)
    assert kinds.count("follow") > 3 and len(set(kinds)) > 6, kinds
    assert followed > 0
    await _follow_equals_scratch(store, rng, day)


# --- real processes ----------------------------------------------------------------------


async def _big(db_url: str) -> dict[int, Any]:
    """Two SKUs of 120 one-unit lines each; then their first and last restocks slip (108
    lines of each SKU move) with nothing walked in the changes: the dates before."""
    s = await open_store(db_url)
    try:
        await _setup(s, 0, random.Random(0))
        async with s.begin() as conn:
            for i, sku in enumerate(SKUS):
                await add_restock(conn, f"R{i}-4", "SUP-1", sku, 200, D + timedelta(days=25))
            for n in range(240):
                await place_order(
                    conn,
                    str(100_000 + n),
                    1 + n % 5,
                    [NewLine(SKUS[n % 2], 1)],
                    placed_at=T0 + timedelta(minutes=n),
                )
        async with s.connect() as conn:
            before = await _lines(conn)
        backorders.INLINE_LINES, inline = 0, backorders.INLINE_LINES
        try:
            async with s.begin() as conn:
                for i in range(len(SKUS)):
                    await change_restock_date(conn, f"R{i}-1", D + timedelta(days=40), "slip")
                    await change_restock_date(conn, f"R{i}-4", D + timedelta(days=45), "slip")
        finally:
            backorders.INLINE_LINES = inline
        return before
    finally:
        await s.close()


async def _proc(db_url: str, *flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store.batch_proc",
        "projection",
        db_url,
        *flags,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _moved_once(db_url: str, before: dict[int, Any]) -> int:
    """Every line whose date differs from ``before`` moved once: its previous date is the one
    before, and the 'dates_projected' events count each once. The lines that moved."""
    s = await open_store(db_url, migrate_schema=False)
    try:
        await _check(s, done=True)
        async with s.connect() as conn:
            c = order_lines.c
            rows = (
                await conn.execute(
                    select(c.line_id, c.projected_date, c.previous_projected_date).where(
                        c.qty_waiting > 0
                    )
                )
            ).all()
            logged = [
                json.loads(d)["moved"]
                for d in await conn.scalars(
                    select(events.c.data)
                    .where(events.c.kind == "dates_projected")
                    .where(
                        events.c.event_id
                        > select(func.max(events.c.event_id))
                        .where(events.c.kind == "restock_date_changed")
                        .scalar_subquery()
                    )
                )
            ]
        moved = [r for r in rows if r.projected_date != before[r.line_id][3]]
        assert all(r.previous_projected_date == before[r.line_id][3] for r in moved)
        assert sum(logged) == len(moved)
        return len(moved)
    finally:
        await s.close()


async def test_two_processes_walk_every_line_once(db_url: str) -> None:
    before = await _big(db_url)
    procs = [await _proc(db_url, "--batch", "7", "--wait") for _ in range(2)]
    for p in procs:
        assert p.stdout is not None
        assert json.loads(await p.stdout.readline()) == {"ready": True}
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        await p.stdin.drain()
    results = []
    for p in procs:
        out, err = await p.communicate()
        assert p.returncode == 0, err.decode()
        results.append(json.loads(out.decode().splitlines()[-1]))
    # 240 waiting lines, each walked by exactly one of the two; each moved date moved once.
    assert sum(r["lines"] for r in results) == 240
    moved = await _moved_once(db_url, before)
    assert sum(r["moved"] for r in results) == moved > 200


async def test_a_kill_inside_a_batch_loses_nothing_and_does_nothing_twice(db_url: str) -> None:
    before = await _big(db_url)
    p = await _proc(db_url, "--batch", "10", "--die-in-batch", "3")
    out, err = await p.communicate()
    assert p.returncode == -9 and json.loads(out.decode()) == {"dying": 3}, err.decode()
    s = await open_store(db_url, migrate_schema=False)
    try:
        async with s.connect() as conn:
            walk = (await _walks(conn))[SKUS[0]]  # two batches committed, the third not
            c = order_lines.c
            walked = await conn.scalar(
                select(func.count()).where(
                    c.sku == SKUS[0],
                    c.qty_waiting > 0,
                    tuple_(c.queue_rank, c.queued_at, c.line_id)
                    <= tuple_(
                        literal(walk.after_rank, c.queue_rank.type),
                        literal(walk.after_at, c.queued_at.type),
                        literal(walk.after_line, c.line_id.type),
                    ),
                )
            )
        assert walked == 20
        run = await run_projection(s, batch_size=10)
    finally:
        await s.close()
    assert run.lines == 240 - 20
    assert await _moved_once(db_url, before) > 200
