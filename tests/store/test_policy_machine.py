"""Issue #14: the delay policy and the notice queueing from the marks equal both from scratch,
whatever happens between a change and its passes.

A hypothesis state machine over a small store: imports of orders, restock date changes,
receipts, new restocks, cancellations, shipments, days passing, customers seeing and answering
offers, customers linking a chat, and passes of the policy and of the notices run only partly
(1-3 batches of 1-2 lines) or not at all (the process "killed" after the change committed).
After every step, a copy of the store that finishes the pending work in small batches (from
the marks, the cursors and the due offers) ends exactly where a copy that runs the policy and
the notice queueing from scratch over every line ends: the same offers, notices, dates and
told marks.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
from collections.abc import Coroutine
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import select
from sqlalchemy.engine import make_url

from store import Store, open_store
from store.backorders import (
    NewLine,
    cancel_line,
    change_restock_date,
    place_order,
    receive_restock,
    ship,
)
from store.chats import link_chat
from store.delays import (
    answer_keep,
    apply_delay_policy,
    delay_policy_batch,
    offer_for,
    record_shown,
    run_delay_policy,
)
from store.errors import StoreError
from store.master import add_restock
from store.outbox import notice_batch, queue_notices, run_notices
from store.schema import delay_offers, order_lines, orders, restocks
from tests.pg import SERVER_URL, Databases
from tests.store.helpers import seed_catalog
from tests.store.policy_helpers import D0, POLICY, policy_state

T = TypeVar("T")
SKUS = ("KET-0001", "KET-0002")


async def seed(s: Store) -> None:
    """Every example's first state: the catalog, four customers (two with a chat), and one
    restock of each SKU due in 20 days."""
    async with s.begin() as conn:
        await seed_catalog(conn, customers=4)
        await link_chat(conn, 1001, 1)
        await link_chat(conn, 1002, 2)
        for n, sku in enumerate(SKUS, start=1):
            await add_restock(conn, f"R-{n}", "SUP-1", sku, 3, D0 + timedelta(days=20))


# The seeded SQLite store every example copies (PolicyMachine.new_url), made once a process.
_seeded_dir = TemporaryDirectory()
atexit.register(_seeded_dir.cleanup)
_seeded: Path | None = None


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.day = D0
        self.orders = 0
        self.restocks = 0
        self.copies = 0
        self.store: Store | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @property
    def now(self) -> datetime:
        return datetime.combine(self.day, time(9), tzinfo=UTC)

    @property
    def s(self) -> Store:
        assert self.store is not None
        return self.store

    def teardown(self) -> None:
        if self.store is not None:
            self.run(self.store.close())
        self.loop.close()
        self.tmp.cleanup()

    # The invariant is checked after every CHECK_EVERY-th step (and the first).
    CHECK_EVERY = 1

    def new_url(self) -> str:
        """A store of its own for the example, seeded (``seed``): a copy of the one file this
        process seeded first (the migrations and the seed cost more than many steps)."""
        global _seeded
        if _seeded is None:
            made = Path(_seeded_dir.name) / "seeded.sqlite3"

            async def build() -> None:
                s = await open_store(f"sqlite+aiosqlite:///{made}")
                try:
                    await seed(s)
                finally:
                    await s.close()

            asyncio.run(build())
            _seeded = made
        path = self.dir / "store.sqlite3"
        shutil.copy(_seeded, path)
        return f"sqlite+aiosqlite:///{path}"

    @initialize()
    def open(self) -> None:
        self.url = self.new_url()
        self.checks = 0
        self.restocks = len(SKUS)  # seed's
        self.store = self.run(open_store(self.url, migrate_schema=False))

    async def _change(self, step: Any) -> None:
        try:
            async with self.s.begin() as conn:
                await step(conn)
        except StoreError:
            pass  # refused (nothing allocated to ship, a restock not open): nothing written

    # --- changes: each commits alone, with its marks; no pass follows ---------------------

    @rule(
        sku=st.sampled_from(SKUS),
        qty=st.integers(1, 3),
        customer=st.integers(1, 4),
        two=st.booleans(),
        promised_in=st.sampled_from([None, 0, 5, 40]),
    )
    def place(self, sku: str, qty: int, customer: int, two: bool, promised_in: int | None) -> None:
        self.orders += 1
        number = str(100_000 + self.orders)
        lines = [NewLine(sku, qty)] + ([NewLine(SKUS[1 - SKUS.index(sku)], 1)] if two else [])

        async def step(conn: Any) -> None:
            placed = await place_order(conn, number, customer, lines, placed_at=self.now)
            if promised_in is not None:
                # An import's promised date, in the order's own transaction (its lines are
                # marked as new).
                await conn.execute(
                    order_lines.update()
                    .where(order_lines.c.order_id == placed.order_id)
                    .values(promised_date=self.day + timedelta(days=promised_in))
                )

        self.run(self._change(step))

    @rule(sku=st.sampled_from(SKUS), qty=st.integers(1, 4), days=st.integers(1, 80))
    def new_restock(self, sku: str, qty: int, days: int) -> None:
        self.restocks += 1
        rid = f"R-{self.restocks}"

        async def step(conn: Any) -> None:
            await add_restock(conn, rid, "SUP-1", sku, qty, self.day + timedelta(days=days))

        self.run(self._change(step))

    def _restock_ids(self) -> list[str]:
        async def go() -> list[str]:
            async with self.s.connect() as conn:
                rows = await conn.scalars(
                    select(restocks.c.restock_id)
                    .where(restocks.c.status == "open")
                    .order_by(restocks.c.restock_id)
                )
                return list(rows)

        return self.run(go())

    @rule(pick=st.integers(0, 20), days=st.integers(-30, 60))
    def slip(self, pick: int, days: int) -> None:
        ids = self._restock_ids()
        if not ids:
            return
        rid = ids[pick % len(ids)]

        async def step(conn: Any) -> None:
            when = await conn.scalar(
                select(restocks.c.expected_date).where(restocks.c.restock_id == rid)
            )
            new = max(self.day, when + timedelta(days=days))
            await change_restock_date(conn, rid, new, "supplier")

        self.run(self._change(step))

    @rule(pick=st.integers(0, 20), part=st.sampled_from([None, 0, 1]))
    def receive(self, pick: int, part: int | None) -> None:
        ids = self._restock_ids()
        if ids:
            rid = ids[pick % len(ids)]
            self.run(self._change(lambda conn: receive_restock(conn, rid, part)))

    def _numbers(self) -> list[str]:
        async def go() -> list[str]:
            async with self.s.connect() as conn:
                return list(
                    await conn.scalars(select(orders.c.order_number).order_by(orders.c.order_id))
                )

        return self.run(go())

    @rule(pick=st.integers(0, 50), line=st.integers(1, 2))
    def cancel(self, pick: int, line: int) -> None:
        numbers = self._numbers()
        if numbers:
            number = numbers[pick % len(numbers)]
            self.run(self._change(lambda conn: cancel_line(conn, number, line, reason="r")))

    @rule(pick=st.integers(0, 50))
    def ship_order(self, pick: int) -> None:
        numbers = self._numbers()
        if not numbers:
            return
        number = numbers[pick % len(numbers)]
        shipment = f"S-{number}-{self.day}"
        self.run(
            self._change(
                lambda conn: ship(
                    conn, shipment, number, carrier="DHL", tracking_number=None, shipped_on=self.day
                )
            )
        )

    @rule(days=st.integers(1, 45))
    def days_pass(self, days: int) -> None:
        self.day += timedelta(days=days)

    @rule(pick=st.integers(0, 50), keep=st.booleans())
    def customer_sees(self, pick: int, keep: bool) -> None:
        """An offer reaches its customer (shown), who may answer 'keep waiting'."""

        async def go() -> None:
            async with self.s.begin() as conn:
                d = delay_offers.c
                rows = (
                    await conn.execute(
                        select(d.offer_id, d.customer_id)
                        .where(d.status == "open")
                        .order_by(d.offer_id)
                    )
                ).all()
                if not rows:
                    return
                offer_id, customer = rows[pick % len(rows)]
                await record_shown(
                    conn, offer_id, text="t", buttons=[], channel="telegram", at=self.now
                )
                offer = await offer_for(conn, offer_id, customer)
                if keep and offer is not None:
                    await answer_keep(conn, offer, self.now, "telegram")

        self.run(go())

    # --- passes: some batches, or to the end ----------------------------------------------

    @rule(batches=st.integers(1, 3), size=st.integers(1, 2))
    def partial_pass(self, batches: int, size: int) -> None:
        async def go() -> None:
            for _ in range(batches):
                async with self.s.begin() as conn:
                    await delay_policy_batch(
                        conn, today=self.day, now=self.now, policy=POLICY, limit=size
                    )

        self.run(go())

    @rule(batches=st.integers(1, 3), size=st.integers(1, 2))
    def partial_notices(self, batches: int, size: int) -> None:
        async def go() -> None:
            for _ in range(batches):
                async with self.s.begin() as conn:
                    await notice_batch(conn, now=self.now, limit=size)

        self.run(go())

    @rule(customer=st.sampled_from([3, 4]))
    def link(self, customer: int) -> None:
        """A customer who had no chat links one: what they were not told is now news."""
        self.run(self._change(lambda conn: link_chat(conn, 1000 + customer, customer)))

    @rule()
    def whole_pass(self) -> None:
        async def go() -> None:
            await run_delay_policy(self.s, today=self.day, now=self.now, policy=POLICY)
            await run_notices(self.s, now=self.now)

        self.run(go())

    # --- the invariant ---------------------------------------------------------------------

    async def _copy(self) -> Store:
        self.copies += 1
        path = self.dir / f"copy-{self.copies}.sqlite3"
        async with self.s.engine.connect() as conn:
            await conn.exec_driver_sql(f"VACUUM INTO '{path}'")
        return await open_store(f"sqlite+aiosqlite:///{path}", migrate_schema=False)

    @invariant()
    def marks_finish_what_scratch_does(self) -> None:
        if self.store is None:
            return
        self.checks += 1
        if (self.checks - 1) % self.CHECK_EVERY:
            return

        async def go() -> tuple[dict[str, Any], dict[str, Any]]:
            marked = await self._copy()
            try:
                await run_delay_policy(
                    marked, today=self.day, now=self.now, policy=POLICY, batch_size=2
                )
                await run_notices(marked, now=self.now, batch_size=2)
                async with marked.connect() as conn:
                    from_marks = await policy_state(conn)
            finally:
                await marked.close()
            # From scratch on the store itself, in a transaction rolled back: the same state
            # as a copy's, without a second copy.
            try:
                async with self.s.begin() as conn:
                    await apply_delay_policy(conn, today=self.day, now=self.now, policy=POLICY)
                    await queue_notices(conn, now=self.now)
                    from_scratch = await policy_state(conn)
                    raise _Undo
            except _Undo:
                pass
            return from_marks, from_scratch

        from_marks, from_scratch = self.run(go())
        assert from_marks == from_scratch


class _Undo(Exception):
    """Rolls back the transaction it leaves."""


PolicyMachine.TestCase.settings = settings(max_examples=10, stateful_step_count=15, deadline=None)
TestPolicyMachine = PolicyMachine.TestCase

_databases: Databases | None = None


def _pg() -> Databases:
    global _databases
    if _databases is None:
        _databases = Databases()
        atexit.register(_databases.drop_templates)
    return _databases


class PGPolicyMachine(PolicyMachine):
    """The same on PostgreSQL: a database per example, copied (CREATE DATABASE ... TEMPLATE,
    the store closed meanwhile) for the invariant's batches every few steps."""

    CHECK_EVERY = 3

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def new_url(self) -> str:
        name, url = _pg().fresh(_pg().template("policy_machine", seed))
        self.names.append(name)
        return url

    async def _copy(self) -> Store:
        await self.s.close()  # a template has no other connection
        name, url = await asyncio.to_thread(_pg().fresh, make_url(self.url).database)
        self.names.append(name)
        self.store = await open_store(self.url, migrate_schema=False)
        return await open_store(url, migrate_schema=False)

    def teardown(self) -> None:
        super().teardown()
        for name in self.names:
            _pg().drop(name)


PGPolicyMachine.TestCase.settings = settings(max_examples=4, stateful_step_count=12, deadline=None)
TestPGPolicyMachine = pytest.mark.skipif(SERVER_URL is None, reason="no PostgreSQL server")(
    PGPolicyMachine.TestCase
)
