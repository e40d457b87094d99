"""The outbox on its own: queueing what changed (idempotent, one notice per order and change,
small moves adding up, customers without a chat), and the delivery side's leases and closes.
Lines are written directly, so these tests do not depend on how dates are projected."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from store import Store
from store.delays import DelayPolicy, apply_delay_policy, record_shown
from store.outbox import (
    QueueReport,
    claim_due,
    finish,
    mark_unreachable,
    queue_notices,
    renew_claims,
    retry_later,
)
from store.schema import chats, customers, delay_offers, order_lines, orders, outbox
from tests.store.helpers import T0, at, seed_catalog

D0 = date(2026, 2, 1)
LEASE = timedelta(minutes=5)


def day(n: int) -> date:
    return D0 + timedelta(days=n)


async def add_chat(conn: AsyncConnection, customer_id: int) -> int:
    chat_id = 7000 + customer_id
    await conn.execute(
        insert(chats).values(
            chat_id=chat_id, customer_id=customer_id, language="en", created_at=T0, updated_at=T0
        )
    )
    return chat_id


async def add_order(
    conn: AsyncConnection,
    order_id: int,
    customer_id: int,
    lines: int,
    promised: date | None = None,
) -> None:
    """An order whose lines wait for KET-0001, each told D0 and projected D0."""
    await conn.execute(
        insert(orders).values(
            order_id=order_id,
            order_number=str(100000 + order_id),
            customer_id=customer_id,
            placed_at=T0,
            currency="EUR",
        )
    )
    await conn.execute(
        insert(order_lines),
        [
            {
                "line_id": order_id * 10 + n,
                "order_id": order_id,
                "line_no": n,
                "sku": "KET-0001",
                "qty_ordered": 1,
                "qty_waiting": 1,
                "unit_price_minor": 2999,
                "queued_at": T0,
                "projected_date": D0,
                "last_told_date": D0,
                "promised_date": promised,
            }
            for n in range(1, lines + 1)
        ],
    )


async def move(conn: AsyncConnection, line_ids: list[int], to: date, when: datetime) -> None:
    await conn.execute(
        update(order_lines)
        .where(order_lines.c.line_id.in_(line_ids))
        .values(projected_date=to, projected_changed_at=when)
    )


async def notices(conn: AsyncConnection) -> list[Any]:
    o = outbox.c
    return list(
        (
            await conn.execute(
                select(
                    o.outbox_id,
                    o.dedupe_key,
                    o.chat_id,
                    o.customer_id,
                    o.kind,
                    o.payload,
                    o.status,
                    o.attempts,
                    o.not_before,
                    o.claimed_by,
                    o.claimed_until,
                    o.sent_at,
                    o.last_error,
                ).order_by(o.outbox_id)
            )
        ).all()
    )


async def told(conn: AsyncConnection) -> dict[int, tuple[date | None, datetime | None]]:
    ol = order_lines.c
    rows = await conn.execute(select(ol.line_id, ol.last_told_date, ol.last_told_at))
    return {r.line_id: (r.last_told_date, r.last_told_at) for r in rows}


def moved_line(line_id: int, old: date, new: date) -> dict[str, Any]:
    return {
        "line_id": line_id,
        "line_no": line_id % 10,
        "sku": "KET-0001",
        "old": old.isoformat(),
        "new": new.isoformat(),
        "waiting": 1,
    }


async def test_queueing_is_idempotent_and_one_notice_per_order_and_change(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_chat(conn, 2)
        await add_order(conn, 1, 1, lines=2)
        await add_order(conn, 2, 1, lines=1)
        await add_order(conn, 3, 2, lines=1)
        await move(conn, [11, 12, 21, 31], day(14), at(1))
        first = await queue_notices(conn, now=at(2))
    assert first == QueueReport(notices=3, lines=4, superseded=0)
    async with store.begin() as conn:
        again = await queue_notices(conn, now=at(3))
        rows = await notices(conn)
        lines = await told(conn)
    assert again == QueueReport(0, 0, 0)
    assert [(r.customer_id, r.chat_id, r.kind, r.status, r.attempts) for r in rows] == [
        (1, 7001, "order_update", "pending", 0),
        (1, 7001, "order_update", "pending", 0),
        (2, 7002, "order_update", "pending", 0),
    ]
    assert [json.loads(r.payload) for r in rows] == [
        {
            "order_id": 1,
            "order_number": "100001",
            "lines": [moved_line(11, D0, day(14)), moved_line(12, D0, day(14))],
        },
        {"order_id": 2, "order_number": "100002", "lines": [moved_line(21, D0, day(14))]},
        {"order_id": 3, "order_number": "100003", "lines": [moved_line(31, D0, day(14))]},
    ]
    assert all(r.not_before == at(2) and r.claimed_until is None for r in rows)
    assert len({r.dedupe_key for r in rows}) == 3
    assert all(len(r.dedupe_key) <= 200 for r in rows)
    assert lines == {i: (day(14), at(2)) for i in (11, 12, 21, 31)}

    # A further change of the same order is a new notice once the first has gone out.
    async with store.begin() as conn:
        await finish(conn, [r.outbox_id for r in rows], "sent", at=at(4))
        await move(conn, [21], day(20), at(5))
        third = await queue_notices(conn, now=at(6))
        after = await notices(conn)
    assert third == QueueReport(1, 1, 0)
    assert [r.status for r in after] == ["sent", "sent", "sent", "pending"]
    assert json.loads(after[3].payload)["lines"] == [moved_line(21, day(14), day(20))]
    assert after[3].dedupe_key not in {r.dedupe_key for r in rows}


async def test_a_date_that_moves_back_and_forth_is_told_each_time(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_order(conn, 1, 1, lines=1)
        for n, to in enumerate((day(7), D0, day(7)), start=1):
            await move(conn, [11], to, at(10 * n))
            report = await queue_notices(conn, now=at(10 * n + 1))
            assert report.notices == 1
            [row] = [r for r in await notices(conn) if r.status == "pending"]
            await finish(conn, [row.outbox_id], "sent", at=at(10 * n + 2))
        rows = await notices(conn)
    # The third move is the first one again: its own key all the same.
    assert [json.loads(r.payload)["lines"][0]["new"] for r in rows] == [
        day(7).isoformat(),
        D0.isoformat(),
        day(7).isoformat(),
    ]
    assert len({r.dedupe_key for r in rows}) == 3


async def test_an_unsent_notice_is_merged_into_the_newer_one(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_order(conn, 1, 1, lines=1)
        await move(conn, [11], day(5), at(1))
        await queue_notices(conn, now=at(2))
        await move(conn, [11], day(9), at(3))
        report = await queue_notices(conn, now=at(4))
        rows = await notices(conn)
    assert report == QueueReport(1, 1, 1)
    assert [(r.status, r.last_error) for r in rows] == [
        ("superseded", "merged into a newer notice"),
        ("pending", None),
    ]
    # One story: from the date they were given to the latest.
    assert json.loads(rows[1].payload)["lines"] == [moved_line(11, D0, day(9))]


async def test_a_claimed_notice_is_never_merged_whatever_the_changes_clock_says(
    store: Store,
) -> None:
    # A claimed notice may be on its way this moment. Folded into a newer one, its change
    # was told twice: by its sender and in the newer notice (an import during a fan-out:
    # 182 duplicates). Its lease is its holder's to judge, not the change's clock: here the
    # change comes long after the lease would have run out.
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_order(conn, 1, 1, lines=1)
        await move(conn, [11], day(5), at(1))
        await queue_notices(conn, now=at(2))
        [claimed] = await claim_due(conn, worker="a", now=at(3), lease=LEASE, limit=10, token="t")
        await move(conn, [11], day(9), at(4))
        report = await queue_notices(conn, now=at(60))
        rows = await notices(conn)
        # Its holder still holds it.
        assert await renew_claims(conn, "t", [claimed.outbox_id], at(65)) == {claimed.outbox_id}
    assert report == QueueReport(1, 1, 0)
    assert [(r.status, r.claimed_by, r.last_error) for r in rows] == [
        ("pending", "t", None),
        ("pending", None, None),
    ]
    assert json.loads(rows[0].payload)["lines"] == [moved_line(11, D0, day(5))]
    # The newer notice tells only what the claimed one does not.
    assert json.loads(rows[1].payload)["lines"] == [moved_line(11, day(5), day(9))]


async def test_moves_under_the_threshold_add_up_until_they_are_news(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_order(conn, 1, 1, lines=1)
        await move(conn, [11], day(1), at(1))
        small = await queue_notices(conn, threshold_days=3, now=at(2))
        after_small = await told(conn)
        await move(conn, [11], day(2), at(3))
        still = await queue_notices(conn, threshold_days=3, now=at(4))
        await move(conn, [11], day(3), at(5))
        enough = await queue_notices(conn, threshold_days=3, now=at(6))
        rows = await notices(conn)
        lines = await told(conn)
    assert (small.notices, still.notices, enough.notices) == (0, 0, 1)
    # Looked at, not told: the told date stays where the customer left it.
    assert after_small == {11: (D0, at(2))}
    assert [json.loads(r.payload)["lines"] for r in rows] == [[moved_line(11, D0, day(3))]]
    assert lines == {11: (day(3), at(6))}


async def test_a_customer_without_a_chat_is_not_marked_told(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_order(conn, 1, 3, lines=1)
        await move(conn, [11], day(14), at(1))
        first = await queue_notices(conn, now=at(2))
        second = await queue_notices(conn, now=at(3))
        rows = await notices(conn)
        lines = await told(conn)
    # Nothing stored for nobody to read: the line stays untold.
    assert first == second == QueueReport(0, 0, 0)
    assert rows == []
    assert lines == {11: (D0, None)}
    async with store.begin() as conn:
        assert await claim_due(conn, worker="w", now=at(4), lease=LEASE, limit=10) == []
        # Linked later: the change gets a notice of its own, and now it is told.
        await add_chat(conn, 3)
        linked = await queue_notices(conn, now=at(5))
        rows = await notices(conn)
        lines = await told(conn)
    assert linked == QueueReport(1, 1, 0)
    assert [(r.chat_id, r.status) for r in rows] == [(7003, "pending")]
    assert json.loads(rows[0].payload)["lines"] == [moved_line(11, D0, day(14))]
    assert lines == {11: (day(14), at(5))}


async def _one_pending(store: Store) -> int:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_order(conn, 1, 1, lines=1)
        await move(conn, [11], day(14), at(1))
        await queue_notices(conn, now=at(2))
        [row] = await notices(conn)
    return int(row.outbox_id)


async def test_a_claimed_notice_is_reclaimed_when_its_lease_runs_out_and_not_before(
    store: Store,
) -> None:
    nid = await _one_pending(store)
    async with store.begin() as conn:
        [claimed] = await claim_due(conn, worker="a", now=at(10), lease=LEASE, limit=10)
        assert (claimed.outbox_id, claimed.chat_id, claimed.attempts) == (nid, 7001, 1)
        [row] = await notices(conn)
        assert (row.claimed_by, row.claimed_until) == (f"a@{at(10).isoformat()}", at(15))
        # Another worker, while the lease holds (to its last instant): nothing.
        assert await claim_due(conn, worker="b", now=at(12), lease=LEASE, limit=10) == []
        assert await claim_due(conn, worker="b", now=at(15), lease=LEASE, limit=10) == []
        # The first worker died without confirming: after the lease, it is due again.
        [again] = await claim_due(conn, worker="b", now=at(16), lease=LEASE, limit=10)
        [row] = await notices(conn)
    assert (again.outbox_id, again.attempts) == (nid, 2)
    assert (row.status, row.claimed_by, row.claimed_until) == (
        "pending",
        f"b@{at(16).isoformat()}",
        at(21),
    )


async def test_a_holder_renews_its_leases_and_learns_which_it_lost(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_chat(conn, 2)
        await add_order(conn, 1, 1, lines=1)
        await add_order(conn, 2, 2, lines=1)
        await move(conn, [11, 21], day(14), at(1))
        await queue_notices(conn, now=at(2))
        first, second = await claim_due(
            conn, worker="a", now=at(10), lease=LEASE, limit=10, token="a#1"
        )
        ids = [first.outbox_id, second.outbox_id]
        # Renewed in time: nobody else may take them while the new lease holds.
        assert await renew_claims(conn, "a#1", ids, at(18)) == set(ids)
        assert await claim_due(conn, worker="b", now=at(17), lease=LEASE, limit=10) == []
        # Renewed late: one was taken by another worker meanwhile, one was not and is the
        # holder's again. Another token renews nothing.
        [taken] = await claim_due(conn, worker="b", now=at(19), lease=LEASE, limit=1, token="b")
        assert taken.outbox_id == first.outbox_id
        assert await renew_claims(conn, "a#1", ids, at(25)) == {second.outbox_id}
        assert await renew_claims(conn, "a#2", ids, at(25)) == set()
        # A closed one is not held any more; nor may a holder put back one it lost.
        await finish(conn, [second.outbox_id], "sent", at=at(20))
        assert await renew_claims(conn, "a#1", ids, at(26)) == set()
        await retry_later(conn, [first.outbox_id], at(40), error="429", holder="a#1")
        rows = await notices(conn)
    assert [(r.status, r.claimed_by, r.claimed_until, r.not_before) for r in rows] == [
        ("pending", "b", at(24), at(2)),
        ("sent", "a#1", None, at(2)),
    ]


async def test_finish_closes_a_notice_for_good(store: Store) -> None:
    nid = await _one_pending(store)
    async with store.begin() as conn:
        await claim_due(conn, worker="a", now=at(10), lease=LEASE, limit=10)
        await finish(conn, [nid], "sent", at=at(11))
        [row] = await notices(conn)
        assert await claim_due(conn, worker="a", now=at(100), lease=LEASE, limit=10) == []
    assert (row.status, row.sent_at, row.claimed_until, row.last_error, row.attempts) == (
        "sent",
        at(11),
        None,
        None,
        1,
    )


async def test_retry_later_puts_a_notice_back_and_may_refund_the_attempt(store: Store) -> None:
    nid = await _one_pending(store)
    async with store.begin() as conn:
        await claim_due(conn, worker="a", now=at(10), lease=LEASE, limit=10)
        await retry_later(conn, [nid], at(30), error="NetworkError: boom")
        [row] = await notices(conn)
        assert (row.status, row.not_before, row.claimed_by, row.claimed_until) == (
            "pending",
            at(30),
            None,
            None,
        )
        assert (row.attempts, row.last_error) == (1, "NetworkError: boom")
        assert await claim_due(conn, worker="a", now=at(29), lease=LEASE, limit=10) == []
        [claimed] = await claim_due(conn, worker="a", now=at(30), lease=LEASE, limit=10)
        assert claimed.attempts == 2
        await retry_later(conn, [nid], at(40), error="429", refund_attempt=True)
        [row] = await notices(conn)
    assert (row.attempts, row.not_before, row.last_error) == (1, at(40), "429")


async def test_mark_unreachable_closes_the_customers_waiting_notices_only(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_chat(conn, 2)
        await add_order(conn, 1, 1, lines=1)
        await add_order(conn, 2, 1, lines=1)
        await add_order(conn, 3, 2, lines=1)
        await move(conn, [11, 21, 31], day(14), at(1))
        await queue_notices(conn, now=at(2))
        first, second, other = await notices(conn)
        await finish(conn, [first.outbox_id], "sent", at=at(3))
        closed = await mark_unreachable(conn, 1, at(4))
        rows = await notices(conn)
        unreachable = dict(
            (await conn.execute(select(customers.c.customer_id, customers.c.unreachable_at))).all()
        )
    assert closed == 1
    assert [(r.outbox_id, r.status, r.last_error) for r in rows] == [
        (first.outbox_id, "sent", None),
        (second.outbox_id, "dead", "blocked by the user (403)"),
        (other.outbox_id, "pending", None),
    ]
    assert unreachable[1] == at(4)
    assert unreachable[2] is None


async def test_a_delay_offer_to_a_customer_without_a_chat_leaves_the_line_untold(
    store: Store,
) -> None:
    ol = order_lines.c
    async with store.begin() as conn:
        await seed_catalog(conn)
        await add_chat(conn, 1)
        await add_order(conn, 1, 1, lines=1, promised=D0)  # reached
        await add_order(conn, 2, 3, lines=1, promised=D0)  # no chat
        await move(conn, [11, 21], day(14), at(1))
        run = await apply_delay_policy(conn, today=D0, now=at(2), policy=DelayPolicy())
        lines = await told(conn)
        offered = [(r.customer_id, r.kind, r.status) for r in await notices(conn)]
        report = await queue_notices(conn, now=at(3))
        rows = await notices(conn)
    assert run.offered == 2
    # The offer told the reached customer the date; the other one was told nothing, and no
    # row stands for them in the outbox.
    assert offered == [(1, "delay_offer", "pending")]
    assert lines == {11: (day(14), at(2)), 21: (D0, None)}
    assert report == QueueReport(0, 0, 0)
    assert rows[1:] == []
    async with store.begin() as conn:
        await add_chat(conn, 3)
        linked = await queue_notices(conn, now=at(4))
        rows = await notices(conn)
        lines = await told(conn)
    assert linked == QueueReport(1, 1, 0)
    assert (rows[-1].customer_id, rows[-1].status) == (3, "pending")
    assert json.loads(rows[-1].payload)["lines"] == [moved_line(21, D0, day(14))]
    assert lines[21] == (day(14), at(4))

    # Past the answer-by day without consent: the offer the customer saw cancels the line
    # (told, they have a chat); the one that never reached its customer goes to the agents.
    async with store.begin() as conn:
        await conn.execute(delete(chats).where(chats.c.customer_id == 3))
        await move(conn, [11, 21], day(60), at(5))
        await apply_delay_policy(conn, today=day(1), now=at(6), policy=DelayPolicy())
        d = delay_offers.c
        shown = (
            await conn.execute(select(d.offer_id).where(d.customer_id == 1, d.status == "open"))
        ).scalar_one()
        await record_shown(conn, shown, text="offer", buttons=[], channel="telegram", at=at(6))
        await apply_delay_policy(conn, today=day(61), now=at(7), policy=DelayPolicy())
        cancelled = dict((await conn.execute(select(ol.line_id, ol.told_cancelled_qty))).all())
        states = dict((await conn.execute(select(ol.line_id, ol.qty_cancelled))).all())
        outcome = (
            await conn.execute(
                select(d.customer_id, d.status, d.answer)
                .where(d.status != "superseded")
                .order_by(d.customer_id)
            )
        ).all()
    assert states == {11: 1, 21: 0}
    assert cancelled == {11: 1, 21: 0}
    assert [tuple(r) for r in outcome] == [
        (1, "cancelled", "no_answer"),
        (3, "to_agents", "never_shown"),
    ]


async def test_offers_made_in_one_pass_each_notify_their_own_customer(store: Store) -> None:
    # The offers of a pass are written in one statement; each notice must name its own offer.
    async with store.begin() as conn:
        await seed_catalog(conn)
        for customer in (1, 2, 3, 4, 5):
            await add_chat(conn, customer)
            await add_order(conn, customer, customer, lines=2, promised=D0)
        line_ids = [customer * 10 + n for customer in (1, 2, 3, 4, 5) for n in (1, 2)]
        await move(conn, line_ids, day(14), at(1))
        run = await apply_delay_policy(conn, today=D0, now=at(2), policy=DelayPolicy())
        offers = {
            r.offer_id: (r.customer_id, r.line_id)
            for r in await conn.execute(
                select(delay_offers.c.offer_id, delay_offers.c.customer_id, delay_offers.c.line_id)
            )
        }
        rows = await notices(conn)
    assert run.offered == 10
    told_of = sorted(
        (r.chat_id, offers[json.loads(r.payload)["offer_id"]], r.dedupe_key) for r in rows
    )
    assert told_of == sorted(
        (7000 + line // 10, (line // 10, line), f"delay:{offer_id}")
        for offer_id, (_, line) in offers.items()
    )
    assert sorted(line for _, line in offers.values()) == line_ids
