"""Store.run_batch: on a SQLite file a batch of the follow-on work runs whole on a synchronous
connection in the store's batch thread, so the event loop runs on while the batch holds the
write lock, and the lock is held for the batch's own work only."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from store import Store
from store.chats import chat_of, touch_chat
from store.schema import chats

pytestmark = pytest.mark.sqlite_only("the batch thread is SQLite's (a file's write lock)")


async def test_the_loop_runs_on_while_a_batch_holds_the_write_lock(store: Store) -> None:
    in_batch = threading.Event()
    loop_went_on = threading.Event()

    async def batch(conn: AsyncConnection) -> str:
        await touch_chat(conn, 501)
        in_batch.set()
        # Only a loop that runs while the batch waits here can set the event: a batch run on
        # the loop (through aiosqlite) holds it, and the wait runs out.
        assert loop_went_on.wait(timeout=10)
        return threading.current_thread().name

    async def meanwhile() -> None:
        await asyncio.to_thread(in_batch.wait, 10)
        loop_went_on.set()

    other = asyncio.create_task(meanwhile())
    thread = await store.run_batch(batch)
    await other
    assert thread.startswith("store-batches")
    async with store.connect() as conn:
        assert (await chat_of(conn, 501)) is not None  # committed


async def test_a_batch_that_awaits_anything_else_is_rolled_back(store: Store) -> None:
    async def batch(conn: AsyncConnection) -> None:
        await touch_chat(conn, 502)
        await asyncio.sleep(0)  # not the connection's: the batch cannot run in the thread

    with pytest.raises(RuntimeError, match="waited for something other than its statements"):
        await store.run_batch(batch)
    async with store.connect() as conn:
        assert (await conn.scalar(select(chats.c.chat_id).where(chats.c.chat_id == 502))) is None
    # The lock was given back: the next writer gets it at once.
    async with store.begin_small() as conn:
        await touch_chat(conn, 503)


async def test_a_writer_of_the_process_waits_for_the_batch_turn_not_for_locked(
    store: Store,
) -> None:
    in_batch = threading.Event()
    release = threading.Event()

    async def batch(conn: AsyncConnection) -> None:
        await touch_chat(conn, 504)
        in_batch.set()
        assert release.wait(timeout=60)

    running = asyncio.create_task(store.run_batch(batch))
    await asyncio.to_thread(in_batch.wait, 60)

    async def write() -> None:
        async with store.begin_small() as conn:
            await touch_chat(conn, 505)

    writer = asyncio.create_task(write())
    for _ in range(100):
        await asyncio.sleep(0)
    assert not writer.done()  # its turn comes after the batch's
    release.set()
    await running
    await writer
    async with store.connect() as conn:
        assert [await chat_of(conn, c) is not None for c in (504, 505)] == [True, True]
