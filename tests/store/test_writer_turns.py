"""How the bot's writers share SQLite's one write lock (store.db): an update's write goes
before the scheduler's queued background writes (Store.background), and a small write on the
event loop's thread never checkpoints the WAL there (the pool does, off the loop)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from store import Store
from store import db as store_db
from store.chats import chat_of, record_miss, touch_chat

pytestmark = pytest.mark.sqlite_only("the writer turns and the inline writer are SQLite's")


async def _until(condition: object, *, turns: int = 10_000) -> None:
    for _ in range(turns):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def _held(flag: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Until ``task`` sets ``flag``; its error if it fails first."""
    waiting = asyncio.create_task(flag.wait())
    await asyncio.wait((waiting, task), return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()
    assert flag.is_set()


async def test_an_updates_write_goes_before_the_background_writes_queued_ahead_of_it(
    store: Store,
) -> None:
    async with store.begin() as conn:
        await touch_chat(conn, 7070)
    order: list[str] = []
    holding = asyncio.Event()
    let_go = asyncio.Event()

    async def batch(name: str, *, hold: bool = False) -> None:
        with Store.background():
            async with store.begin() as conn:
                await record_miss(conn, 7070)
                if hold:
                    holding.set()
                    await let_go.wait()
            order.append(name)

    async def update() -> None:
        async with store.begin_small(counted=False) as conn:
            await record_miss(conn, 7070)
        order.append("update")

    first = asyncio.create_task(batch("batch 1", hold=True))
    await _held(holding, first)
    queued = [asyncio.create_task(batch(f"batch {i}")) for i in (2, 3, 4)]
    turns = store._one_writer
    assert turns is not None
    await _until(lambda: len(turns._waiting[1]) == 3)
    answer = asyncio.create_task(update())
    await _until(lambda: turns.foreground_waiting == 1)
    let_go.set()
    await asyncio.gather(first, *queued, answer)
    # Behind the batch that held the lock, ahead of the three that queued before it.
    assert order == ["batch 1", "update", "batch 2", "batch 3", "batch 4"]
    async with store.connect() as conn:
        chat = await chat_of(conn, 7070)
    assert chat is not None and chat.misses == 5


async def test_a_cancelled_waiter_hands_its_turn_on(store: Store) -> None:
    holding = asyncio.Event()
    let_go = asyncio.Event()
    done: list[str] = []

    async def holder() -> None:
        async with store.begin() as conn:
            await touch_chat(conn, 7171)
            holding.set()
            await let_go.wait()

    async def writer(name: str) -> None:
        async with store.begin_small(counted=False) as conn:
            await record_miss(conn, 7171)
        done.append(name)

    first = asyncio.create_task(holder())
    await _held(holding, first)
    gone = asyncio.create_task(writer("gone"))
    kept = asyncio.create_task(writer("kept"))
    turns = store._one_writer
    assert turns is not None
    await _until(lambda: turns.foreground_waiting == 2)
    gone.cancel()
    let_go.set()
    await asyncio.gather(first, kept)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert done == ["kept"]
    assert not turns.locked()


def _size(path: str) -> int:
    return Path(path).stat().st_size


def _checkpointed_size(path: str) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return _size(path)


def _fill_wal(path: str, pages: int) -> None:
    """Another process's big write: ``pages`` new pages in the WAL, not checkpointed."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO ballast VALUES (?)", [(os.urandom(3000),) for _ in range(pages)]
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_small_write_leaves_the_wal_checkpoint_to_the_pool(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_url(db_url).database
    assert path is not None
    async with store.begin() as conn:
        await touch_chat(conn, 7272)
    size = _checkpointed_size(path)
    _fill_wal(path, 1500)  # past SQLite's autocheckpoint (1,000 pages)
    assert _size(path) == size
    monkeypatch.setattr(store_db, "CHECKPOINT_EVERY", 3, raising=False)
    for _ in range(2):
        async with store.begin_small(counted=False) as conn:
            await record_miss(conn, 7272)
    # Two commits on the loop's thread: the database file has not taken the WAL's pages.
    assert _size(path) == size
    assert store._checkpoint is None
    async with store.begin_small(counted=False) as conn:
        await record_miss(conn, 7272)
    # The third: a passive checkpoint through the pool, off the loop's thread.
    checkpoint = store._checkpoint
    assert checkpoint is not None
    await checkpoint
    assert _size(path) > size + 1000 * 3000
    async with store.connect() as conn:
        chat = await chat_of(conn, 7272)
    assert chat is not None and chat.misses == 3
