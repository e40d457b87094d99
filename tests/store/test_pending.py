"""The pending conversation step of a chat (account linking asks one question at a time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, inspect

from store import Store
from store.chats import (
    PENDING_TTL,
    Chat,
    chat_of,
    clear_pending,
    link_chat,
    set_chat_language,
    set_pending,
    touch_chat,
)
from store.schema import customers

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


async def test_the_migration_adds_the_pending_columns(store: Store) -> None:
    async with store.connect() as conn:
        columns = await conn.run_sync(
            lambda sync: {c["name"]: c for c in inspect(sync).get_columns("chats")}
        )
    assert {"pending", "pending_order", "pending_at"} <= set(columns)
    assert all(columns[name]["nullable"] for name in ("pending", "pending_order", "pending_at"))


async def test_a_new_chat_has_nothing_pending(store: Store) -> None:
    async with store.begin() as conn:
        chat = await touch_chat(conn, 1)
    assert (chat.pending, chat.pending_order, chat.pending_at) == (None, None, None)
    assert chat.pending_step(NOW) is None
    # Positional construction of the first four fields keeps working.
    assert chat == Chat(1, None, None, 0)


async def test_set_pending_creates_the_chat_and_keeps_its_other_state(store: Store) -> None:
    async with store.begin() as conn:
        await conn.execute(
            insert(customers).values(
                customer_id=1, name="Anna", email="a@example.com", language="de", created_at=NOW
            )
        )
        first = await set_pending(conn, 5, "order_number", at=NOW)
        await set_chat_language(conn, 5, "de")
        await link_chat(conn, 5, 1)
        second = await set_pending(conn, 5, "proof", "100002", at=NOW + timedelta(minutes=1))
    assert (first.pending, first.pending_order, first.pending_at) == ("order_number", None, NOW)
    # One question at a time: the second replaces the first, and nothing else moves.
    assert second == Chat(5, "de", 1, 0, "proof", "100002", NOW + timedelta(minutes=1))
    async with store.connect() as conn:
        assert await chat_of(conn, 5) == second


async def test_a_step_older_than_the_ttl_is_ignored(store: Store) -> None:
    async with store.begin() as conn:
        chat = await set_pending(conn, 6, "proof", "100002", at=NOW)
    assert chat.pending_step(NOW) == "proof"
    assert chat.pending_step(NOW + PENDING_TTL - timedelta(seconds=1)) == "proof"
    assert chat.pending_step(NOW + PENDING_TTL) is None
    assert timedelta(minutes=30) == PENDING_TTL
    # Stale is not gone: the row still says what was asked until someone clears it.
    assert chat.pending == "proof"


async def test_clear_pending_says_whether_anything_was_pending(store: Store) -> None:
    async with store.begin() as conn:
        await set_pending(conn, 7, "proof", "100002", at=NOW)
        assert await clear_pending(conn, 7) is True
        assert await clear_pending(conn, 7) is False
        chat = await chat_of(conn, 7)
    assert chat is not None
    assert (chat.pending, chat.pending_order, chat.pending_at) == (None, None, None)


async def test_clear_pending_never_creates_a_chat(store: Store) -> None:
    async with store.begin() as conn:
        assert await clear_pending(conn, 8) is False
        assert await chat_of(conn, 8) is None
