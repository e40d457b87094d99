"""Store.read and Store.begin_small: on a SQLite file, reads and small writes run on the
event loop's thread, see every committed write, and go through the pool where they cannot run
inline (an in-memory database, another writer holding the file)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from store import Store, open_store
from store.chats import ChatState, chat_of, chat_state, record_miss, set_chat_language, touch_chat
from store.demo import fill_demo
from store.queries import orders_of
from tests.conftest import TODAY

pytestmark = pytest.mark.sqlite_only("the inline engines exist for SQLite files only")


def _checkouts(store: Store) -> list[int]:
    seen: list[int] = []
    event.listen(store.engine.sync_engine, "checkout", lambda *_: seen.append(1))
    return seen


async def test_a_read_of_a_file_runs_inline_and_sees_what_was_committed(store: Store) -> None:
    async with store.begin() as conn:
        await touch_chat(conn, 4242)
    checkouts = _checkouts(store)
    state = await store.read(lambda conn: chat_state(conn, 4242))
    assert state.chat is not None and (state.chat.chat_id, state.chat.language) == (4242, None)
    async with store.begin() as conn:
        await set_chat_language(conn, 4242, "de")
    after = await store.read(lambda conn: chat_state(conn, 4242))
    assert after.chat is not None and after.chat.language == "de"
    assert checkouts == [1]  # the write; neither read took a pooled connection


async def test_an_inline_read_gives_what_the_pooled_read_gives(store: Store) -> None:
    await fill_demo(store, "small", today=TODAY)
    # Anna Schmidt (customer 1 of the demo): lines waiting with and without a date, one ready.
    inline = await store.read(lambda conn: orders_of(conn, 1, open_only=True, language="de"))
    async with store.connect() as conn:
        pooled = await orders_of(conn, 1, open_only=True, language="de")
    assert inline == pooled
    assert inline and any(line.qty_waiting for order in inline for line in order.lines)


async def test_an_in_memory_store_is_read_through_the_pool() -> None:
    memory = await open_store("sqlite+aiosqlite://")
    try:
        checkouts = _checkouts(memory)
        state: Any = await memory.read(lambda conn: chat_state(conn, 1))
        assert state == ChatState(chat=None, unreachable=False, in_handoff=False)
        assert checkouts == [1]
    finally:
        await memory.close()


async def test_a_small_write_runs_inline_commits_and_rolls_back_whole(store: Store) -> None:
    checkouts = _checkouts(store)
    writes = store.writes
    async with store.begin_small() as conn:
        await touch_chat(conn, 5151)  # the insert runs in a savepoint
        await record_miss(conn, 5151)
    with pytest.raises(RuntimeError):
        async with store.begin_small(counted=False) as conn:
            await record_miss(conn, 5151)
            raise RuntimeError("after the statement")
    async with store.connect() as conn:
        chat = await chat_of(conn, 5151)
    assert chat is not None and chat.misses == 1
    assert checkouts == [1]  # the check above; neither write took a pooled connection
    assert store.writes == writes + 1  # the uncounted one left the count alone


async def test_a_small_write_waits_through_the_pool_while_another_process_writes(
    store: Store, db_url: str
) -> None:
    async with store.begin() as conn:
        await touch_chat(conn, 6161)
    admin = await open_store(db_url)
    try:
        async with admin.begin() as conn:
            await record_miss(conn, 6161)  # the admin holds the file's write lock

            async def miss() -> None:
                async with store.begin_small(counted=False) as small:
                    await record_miss(small, 6161)

            waiting = asyncio.create_task(miss())
            # The event loop runs on (the admin's own statements need it) and the write waits.
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.sleep(0.2)
            assert not waiting.done()
            # Not stopped by a busy wait on this thread (SQLite's own timeout is 10 s).
            assert loop.time() - started < 2
        await asyncio.wait_for(waiting, 5)
    finally:
        await admin.close()
    async with store.connect() as conn:
        chat = await chat_of(conn, 6161)
    assert chat is not None and chat.misses == 2
