"""An admin import during a fan-out (issue #13): `backorder-admin import orders` in its own
process, while the bot sends a date change to 200 chats through a slow Bot API with the
shortest lease. The import moves the dates of half of them again, so it queues new notices
for orders whose notices are claimed and on their way.

Found by a probe: 182 duplicates to 177 chats and "notice round failed". Batches outlasted
their leases, so their unsent rest was claimed again and the import folded notices on their
way into its new ones (a claimed row superseded, its change told twice); a write of results
the database refused while the import held it was dropped with the round.

Each chat is told each change once: the first date moved once, the import's move once, and
no message twice."""

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
        "REQUEST_TIMEOUT": "30",  # above the 15 s answer below: no send is in doubt
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
    # The last customer's notice goes out last and is answered in 15 s: on its way while the
    # import moves that customer's date again, however slowly the import starts. The rest in
    # 2 s: 64 sends in flight are 32/s, and a batch of 100 with the 100 claimed ahead takes
    # about 6 s, past its 5 s lease.
    await tg.inject_fault(
        "slow", method="sendMessage", count=1, delay=15.0, chat_id=CHAT_BASE + MOVED[-1]
    )
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
            while not await sends_per_chat(tg):
                assert not running.done(), running.result()
                await asyncio.sleep(0.1)
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
        # The import landed in the middle of the fan-out: notices still claimed, on their way.
        assert await pending(store, claimed=True) > 0
        async with asyncio.timeout(120):
            while await pending(store):
                assert not running.done(), running.result()
                await asyncio.sleep(0.2)
    finally:
        stop.set()
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
