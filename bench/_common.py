"""What the benchmarks that run the real bot next to other work share (bench_admin_stream.py,
bench_api.py): the bot's start with its scheduler on, the sandbox's users, a steady offer of
bench_e2e's realistic mix, and the apologies among the replies.

The driver's helpers themselves (the mix, the sandbox, the reply matching) are bench_e2e.py's
and stay there (that file is another area's); they are named here once, so the benchmarks
import them from one place.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_e2e import (  # noqa: E402
    LANGS,
    LINK_SECRET,
    LINKED_BASE,
    RESULTS,
    STRANGER_BASE,
    TEXTS,
    TOKEN,
    Phase,
    Proc,
    add_users,
)
from bench.bench_e2e import _drain as drain  # noqa: E402
from bench.bench_e2e import _enqueue as enqueue  # noqa: E402
from bench.bench_e2e import _free_port as free_port  # noqa: E402
from bench.bench_e2e import _item as item  # noqa: E402
from bench.bench_e2e import _link_chats as link_chats  # noqa: E402
from bench.bench_e2e import _match as match  # noqa: E402
from bench.bench_e2e import _pct as pct  # noqa: E402
from bench.bench_e2e import _start_sandbox as start_sandbox  # noqa: E402
from bench.bench_e2e import _wait_ready as wait_ready  # noqa: E402
from sandbox.client import SandboxClient  # noqa: E402

__all__ = [
    "LANGS",
    "LINKED_BASE",
    "RESULTS",
    "ROOT",
    "STRANGER_BASE",
    "TEXTS",
    "TOKEN",
    "Driver",
    "Phase",
    "Proc",
    "add_users",
    "apology_openings",
    "drain",
    "enqueue",
    "free_port",
    "item",
    "link_chats",
    "match",
    "pct",
    "start_bot",
    "start_sandbox",
    "wait_ready",
]


def start_bot(port: int, db: Path, log: Path, *, trace: bool = False) -> Proc:
    """bench_e2e's bot with its scheduler on (bench_e2e turns it off): the policy's and the
    notices' batches and the deliveries run every 10 s, as in a shop. ``trace``: the bot's
    stages timed in its log (bench/_trace_bot.py)."""
    env = {
        **os.environ,
        "BOT_TOKEN": TOKEN,
        "LINK_SECRET": LINK_SECRET,
        "BOT_API_BASE_URL": f"http://127.0.0.1:{port}/bot",
        "BOT_API_FILE_URL": f"http://127.0.0.1:{port}/file/bot",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "LOG_LEVEL": "WARNING",
        "NOTICE_JOB_INTERVAL_SECONDS": "10",
        "REPLIES_PER_SECOND": "0",
        "SHOP_NAME": "Bench Shop",
    }
    return Proc(
        subprocess.Popen(
            [sys.executable, "bench/_trace_bot.py" if trace else "run_bot.py"],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
    )


async def settle_links(db: Path) -> None:
    """The follow-on the store owes (the notices of lines that linking marked), run to its
    end as `backorder-admin catch-up` would, before the bot starts."""
    from bot.settings import load_settings
    from shopapi.server import follow_on_settings
    from store import open_store
    from store.cli import follow_on

    store = await open_store(f"sqlite+aiosqlite:///{db}")
    try:
        await follow_on(store, follow_on_settings(load_settings({})), show=False)
    finally:
        await store.close()


async def owed_told(db: Path, within: float = 300) -> int:
    """Until the notices due to the bench's chats are out (the bot's notice job sends them);
    returns those still pending at the end."""
    deadline = time.monotonic() + within
    while True:
        conn = sqlite3.connect(db)
        try:
            (left,) = conn.execute(
                "SELECT count(*) FROM outbox WHERE status = 'pending' AND chat_id >= ?",
                (LINKED_BASE,),
            ).fetchone()
        finally:
            conn.close()
        if not left or time.monotonic() > deadline:
            return int(left)
        await asyncio.sleep(1)


def apology_openings() -> list[str]:
    """The first line of error.j2 in every shipped language: a reply that starts so is the
    bot's apology."""
    from bot.render import Renderer
    from bot.settings import SUPPORTED_LANGUAGES

    renderer = Renderer(ZoneInfo("UTC"))
    return [renderer.text("error.j2", lang).splitlines()[0] for lang in SUPPORTED_LANGUAGES]


class Driver:
    """bench_e2e's realistic mix at a steady rate, one phase at a time."""

    def __init__(
        self, client: SandboxClient, chats: list[int], numbers: dict[int, list[str]]
    ) -> None:
        self.client, self.chats, self.numbers = client, chats, numbers
        self.rng = random.Random(7)
        self.cursor = 0

    async def offer(self, phase: Phase, rate: float, until: asyncio.Event | float) -> None:
        """Offer `rate` updates/s until the event is set or for that many seconds."""
        started = time.monotonic()
        done = 0
        while True:
            if isinstance(until, asyncio.Event):
                if until.is_set():
                    break
            elif time.monotonic() - started >= until:
                break
            due = int((time.monotonic() - started) * rate) + 1
            if due > done:
                batch = []
                for _ in range(due - done):
                    chat = self.chats[self.cursor % len(self.chats)]
                    batch.append(item(self.rng, chat, self.numbers, True))
                    self.cursor += 1
                await enqueue(self.client, batch, phase)
                done = due
            await asyncio.sleep(0.005)

    async def finish(self, phase: Phase, apologies: list[str]) -> int:
        """Wait for the replies and match them; returns the apologies among them."""
        await drain(self.client, 0)
        await match(self.client, phase)
        sorry = 0
        for c in await self.client.calls(since=phase.since_seq):
            text = str(c["params"].get("text", ""))
            if c["method"] in ("sendMessage", "editMessageText") and any(
                text.startswith(a) for a in apologies
            ):
                sorry += 1
        return sorry
