"""Issue #14, backorder-admin: a change commits on its own; what it owes (the delay policy from
its marks, the notices) runs after it in batches of their own, and a command that dies in the
middle of them leaves the rest to `catch-up`, which ends where the policy from scratch ends.
`status` shows what is pending."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

import store.backorders
import store.cli
from store import open_store
from store.cli import follow_on_settings, main
from store.delays import DelayRun, apply_delay_policy
from store.outbox import queue_notices
from store.schema import chats, customers, order_lines, restocks
from tests.store.policy_helpers import policy_state
from tests.store.test_cli import load_all


def run(db_url: str, *argv: str) -> int:
    return main(["--db", db_url, *argv])


async def _state(url: str, *, scratch: bool = False) -> dict[str, Any]:
    s = await open_store(url, migrate_schema=False)
    try:
        async with s.begin() as conn:
            if scratch:
                settings = follow_on_settings()
                now = datetime.now(UTC)
                today = now.astimezone(settings.zone).date()
                await apply_delay_policy(conn, today=today, now=now, policy=settings.policy)
                await queue_notices(conn, threshold_days=settings.threshold_days, now=now)
            return await policy_state(conn)
    finally:
        await s.close()


async def _chat_for_everyone(url: str) -> None:
    """Every customer with a chat, as if linked before their orders came (a link marks what
    it finds): a customer without one is told nothing, and nothing is stored for them."""
    s = await open_store(url, migrate_schema=False)
    async with s.begin() as conn:
        ids = list(await conn.scalars(select(customers.c.customer_id)))
        now = datetime.now(UTC)
        await conn.execute(
            insert(chats),
            [
                {"chat_id": 5000 + c, "customer_id": c, "created_at": now, "updated_at": now}
                for c in ids
            ],
        )
    await s.close()


def test_a_change_commits_before_its_follow_on_and_catch_up_finishes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file of its own: the from-scratch reference runs on a copy of it.
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    load_all(db_url, tmp_path)
    asyncio.run(_chat_for_everyone(db_url))
    capsys.readouterr()
    assert run(db_url, "status") == 0
    assert capsys.readouterr().out.splitlines()[:5] == [
        "lines marked, not passed yet: 0",
        "first pass: 3 of 3 lines looked at (100.0%), 0 left",
        "delay offers past their answer-by day: 0",
        "notices due now: 0; outbox backlog (pending): 0",
        "notice queueing: 0 lines marked, 0 lines not looked at yet (each after the delay policy)",
    ]

    real = store.cli.run_delay_policy

    async def dies_after_one_batch(*args: Any, **kwargs: Any) -> DelayRun:
        await real(*args, **{**kwargs, "batch_size": 1, "max_batches": 1})
        raise RuntimeError("killed")

    monkeypatch.setattr(store.cli, "run_delay_policy", dies_after_one_batch)
    with pytest.raises(RuntimeError, match="killed"):
        run(db_url, "restock-date", "PO-1", "2026-06-01", "--reason", "supplier")
    monkeypatch.undo()
    capsys.readouterr()

    # The change stayed; one of its two marked lines was passed, the other still marked.
    async def expected_date() -> Any:
        s = await open_store(db_url, migrate_schema=False)
        async with s.connect() as conn:
            found = await conn.scalar(select(restocks.c.expected_date))
        await s.close()
        return found

    assert str(asyncio.run(expected_date())) == "2026-06-01"
    assert run(db_url, "status") == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0] == "lines marked, not passed yet: 1"
    # Both lines wait for their notices: one for the policy, the other for nothing.
    assert status[4].startswith("notice queueing: 2 lines marked, 0 lines not looked at")

    scratch = tmp_path / "scratch.sqlite3"
    shutil.copy(tmp_path / "store.sqlite3", scratch)
    expected = asyncio.run(_state(f"sqlite+aiosqlite:///{scratch}", scratch=True))

    assert run(db_url, "catch-up") == 0
    assert capsys.readouterr().out == (
        "delay policy: 1 offered, 0 cancelled, 0 to agents, 0 closed;"
        " 1 lines looked at in 1 batches; 0 notices queued\n"
    )  # each line's offer told its new date: no order update repeats it
    assert asyncio.run(_state(db_url)) == expected
    assert len(expected["offers"]) == 2
    assert run(db_url, "status") == 0
    assert capsys.readouterr().out.splitlines()[0] == "lines marked, not passed yet: 0"


def test_no_progress_bar_when_not_on_a_terminal(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_all(db_url, tmp_path)
    capsys.readouterr()
    assert run(db_url, "restock-date", "PO-1", "2026-06-01", "--reason", "supplier") == 0
    assert run(db_url, "catch-up", "--batch-size", "1") == 0
    out = capsys.readouterr()
    assert out.err == ""


def test_catch_up_rescan_looks_at_every_line_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
    load_all(db_url, tmp_path)

    async def move_around_the_store() -> None:
        # Dates written with SQL, not through the store's functions: no mark says so.
        s = await open_store(db_url, migrate_schema=False)
        async with s.begin() as conn:
            await conn.execute(
                update(order_lines)
                .where(order_lines.c.qty_waiting > 0)
                .values(projected_date=date(2026, 5, 1))
            )
        await s.close()

    asyncio.run(move_around_the_store())
    capsys.readouterr()
    assert run(db_url, "catch-up") == 0
    assert capsys.readouterr().out.startswith("delay policy: 0 offered")
    assert run(db_url, "catch-up", "--rescan") == 0
    assert capsys.readouterr().out.startswith(
        "delay policy: 2 offered, 0 cancelled, 0 to agents, 0 closed;"
        " 3 lines looked at in 1 batches;"
    )


def test_a_projection_left_half_done_is_shown_and_finished_by_catch_up(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A date change walks no line itself here (INLINE_LINES 0, as a queue longer than it):
    its projection is the follow-on's first stage. A command killed after one batch of it
    leaves the rest pending, `status` says how much, and `catch-up` ends where the projection
    from scratch ends."""
    load_all(db_url, tmp_path)
    monkeypatch.setattr(store.backorders, "INLINE_LINES", 0)
    real = store.cli.run_follow_on

    async def dies_after_one_batch(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **{**kwargs, "batch_size": 1, "max_batches": 1})
        raise RuntimeError("killed")

    monkeypatch.setattr(store.cli, "run_follow_on", dies_after_one_batch)
    capsys.readouterr()
    with pytest.raises(RuntimeError, match="killed"):
        run(db_url, "restock-date", "PO-1", "2026-06-01", "--reason", "supplier")
    assert capsys.readouterr().out == (
        "PO-1: 0 lines moved in the change; the rest of the queue is projected in batches\n"
    )
    monkeypatch.setattr(store.cli, "run_follow_on", real)
    assert run(db_url, "status") == 0
    status = capsys.readouterr().out.splitlines()
    assert status[5] == (
        "projection: 1 SKUs owe one, 1 waiting lines not walked yet (before the delay policy)"
    )

    async def dates() -> list[Any]:
        s = await open_store(db_url, migrate_schema=False)
        async with s.connect() as conn:
            c = order_lines.c
            rows = await conn.execute(
                select(c.line_id, c.projected_date, c.previous_projected_date)
                .where(c.qty_waiting > 0)
                .order_by(c.line_id)
            )
            found = [tuple(r) for r in rows]
        await s.close()
        return found

    # The first line walked has its new date; the second still its old one.
    assert [d[1:] for d in asyncio.run(dates())] == [
        (date(2026, 6, 1), date(2026, 2, 1)),
        (date(2026, 2, 1), None),
    ]
    assert run(db_url, "catch-up") == 0
    assert [d[1:] for d in asyncio.run(dates())] == [(date(2026, 6, 1), date(2026, 2, 1))] * 2
    capsys.readouterr()
    assert run(db_url, "status") == 0
    assert capsys.readouterr().out.splitlines()[5] == (
        "projection: 0 SKUs owe one, 0 waiting lines not walked yet (before the delay policy)"
    )
