from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, text

from store import Store, open_store
from store.chats import (
    Chat,
    ChatState,
    chat_of,
    chat_state,
    consume_link_token,
    count_failed_attempts,
    link_chat,
    order_wait_after,
    proof_check,
    record_miss,
    record_verification_attempt,
    reset_misses,
    set_chat_language,
    subscribe_back_in_stock,
    touch_chat,
    unlink_chat,
    verify_order_owner,
)
from store.errors import NotFound
from store.schema import customers, handoffs, orders, products

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _seed(store: Store) -> None:
    async with store.begin() as conn:
        await conn.execute(
            insert(customers),
            [
                dict(
                    customer_id=1,
                    name="Anna",
                    email="Anna@Example.com",
                    postcode="10115",
                    language="de",
                    created_at=NOW,
                ),
                dict(
                    customer_id=2,
                    name="Ben",
                    email="ben@example.com",
                    postcode="SW1A 1AA",
                    language="en",
                    created_at=NOW,
                ),
            ],
        )
        await conn.execute(
            insert(orders),
            [
                dict(order_number="100001", customer_id=1, placed_at=NOW, currency="EUR"),
                dict(order_number="100002", customer_id=2, placed_at=NOW, currency="GBP"),
            ],
        )
        await conn.execute(
            insert(products).values(
                sku="KET-0001",
                name_en="Kettle",
                category="kettles",
                price_minor=2999,
                currency="EUR",
                active=True,
                backorderable=True,
                created_at=NOW,
                updated_at=NOW,
            )
        )


@pytest.mark.sqlite_only("SQLite's pragmas (WAL, foreign keys, busy timeout)")
async def test_migrations_run_and_pragmas(db_url: str) -> None:
    s = await open_store(db_url)
    async with s.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10000
        rev = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    await s.close()
    assert rev is not None
    # Opening again is a no-op upgrade.
    s2 = await open_store(db_url)
    await s2.close()


async def test_chat_lifecycle(store: Store) -> None:
    async with store.begin() as conn:
        assert await chat_of(conn, 42) is None
        assert await touch_chat(conn, 42) == Chat(42, None, None, 0)
        assert await touch_chat(conn, 42) == Chat(42, None, None, 0)
        assert await set_chat_language(conn, 42, "de") == Chat(42, "de", None, 0)
        await record_miss(conn, 42)
        assert await record_miss(conn, 42) == Chat(42, "de", None, 2)
        assert await reset_misses(conn, 42) == Chat(42, "de", None, 0)
        # Functions that update create the chat when needed.
        assert await record_miss(conn, 7) == Chat(7, None, None, 1)
    async with store.connect() as conn:
        assert await chat_of(conn, 42) == Chat(42, "de", None, 0)


async def test_a_miss_is_counted_once_per_update(store: Store) -> None:
    """A process killed after counting a miss and before its reply went out: another process
    answers the same update again (the crash replay) and must say the same, not "still not"."""
    async with store.begin() as conn:
        assert (await record_miss(conn, 42, 1001)).misses == 1
        assert (await record_miss(conn, 42, 1001)).misses == 1
        assert (await record_miss(conn, 42, 1002)).misses == 2
        assert (await record_miss(conn, 42, 1002)).misses == 2
        assert (await reset_misses(conn, 42)).misses == 0
        assert (await record_miss(conn, 42, 1003)).misses == 1
        # A chat's first miss, and update ids of another chat, count on their own.
        assert (await record_miss(conn, 7, 1003)).misses == 1
        assert (await record_miss(conn, 7, 1004)).misses == 2


async def test_chat_state_reads_chat_reachability_and_handoff_at_once(store: Store) -> None:
    await _seed(store)
    async with store.begin() as conn:
        assert await chat_state(conn, 42) == ChatState(None, unreachable=False, in_handoff=False)
        await link_chat(conn, 42, 1)
        assert await chat_state(conn, 42) == ChatState(
            Chat(42, None, 1, 0), unreachable=False, in_handoff=False
        )
        await conn.execute(customers.update().values(unreachable_at=NOW))
        await conn.execute(
            insert(handoffs).values(
                chat_id=42,
                support_chat_id=-100,
                state="waiting",
                reason="asked",
                customer_name="Anna",
                opened_at=NOW,
                last_activity_at=NOW,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        assert await chat_state(conn, 42) == ChatState(
            Chat(42, None, 1, 0), unreachable=True, in_handoff=True
        )
        await conn.execute(handoffs.update().values(state="closed"))
        assert (await chat_state(conn, 42)).in_handoff is False
        # Another chat sees none of it.
        assert await chat_state(conn, 43) == ChatState(None, unreachable=False, in_handoff=False)


async def test_link_moves_both_ways(store: Store) -> None:
    await _seed(store)
    async with store.begin() as conn:
        assert (await link_chat(conn, 10, 1)).customer_id == 1
        # The customer moves to another account: the old account is unlinked.
        assert (await link_chat(conn, 11, 1)).customer_id == 1
        assert (await chat_of(conn, 10)) == Chat(10, None, None, 0)
        # An account links to another customer: the first customer is free again.
        assert (await link_chat(conn, 11, 2)).customer_id == 2
        assert (await link_chat(conn, 10, 1)).customer_id == 1
        assert (await unlink_chat(conn, 10)).customer_id is None
        with pytest.raises(NotFound):
            await link_chat(conn, 10, 999)


async def test_verify_order_owner(store: Store) -> None:
    await _seed(store)
    async with store.connect() as conn:
        assert await verify_order_owner(conn, "100001", email=" anna@EXAMPLE.com ") == 1
        assert await verify_order_owner(conn, "100002", postcode="sw1a1aa") == 2
        assert await verify_order_owner(conn, "100002", postcode="sw1a 1aa", email="x@y") is None
        assert await verify_order_owner(conn, "100001", email="ben@example.com") is None
        assert await verify_order_owner(conn, "999999", email="anna@example.com") is None
        assert await verify_order_owner(conn, "100001") is None
        assert await verify_order_owner(conn, "100001", email="  ") is None


async def test_link_tokens_single_use(store: Store) -> None:
    later = datetime.now(UTC) + timedelta(minutes=10)
    async with store.begin() as conn:
        assert await consume_link_token(conn, "t1", later) is True
        assert await consume_link_token(conn, "t1", later) is False
        assert await consume_link_token(conn, "t2", datetime.now(UTC) - timedelta(1)) is False
    async with store.begin() as conn:
        assert await consume_link_token(conn, "t1", later) is False


async def test_verification_attempts(store: Store) -> None:
    async with store.begin() as conn:
        for i in range(3):
            await record_verification_attempt(conn, 5, "100001", False, NOW + timedelta(i))
        await record_verification_attempt(conn, 5, "100002", True, NOW)
        await record_verification_attempt(conn, 6, "100001", False, NOW)
        assert await count_failed_attempts(conn, chat_id=5, since=NOW) == 3
        assert await count_failed_attempts(conn, chat_id=5, since=NOW + timedelta(1)) == 2
        assert await count_failed_attempts(conn, order_number="100001", since=NOW) == 4
        assert await count_failed_attempts(conn, 6, "100001", since=NOW) == 1
        assert await count_failed_attempts(conn, order_number="100002", since=NOW) == 0


def test_the_wait_after_an_orders_wrong_proofs_doubles_from_the_allowance_and_is_capped() -> None:
    minutes = [order_wait_after(n, 5) / timedelta(minutes=1) for n in range(0, 12)]
    assert minutes == [0, 0, 0, 0, 0, 1, 2, 4, 8, 15, 15, 15]
    assert order_wait_after(10_000, 5) == timedelta(minutes=15)


async def test_proof_check_counts_the_chat_in_the_hour_and_the_number_in_the_day(
    store: Store,
) -> None:
    async with store.begin() as conn:

        async def check(chat_id: int, number: str, at: datetime) -> tuple[bool, float]:
            found = await proof_check(conn, chat_id, number, allowance=3, now=at)
            return found.chat_limited, found.order_wait / timedelta(minutes=1)

        # Three chats, one wrong proof each for 100001 (the allowance), the last at +2 min.
        for chat_id in (1, 2, 3):
            await record_verification_attempt(
                conn, chat_id, "100001", False, NOW + timedelta(minutes=chat_id - 1)
            )
        await record_verification_attempt(conn, 4, "100001", True, NOW)  # a right one: free
        assert await check(9, "100001", NOW + timedelta(minutes=2)) == (False, 1.0)
        assert await check(9, "100001", NOW + timedelta(minutes=2, seconds=30)) == (False, 0.5)
        assert await check(9, "100001", NOW + timedelta(minutes=3)) == (False, 0.0)
        assert await check(9, "100002", NOW + timedelta(minutes=2)) == (False, 0.0)
        await record_verification_attempt(conn, 9, "100001", False, NOW + timedelta(minutes=3))
        assert await check(9, "100001", NOW + timedelta(minutes=3)) == (False, 2.0)
        # Out of the day's window, the number's wrong proofs are forgotten.
        assert await check(9, "100001", NOW + timedelta(days=1, minutes=2, seconds=1)) == (
            False,
            0.0,
        )
        # A chat with the allowance used in the hour is refused whatever the number...
        for number in ("100002", "555555"):
            await record_verification_attempt(conn, 9, number, False, NOW + timedelta(minutes=4))
        assert await check(9, "777777", NOW + timedelta(minutes=4)) == (True, 0.0)
        # ...until the hour after its first wrong one.
        assert await check(9, "777777", NOW + timedelta(minutes=63, seconds=1)) == (False, 0.0)


async def test_subscribe_back_in_stock(store: Store) -> None:
    await _seed(store)
    async with store.begin() as conn:
        assert await subscribe_back_in_stock(conn, 5, "ket-0001") is True
        assert await subscribe_back_in_stock(conn, 5, "KET-0001") is False
        with pytest.raises(NotFound):
            await subscribe_back_in_stock(conn, 5, "NOP-0000")


@pytest.mark.sqlite_only("the queue of one process's writers is for SQLite's single write lock")
async def test_writers_of_one_process_take_turns_instead_of_polling_sqlites_lock(
    store: Store,
) -> None:
    """The second transaction starts only once the first has committed: no busy waits, no
    'database is locked', and what the second reads includes the first's write."""
    import asyncio

    order: list[str] = []
    first_in = asyncio.Event()

    async def first() -> None:
        async with store.begin() as conn:
            first_in.set()
            await touch_chat(conn, 1)
            await asyncio.sleep(0.05)
            order.append("first done")

    async def second() -> None:
        await first_in.wait()
        async with store.begin() as conn:
            order.append("second in")
            assert await chat_of(conn, 1) == Chat(1, None, None, 0)

    writes = store.writes
    await asyncio.gather(first(), second())
    assert order == ["first done", "second in"]
    assert store.writes == writes + 2
    async with store.begin(counted=False) as conn:
        await record_miss(conn, 1)
    assert store.writes == writes + 2  # not counted: nothing cached reads it
