# ruff: noqa: E501  (CSV fixtures and expected messages read best unwrapped)
from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from store import open_store
from store.cli import main
from store.queries import order_of
from store.schema import customers, order_lines, products, restock_date_changes, restocks, stock
from tests.store.store_dump import dump

FILES = {
    "products": "sku,name_en,name_de,category,price_minor,currency,backorderable,alternatives\n"
    "KET-0001,Steel Kettle,Wasserkocher,kettles,2999,EUR,true,KET-0002\n"
    "KET-0002,Glass Kettle,,kettles,3499,EUR,true,\n",
    "suppliers": "supplier_id,name,email,lead_days\nSUP-1,Acme,po@acme.example,14\n",
    "stock": "sku,on_hand\nKET-0001,1\nKET-0002,5\n",
    "restocks": "restock_id,supplier_id,sku,qty,expected_date\nPO-1,SUP-1,KET-0001,5,2026-02-01\n",
    "customers": "customer_id,name,email,phone,postcode,language\n1,Anna Schmidt,anna@example.com,,10115,de\n"
    "2,John Smith,john@example.com,,SW1A 1AA,en\n",
    "orders": "order_number,customer_id,placed_at,line_no,sku,qty\n"
    "100001,1,2026-01-01T10:00:00Z,1,KET-0001,2\n"
    "100001,1,2026-01-01T10:00:00Z,2,KET-0002,1\n"
    "100002,2,2026-01-02T10:00:00Z,1,KET-0001,1\n",
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.csv"
    p.write_text(text, encoding="utf-8")
    return p


def run(db_url: str, *argv: str) -> int:
    return main(["--db", db_url, *argv])


def count(db_url: str, table) -> int:
    return asyncio.run(_count(db_url, table))


async def _count(db_url: str, table) -> int:
    s = await open_store(db_url)
    async with s.connect() as conn:
        n = await conn.scalar(select(func.count()).select_from(table))
    await s.close()
    return int(n or 0)


def load_all(db_url: str, tmp_path: Path) -> None:
    for kind, text in FILES.items():
        assert run(db_url, "import", kind, str(write(tmp_path, kind, text))) == 0


def test_import_everything_twice_changes_nothing(db_url: str, tmp_path: Path, capsys) -> None:
    assert run(db_url, "init") == 0
    load_all(db_url, tmp_path)
    out = capsys.readouterr().out
    assert "orders.csv: 3 rows, 2 changed" in out
    load_all(db_url, tmp_path)
    out = capsys.readouterr().out
    for kind in FILES:
        assert (
            f"{kind}.csv:" in out and " 0 changed" in out.split(f"{kind}.csv:")[1].splitlines()[0]
        )


def test_operations_through_cli(db_url: str, tmp_path: Path, capsys) -> None:
    load_all(db_url, tmp_path)
    capsys.readouterr()
    assert run(db_url, "restock-date", "PO-1", "2026-02-10", "--reason", "late ship") == 0
    assert capsys.readouterr().out.strip() == "PO-1: 2 lines moved"
    assert run(db_url, "restock-date", "PO-1", "10.02.2026", "--reason", "x") == 2
    assert run(db_url, "receive", "PO-1") == 0
    assert (
        capsys.readouterr().out.strip()
        == "PO-1: received 5, allocated 2 to 2 lines, 3 to free stock"
    )
    assert run(db_url, "receive", "PO-1") == 0
    assert capsys.readouterr().out.strip() == "PO-1: already received"
    assert (
        run(
            db_url,
            "ship",
            "100001",
            "--shipment-id",
            "S1",
            "--carrier",
            "DHL",
            "--tracking",
            "T1",
            "--date",
            "2026-02-11",
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "S1: shipped 3 units"
    assert run(db_url, "cancel", "line", "100002", "1") == 0
    assert capsys.readouterr().out.strip() == "order 100002 line 1: cancelled 1"
    assert run(db_url, "cancel", "order", "999999") == 1
    assert capsys.readouterr().err.strip() == "error: no order 999999"
    assert run(db_url, "report") == 0
    assert "no backorders" in capsys.readouterr().out
    asyncio.run(_check_operations(db_url))


async def _check_operations(db_url: str) -> None:
    s = await open_store(db_url)
    async with s.connect() as conn:
        o = await order_of(conn, 1, "100001")
        assert o is not None and [ln.qty_shipped for ln in o.lines] == [2, 1]
        assert (await conn.scalar(select(stock.c.on_hand).where(stock.c.sku == "KET-0001"))) == 4
        assert (await conn.scalar(select(func.count()).select_from(restock_date_changes))) == 1
        assert (await conn.scalar(select(restocks.c.status))) == "received"
    await s.close()


@pytest.mark.parametrize(
    ("kind", "text", "errors"),
    [
        (
            "stock",
            "sku,on_hand\nKET-0001,3\nKET-0002,-5\n",
            ["stock.csv:3: on_hand: must be from 0 to 1,000,000, got -5"],
        ),
        (
            "restocks",
            "restock_id,supplier_id,sku,qty,expected_date\nPO-9,SUP-1,KET-0001,5,12/01/2026\nPO-10,SUP-1,KET-0001,x,2026-01-01\n",
            [
                "restocks.csv:2: expected_date: not an ISO date (YYYY-MM-DD): '12/01/2026'",
                "restocks.csv:3: qty: not a whole number in ASCII digits: 'x'",
            ],
        ),
        (
            "restocks",
            "restock_id,supplier_id,sku,qty,expected_date\nPO-9,SUP-1,NOP-0001,5,2026-01-01\n",
            ["restocks.csv:2: unknown SKU NOP-0001"],
        ),
        (
            "customers",
            "customer_id,name,email\n7,A,a@x.example\n7,B,b@x.example\n",
            ["customers.csv:3: duplicate id 7 with different content (first on line 2)"],
        ),
        ("stock", "sku\nKET-0001\n", ["stock.csv:1: missing columns: on_hand"]),
        (
            "orders",
            "order_number,customer_id,placed_at,line_no,sku,qty\n100009,1,2026-01-01T10:00:00Z,1,KET-0001,1\n100009,1,2026-01-01T10:00:00Z,2,XXX-0001,1\n",
            ["orders.csv:3: unknown SKU XXX-0001"],
        ),
    ],
)
def test_malformed_csv_writes_nothing(
    db_url: str, tmp_path: Path, capsys, kind: str, text: str, errors: list[str]
) -> None:
    load_all(db_url, tmp_path)
    capsys.readouterr()
    before = [count(db_url, t) for t in (products, stock, restocks, customers, order_lines)]
    on_hand = asyncio.run(_on_hand(db_url))
    assert (
        run(
            db_url,
            "import",
            kind,
            str(write(tmp_path, f"bad_{kind}", text).rename(tmp_path / f"{kind}.csv")),
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [*errors, "nothing written"]
    assert [count(db_url, t) for t in (products, stock, restocks, customers, order_lines)] == before
    assert asyncio.run(_on_hand(db_url)) == on_hand


async def _on_hand(db_url: str) -> list[tuple[str, int]]:
    s = await open_store(db_url)
    async with s.connect() as conn:
        rows = [
            tuple(r)
            for r in await conn.execute(select(stock.c.sku, stock.c.on_hand).order_by(stock.c.sku))
        ]
    await s.close()
    return rows  # type: ignore[return-value]


def test_demo_command(db_url: str, capsys) -> None:
    assert run(db_url, "demo", "--size", "small") == 0
    assert "DemoSummary(size='small'" in capsys.readouterr().out
    assert run(db_url, "demo") == 1
    assert "database is not empty" in capsys.readouterr().err
    assert run(db_url, "report", "--limit", "3") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SKU ")
    assert len([ln for ln in out if re.match(r"[A-Z]{3}-\d{4} ", ln)]) == 3


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["restock-date", "PO-1", "2026-W50-1", "--reason", "x"],
            "backorder-admin restock-date: error: argument date: not an ISO date (YYYY-MM-DD): '2026-W50-1'",
        ),
        (
            ["receive", "PO-1", "--qty", "1_000"],
            "backorder-admin receive: error: argument --qty: not a whole number in ASCII digits: '1_000'",
        ),
        (
            ["receive", "PO-1", "--qty", "9" * 5000],
            f"backorder-admin receive: error: argument --qty: must be from 0 to 1,000,000, got '{'9' * 40}'... (5,000 characters)",
        ),
        (
            ["cancel", "line", "100001", "١"],
            "backorder-admin cancel line: error: argument line_no: not a whole number in ASCII digits: '١'",
        ),
        (
            ["ship", "100001", "--shipment-id", "S1", "--carrier", "DHL", "--line", "1:2_0"],
            "backorder-admin ship: error: argument --line: expected LINE_NO:QTY, got '1:2_0'",
        ),
    ],
)
def test_arguments_are_read_strictly(
    db_url: str, tmp_path: Path, capsys, argv: list[str], line: str
) -> None:
    load_all(db_url, tmp_path)
    capsys.readouterr()
    before = dump(db_url)
    assert run(db_url, *argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1] == line
    assert dump(db_url) == before


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["restock-date", "PO-1", "2999-01-01", "--reason", "x"],
            "error: date: more than 10 years ahead: '2999-01-01'",
        ),
        (
            ["restock-date", "PO-1", "1999-01-01", "--reason", "x"],
            "error: date: more than 10 years back: '1999-01-01'",
        ),
        (
            ["restock-date", "PO-1", "2026-03-01", "--reason", "late\x00"],
            "error: --reason: control character U+0000 (NUL) at character 5",
        ),
        (
            ["cancel", "order", "100001", "--reason", "x" * 501],
            "error: --reason: longer than 500 characters (501)",
        ),
        (
            ["ship", "100001", "--shipment-id", "S1", "--carrier", "D" * 65],
            "error: --carrier: longer than 64 characters (65)",
        ),
        (
            ["ship", "100001", "--shipment-id", "S1", "--carrier", "DHL", "--date", "9999-01-01"],
            "error: --date: in the future: '9999-01-01'",
        ),
        (
            ["ship", "100001", "--shipment-id", "S\nX", "--carrier", "DHL"],
            "error: --shipment-id: control character U+000A (line break) at character 2",
        ),
    ],
)
def test_bad_values_of_a_command_are_one_line_and_write_nothing(
    db_url: str, tmp_path: Path, capsys, argv: list[str], line: str
) -> None:
    load_all(db_url, tmp_path)
    capsys.readouterr()
    before = dump(db_url)
    assert run(db_url, *argv) == 1
    assert capsys.readouterr() == ("", line + "\n")
    assert dump(db_url) == before


@pytest.mark.parametrize(
    ("url", "line"),
    [
        (
            "nonsense://x",
            "error: --db/DATABASE_URL: Can't load plugin: sqlalchemy.dialects:nonsense",
        ),
        (
            "postgresql+psycopg://u@127.0.0.1:1/x",
            "error: --db/DATABASE_URL: driver not installed: psycopg",
        ),
    ],
)
def test_a_database_url_that_cannot_be_used_is_one_line(capsys, url: str, line: str) -> None:
    # A driver the dev install lacks (it has asyncpg).
    if url.startswith("postgresql") and importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here")
    assert main(["--db", url, "report"]) == 1
    assert capsys.readouterr() == ("", line + "\n")


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    assert main(["--db", f"sqlite+aiosqlite:///{path}", "report"]) == 1
    assert capsys.readouterr() == ("", "error: the store failed: file is not a database\n")
    assert path.read_text() == "not a database\n" * 100
