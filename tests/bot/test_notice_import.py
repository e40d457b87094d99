"""An admin import during a fan-out (issue #13): `backorder-admin import orders` in its own
process, while the bot sends a date change to 200 chats through a slow Bot API with the
shortest lease. The import moves the dates of half of them again, so it queues new notices
for orders whose notices are claimed and on their way.

Found by a probe: 182 duplicates to 177 chats and "notice round failed". Batches outlasted
their leases, so their unsent rest was claimed again and the import folded notices on their
way into its new ones (a claimed row superseded, its change told twice); a write of results
the database refused while the import held it was dropped with the round.

Each chat is told each change once: the first date moved once, the import's move once, and
no message twice.

The chaos is made by construction, not by delays a loaded machine may outlast: one moved
customer's first notice is held in the sandbox (a "hold" fault) from before the import starts
until it has landed and the notice's lease has been renewed, so the import certainly moves a
date whose notice is claimed and on its way, and that notice's batch certainly outlasts its
lease. What the code decided then is counted while the notice is held."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from bot.context import BotApplication
from bot.notices import tick
from sandbox.client import SandboxClient
from store import Store
from store.backorders import change_restock_date
from store.master import add_restock
from store.schema import outbox
from tests.bot.notice_helpers import (
    CHAT_BASE,
    CUSTOMER_BASE,
    RESTOCK,
    SKU,
    day,
    quiet_demo,
    seed,
    sends_per_chat,
)
from tests.conftest import Clock

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 200
MOVED = range(100, 200)  # the customers whose dates the import moves again
# The customer whose first notice is held: the first the import moves, so that the import
# lands while the rest of the moved customers' notices are being sent too.
HELD = MOVED[0]
LATER = "PO-LMP-2"  # the restock after RESTOCK: day(40)


class WallClock(Clock):
    """The machine's clock, as the admin CLI (another process) reads it: the leases the bot
    writes and the moment the import's change is queued are on one clock."""

    def __call__(self) -> datetime:
        return datetime.now(UTC)


@pytest.fixture
def clock() -> Clock:
    return WallClock()


@pytest.fixture
def bot_environ() -> dict[str, str]:
    return {
        "NOTICE_JOB_INTERVAL_SECONDS": "0",  # the test runs the job's tick itself
        "QUIET_HOURS": "off",  # the clock is the machine's
        "LEASE_SECONDS": "5",
        "SEND_RATE_PER_SECOND": "100",
        "NOTICE_BATCH_SIZE": "100",
        # The held send waits for the test's release, however long the import takes: no
        # send is in doubt (the watchdog ends a test that hangs).
        "REQUEST_TIMEOUT": "600",
    }


def orders_file(folder: Path) -> Path:
    """100 orders of 3 units placed before everyone else's: 300 units ahead of the queue push
    the last 100 customers (their unit at 400 and beyond) past RESTOCK's 400 to LATER."""
    rows = ["order_number,customer_id,placed_at,line_no,sku,qty"]
    for i in range(100):
        rows.append(f"{950_000 + i},{CUSTOMER_BASE + i},2026-11-20T09:00:00Z,1,{SKU},3")
    path = folder / "orders.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


async def pending(store: Store, *, claimed: bool = False) -> int:
    o = outbox.c
    query = select(func.count()).where(o.customer_id >= CUSTOMER_BASE, o.status == "pending")
    if claimed:
        query = query.where(o.claimed_until.is_not(None))
    async with store.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def notices_of(store: Store, chat: int) -> list[tuple[str, datetime | None]]:
    """The chat's notices: (status, claimed_until), oldest first."""
    o = outbox.c
    query = select(o.status, o.claimed_until).where(o.chat_id == chat).order_by(o.outbox_id)
    async with store.connect() as conn:
        return [(str(r.status), r.claimed_until) for r in await conn.execute(query)]


async def held_calls(tg: SandboxClient, fault_id: int) -> int:
    return sum(int(f["held"]) for f in await tg.faults() if f["id"] == fault_id)


async def test_an_import_during_a_fan_out_tells_each_change_once(
    bot: BotApplication,
    tg: SandboxClient,
    store: Store,
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    await quiet_demo(store)
    # A promise ten years off: the delay policy (the machine's today) stays out of it.
    made = await seed(store, tg, CUSTOMERS, promised_in_days=3650)
    chats = {chat for _, chat, _ in made}
    async with store.begin() as conn:
        await add_restock(conn, LATER, "SUP-LMP", SKU, 1000, day(40))
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
    # The held customer's first notice gets no answer until the test releases it. The rest
    # are answered in 2 s: 64 sends in flight are 32/s, and a batch of 100 with the 100
    # claimed ahead takes about 6 s, past its 5 s lease (likely more chaos, not relied on).
    held_chat = CHAT_BASE + HELD
    hold = await tg.inject_fault("hold", method="sendMessage", count=1, chat_id=held_chat)
    await tg.inject_fault("slow", method="sendMessage", duration=600, delay=2.0)

    stop = asyncio.Event()

    async def job() -> None:
        # The JobQueue's tick, every 0.2 s: queue what changed, deliver what is due.
        while not stop.is_set():
            await tick(SimpleNamespace(application=bot))  # type: ignore[arg-type]
            await asyncio.sleep(0.2)

    running = asyncio.create_task(job())
    try:
        async with asyncio.timeout(60):
            while await held_calls(tg, hold["id"]) != 1:
                assert not running.done(), running.result()
                await asyncio.sleep(0.1)
        # On its way: claimed, not sent.
        [(status, first_lease)] = await notices_of(store, held_chat)
        assert status == "pending" and first_lease is not None
        admin = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "store.cli",
            "--db",
            db_url,
            "import",
            "orders",
            str(orders_file(tmp_path)),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await admin.communicate()
        assert admin.returncode == 0, err.decode()
        assert out.decode().strip() == "orders.csv: 100 rows, 100 changed"
        # The import landed while the held notice was on its way, and queued the new date in
        # a notice of its own (which a round may have claimed since: it waits for the held
        # one to that chat): the claimed one left to its sender, not folded in.
        notices = await notices_of(store, held_chat)
        assert [status for status, _ in notices] == ["pending", "pending"], notices
        assert notices[0][1] is not None, notices
        # The held notice's batch outlasts its lease: its sender renews it.
        async with asyncio.timeout(60):
            while (lease := (await notices_of(store, held_chat))[0][1]) is None or (
                lease <= first_lease
            ):
                assert not running.done(), running.result()
                await asyncio.sleep(0.1)
        assert await held_calls(tg, hold["id"]) == 1  # still on its way
        await tg.release_fault(hold["id"])
        async with asyncio.timeout(120):
            while await pending(store):
                assert not running.done(), running.result()
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await tg.clear_faults()  # releases a held send: a failed check must not hang the round
        await running

    got = await sends_per_chat(tg)
    texts: dict[int, list[str]] = {chat: [] for chat in chats}
    for call in await tg.calls("sendMessage"):
        chat = int(call["params"]["chat_id"])
        if call["status"] == 200 and chat in texts:
            texts[chat].append(call["params"]["text"])
    moved = {CHAT_BASE + i for i in MOVED}
    # Nobody lost, nobody twice the same message.
    assert set(got) >= chats
    assert {chat: t for chat, t in texts.items() if len(set(t)) != len(t)} == {}
    # The first move (from December 6) told once to everyone; the import's (to January 5)
    # once to those it moved, to nobody else.
    first = {chat: sum("December 6" in t for t in ts) for chat, ts in texts.items()}
    second = {chat: sum("January 5" in t for t in ts) for chat, ts in texts.items()}
    assert {chat for chat, n in first.items() if n != 1} == set()
    assert {chat for chat, n in second.items() if n != (chat in moved)} == set()
    assert [c for c in chats - moved if got[c] != 1] == []
    assert "notice round failed" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
