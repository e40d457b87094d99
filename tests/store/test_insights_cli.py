"""backorder-admin report suppliers | causes | alerts (#18), exact output, both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from store import Store, open_store
from store.cli import main
from store.insights import Condition, sync_alerts
from store.schema import reorder_points
from tests.store.test_insights import causes_shop, history


def filled(db_url: str, fill: Callable[[Store], Awaitable[object]]) -> None:
    async def go() -> None:
        store = await open_store(db_url)
        try:
            await fill(store)
        finally:
            await store.close()

    asyncio.run(go())


async def _history(store: Store) -> None:
    async with store.begin() as conn:
        await history(conn)


def test_report_suppliers_csv_and_table(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TIMEZONE", "UTC")
    filled(db_url, _history)
    assert main(["--db", db_url, "report", "suppliers", "--csv"]) == 0
    assert capsys.readouterr().out == (
        "scope,key,deliveries,on_time_share,slip_median,slip_p80,slip_worst,moved_share,"
        "lead_median,enough\n"
        "supplier,SUP-1,6,0.333,2,5,10,0.333,18,1\n"
        "supplier,SUP-2,3,0.000,7,7,7,0.000,27,0\n"
        "sku,KET-0002,5,0.000,7,7,7,0.200,27,1\n"
        "sku,KET-0001,4,0.500,0,10,10,0.250,18,0\n"
    )
    monkeypatch.setenv("INSIGHTS_MIN_DELIVERIES", "3")
    assert main(["--db", db_url, "report", "suppliers", "--limit", "1"]) == 0
    assert capsys.readouterr().out == (
        "supplier/SKU   deliv on time median  p80 worst  moved  lead\n"
        "SUP-1              6     33%      2    5    10    33%    18\n"
        "SUP-2              3      0%      7    7     7     0%    27\n"
        "KET-0001           4     50%      0   10    10    25%    18\n"
    )


def test_report_causes_derives_them_first(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    filled(db_url, causes_shop)
    assert main(["--db", db_url, "report", "causes", "--csv", "--limit", "2"]) == 0
    assert capsys.readouterr().out == (
        "cause,supplier,sku,lines,customers,money,currency\n"
        "demand_ahead,,,3,2,230.00,EUR\n"
        "no_restock,,,1,1,10.00,EUR\n"
        "not_backorderable,,,1,1,104.97,EUR\n"
        "on_schedule,,,2,2,69.98,EUR\n"
        "supplier_slip,,,1,1,29.99,EUR\n"
        "demand_ahead,,TOA-0003,2,2,210.00,EUR\n"
        "not_backorderable,SUP-2,KET-0002,1,1,104.97,EUR\n"
    )


def test_report_alerts_and_a_bad_report_name(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)

    async def one_alert(store: Store) -> None:
        async with store.begin() as conn:
            await sync_alerts(conn, [Condition("cancel_spike", "cancel_spike", {"n": 4})], at)

    filled(db_url, one_alert)
    assert main(["--db", db_url, "report", "alerts", "--csv"]) == 0
    assert capsys.readouterr().out == (
        "key,kind,active,since,told_at,cleared_at,data\n"
        'cancel_spike,cancel_spike,1,2026-03-01T12:00:00+00:00,,,"{""n"": 4}"\n'
    )
    assert main(["--db", db_url, "report", "supplier"]) == 2
    assert "invalid choice: 'supplier'" in capsys.readouterr().err


def test_reorder_point_command(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    filled(db_url, _history)
    assert main(["--db", db_url, "reorder-point", "KET-0001", "4"]) == 0
    assert main(["--db", db_url, "reorder-point", "KET-0002", "2"]) == 0
    assert main(["--db", db_url, "reorder-point", "KET-0002"]) == 0
    assert capsys.readouterr().out == (
        "KET-0001: reorder point 4\nKET-0002: reorder point 2\nKET-0002: reorder point default\n"
    )
    # Bad input: a clear answer, nothing written.
    assert main(["--db", db_url, "reorder-point", "NOPE-0001", "3"]) == 1
    assert main(["--db", db_url, "reorder-point", "KET-0001", "-1"]) == 2
    assert "error: unknown SKU NOPE-0001" in capsys.readouterr().err

    async def points(store: Store) -> None:
        async with store.connect() as conn:
            rows = (await conn.execute(select(reorder_points))).all()
        assert [tuple(r) for r in rows] == [("KET-0001", 4)]

    filled(db_url, points)
