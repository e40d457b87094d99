from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from store import Store, open_store
from store.handoffs import (
    active_handoff,
    claim_handoff,
    claim_no_answer_notice,
    claim_topic_lease,
    close_handoff,
    due_idle,
    due_no_answer,
    escalations_of,
    handoff_by_thread,
    handoff_of,
    held_messages,
    hold_message,
    is_detached_topic,
    link_message,
    linked_copy,
    record_agent_message,
    record_customer_message,
    set_card,
    set_topic,
    take_held,
    with_held,
    without_topic,
)
from store.schema import handoffs

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
GROUP = -1001


async def _claim(store: Store, chat_id: int = 7, reason: str = "asked", at: datetime = NOW):
    async with store.begin() as conn:
        return await claim_handoff(
            conn,
            chat_id,
            support_chat_id=GROUP,
            reason=reason,
            now=at,
            no_answer_due_at=at + timedelta(minutes=15),
            customer_name="Anna",
        )


async def test_the_first_escalation_needs_a_topic_and_a_second_changes_nothing(
    store: Store,
) -> None:
    first = await _claim(store)
    assert (first.started, first.needs_topic, first.handoff.state) == (True, True, "waiting")
    async with store.begin() as conn:
        await set_topic(conn, first.handoff.handoff_id, 42)
    second = await _claim(store, reason="delay_policy")
    assert (second.started, second.needs_topic) == (False, False)
    assert second.handoff.reason == "asked"


async def test_a_closed_handoff_is_reopened_with_its_topic(store: Store) -> None:
    first = await _claim(store)
    async with store.begin() as conn:
        await set_topic(conn, first.handoff.handoff_id, 42)
        closed = await close_handoff(
            conn, first.handoff.handoff_id, now=NOW, by="agent", agent_name="Maria"
        )
        assert closed is not None and closed.state == "closed"
        # Closing twice: only the first one wins.
        assert await close_handoff(conn, first.handoff.handoff_id, now=NOW, by="idle") is None
        assert await active_handoff(conn, 7) is None
    again = await _claim(store, reason="misunderstood", at=NOW + timedelta(days=1))
    assert (again.started, again.needs_topic) == (True, False)
    assert (again.handoff.thread_id, again.handoff.escalations) == (42, 2)
    async with store.connect() as conn:
        history = await escalations_of(conn, again.handoff.handoff_id)
    assert [(e.reason, e.ended_by, e.agent_name) for e in history] == [
        ("misunderstood", None, None),
        ("asked", "agent", "Maria"),
    ]


async def test_one_row_per_chat_is_a_unique_constraint(store: Store) -> None:
    await _claim(store)
    with pytest.raises(IntegrityError):
        async with store.begin() as conn:
            await conn.execute(
                handoffs.insert().values(
                    chat_id=7,
                    support_chat_id=GROUP,
                    state="waiting",
                    reason="asked",
                    customer_name="Anna",
                    opened_at=NOW,
                    last_activity_at=NOW,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )


async def test_two_processes_escalating_at_once_make_one_handoff(db_url: str) -> None:
    stores = [await open_store(db_url) for _ in range(2)]
    try:
        for _ in range(5):
            claims = await asyncio.gather(*(_claim(s, chat_id=8) for s in stores))
            assert sorted(c.started for c in claims) == [False, True] or all(
                not c.started for c in claims
            )
        async with stores[0].connect() as conn:
            rows = await conn.scalar(select(func.count()).select_from(handoffs))
        assert rows == 1
        assert sum(c.needs_topic for c in claims) <= 1
    finally:
        for s in stores:
            await s.close()


async def test_states_deadlines_and_links(store: Store) -> None:
    claim = await _claim(store)
    hid = claim.handoff.handoff_id
    async with store.begin() as conn:
        assert await due_no_answer(conn, NOW + timedelta(minutes=14)) == []
        [due] = await due_no_answer(conn, NOW + timedelta(minutes=15))
        assert due.handoff_id == hid
        assert await claim_no_answer_notice(conn, hid, NOW) is True
        assert await claim_no_answer_notice(conn, hid, NOW) is False
        assert await record_agent_message(conn, hid, NOW + timedelta(minutes=20)) is True
        assert await record_agent_message(conn, hid, NOW + timedelta(minutes=21)) is False
        assert await record_customer_message(conn, hid, NOW + timedelta(minutes=22)) is True
        assert await due_idle(conn, NOW + timedelta(minutes=21)) == []
        [idle] = await due_idle(conn, NOW + timedelta(minutes=22))
        assert idle.state == "waiting" and idle.answered_at is not None
        await link_message(conn, hid, (7, 100), (GROUP, 5), NOW)
        await link_message(conn, hid, (7, 100), (GROUP, 6), NOW)  # a redelivered update
        assert await linked_copy(conn, 7, 100) == (GROUP, 5)
        await close_handoff(conn, hid, now=NOW, by="idle")
        assert await linked_copy(conn, 7, 100) is None


async def _customer(store: Store, customer_id: int = 1) -> None:
    from store.schema import customers

    async with store.begin() as conn:
        await conn.execute(
            customers.insert().values(
                customer_id=customer_id,
                name="Anna",
                email=f"a{customer_id}@example.com",
                language="de",
                notify_delays=True,
                notify_back_in_stock=True,
                created_at=NOW,
            )
        )


async def test_a_customers_topic_follows_their_link_to_a_new_chat(store: Store) -> None:
    from store.chats import link_chat

    await _customer(store)
    async with store.begin() as conn:
        await link_chat(conn, 7, 1)
    first = await _claim(store, chat_id=7)
    assert first.handoff.customer_id == 1
    async with store.begin() as conn:
        await set_topic(conn, first.handoff.handoff_id, 42)
        # The new account had a topic of its own before it was linked (closed now).
    own = await _claim(store, chat_id=8)
    async with store.begin() as conn:
        await set_topic(conn, own.handoff.handoff_id, 43)
        await close_handoff(conn, own.handoff.handoff_id, now=NOW, by="agent")
        await link_chat(conn, 8, 1)
    moved = await _claim(store, chat_id=8, at=NOW + timedelta(hours=1))
    assert (moved.started, moved.needs_topic, moved.moved_from) == (True, False, 7)
    assert (moved.handoff.handoff_id, moved.handoff.thread_id) == (first.handoff.handoff_id, 42)
    async with store.connect() as conn:
        # The old chat's open escalation ended as "moved"; the old chat is the bot's again.
        assert await handoff_of(conn, 7) is None
        history = await escalations_of(conn, moved.handoff.handoff_id)
        assert [e.ended_by for e in history] == [None, "moved"]
        # The new chat's own topic is detached from every chat.
        assert await handoff_by_thread(conn, GROUP, 43) is None
        assert await is_detached_topic(conn, GROUP, 43)
        assert (await handoff_by_thread(conn, GROUP, 42)) == moved.handoff
    # The old chat, unlinked now, gets a topic of its own next time.
    fresh = await _claim(store, chat_id=7, at=NOW + timedelta(hours=2))
    assert (fresh.started, fresh.needs_topic, fresh.handoff.customer_id) == (True, True, None)
    assert fresh.handoff.handoff_id not in (first.handoff.handoff_id, own.handoff.handoff_id)


async def test_an_unlinked_chats_topic_is_adopted_by_its_customer(store: Store) -> None:
    from store.chats import link_chat, unlink_chat

    await _customer(store)
    own = await _claim(store, chat_id=9)
    async with store.begin() as conn:
        await set_topic(conn, own.handoff.handoff_id, 44)
        await close_handoff(conn, own.handoff.handoff_id, now=NOW, by="agent")
        await link_chat(conn, 9, 1)
    again = await _claim(store, chat_id=9)
    assert (again.handoff.handoff_id, again.handoff.customer_id) == (own.handoff.handoff_id, 1)
    # Unlinked again, the chat does not keep the customer's topic.
    async with store.begin() as conn:
        await close_handoff(conn, again.handoff.handoff_id, now=NOW, by="agent")
        await unlink_chat(conn, 9)
    other = await _claim(store, chat_id=9)
    assert other.handoff.handoff_id != own.handoff.handoff_id and other.needs_topic


async def test_one_topic_per_customer_is_a_unique_constraint(store: Store) -> None:
    from store.chats import link_chat

    await _customer(store)
    async with store.begin() as conn:
        await link_chat(conn, 7, 1)
    await _claim(store, chat_id=7)
    with pytest.raises(IntegrityError):
        async with store.begin() as conn:
            await conn.execute(
                handoffs.insert().values(
                    chat_id=8,
                    customer_id=1,
                    support_chat_id=GROUP,
                    state="waiting",
                    reason="asked",
                    customer_name="Anna",
                    opened_at=NOW,
                    last_activity_at=NOW,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )


async def test_the_topic_lease_and_held_messages_go_to_one_caller(store: Store) -> None:
    claim = await _claim(store)
    hid = claim.handoff.handoff_id
    async with store.begin() as conn:
        assert await without_topic(conn, NOW + timedelta(minutes=1)) == []
        [missing] = await without_topic(conn, NOW + timedelta(minutes=2))
        assert missing.handoff_id == hid
        assert await claim_topic_lease(conn, hid, NOW + timedelta(minutes=2)) is True
        assert await claim_topic_lease(conn, hid, NOW + timedelta(minutes=2)) is False
        await hold_message(conn, hid, (7, 100), NOW)
        await hold_message(conn, hid, (7, 100), NOW)  # a redelivered update
        [(held_id, chat, message)] = await held_messages(conn, hid)
        assert (chat, message) == (7, 100)
        assert await set_topic(conn, hid, 42) is not None
        assert await set_topic(conn, hid, 43) is None  # the first topic stays
        # Held messages wait for the card, so the agent reads who it is first.
        assert await with_held(conn) == []
        await set_card(conn, hid, 500)
        assert [h.handoff_id for h in await with_held(conn)] == [hid]
        assert await take_held(conn, held_id) is True
        assert await take_held(conn, held_id) is False
