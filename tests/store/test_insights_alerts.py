"""The team's alerts (#18), store side: each condition under its key, exact; told once while it
holds, again after it ended and came back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from store import Store
from store.backorders import NewLine, change_restock_date, place_order
from store.insights import (
    AlertRules,
    Condition,
    alert_conditions,
    alerts,
    claim_untold,
    refresh_causes,
    set_reorder_point,
    sync_alerts,
)
from store.master import add_restock
from store.schema import delay_offers
from tests.store.helpers import T0, seed_catalog
from tests.store.test_insights import day, line_of

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


async def test_conditions_exact(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        # KET-0001: 5 waiting, 2 coming: demand over supply. KET-0002: 1 waiting, 5 coming.
        await add_restock(conn, "A", "SUP-1", "KET-0001", 2, day(30))
        await add_restock(conn, "B", "SUP-1", "KET-0002", 5, day(30))
        placed = await place_order(conn, "900001", 1, [NewLine("KET-0001", 5)], placed_at=T0)
        await place_order(conn, "900002", 2, [NewLine("KET-0002", 1)], placed_at=T0)
        # B slips twice (later, later); A moves once.
        await change_restock_date(conn, "B", day(35), "supplier delay")
        await change_restock_date(conn, "B", day(40), "supplier delay")
        await change_restock_date(conn, "A", day(31), "supplier delay")
        await set_reorder_point(conn, "KET-0002", 1)
        # Delay cancellations: 4 in the last 7 days, 2 in the 28 before (mean 0.5 a week).
        line = await line_of(conn, placed.order_id)
        for i, when in enumerate([1, 2, 3, 6, 10, 30]):
            await conn.execute(
                insert(delay_offers).values(
                    line_id=line, order_id=placed.order_id, customer_id=1, seq=i + 1,
                    promised_date=day(0), consent_needed=True, buttons="[]",
                    offered_at=NOW - timedelta(days=when + 1), status="cancelled",
                    answered_at=NOW - timedelta(days=when),
                )
            )  # fmt: skip
    await refresh_causes(store)
    async with store.connect() as conn:
        got = await alert_conditions(conn, NOW, AlertRules(default_reorder_point=0))
    assert got == [
        Condition("demand:KET-0001", "demand", dict(sku="KET-0001", waiting=5, free=0, coming=2)),
        Condition("reorder:KET-0002", "reorder", dict(sku="KET-0002", free=0, point=1)),
        Condition(
            "slip_again:B:2",
            "slip_again",
            dict(
                restock_id="B", supplier_id="SUP-1", sku="KET-0002", expected="2026-02-19", moves=2
            ),
        ),
        Condition("cancel_spike", "cancel_spike", dict(last_7_days=4, before_28_days=2)),
    ]
    # A default point of 1 adds every active product with nothing free (SOF-0001 is not).
    async with store.connect() as conn:
        more = await alert_conditions(conn, NOW, AlertRules(default_reorder_point=1, spike_min=5))
    assert [c.key for c in more] == [
        "demand:KET-0001",
        "reorder:BIK-0001",
        "reorder:KET-0001",
        "reorder:KET-0002",
        "slip_again:B:2",
    ]


async def test_told_once_quiet_while_it_holds_again_when_it_returns(store: Store) -> None:
    spike = Condition("cancel_spike", "cancel_spike", {"n": 4})
    other = Condition("demand:KET-0001", "demand", {"waiting": 5})

    async def step(conds: list[Condition], minutes: int) -> list[str]:
        at = NOW + timedelta(minutes=minutes)
        async with store.begin() as conn:
            await sync_alerts(conn, conds, at)
            return [a.key for a in await claim_untold(conn, at)]

    assert await step([spike], 0) == ["cancel_spike"]
    assert await step([spike, other], 1) == ["demand:KET-0001"]  # the spike: said already
    assert await step([spike, other], 2) == []
    assert await step([other], 3) == []  # the spike ended: cleared, nothing said
    async with store.connect() as conn:
        (cleared,) = [a for a in await alerts(conn) if a.key == "cancel_spike"]
    assert (cleared.active, cleared.cleared_at) == (False, NOW + timedelta(minutes=3))
    assert await step([spike, other], 4) == ["cancel_spike"]  # back: said again
    assert await step([spike, other], 5) == []
    async with store.connect() as conn:
        now_active = await alerts(conn, active_only=True)
    assert [(a.key, a.data, a.since) for a in now_active] == [
        ("cancel_spike", {"n": 4}, NOW + timedelta(minutes=4)),
        ("demand:KET-0001", {"waiting": 5}, NOW + timedelta(minutes=1)),
    ]


async def test_an_alert_is_claimed_by_one_of_two_at_once(store: Store) -> None:
    import asyncio

    async with store.begin() as conn:
        await sync_alerts(conn, [Condition(f"k{i}", "demand", {}) for i in range(40)], NOW)

    async def claim() -> list[str]:
        # Until nothing is left untold: a claim that lost every key to the other finds none.
        got: list[str] = []
        for _ in range(100):
            async with store.begin() as conn:
                got += [a.key for a in await claim_untold(conn, NOW, limit=3)]
            async with store.connect() as conn:
                if not [a for a in await alerts(conn) if a.told_at is None]:
                    return got
        raise AssertionError("alerts left untold")

    first, second = await asyncio.gather(claim(), claim())
    assert sorted(first + second) == sorted(f"k{i}" for i in range(40))
    assert not set(first) & set(second)
