"""Issue #14: any number of processes may run the delay policy and the notice queueing at the
same moment on one store, SQLite or PostgreSQL: no error, no offer made twice, no notice queued
twice. Each store is a copy of one with 120 late lines; one process's run is the reference."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from store import Store, open_store
from store.delays import run_delay_policy
from store.outbox import run_notices
from store.schema import delay_offers, follow_on_marks
from tests.pg import Databases, sqlite_url
from tests.store.policy_helpers import POLICY, clone, late_store, policy_state
from tests.store.policy_proc import NOW, TODAY

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 100  # one or two lines each: 120 late lines


async def _state(url: str) -> dict[str, object]:
    s = await open_store(url, migrate_schema=False)
    try:
        async with s.connect() as conn:
            return await policy_state(conn)
    finally:
        await s.close()


async def _run(urls: list[str], *flags: str) -> list[dict[str, int]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.store.policy_proc",
            url,
            "--wait",
            *flags,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for url in urls
    ]
    # Every process has opened the store and waits before any starts: they start together.
    for p in procs:
        assert p.stdout is not None
        assert json.loads(await p.stdout.readline()) == {"ready": True}
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
    await asyncio.gather(*(p.stdin.drain() for p in procs if p.stdin is not None))
    results = []
    for p in procs:
        out, err = await p.communicate()
        assert p.returncode == 0, err.decode()
        assert b"Error" not in err, err.decode()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


async def _fill_late(s: Store) -> None:
    async with s.begin() as conn:
        await late_store(conn, orders=ORDERS)


@pytest.fixture(scope="module")
def late_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite store with the late lines, built once for the module's tests."""
    path = tmp_path_factory.mktemp("late") / "late.sqlite3"

    async def build() -> None:
        s = await open_store(sqlite_url(path))
        await _fill_late(s)
        await s.close()

    asyncio.run(build())
    return path


@pytest.fixture
def late_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A store of the test's own with the late lines: a copy of the module's file, or on
    PostgreSQL of the worker's template."""
    if backend == "sqlite":
        shutil.copy(request.getfixturevalue("late_file"), tmp_path / "store.sqlite3")
        yield sqlite_url(tmp_path / "store.sqlite3")
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    name, url = databases.fresh(databases.template("policy_late", _fill_late))
    try:
        yield url
    finally:
        databases.drop(name)


async def _unmark(url: str) -> None:
    s = await open_store(url, migrate_schema=False)
    async with s.begin() as conn:
        await conn.execute(delete(follow_on_marks))
    await s.close()


@pytest.mark.parametrize(
    ("processes", "flags"),
    [
        pytest.param(2, ("--batch", "16"), id="2"),
        # Two processes show it on PostgreSQL; four cost the suite 25 s more there.
        pytest.param(4, ("--batch", "16"), id="4", marks=pytest.mark.sqlite_only("time")),
        pytest.param(
            4,
            ("--batch", "16", "--no-turn"),
            id="4-meeting-at-the-insert",
            marks=pytest.mark.sqlite_only("time"),
        ),
    ],
)
async def test_concurrent_passes_make_each_offer_and_notice_once(
    late_url: str,
    request: pytest.FixtureRequest,
    processes: int,
    flags: tuple[str, ...],
) -> None:
    alone = await clone(late_url, request, "alone")
    shared = await clone(late_url, request, "shared")
    for url in (alone, shared):
        if "--no-turn" in flags:
            # A store upgraded to the marks: none yet, the first pass scans from line 0. With
            # no write before the batch's reads (pysqlite begins at the first write), the
            # processes read the same lines and meet at the offers' insert.
            await _unmark(url)
    (reference,) = await _run([alone], "--batch", "16")
    results = await _run([shared] * processes, *flags)

    expected = await _state(alone)
    offers: list[tuple[Any, ...]] = expected["offers"]  # type: ignore[assignment]
    # 120 lines, 20 of them (the orders promised for day 100) moved but not late.
    assert reference["offered"] == len(offers) == 100
    # Half the customers have a chat (the odd ones): their offers are told, and the moves of
    # their orders that are not late get a notice each. Nothing is stored for the others.
    told_offers = sum(1 for o in offers if o[3] % 2 == 1)
    assert (told_offers, reference["notices"]) == (50, 10)
    assert len(expected["notices"]) == told_offers + reference["notices"]  # type: ignore[arg-type]
    # The offers and notices were shared out between the processes, none made twice.
    assert sum(r["offered"] for r in results) == reference["offered"]
    assert sum(r["notices"] for r in results) == reference["notices"]
    assert await _state(shared) == expected


async def _offers_made_half_shown(url: str) -> None:
    """The policy's first pass (every late line offered), then every other offer needing
    consent shown to its customer: on its deadline, those are cancelled, the rest go to
    agents."""
    s = await open_store(url, migrate_schema=False)
    d = delay_offers.c
    try:
        await run_delay_policy(s, today=TODAY, now=NOW, policy=POLICY)
        await run_notices(s, now=NOW)
        async with s.begin() as conn:
            due = list(
                await conn.scalars(
                    select(d.offer_id)
                    .where(d.status == "open", d.consent_needed.is_(True))
                    .order_by(d.offer_id)
                )
            )
            await conn.execute(
                update(delay_offers).where(d.offer_id.in_(due[::2])).values(shown_at=NOW)
            )
    finally:
        await s.close()


async def test_concurrent_deadline_days_decide_each_offer_once(
    late_url: str, request: pytest.FixtureRequest
) -> None:
    """Two processes run the policy on the day every offer is due: each offer is decided
    once, each line cancelled once (store.backorders.cancel_lines, a batch's lines together),
    and the store ends as one process leaves it."""
    await _offers_made_half_shown(late_url)
    alone = await clone(late_url, request, "alone")
    shared = await clone(late_url, request, "shared")
    (reference,) = await _run([alone], "--batch", "16", "--deadlines")
    results = await _run([shared] * 2, "--batch", "16", "--deadlines")

    expected = await _state(alone)
    assert (reference["cancelled"], reference["to_agents"], reference["closed"]) == (25, 25, 0)
    for outcome in ("cancelled", "to_agents", "closed"):
        assert sum(r[outcome] for r in results) == reference[outcome]
    assert await _state(shared) == expected
