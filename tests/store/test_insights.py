"""Track records and causes (#18) on hand-built histories: exact figures, both backends."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from store import Store
from store.backorders import NewLine, cancel_restock, change_restock_date, place_order
from store.insights import (
    CauseCount,
    TrackRecord,
    cause_counts,
    cause_history,
    cause_report,
    compute_records,
    deliveries,
    line_causes,
    line_range_days,
    nearest_rank,
    range_days,
    refresh_causes,
    refresh_records,
    snapshot_causes,
    stored_records,
)
from store.master import add_restock, upsert_supplier
from store.schema import (
    order_lines,
    products,
    restock_date_changes,
    restocks,
    track_records,
    wait_causes,
)
from tests.store.helpers import T0, seed_catalog

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


async def delivered(
    conn: AsyncConnection,
    rid: str,
    supplier: str,
    sku: str,
    first: date,
    arrived: date | datetime,
    *,
    moves: tuple[date, ...] = (),
    moved_after: bool = False,
    ordered: date | None = None,
) -> None:
    """A restock given ``first`` as its date, moved to each of ``moves`` in turn (before it
    arrived, or after it when ``moved_after``), received on ``arrived``."""
    received = (
        arrived if isinstance(arrived, datetime) else datetime.combine(arrived, time(10), UTC)
    )
    created = datetime.combine(ordered or first - timedelta(days=20), time(9), UTC)
    await conn.execute(
        insert(restocks).values(
            restock_id=rid,
            supplier_id=supplier,
            sku=sku,
            qty=10,
            expected_date=moves[-1] if moves else first,
            status="received",
            qty_received=10,
            received_at=received,
            created_at=created,
            updated_at=received,
        )
    )
    prev = first
    for i, new in enumerate(moves):
        at = received + timedelta(hours=1 + i) if moved_after else created + timedelta(days=1 + i)
        await conn.execute(
            insert(restock_date_changes).values(
                restock_id=rid, old_date=prev, new_date=new, reason="supplier delay", changed_at=at
            )
        )
        prev = new


D = date(2026, 1, 10)


async def line_of(conn: AsyncConnection, order_id: int) -> int:
    return int(
        await conn.scalar(select(order_lines.c.line_id).where(order_lines.c.order_id == order_id))
    )


def day(n: int) -> date:
    return D + timedelta(days=n)


async def history(conn: AsyncConnection) -> None:
    """SUP-1: six deliveries, slips -1, 0, 2, 3, 5, 10 (sorted); SUP-2: three."""
    await seed_catalog(conn)
    await upsert_supplier(conn, "SUP-2", "Slowpoke")
    # SUP-1 / KET-0001: 0 (on its date), 3 (moved twice before, arrived on the last), -1
    # (early), 10 (date moved after arrival: booked late, counts as not moved before).
    await delivered(conn, "R1", "SUP-1", "KET-0001", day(0), day(0), ordered=day(-14))
    await delivered(
        conn, "R2", "SUP-1", "KET-0001", day(10), day(13), moves=(day(12), day(13)), ordered=day(-5)
    )
    await delivered(conn, "R3", "SUP-1", "KET-0001", day(20), day(19), ordered=day(0))
    await delivered(
        conn, "R4", "SUP-1", "KET-0001", day(30), day(40), moves=(day(40),), moved_after=True
    )
    # SUP-1 / KET-0002: 2 and 5, the 5 moved once before arrival.
    await delivered(conn, "R5", "SUP-1", "KET-0002", day(40), day(42), ordered=day(30))
    await delivered(
        conn, "R6", "SUP-1", "KET-0002", day(50), day(55), moves=(day(52),), ordered=day(35)
    )
    # SUP-2: three deliveries, each 7 days late.
    for i in range(3):
        await delivered(conn, f"S{i}", "SUP-2", "KET-0002", day(i * 10), day(i * 10 + 7))
    # Not deliveries: an open restock and a cancelled one.
    await add_restock(conn, "OPEN", "SUP-1", "KET-0001", 5, day(90))
    await add_restock(conn, "GONE", "SUP-2", "KET-0001", 5, day(95))
    await cancel_restock(conn, "GONE")


async def test_exact_records_of_a_hand_built_history(store: Store) -> None:
    async with store.begin() as conn:
        await history(conn)
    async with store.connect() as conn:
        got = {d.restock_id: d for d in await deliveries(conn)}
        recs = await compute_records(conn, min_deliveries=5)
    assert sorted(got) == ["R1", "R2", "R3", "R4", "R5", "R6", "S0", "S1", "S2"]
    assert [got[r].slip_days for r in ("R1", "R2", "R3", "R4", "R5", "R6")] == [0, 3, -1, 10, 2, 5]
    assert [got[r].moved for r in ("R1", "R2", "R3", "R4", "R5", "R6")] == [
        False,
        True,
        False,
        False,
        False,
        True,
    ]
    assert got["R2"].first_date == day(10) and got["R2"].arrived_on == day(13)
    assert [got[r].lead_days for r in ("R1", "R2", "R3", "R5", "R6")] == [14, 18, 19, 12, 20]
    assert recs.suppliers == (
        # slips sorted -1 0 2 3 5 10: median = 3rd = 2, p80 = 5th (ceil 4.8) = 5, worst 10;
        # on time: -1 and 0; leads sorted 12 14 18 19 20 30: median 3rd = 18.
        TrackRecord("supplier", "SUP-1", 6, 2, 2, 2, 5, 10, 18, True),
        TrackRecord("supplier", "SUP-2", 3, 0, 0, 7, 7, 7, 27, False),
    )
    assert recs.skus == (
        # KET-0001: slips -1 0 3 10 (p80 = 4th), leads 14 18 19 30; KET-0002: slips 2 5 7 7 7.
        TrackRecord("sku", "KET-0001", 4, 2, 1, 0, 10, 10, 18, False),
        TrackRecord("sku", "KET-0002", 5, 0, 1, 7, 7, 7, 27, True),
    )
    assert recs.suppliers[0].on_time_share == 2 / 6
    assert recs.suppliers[0].moved_share == 2 / 6


async def test_arrival_is_the_shop_s_day_and_minimum_sample_is_a_setting(store: Store) -> None:
    async with store.begin() as conn:
        await seed_catalog(conn)
        # Received at 23:30 UTC on day 5: in Berlin that is day 6, one day late.
        late_evening = datetime.combine(day(5), time(23, 30), UTC)
        await delivered(conn, "R1", "SUP-1", "KET-0001", day(5), late_evening)
    async with store.connect() as conn:
        (utc,) = await deliveries(conn)
        (berlin,) = await deliveries(conn, ZoneInfo("Europe/Berlin"))
        one = await compute_records(conn, min_deliveries=1)
        two = await compute_records(conn, min_deliveries=2)
    assert (utc.slip_days, berlin.slip_days) == (0, 1)
    assert one.suppliers[0].enough is True and two.suppliers[0].enough is False


async def test_refresh_stores_records_and_ranges_follow_enough_history(store: Store) -> None:
    async with store.begin() as conn:
        await history(conn)
        # Lines waiting for SUP-1's open restock and for one of SUP-2's.
        await add_restock(conn, "OPEN2", "SUP-2", "KET-0002", 5, day(90))
        a = await place_order(conn, "900001", 1, [NewLine("KET-0001", 1)], placed_at=T0)
        b = await place_order(conn, "900002", 2, [NewLine("KET-0002", 1)], placed_at=T0)
    run = await refresh_records(store, min_deliveries=5, batch=1, now=NOW)
    assert (run.batches, run.rows) == (4, 4)
    async with store.connect() as conn:
        assert [r.key for r in await stored_records(conn, "supplier")] == ["SUP-1", "SUP-2"]
        assert [r.key for r in await stored_records(conn, "sku")] == ["KET-0001", "KET-0002"]
        assert await range_days(conn, ["SUP-1", "SUP-2", "SUP-9"]) == {"SUP-1": 5}
        lines = [await line_of(conn, a.order_id), await line_of(conn, b.order_id)]
        assert await line_range_days(conn, lines) == {lines[0]: 5}
    # With a minimum of 3, SUP-2 has enough: its lines get a 7-day range. A record whose
    # deliveries are gone is dropped at the next refresh.
    async with store.begin() as conn:
        await conn.execute(
            insert(track_records).values(
                scope="sku", key="OLD-0001", deliveries=9, on_time=9, moved=0, slip_median=0,
                slip_p80=0, slip_worst=0, lead_median=None, enough=True, computed_at=T0,
            )
        )  # fmt: skip
    await refresh_records(store, min_deliveries=3, now=NOW + timedelta(hours=1))
    async with store.connect() as conn:
        assert await line_range_days(conn, lines) == {lines[0]: 5, lines[1]: 7}
        assert [r.key for r in await stored_records(conn, "sku")] == ["KET-0001", "KET-0002"]


def test_nearest_rank() -> None:
    assert nearest_rank([5, 1, 4, 2, 3], 0.8) == 4
    assert nearest_rank([5, 1, 4, 2, 3], 0.5) == 3
    assert nearest_rank([7], 0.8) == 7
    assert nearest_rank(list(range(1, 11)), 0.8) == 8


async def causes_shop(store: Store) -> dict[str, int]:
    """One SKU per cause. Returns each cause's line id."""
    async with store.begin() as conn:
        await seed_catalog(conn)
        await upsert_supplier(conn, "SUP-2", "Slowpoke")
        for sku in ("TOA-0001", "TOA-0002", "TOA-0003"):
            await conn.execute(
                insert(products).values(
                    sku=sku, name_en=sku, category="toasters", price_minor=1000,
                    currency="EUR", created_at=T0, updated_at=T0,
                )
            )  # fmt: skip
        # KET-0001: restock A (2 units, on time), B later (slipped from day 60 to day 70).
        await add_restock(conn, "A", "SUP-1", "KET-0001", 2, day(50))
        await add_restock(conn, "B", "SUP-2", "KET-0001", 5, day(60))
        await change_restock_date(conn, "B", day(70), "supplier delay")
        # KET-0002: one restock, slipped; TOA-0001: nothing on order; TOA-0002: one small
        # restock of 1 unit (the second customer's line is past it); TOA-0003 on time.
        await add_restock(conn, "C", "SUP-2", "KET-0002", 5, day(40))
        await change_restock_date(conn, "C", day(45), "customs hold")
        await add_restock(conn, "D", "SUP-1", "TOA-0002", 1, day(30))
        await add_restock(conn, "E", "SUP-1", "TOA-0003", 9, day(30))
        ids: dict[str, int] = {}
        n = 0

        async def line(key: str, customer: int, sku: str, qty: int) -> None:
            nonlocal n
            n += 1
            placed = await place_order(
                conn, f"9{n:05d}", customer, [NewLine(sku, qty)], placed_at=T0 + timedelta(n)
            )
            ids[key] = await line_of(conn, placed.order_id)

        await line("on_schedule", 1, "KET-0001", 2)  # restock A covers it
        await line("slip", 2, "KET-0001", 1)  # restock B (slipped)
        await line("slip2", 2, "KET-0002", 3)
        await line("no_restock", 3, "TOA-0001", 1)
        await line("schedule2", 3, "TOA-0002", 1)
        await line("ahead", 4, "TOA-0002", 2)  # past restock D: nothing covers it
        await line("ahead2", 4, "TOA-0003", 20)  # more than E brings
        await line("schedule3", 5, "TOA-0003", 1)  # queued behind, still past E
        # A product no longer sold on backorder keeps its waiting lines.
        await conn.execute(
            update(products).where(products.c.sku == "KET-0002").values(backorderable=False)
        )
    return ids


async def test_causes_of_waiting_lines_exact(store: Store) -> None:
    ids = await causes_shop(store)
    run = await refresh_causes(store, batch=2, now=NOW)
    # seed_catalog's 4 products and 3 toasters: 4 ranges of 2 SKUs.
    assert (run.batches, run.rows, run.lines) == (4, 7, 8)
    async with store.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    wait_causes.c.sku,
                    wait_causes.c.restock_key,
                    wait_causes.c.cause,
                    wait_causes.c.supplier_id,
                    wait_causes.c.lines,
                    wait_causes.c.units,
                ).order_by(wait_causes.c.sku, wait_causes.c.restock_key)
            )
        ).all()
        assert [tuple(r) for r in rows] == [
            ("KET-0001", "A", "on_schedule", "SUP-1", 1, 2),
            ("KET-0001", "B", "supplier_slip", "SUP-2", 1, 1),
            ("KET-0002", "C", "not_backorderable", "SUP-2", 1, 3),
            ("TOA-0001", "", "no_restock", None, 1, 1),
            ("TOA-0002", "", "demand_ahead", None, 1, 2),
            ("TOA-0002", "D", "on_schedule", "SUP-1", 1, 1),
            ("TOA-0003", "", "demand_ahead", None, 2, 21),
        ]
        by_line = await line_causes(conn, ids.values())
        assert by_line == {
            ids["on_schedule"]: "on_schedule",
            ids["slip"]: "supplier_slip",
            ids["slip2"]: "not_backorderable",
            ids["no_restock"]: "no_restock",
            ids["schedule2"]: "on_schedule",
            ids["ahead"]: "demand_ahead",
            ids["ahead2"]: "demand_ahead",
            ids["schedule3"]: "demand_ahead",
        }
        assert await cause_counts(conn) == [
            CauseCount("no_restock", 1, 1),
            CauseCount("supplier_slip", 1, 1),
            CauseCount("demand_ahead", 3, 23),
            CauseCount("not_backorderable", 1, 3),
            CauseCount("on_schedule", 2, 3),
        ]
        totals, detail = await cause_report(conn, limit=3)
    # KET-0001 costs 2999, KET-0002 3499, toasters 1000 a unit.
    assert [(r.cause, r.lines, r.customers, r.money_minor) for r in totals] == [
        ("demand_ahead", 3, 2, 23_000),
        ("no_restock", 1, 1, 1_000),
        ("not_backorderable", 1, 1, 10_497),
        ("on_schedule", 2, 2, 6_998),
        ("supplier_slip", 1, 1, 2_999),
    ]
    assert [(r.cause, r.supplier_id, r.sku, r.lines, r.money_minor) for r in detail] == [
        ("demand_ahead", None, "TOA-0003", 2, 21_000),
        ("not_backorderable", "SUP-2", "KET-0002", 1, 10_497),
        ("on_schedule", "SUP-1", "KET-0001", 1, 5_998),
    ]


async def test_causes_follow_changes_and_snapshots_keep_a_day(store: Store) -> None:
    ids = await causes_shop(store)
    await refresh_causes(store, now=NOW)
    async with store.begin() as conn:
        await add_restock(conn, "F", "SUP-1", "TOA-0001", 3, day(20))
        await snapshot_causes(conn, date(2026, 3, 1))
    await refresh_causes(store, now=NOW)
    async with store.begin() as conn:
        assert (await line_causes(conn, [ids["no_restock"]])) == {ids["no_restock"]: "on_schedule"}
        await snapshot_causes(conn, date(2026, 3, 2))
        await snapshot_causes(conn, date(2026, 3, 2))  # again: replaces the day's rows
        history_ = await cause_history(conn, date(2026, 3, 1))
    assert history_ == {
        date(2026, 3, 1): dict(
            demand_ahead=3, no_restock=1, not_backorderable=1, on_schedule=2, supplier_slip=1
        ),
        date(2026, 3, 2): dict(
            demand_ahead=3, no_restock=0, not_backorderable=1, on_schedule=3, supplier_slip=1
        ),
    }


async def test_refreshes_at_once_store_what_one_stores(store: Store) -> None:
    """Two processes' checks may refresh at the same time: on PostgreSQL their batches
    interleave on the pool's connections; the store ends as after one refresh."""
    import asyncio

    await causes_shop(store)
    async with store.begin() as conn:
        await history(conn)
    await asyncio.gather(
        refresh_causes(store, batch=1, now=NOW),
        refresh_causes(store, batch=2, now=NOW),
        refresh_causes(store, batch=3, now=NOW),
        refresh_records(store, batch=1, now=NOW),
        refresh_records(store, batch=2, now=NOW),
    )
    async with store.connect() as conn:
        causes = (await conn.execute(select(wait_causes).order_by(wait_causes.c.sku))).all()
        records = await stored_records(conn, "supplier")
        counts = await cause_counts(conn)
    assert len(causes) == 7 and sum(c.lines for c in counts) == 8
    assert [(r.key, r.deliveries) for r in records] == [("SUP-1", 6), ("SUP-2", 3)]
