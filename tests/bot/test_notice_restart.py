"""kill -9 in the middle of a fan-out: the real bot runs in its own process against a sandbox
in this one; it is killed while sending, started again, and every customer hears at least once.
A chat hears twice only if its notice was in flight at the kill: taken by the Bot API and not
yet marked sent in the outbox (the sandbox's record against the outbox's marks, per chat).
Before: 23 duplicates where 2 were in flight (leases ran out under batches that outlasted
them, and the round claimed its own unsent rest again)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from sandbox import Limits, Sandbox
from sandbox.client import SandboxClient
from store import Store
from store.backorders import change_restock_date
from store.outbox import queue_notices
from store.schema import outbox
from tests.bot.notice_helpers import (
    CHAT_BASE,
    CUSTOMER_BASE,
    RESTOCK,
    day,
    duplicates,
    quiet_demo,
    seed,
    sends_per_chat,
    sent_marks,
    settled_sends,
)
from tests.conftest import LINK_SECRET

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 400


@pytest.fixture
def sandbox_limits() -> Limits:
    # Telegram's per-chat limit, a global one above the bot's rate: no 429s expected.
    return Limits(global_per_sec=1000, global_burst=100)


@pytest.fixture
async def world(
    store: Store, sandbox: Sandbox, tg: SandboxClient, db_url: str
) -> AsyncIterator[dict[str, str]]:
    await quiet_demo(store)
    # The bot's clock is the machine's: a promise far off keeps the delay policy out of it.
    await seed(store, tg, CUSTOMERS, promised_in_days=3650)
    async with store.begin() as conn:
        await change_restock_date(conn, RESTOCK, day(24), "supplier delay")
        report = await queue_notices(conn, now=None)
    assert report.lines == CUSTOMERS
    yield {
        **os.environ,
        "BOT_TOKEN": sandbox.token,
        "BOT_API_BASE_URL": sandbox.api_base,
        "BOT_API_FILE_URL": sandbox.file_base,
        "DATABASE_URL": db_url,
        "LINK_SECRET": LINK_SECRET,
        "QUIET_HOURS": "off",
        "SEND_RATE_PER_SECOND": "100",
        "NOTICE_JOB_INTERVAL_SECONDS": "0.2",
        "NOTICE_BATCH_SIZE": "100",
        "LEASE_SECONDS": "5",
        "LOG_LEVEL": "WARNING",
    }


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            # As a module from the repo root: run as a script, tests/ would come first on the
            # path and tests/bot would shadow the bot package.
            [sys.executable, "-m", "tests.notice_bot_process"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def sends(tg: SandboxClient) -> int:
    return sum((await sends_per_chat(tg)).values())


async def test_killed_mid_fan_out_loses_nothing_and_repeats_only_what_was_in_flight(
    world: dict[str, str], tg: SandboxClient, store: Store, db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "bot.log"
    first = start(world, log)
    try:
        deadline = time.monotonic() + 30
        while await sends(tg) < CUSTOMERS // 3:
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the bot never got going"
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    at_kill = await settled_sends(tg)
    marked = await sent_marks(db_url)
    # In flight at the kill, per chat: what the Bot API took that the outbox does not record.
    in_flight = at_kill - marked
    assert not marked - at_kill  # nothing is marked sent that was not
    assert 0 < sum(at_kill.values()) < CUSTOMERS  # really killed in the middle
    second = start(world, log)
    try:
        deadline = time.monotonic() + 40
        while True:
            async with store.connect() as conn:
                left = await conn.scalar(
                    select(func.count()).where(
                        outbox.c.customer_id >= CUSTOMER_BASE, outbox.c.status != "sent"
                    )
                )
            if left == 0:
                break
            assert second.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{left} notices never sent"
            await asyncio.sleep(0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=10)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait()
    got = await sends_per_chat(tg)
    assert set(got) == {CHAT_BASE + i for i in range(CUSTOMERS)}  # nothing lost
    repeated = duplicates(got)
    # Only a chat whose notice was in flight may hear twice, and only that once more.
    assert {chat: n for chat, n in repeated.items() if n > in_flight[chat]} == {}, (
        repeated,
        in_flight,
    )
    assert await tg.count_429() == 0
