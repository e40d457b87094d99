"""Issue #15: what several bot processes share in the store (store/shared.py, store.inbox,
store.outbox.claim_due), raced for real: many tasks on two engines (two processes' pools) at
once, on SQLite and PostgreSQL. What is counted is what the code decided: the ids saved, the
chats and leases handed out, the send slots given."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text, update
from telegram import Bot, Update

from bot.shared import JobLeases, SharedInbox
from bot.updates import UpdateIntake
from store import Store
from store.db import open_store
from store.inbox import mark_answered, save_updates
from store.outbox import claim_due
from store.schema import chat_claims, outbox, products, update_inbox
from store.shared import (
    claim_chats,
    pending_of,
    release_chats,
    renew_chats,
    renew_leases,
    take_lease,
    take_slots,
)
from tests.chaos_helpers import wait_for

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest.fixture
async def other(store: Store) -> AsyncIterator[Store]:
    """The same database through a second engine: another process's connections. SQLite
    serves one bot process (run_bot.py refuses a second): there, the same store."""
    if store.engine.dialect.name == "sqlite":
        yield store
        return
    second = await open_store(store.url, migrate_schema=False)
    try:
        yield second
    finally:
        await second.close()


async def _save(store: Store, ids: list[int]) -> tuple[int, ...]:
    async with store.begin() as conn:
        saved = await save_updates(
            conn,
            [(i, json.dumps({"update_id": i})) for i in ids],
            T0,
            {i: f"c{i % 7}" for i in ids},
        )
    return saved.new


async def test_receivers_saving_the_same_updates_at_once_save_each_once(
    store: Store, other: Store
) -> None:
    """Two receivers (a poller taken over, a webhook sent again) save overlapping batches at
    once: every update is new to exactly one of them (pk_update_inbox before the fix)."""
    batches = [list(range(start, start + 20)) for start in range(0, 200, 10)]  # each id twice
    results = await asyncio.gather(
        *(_save(store if n % 2 else other, batch) for n, batch in enumerate(batches * 2))
    )
    new = Counter(i for result in results for i in result)
    assert sorted(new) == list(range(0, 210))
    assert set(new.values()) == {1}


async def test_each_chat_is_claimed_by_one_worker_and_taken_over_only_after_its_lease(
    store: Store, other: Store
) -> None:
    await _save(store, list(range(1, 71)))  # 7 chats, 10 updates each

    async def claim(worker: str) -> list[str]:
        async with (store if worker < "w5" else other).begin() as conn:
            return await claim_chats(conn, worker, 60.0, 3)

    workers = [f"w{n}" for n in range(9)]
    got = dict(zip(workers, await asyncio.gather(*(claim(w) for w in workers)), strict=True))
    handed = Counter(k for keys in got.values() for k in keys)
    assert set(handed.values()) == {1}  # no chat twice
    # Those the race left (claimants that lost theirs went on to the next ones, a few times).
    got["w9"] = await claim("w9")
    handed.update(got["w9"])
    assert sorted(handed) == [f"c{n}" for n in range(7)]
    assert set(handed.values()) == {1}
    owner = {k: w for w, keys in got.items() for k in keys}
    async with store.connect() as conn:
        rows = {r.chat_key: r.worker for r in await conn.execute(select(chat_claims))}
    assert rows == owner

    # A worker's pending updates are its own chats', in update_id order.
    holder = owner["c3"]
    async with store.connect() as conn:
        pending = await pending_of(conn, holder, 100)
    assert [p.update_id for p in pending] == sorted(
        i for i in range(1, 71) if f"c{i % 7}" in got[holder]
    )
    # Nothing is free while the leases last; renewed, they are still the holders'.
    async with store.begin() as conn:
        assert await claim_chats(conn, "late", 60.0, 10) == []
        assert await renew_chats(conn, holder, 60.0) == set(got[holder])
    # A dead holder's lease runs out (renewed to the past here): its chats go to the next
    # claimant, and the dead one's renewal no longer finds them.
    async with store.begin() as conn:
        await renew_chats(conn, holder, -1.0)
    async with store.begin() as conn:
        assert sorted(await claim_chats(conn, "late", 60.0, 10)) == sorted(got[holder])
        assert await renew_chats(conn, holder, 60.0) == set()
    # Given back, with every update of a chat answered: nothing to claim.
    async with store.begin() as conn:
        assert await release_chats(conn, "late", got[holder]) == len(got[holder])
        await mark_answered(conn, list(range(1, 71)), T0)
        assert await claim_chats(conn, "w9", 60.0, 10) == []


async def test_one_of_many_takes_a_free_lease(store: Store, other: Store) -> None:
    async def take(worker: str) -> bool:
        async with (store if int(worker) % 2 else other).begin() as conn:
            return await take_lease(conn, "poller", worker, 60.0)

    won = [
        w
        for w, ok in zip(
            map(str, range(40)),
            await asyncio.gather(*(take(str(n)) for n in range(40))),
            strict=True,
        )
        if ok
    ]
    assert len(won) == 1
    async with store.begin() as conn:
        assert await take_lease(conn, "poller", won[0], 60.0)  # renewed by its holder
        assert not await take_lease(conn, "poller", "other", 60.0)


RATE = 50


async def test_send_slots_across_processes_never_exceed_the_rate_in_any_second(
    store: Store, other: Store
) -> None:
    """400 sends from two processes' tasks take slots of one pace at 50 a second, a few at a
    time (as bot.shared.SharedPace reserves them) or one by one: no slot is handed out twice,
    and no window of one second holds more than 50."""
    interval = 1 / RATE

    async def take(n: int) -> list[float]:
        count = 1 + n % 3
        async with (store if n % 2 else other).begin() as conn:
            slot = await take_slots(conn, "replies", interval, count)
        return [slot.at + i * interval for i in range(count)]

    slots = sorted(
        at for part in await asyncio.gather(*(take(n) for n in range(200))) for at in part
    )
    assert len(slots) == sum(1 + n % 3 for n in range(200))
    # Seconds since the epoch as a double are exact to 2.4e-7 s: a slot spaced exactly one
    # second after another may land a few ulps short of it, hence the 10 us.
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= interval - 1e-5
    most = max(sum(1 for t in slots[i:] if t < start + 1.0 - 1e-5) for i, start in enumerate(slots))
    assert most <= RATE

    # One message a second per chat, whichever process sends.
    async def chat(n: int) -> float:
        async with (store if n % 2 else other).begin() as conn:
            return (await take_slots(conn, "chat:42", 1.0)).at

    times = sorted(await asyncio.gather(*(chat(n) for n in range(6))))
    assert all(b - a >= 1.0 - 1e-5 for a, b in itertools.pairwise(times))


async def test_two_processes_claiming_notices_at_once_share_them(
    store: Store, other: Store
) -> None:
    """claim_due with FOR UPDATE SKIP LOCKED: claims made at the same moment take different
    notices (without it, the second waited for the first's rows and got none of them)."""
    async with store.begin() as conn:
        await conn.execute(
            insert(outbox),
            [
                {
                    "dedupe_key": f"k{n}",
                    "chat_id": 700_000 + n,
                    "kind": "order_update",
                    "payload": "{}",
                    "not_before": T0,
                    "created_at": T0,
                }
                for n in range(60)
            ],
        )

    async def claim(n: int) -> list[int]:
        async with (store if n % 2 else other).begin() as conn:
            got = await claim_due(
                conn, worker=f"w{n}", now=T0, lease=timedelta(minutes=1), limit=10
            )
        return [c.outbox_id for c in got]

    claims = await asyncio.gather(*(claim(n) for n in range(6)))
    taken = Counter(i for ids in claims for i in ids)
    assert set(taken.values()) == {1}  # none claimed twice
    assert len(taken) == 60  # and every claim got its share
    assert all(len(ids) == 10 for ids in claims)


async def test_the_product_index_reads_the_catalog_s_version_only_after_a_notification(
    store: Store, other: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a bot process listens to the catalog's trigger (migration 0016): its
    product index reads the version row again only when a notification came, not at every
    product question (before: one more query each); another process's rename still shows
    at the next question after it."""
    if store.engine.dialect.name == "sqlite":
        pytest.skip("the catalog's notifications are PostgreSQL's (one process on SQLite)")
    # The refresh's periodic check (a missed notification's fallback) stays out of the count.
    monkeypatch.setattr("store.db.INDEX_CHECK_SECONDS", 3600.0)
    reads: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "store_versions" in statement:
            reads.append(statement)

    inbox = SharedInbox(store, lambda: T0, worker="w", lease=60.0, max_chats=1)
    listener = asyncio.create_task(inbox._listen())
    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:

        async def listening() -> bool:
            return store.catalog_listening

        await wait_for(listening, 10.0, "the listener")
        await store.product_index()
        reads.clear()
        for _ in range(20):
            index = await store.product_index()
        assert reads == []
        assert "Samovar Deluxe" not in index.names()

        heard = store.catalog_heard
        async with other.begin() as conn:
            await conn.execute(
                update(products)
                .where(products.c.sku == "KET-0001")
                .values(name_en="Samovar Deluxe")
            )

        async def notified() -> bool:
            return store.catalog_heard > heard

        await wait_for(notified, 10.0, "the catalog's notification")
        for _ in range(20):
            index = await store.product_index()
        assert len(reads) == 2  # the version, once read ahead and once as it is rebuilt
        assert "Samovar Deluxe" in index.names()
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def test_a_scheduler_job_runs_in_one_process_a_round_and_passes_on_after_its_lease(
    store: Store, other: Store
) -> None:
    """bot.shared.JobLeases of three processes (two engines) run 'handoff-check' rounds at
    once: each round, exactly one runs it, always the same while its lease lasts; its lease
    run out (renewed to the past, as a dead holder's), the next round is another's. On
    SQLite the one process runs every round."""
    pg = store.engine.dialect.name == "postgresql"
    leases = [JobLeases(s, f"p{n}", 60.0) for n, s in enumerate((store, other, other))]
    ran: list[str] = []

    def job(worker: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def round_() -> None:
            ran.append(worker)

        return round_

    try:
        for _ in range(5):
            await asyncio.gather(
                *(lease.run("handoff-check", job(lease.worker)) for lease in leases)
            )
        if not pg:
            assert len(ran) == 15
            return
        assert len(ran) == 5 and len(set(ran)) == 1
        holder = ran[0]
        assert sum(lease.skipped["handoff-check"] for lease in leases) == 10
        async with store.begin() as conn:
            assert await renew_leases(conn, holder, {"job:handoff-check"}, -1.0) == {
                "job:handoff-check"
            }
        ran.clear()
        others = [lease for lease in leases if lease.worker != holder]
        for _ in range(3):
            await asyncio.gather(
                *(lease.run("handoff-check", job(lease.worker)) for lease in others)
            )
        assert len(ran) == 3 and len(set(ran)) == 1 and ran[0] != holder
    finally:
        for lease in leases:
            await lease.close()


def _message(update_id: int, chat_id: int) -> str:
    return json.dumps(
        {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": 0,
                "chat": {"id": chat_id, "type": "private"},
                "from": {"id": chat_id, "is_bot": False, "first_name": "Ann"},
                "text": "where is my order?",
            },
        }
    )


async def test_a_stop_lets_the_claim_round_in_progress_end_and_writes_every_answered_mark(
    store: Store, other: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """bot.shared.SharedInbox.close while a claim round is in the middle of a statement
    (held up by another process's lock on the claims): the round ends, its claim is
    committed, and then the last answered mark is written and every chat given back. Before,
    close cancelled the round mid-statement; its connection went back to the pool still busy,
    and the last flush failed on it ("another operation is in progress"): the answered update
    was answered again by the next process."""
    if store.engine.dialect.name == "sqlite":
        pytest.skip("one process on SQLite: no shared inbox")
    async with store.begin() as conn:
        await save_updates(conn, [(1, _message(1, 5))], T0, {1: "5"})
    inbox = SharedInbox(store, lambda: T0, worker="w", lease=60.0, max_chats=4)
    intake = UpdateIntake(100, inbox)
    await inbox.replay(Bot("123:abc"), intake)

    async def put() -> bool:
        return intake.qsize() == 1

    await wait_for(put, 10.0, "the first chat's update")
    first = intake.get_nowait()
    assert isinstance(first, Update) and first.update_id == 1

    async def blocked() -> bool:
        async with store.begin() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE '%chat_claims%'"
                )
            )
        return bool(waiting)

    async with other.engine.connect() as locker:
        await locker.execute(text("LOCK TABLE chat_claims IN ACCESS EXCLUSIVE MODE"))
        await inbox.received([json.loads(_message(2, 6))])  # saved, and a round woken
        await wait_for(blocked, 10.0, "the claim round to wait for the lock")
        inbox.answered(1)
        closing = asyncio.create_task(inbox.close())
        await asyncio.sleep(0)  # close has begun: before, the round was cancelled here
        await locker.commit()
    await closing

    assert inbox.claimed == 2  # chat 5, then chat 6 in the round that was in progress
    async with store.begin() as conn:
        answered = {
            r.update_id: r.answered_at
            for r in await conn.execute(
                select(update_inbox.c.update_id, update_inbox.c.answered_at)
            )
        }
        claims = (await conn.execute(select(chat_claims))).all()
    assert answered == {1: T0, 2: None}
    assert claims == []  # every chat given back: update 2 is the next process's
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []
