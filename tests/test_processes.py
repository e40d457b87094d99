"""Issue #15: several bot processes share one bot on one PostgreSQL (bot/shared.py).

Real processes, started the way a shop starts them (run_bot.py, settings from the
environment, each with its WORKER_NAME), against the sandbox in this process. One of them
holds the poller's lease and saves what it fetches in the inbox; both claim the inbox's
updates chat by chat and answer them. What is checked is each chat's transcript, exactly:
nothing lost, nothing twice, every chat in order, and after a kill -9 the other process
answering everything the dead one held once its lease has run out, repeating at most the
answers of the updates the dead one had in flight, with the same text.

On SQLite a second process is refused with one line (run_bot.py).
"""

from __future__ import annotations

import ast
import asyncio
import fcntl
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, insert, select, update

from sandbox import Sandbox
from sandbox.client import SandboxClient
from store import Store
from store.chats import link_chat, set_chat_language
from store.inbox import count_updates
from store.schema import chat_claims, orders, outbox, products, worker_leases
from store.shared import database_time
from tests.chaos_helpers import (
    ASK_ORDER,
    ASK_PROOF,
    GREETING,
    HELP,
    KETTLE,
    Load,
    all_bot_texts,
    enqueue,
    prepare,
    wait_for,
)
from tests.conftest import LINK_SECRET
from tests.pg import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 60.0
LEASE = 4.0  # UPDATE_LEASE_SECONDS: how long a dead process's chats wait
# Chats each process answers at once: small, so that the chats are shared between the two
# and a chat's updates go to one process, then the other.
CONCURRENT = 4

# Order-sensitive: the last two answers come out right only after the two before them.
SCRIPT: tuple[tuple[str, str], ...] = (
    ("/start", GREETING),
    ("is KET-0001 in stock?", KETTLE),
    ("where is my order?", ASK_ORDER),
    ("100004", ASK_PROOF),
    ("/help", HELP),
)


def build(chats: int, base: int) -> Load:
    load = Load()
    for i in range(1, chats + 1):
        chat = base + i
        load.users.append({"id": chat, "first_name": "Customer", "language_code": "en"})
        load.scripts[chat] = list(SCRIPT)
    return load


@pytest.fixture(params=[b for b in BACKENDS if b == "postgresql"] or [None])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param is None:
        pytest.skip("several processes share a bot on PostgreSQL only (TEST_DATABASE_URL)")
    return str(request.param)


@pytest.fixture
def environ(sandbox: Sandbox, db_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "BOT_TOKEN": sandbox.token,
        "BOT_API_BASE_URL": sandbox.api_base,
        "BOT_API_FILE_URL": sandbox.file_base,
        "DATABASE_URL": db_url,
        "LINK_SECRET": LINK_SECRET,
        "SHOP_NAME": "Demo Shop",
        "NOTICE_JOB_INTERVAL_SECONDS": "0",
        "REPLIES_PER_SECOND": "0",
        "CONCURRENT_UPDATES": str(CONCURRENT),
        "UPDATE_LEASE_SECONDS": str(LEASE),
        "LOG_LEVEL": "INFO",
    }


class Bots:
    """run_bot.py processes started by a test; whatever still runs at the end is stopped."""

    def __init__(self, environ: dict[str, str], logs: Path) -> None:
        self.environ = environ
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as err:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "run_bot.py")],
                env={**self.environ, "WORKER_NAME": name},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def alive(self) -> None:
        for name, process in self.running.items():
            assert process.poll() is None, f"{name} ended:\n{self.log(name)[-3000:]}"

    def freeze(self, name: str) -> None:
        self.running[name].send_signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.running[name].send_signal(signal.SIGCONT)

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    async def stop_all(self) -> None:
        """SIGTERM, waited for on this loop: the sandbox runs on it, and the poller's last
        getUpdates on its way out needs an answer."""
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            for _ in range(300):
                if process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                # run_bot.py writes its threads' stacks to its log: what held it.
                process.send_signal(signal.SIGUSR1)
                await asyncio.sleep(0.5)
                process.kill()
                process.wait()


@pytest.fixture
async def bots(environ: dict[str, str], tmp_path: Path) -> AsyncIterator[Bots]:
    started = Bots(environ, tmp_path)
    try:
        yield started
    finally:
        await started.stop_all()


async def answered(tg: SandboxClient, store: Store, load: Load, bots: Bots) -> None:
    async def done() -> bool:
        bots.alive()
        if (await tg.stats())["pending_updates"]:
            return False
        async with store.connect() as conn:
            if (await count_updates(conn))[0]:
                return False
        texts = await all_bot_texts(tg, load.chats)
        return all(len(texts[c]) >= len(load.expected(c)) for c in load.chats)

    await wait_for(done, DEADLINE, "every message to be answered", every=0.1)


def answers_per_worker(log: str) -> int:
    found = re.findall(r"answered (\d+) updates of (\d+) chats", log)
    assert found, log[-2000:]
    return int(found[-1][0])


async def test_two_processes_answer_every_chat_once_and_in_order(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    load = build(chats=40, base=850_000)
    await prepare(tg, store, load)
    bots.start("one")
    bots.start("two")
    # In rounds: a chat's first messages go to whichever process claims it, its later ones
    # (once it was given back) maybe to the other.
    for i in range(len(SCRIPT)):
        await enqueue(tg, load, range(i, i + 1))
        await asyncio.sleep(0.3)
    await answered(tg, store, load, bots)

    texts = await all_bot_texts(tg, load.chats)
    wrong = {c: t for c, t in texts.items() if t != load.expected(c)}
    assert not wrong, f"{len(wrong)} chats lost, doubled or reordered answers: {wrong}"
    # One poller: Telegram (the sandbox) never had to end a poll for another's.
    polls = await tg.calls("getUpdates")
    assert [c for c in polls if c["status"] == 409] == []
    async with store.connect() as conn:
        assert (await conn.execute(select(chat_claims))).all() == []  # every chat given back

    # A process sees the others' writes: both have the product index cached (they answered
    # stock questions); another process (this test's) renames the kettle; asked by its new
    # name, which the index built before the change does not know, the bots find it.
    async with store.begin() as conn:
        await conn.execute(
            update(products).where(products.c.sku == "KET-0001").values(name_en="Samovar Deluxe")
        )
    asked = load.chats[:4]
    await enqueue(tg, Load(scripts={c: [("is the samovar deluxe in stock?", "")] for c in asked}))

    async def renamed() -> bool:
        bots.alive()
        texts = await all_bot_texts(tg, asked)
        return all(len(t) == len(SCRIPT) + 1 for t in texts.values())

    await wait_for(renamed, DEADLINE, "the answers after the rename")
    texts = await all_bot_texts(tg, asked)
    samovar = KETTLE.replace("Steel Kettle 1.7 l", "Samovar Deluxe")
    assert [t[-1] for t in texts.values()] == [samovar] * 4
    await bots.stop_all()
    # Both processes answered: the chats were shared, not taken whole by the first.
    one, two = answers_per_worker(bots.log("one")), answers_per_worker(bots.log("two"))
    assert one > 0 and two > 0 and one + two == load.updates + len(asked), (one, two)


async def test_a_killed_process_s_chats_are_answered_by_the_other_after_its_lease(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    load = build(chats=40, base=860_000)
    await prepare(tg, store, load)
    bots.start("one")
    bots.start("two")

    async def poller() -> str | None:
        async with store.connect() as conn:
            return await conn.scalar(
                select(worker_leases.c.worker).where(worker_leases.c.name == "poller")
            )

    async def has_poller() -> bool:
        bots.alive()
        return await poller() is not None

    await wait_for(has_poller, DEADLINE, "a process to take the poller's lease")
    victim = await poller()
    assert victim in ("one", "two")
    survivor = "two" if victim == "one" else "one"
    await enqueue(tg, load, range(0, 3))

    async def victim_busy() -> bool:
        bots.alive()
        async with store.connect() as conn:
            held = await conn.scalar(
                select(chat_claims.c.chat_key).where(chat_claims.c.worker == victim).limit(1)
            )
        sends = [c for c in await tg.calls("sendMessage") if c["status"] == 200]
        return held is not None and len(sends) >= 20

    async def held_by_victim() -> set[int]:
        async with store.connect() as conn:
            return {
                int(k)
                for k in await conn.scalars(
                    select(chat_claims.c.chat_key).where(chat_claims.c.worker == victim)
                )
            }

    # Frozen first, so the chats it holds are read while it can release none of them; a
    # process that had just let its last chat go is let run on and caught again.
    held: set[int] = set()
    while not held:
        await wait_for(victim_busy, DEADLINE, "the poller to hold chats mid-load", every=0.01)
        bots.freeze(victim)
        await asyncio.sleep(0.2)  # the sandbox (this loop) takes what was sent before
        held = await held_by_victim()
        if not held:
            bots.thaw(victim)
    bots.kill(victim)  # the poller, with chats in flight
    at_kill = await all_bot_texts(tg, load.chats)
    assert held, "the killed process held no chat"
    # The rest of the load after the kill: the survivor must take the poller's lease over.
    await enqueue(tg, load, range(3, len(SCRIPT)))
    await answered(tg, store, load, bots)

    texts = await all_bot_texts(tg, load.chats)
    doubled: dict[int, int] = {}
    for chat in load.chats:
        got = texts[chat]
        # A repeat is the same text as the answer before it: the answer of an update the
        # killed process had sent and not yet marked, given again by the survivor.
        once = [t for i, t in enumerate(got) if i == 0 or t != got[i - 1]]
        assert once == load.expected(chat), f"chat {chat}: {got}"
        if len(got) > len(once):
            doubled[chat] = len(got) - len(once)
    assert set(doubled) <= held, (doubled, held)
    # At most two per chat: the update in flight, and one that ended in the loop's last turn
    # (bot/inbox.py); CONCURRENT at once.
    assert all(n <= 2 for n in doubled.values()), doubled
    assert sum(doubled.values()) <= 2 * CONCURRENT, doubled
    lost = sum(len(load.expected(c)) - len(set(texts[c])) for c in load.chats)
    assert lost == 0
    assert sum(map(len, at_kill.values())) < load.updates  # killed in the middle
    assert await poller() == survivor


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}"


async def test_a_second_process_on_sqlite_is_refused_with_one_line(
    sandbox: Sandbox, sqlite_url: str, tmp_path: Path
) -> None:
    environ = {
        **os.environ,
        "BOT_TOKEN": sandbox.token,
        "BOT_API_BASE_URL": sandbox.api_base,
        "BOT_API_FILE_URL": sandbox.file_base,
        "DATABASE_URL": sqlite_url,
        "LINK_SECRET": LINK_SECRET,
        "NOTICE_JOB_INTERVAL_SECONDS": "0",
    }
    bots = Bots(environ, tmp_path)
    try:
        bots.start("first")
        lock = tmp_path / "bot.sqlite3.bot-lock"

        async def locked() -> bool:
            # The first process holds the lock beside the file (as run_bot.py takes it).
            bots.alive()
            if not lock.exists():
                return False
            with lock.open("a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return True
                fcntl.flock(handle, fcntl.LOCK_UN)
                return False

        await wait_for(locked, DEADLINE, "the first process to hold the SQLite lock")
        second = bots.start("second")

        async def refused() -> bool:
            return second.poll() is not None

        await wait_for(refused, DEADLINE, "the second process to end")
        assert second.returncode == 1
        assert bots.log("second").splitlines() == [
            f"backorder-bot: another bot process runs on {sqlite_url.split(':///')[1]}; SQLite"
            " serves one bot process (several share a bot on PostgreSQL:"
            " DATABASE_URL=postgresql+asyncpg://...)"
        ]
        del bots.running["second"]
        bots.alive()  # the first goes on
    finally:
        await bots.stop_all()


# --- the chats' pace, the scheduler's jobs --------------------------------------------------

NOTICES_PER_CHAT = 2


async def queue_back_in_stock(store: Store, chats: list[int], per_chat: int) -> None:
    """Notices due now for ``chats`` (a subscription's, sent to the chat that asked)."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    async with store.begin() as conn:
        await conn.execute(
            insert(outbox),
            [
                {
                    "dedupe_key": f"pace:{chat}:{n}",
                    "chat_id": chat,
                    "kind": "back_in_stock",
                    "payload": json.dumps({"sku": "KET-0001"}),
                    "not_before": now,
                    "created_at": now,
                }
                for chat in chats
                for n in range(per_chat)
            ],
        )


async def test_replies_and_notices_of_two_processes_keep_each_chat_s_pace(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    """Both processes answer and both deliver notices, into the same chats at once. The
    sandbox holds each private chat to a bucket like Telegram's (here 2 a second, bursts of
    3) and answers 429 beyond it; the bots pace each chat at one a second, whichever process
    sends (the margin: the sandbox sees the sends after the network's jitter).
    Seven messages a chat: five replies (bursts of three) and two notices. Before, the
    replies had no pace of the chat's, and went out beside the notices: 429s."""
    await tg.set_limits(
        enabled=True,
        private_per_sec=2.0,
        private_burst=3,
        global_per_sec=10_000,
        global_burst=10_000,
    )
    load = build(chats=6, base=870_000)
    await prepare(tg, store, load)
    await queue_back_in_stock(store, load.chats, NOTICES_PER_CHAT)
    bots.environ.update(
        PER_CHAT_INTERVAL_SECONDS="1.0", NOTICE_JOB_INTERVAL_SECONDS="0.2", QUIET_HOURS="off"
    )
    bots.start("one")
    bots.start("two")
    await enqueue(tg, load)

    async def delivered() -> bool:
        bots.alive()
        async with store.connect() as conn:
            pending = await conn.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
            )
        texts = await all_bot_texts(tg, load.chats)
        wanted = len(SCRIPT) + NOTICES_PER_CHAT
        return not pending and all(len(texts[c]) >= wanted for c in load.chats)

    await wait_for(delivered, DEADLINE, "every reply and notice", every=0.1)
    assert await tg.count_429() == 0
    texts = await all_bot_texts(tg, load.chats)
    for chat in load.chats:
        replies = [t for t in texts[chat] if "back in stock" not in t.lower()]
        assert replies == load.expected(chat), texts[chat]
        assert len(texts[chat]) == len(replies) + NOTICES_PER_CHAT, texts[chat]
    await bots.stop_all()
    assert answers_per_worker(bots.log("one")) + answers_per_worker(bots.log("two")) == (
        load.updates
    )
    # Every reply took its chat's slot (before: none did; whether a 429 followed depended on
    # how fast the replies came).
    assert reply_slots(bots.log("one")) + reply_slots(bots.log("two")) == load.updates


def reply_slots(log: str) -> int:
    found = re.findall(r"replies took (\d+) slots of their chats' pace", log)
    assert found, log[-2000:]
    return int(found[-1])


async def lease_of(store: Store, name: str) -> tuple[str, float] | None:
    async with store.connect() as conn:
        row = (
            await conn.execute(
                select(worker_leases.c.worker, worker_leases.c.until).where(
                    worker_leases.c.name == name
                )
            )
        ).first()
    return (str(row.worker), float(row.until)) if row is not None else None


def job_rounds(log: str) -> tuple[dict[str, int], dict[str, int]]:
    """(rounds run, rounds left to another process) by job, from a process's last line."""
    found = re.findall(r"ran job rounds (\{.*?\}), left to another process (\{.*?\})", log)
    assert found, log[-2000:]
    ran, left = found[-1]
    return ast.literal_eval(ran), ast.literal_eval(left)


async def test_each_scheduler_job_runs_in_one_process_until_its_lease_runs_out(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    """The notices' policy round every 0.2 s in both processes' schedulers: one process holds
    the job's lease and runs every round, the other leaves every round to it; killed, the
    holder's job passes to the other once the lease has run out (database clock)."""
    bots.environ.update(NOTICE_JOB_INTERVAL_SECONDS="0.2", QUIET_HOURS="off")
    bots.start("one")
    bots.start("two")

    async def held() -> bool:
        bots.alive()
        return await lease_of(store, "job:notices") is not None

    await wait_for(held, DEADLINE, "a process to take the notices job's lease")
    first = await lease_of(store, "job:notices")
    assert first is not None
    holder = first[0]
    survivor = "two" if holder == "one" else "one"

    async def renewed() -> bool:
        # A few rounds of both schedulers (the holder's renewals move its lease on).
        now = await lease_of(store, "job:notices")
        return now is not None and now[1] >= first[1] + 1.0

    await wait_for(renewed, DEADLINE, "the holder to renew its lease for a second")
    bots.freeze(holder)
    at_kill = await lease_of(store, "job:notices")
    bots.kill(holder)
    assert at_kill is not None and at_kill[0] == holder

    async def taken_over() -> bool:
        bots.alive()
        now = await lease_of(store, "job:notices")
        return now is not None and now[0] == survivor

    await wait_for(taken_over, DEADLINE, "the survivor to take the job over")
    async with store.connect() as conn:
        now = await database_time(conn)
    assert now >= at_kill[1]  # not before the dead holder's lease ran out

    async def ran_some() -> bool:
        again = await lease_of(store, "job:notices")
        return again is not None and again[0] == survivor and again[1] >= now + LEASE + 0.5

    await wait_for(ran_some, DEADLINE, "the survivor's rounds")
    await bots.stop_all()
    ran, left = job_rounds(bots.log(survivor))
    # Every round while the holder lived was left to it; every one after, run here.
    assert left.get("notices", 0) > 0 and ran.get("notices", 0) > 0, (ran, left)
    assert bots.log(survivor).count("this process runs the job notices now") == 1


# --- webhook receivers ---------------------------------------------------------------------

HOOK_SECRET = "procs-webhook-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def update_of(update_id: int, chat: int, text: str) -> dict[str, object]:
    """A private message as Telegram posts it to a webhook."""
    entities = [{"type": "bot_command", "offset": 0, "length": len(text)}] if text[0] == "/" else []
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(datetime.now(UTC).timestamp()),
            "chat": {"id": chat, "type": "private", "first_name": "Customer"},
            "from": {"id": chat, "is_bot": False, "first_name": "Customer", "language_code": "en"},
            "text": text,
            "entities": entities,
        },
    }


async def test_two_webhook_receivers_saving_one_chat_s_updates_at_once_answer_each_once_in_order(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    """Two processes in webhook mode behind one address (a load balancer): each update is
    posted to both at once (Telegram delivers again what it did not see answered, and the
    balancer may send the two deliveries to different processes), every chat's updates one
    after another as Telegram's delivery does, the chats all at once; then every update once
    more after it was answered. Every chat reads its answers once each, in update_id order."""
    load = build(chats=8, base=880_000)
    await prepare(tg, store, load)
    bots.environ["PER_CHAT_INTERVAL_SECONDS"] = "0"  # the chats' pace is a test of its own
    ports = {"one": free_port(), "two": free_port()}
    for name, port in ports.items():
        bots.environ = {
            **bots.environ,
            "WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
            "WEBHOOK_PORT": str(port),
            "WEBHOOK_SECRET": HOOK_SECRET,
        }
        bots.start(name)
    headers = {"X-Telegram-Bot-Api-Secret-Token": HOOK_SECRET}
    ids = itertools.count(5_000_000)
    updates = {
        chat: [update_of(next(ids), chat, text) for text, _ in script]
        for chat, script in load.scripts.items()
    }
    async with aiohttp.ClientSession() as http:

        async def post(port: int, update: dict[str, object]) -> int:
            async with http.post(
                f"http://127.0.0.1:{port}/hook", json=update, headers=headers
            ) as response:
                return response.status

        async def listening() -> bool:
            bots.alive()
            try:
                for port in ports.values():
                    await post(port, {"update_id": 1})  # no message: nothing to answer
            except aiohttp.ClientError:
                return False
            return True

        await wait_for(listening, DEADLINE, "both webhook servers")

        async def deliver(chat: int) -> None:
            for update in updates[chat]:
                statuses = await asyncio.gather(*(post(p, update) for p in ports.values()))
                assert statuses == [200, 200], statuses

        await asyncio.gather(*(deliver(chat) for chat in load.chats))
        await answered(tg, store, load, bots)
        # Telegram's late deliveries of what was answered already: dropped, by either.
        await asyncio.gather(
            *(post(p, u) for chat in load.chats for u in updates[chat] for p in ports.values())
        )
        async with store.connect() as conn:
            assert (await count_updates(conn))[0] == 0
    texts = await all_bot_texts(tg, load.chats)
    wrong = {c: t for c, t in texts.items() if t != load.expected(c)}
    assert not wrong, f"{len(wrong)} chats lost, doubled or reordered answers: {wrong}"
    await bots.stop_all()
    one, two = answers_per_worker(bots.log("one")), answers_per_worker(bots.log("two"))
    assert one + two == load.updates + 1, (one, two)  # and the empty update, once


# --- chat state written by another process -------------------------------------------------


async def test_a_chat_s_language_and_link_written_by_another_process_show_at_the_next_answer(
    bots: Bots, tg: SandboxClient, store: Store
) -> None:
    """Process A answers a chat; another process (here the test's, as the admin tool or a
    second bot would) sets the chat's language and links it to a customer; A's next answers
    follow both. A bot process keeps a chat's state for one update only (bot.context): the
    next update reads it again, whoever wrote it."""
    chat, german = 890_001, 890_002
    load = Load(scripts={chat: [("/help", HELP)], german: [("/help", "")]})
    load.users = [
        {"id": c, "first_name": "Customer", "language_code": "en"} for c in (chat, german)
    ]
    await prepare(tg, store, load)
    async with store.begin() as conn:
        await set_chat_language(conn, german, "de")
        customer = await conn.scalar(
            select(orders.c.customer_id).where(orders.c.order_number == "100004")
        )
    bots.start("one")
    await enqueue(tg, load)

    async def said(n: int) -> bool:
        bots.alive()
        texts = await all_bot_texts(tg, [chat, german])
        return len(texts[chat]) >= n and len(texts[german]) >= 1

    await wait_for(partial(said, 1), DEADLINE, "the first answers")
    texts = await all_bot_texts(tg, [chat, german])
    assert texts[chat] == [HELP] and texts[german][0] != HELP
    async with store.begin() as conn:
        await set_chat_language(conn, chat, "de")
    await enqueue(tg, Load(scripts={chat: [("/help", "")]}))
    await wait_for(partial(said, 2), DEADLINE, "the answer after the language changed")
    assert (await all_bot_texts(tg, [chat]))[chat][1] == texts[german][0]
    async with store.begin() as conn:
        await set_chat_language(conn, chat, "en")
        await link_chat(conn, chat, int(customer))
    await enqueue(tg, Load(scripts={chat: [("where is my order?", "")]}))
    await wait_for(partial(said, 3), DEADLINE, "the answer after the link")
    last = (await all_bot_texts(tg, [chat]))[chat][2]
    assert last != ASK_ORDER and "100004" in last, last
