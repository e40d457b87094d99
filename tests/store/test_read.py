"""Store.read: a read-only store function runs on the calling thread against a SQLite file,
sees every committed write, and goes through the pool where it cannot run inline."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from store import Store, open_store
from store.chats import ChatState, chat_state, set_chat_language, touch_chat
from store.demo import fill_demo
from store.queries import orders_of
from tests.conftest import TODAY


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
