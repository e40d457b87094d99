"""Issue #14: a big receipt commits after allocating the first lines of the queue
(store.backorders.INLINE_ALLOCATION) and leaves the rest to the allocation's batches
(allocation_batch, run_allocation), each its own short transaction. The batches give the units
out in queue order, each unit once: one after another, two processes at once, or a process
killed inside a batch and a restart; meanwhile new orders join the back of the queue without
taking the units. At the end the lines hold what one allocation in the receipt's transaction
gives, and the dates what a projection from scratch gives. A stock count (set_stock) that puts
units on hand goes the same way (store.backorders._give_out), and ends where the unbounded
allocation in its own transaction did. Both backends."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

import store.backorders as backorders
from store import Store, open_store
from store.backorders import (
    NewLine,
    OrderIn,
    allocation_batch,
    place_order,
    place_orders,
    project_dates,
    receive_restock,
    run_allocation,
    run_projection,
    set_stock,
)
from store.schema import order_lines, sku_allocations, stock
from tests.store.helpers import D1, D2, T0, restock, seed_catalog

ROOT = Path(__file__).resolve().parents[2]
SKU = "KET-0001"
UNITS = 100  # received; the 60 waiting lines want 120
INLINE = 10


async def _setup(s: Store) -> list[tuple[int, int]]:
    """60 waiting lines of 1-3 units: their (line_id, qty) in queue order."""
    async with s.begin() as conn:
        await seed_catalog(conn)
        await restock(conn, "R1", UNITS, D1)
        await restock(conn, "R2", 500, D2)
        for n in range(60):
            await place_order(
                conn,
                str(100_000 + n),
                1 + n % 5,
                [NewLine(SKU, 1 + n % 3)],
                placed_at=T0 + timedelta(minutes=n),
            )
    return await _queue(s)


async def _queue(s: Store) -> list[tuple[int, int]]:
    c = order_lines.c
    async with s.connect() as conn:
        rows = await conn.execute(
            select(c.line_id, c.qty_ordered)
            .where(c.sku == SKU)
            .order_by(c.queue_rank, c.queued_at, c.line_id)
        )
        return [(int(r[0]), int(r[1])) for r in rows]


def _greedy(queue: list[tuple[int, int]], units: int) -> dict[int, int]:
    """What one allocation of ``units`` over the queue gives each line."""
    out = {}
    for line_id, qty in queue:
        out[line_id] = give = min(units, qty)
        units -= give
    return out


async def _allocated(conn: AsyncConnection) -> dict[int, int]:
    c = order_lines.c
    rows = await conn.execute(select(c.line_id, c.qty_allocated).where(c.sku == SKU))
    return {int(r[0]): int(r[1]) for r in rows}


async def _check_units(s: Store, queue: list[tuple[int, int]]) -> dict[int, int]:
    """Each unit given once, in queue order: the lines given units are a prefix of the queue,
    every one but the last of them filled, and the stock row counts what the lines hold."""
    async with s.connect() as conn:
        got = await _allocated(conn)
        held = await conn.scalar(select(stock.c.allocated).where(stock.c.sku == SKU))
    given = [got[line_id] for line_id, _ in queue]
    filled = [got[line_id] == qty for line_id, qty in queue]
    first_short = filled.index(False) if False in filled else len(filled)
    assert all(g == 0 for g in given[first_short + 1 :])
    assert sum(got.values()) == held
    return got


async def _dates_as_from_scratch(s: Store) -> None:
    c = order_lines.c
    q = (
        select(c.line_id, c.projected_date, c.waits_for_restock_id)
        .where(c.qty_waiting > 0)
        .order_by(c.line_id)
    )
    async with s.begin() as conn:
        now = (await conn.execute(q)).all()
        await project_dates(conn, SKU)
        scratch = (await conn.execute(q)).all()
        await conn.rollback()
    assert now == scratch


async def _owed(s: Store) -> list[str]:
    async with s.connect() as conn:
        return list(await conn.scalars(select(sku_allocations.c.sku)))


async def test_a_small_receipt_is_allocated_in_its_own_transaction(store: Store) -> None:
    queue = await _setup(store)
    async with store.begin() as conn:
        rec = await receive_restock(conn, "R1")
    # 100 units for 60 lines (1, 2, 3, 1, 2, 3, ... units): the 51st gets the last one, all
    # in the receipt (INLINE_ALLOCATION lines is 500).
    assert not rec.allocating and len(rec.allocated) == 51 and rec.to_free_stock == 0
    assert await _owed(store) == []
    assert await _check_units(store, queue) == _greedy(queue, UNITS)


async def test_a_big_receipt_commits_and_its_batches_give_each_unit_once_in_queue_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = await _setup(store)
    monkeypatch.setattr(backorders, "INLINE_ALLOCATION", INLINE)
    async with store.begin() as conn:
        rec = await receive_restock(conn, "R1")
    assert rec.allocating and [a.line_id for a in rec.allocated] == [i for i, _ in queue[:10]]
    assert await _owed(store) == [SKU]
    # Meanwhile new lines join the back of the queue and leave the free units to the batches,
    # an order (one by one) and a file (placed whole) alike; the file's lines are dated as
    # they are written, the queue not projected again from scratch.
    projected: list[Any] = []
    real = backorders._project_many

    async def counted(conn: AsyncConnection, skus: list[str]) -> None:
        projected.append(skus)
        await real(conn, skus)

    monkeypatch.setattr(backorders, "_project_many", counted)
    async with store.begin() as conn:
        placed = await place_order(
            conn, "200000", 1, [NewLine(SKU, 2)], placed_at=T0 + timedelta(days=1)
        )
        assert placed.allocated == ()
        files = await place_orders(
            conn, [OrderIn("200001", 2, (NewLine(SKU, 1),), T0 + timedelta(days=2))]
        )
        assert files == 1
    assert projected == []
    queue = await _queue(store)
    assert len(queue) == 62
    await _dates_as_from_scratch(store)
    batches = 0
    while True:
        async with store.begin() as conn:
            run = await allocation_batch(conn, limit=7)
        if not run.batches:
            break
        batches += 1
        await _check_units(store, queue)
    # 10 lines in the receipt, 7 a batch: the units run out in the 51st line (6th batch).
    assert batches == 6 and await _owed(store) == []
    assert await _check_units(store, queue) == _greedy(queue, UNITS)
    await run_projection(store)
    await _dates_as_from_scratch(store)


async def _proc(db_url: str, *flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store.batch_proc",
        "allocation",
        db_url,
        *flags,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _received(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[int, int]], Any]:
    s = await open_store(db_url)
    try:
        queue = await _setup(s)
        monkeypatch.setattr(backorders, "INLINE_ALLOCATION", INLINE)
        async with s.begin() as conn:
            rec = await receive_restock(conn, "R1")
        assert rec.allocating
        return queue, sum(a.qty for a in rec.allocated)
    finally:
        await s.close()


async def test_two_processes_give_each_unit_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, inline_units = await _received(db_url, monkeypatch)
    procs = [await _proc(db_url, "--batch", "3", "--wait") for _ in range(2)]
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
    assert sum(r["units"] for r in results) == UNITS - inline_units
    s = await open_store(db_url, migrate_schema=False)
    try:
        assert await _check_units(s, queue) == _greedy(queue, UNITS)
        assert await _owed(s) == []
        await run_projection(s)
        await _dates_as_from_scratch(s)
    finally:
        await s.close()


async def test_a_kill_inside_a_batch_loses_nothing_and_gives_nothing_twice(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, _ = await _received(db_url, monkeypatch)
    p = await _proc(db_url, "--batch", "10", "--die-in-batch", "3")
    out, err = await p.communicate()
    assert p.returncode == -9 and json.loads(out.decode()) == {"dying": 3}, err.decode()
    s = await open_store(db_url, migrate_schema=False)
    try:
        async with s.connect() as conn:
            c = order_lines.c
            lines = await conn.scalar(select(func.count()).where(c.sku == SKU, c.qty_allocated > 0))
        assert lines == 10 + 2 * 10  # the receipt's and two batches', not the third's
        await _check_units(s, queue)
        assert await _owed(s) == [SKU]
        run = await run_allocation(s, batch_size=10)
        assert await _check_units(s, queue) == _greedy(queue, UNITS)
        assert run.lines == 51 - 30 and await _owed(s) == []
        await run_projection(s)
        await _dates_as_from_scratch(s)
    finally:
        await s.close()


def test_the_cli_commits_a_big_receipt_and_its_follow_on_gives_out_the_rest(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`backorder-admin receive` says what the receipt's transaction allocated and that the
    rest goes in batches; a follow-on killed before them leaves them owed (status says so),
    and `catch-up` gives them out."""
    import store.cli as cli

    async def setup() -> list[tuple[int, int]]:
        s = await open_store(db_url)
        try:
            return await _setup(s)
        finally:
            await s.close()

    queue = asyncio.run(setup())
    monkeypatch.setattr(backorders, "INLINE_ALLOCATION", INLINE)
    real = cli.run_allocation

    async def killed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("killed")

    monkeypatch.setattr(cli, "run_allocation", killed)
    capsys.readouterr()
    with pytest.raises(RuntimeError, match="killed"):
        cli.main(["--db", db_url, "receive", "R1"])
    # The first 10 lines: 1+2+3+1+2+3+1+2+3+1 units.
    assert capsys.readouterr().out == (
        "R1: received 100, allocated 19 to 10 lines; the rest is allocated in batches\n"
    )
    assert cli.main(["--db", db_url, "status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[6] == "allocation: 1 SKUs with 81 received units not given out yet (batches)"
    monkeypatch.setattr(cli, "run_allocation", real)
    assert cli.main(["--db", db_url, "catch-up"]) == 0
    assert cli.main(["--db", db_url, "status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert "allocation: 0 SKUs with 0 received units not given out yet (batches)" in status

    async def after() -> None:
        s = await open_store(db_url, migrate_schema=False)
        try:
            assert await _check_units(s, queue) == _greedy(queue, UNITS)
            await _dates_as_from_scratch(s)
        finally:
            await s.close()

    asyncio.run(after())


async def _lines_and_stock(conn: AsyncConnection) -> tuple[list[Any], Any]:
    c = order_lines.c
    lines = await conn.execute(
        select(c.line_id, c.qty_allocated, c.qty_waiting, c.waits_for_restock_id, c.projected_date)
        .where(c.sku == SKU)
        .order_by(c.line_id)
    )
    row = await conn.execute(select(stock.c.on_hand, stock.c.allocated).where(stock.c.sku == SKU))
    return [tuple(r) for r in lines], tuple(row.one())


async def _unbounded(s: Store, monkeypatch: pytest.MonkeyPatch, on_hand: int) -> Any:
    """What a stock count of ``on_hand`` leaves when it allocates every line in its own
    transaction (the old set_stock), rolled back."""
    monkeypatch.setattr(backorders, "INLINE_ALLOCATION", 10**9)
    async with s.begin() as conn:
        await set_stock(conn, SKU, on_hand)
        state = await _lines_and_stock(conn)
        await conn.rollback()
    async with s.connect() as conn:
        assert (await _lines_and_stock(conn))[1] == (0, 0)
    return state


async def _allocate_in_batches(s: Store, queue: list[tuple[int, int]]) -> int:
    """run_allocation one batch of 7 lines at a time, each unit once in queue order after
    every batch; the number of batches."""
    batches = 0
    while (await run_allocation(s, batch_size=7, max_batches=1)).batches:
        batches += 1
        await _check_units(s, queue)
    return batches


async def test_a_small_stock_count_is_allocated_in_its_own_transaction(store: Store) -> None:
    queue = await _setup(store)
    async with store.begin() as conn:
        allocs = await set_stock(conn, SKU, UNITS)
    assert len(allocs) == 51 and await _owed(store) == []
    assert await _check_units(store, queue) == _greedy(queue, UNITS)


async def test_a_big_stock_count_commits_and_its_batches_end_as_one_allocation(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = await _setup(store)
    unbounded = await _unbounded(store, monkeypatch, UNITS)
    monkeypatch.setattr(backorders, "INLINE_ALLOCATION", INLINE)
    async with store.begin() as conn:
        allocs = await set_stock(conn, SKU, UNITS)
    assert [a.line_id for a in allocs] == [i for i, _ in queue[:INLINE]]
    assert await _owed(store) == [SKU]
    got = await _check_units(store, queue)
    assert sum(got.values()) == sum(a.qty for a in allocs) == 19  # 1+2+3+1+2+3+1+2+3+1
    await _dates_as_from_scratch(store)
    # 10 lines in the count, 7 a batch: the units run out in the 51st line (6th batch).
    assert await _allocate_in_batches(store, queue) == 6 and await _owed(store) == []
    assert await _check_units(store, queue) == _greedy(queue, UNITS)
    await run_projection(store)
    await _dates_as_from_scratch(store)
    async with store.connect() as conn:
        assert await _lines_and_stock(conn) == unbounded


async def test_a_stock_count_during_a_receipts_batches_goes_on_from_the_head(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count's units join the receipt's: the count gives the next lines of the queue
    theirs in its transaction, the batches the rest, as one allocation of both would."""
    queue = await _setup(store)
    monkeypatch.setattr(backorders, "INLINE_ALLOCATION", INLINE)
    async with store.begin() as conn:
        rec = await receive_restock(conn, "R1")
    assert rec.allocating
    async with store.begin() as conn:
        allocs = await set_stock(conn, SKU, UNITS + 20)
    assert [a.line_id for a in allocs] == [i for i, _ in queue[INLINE : 2 * INLINE]]
    assert await _owed(store) == [SKU]
    await _check_units(store, queue)
    await _allocate_in_batches(store, queue)
    assert await _owed(store) == []
    assert await _check_units(store, queue) == _greedy(queue, UNITS + 20)
    await run_projection(store)
    await _dates_as_from_scratch(store)
