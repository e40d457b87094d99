# ruff: noqa: E501  (CSV fixtures and expected messages read best unwrapped)
"""Issue #13: every bad file an unlucky operator may give ``backorder-admin import`` is
answered with ``file:line: reason`` lines, ``nothing written`` and exit 1, and the store is
left exactly as it was. Dates here are far from today's on purpose (1999, 9999): the window
checks at the edges are in test_import_bounds.py, against a fixed clock."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from store import imports
from store.cli import BUSY, main
from store.master import CustomerIn
from tests.pg import Databases
from tests.store.store_dump import dump
from tests.store.test_cli import FILES, load_all

ORDERS = "order_number,customer_id,placed_at,line_no,sku,qty\n"
CUSTOMERS = "customer_id,name,email\n"
RESTOCKS = "restock_id,supplier_id,sku,qty,expected_date\n"
LATIN = "customer_id,name,email\n1,Jürgen Groß,j@example.com\n"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the files of test_cli.py imported, built once and copied per test."""
    folder = tmp_path_factory.mktemp("loaded")
    load_all(f"sqlite+aiosqlite:///{folder / 'store.sqlite3'}", folder)
    return folder / "store.sqlite3"


def _load_all_into(url: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        load_all(url, Path(folder))


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A copy of the store with the files of test_cli.py imported, on either backend."""
    if backend == "sqlite":
        loaded: Path = request.getfixturevalue("loaded")
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{loaded}{suffix}").exists():
                shutil.copy(f"{loaded}{suffix}", tmp_path / f"store.sqlite3{suffix}")
        yield f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}"
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    name, url = databases.fresh(databases.template("loaded", fill_url=_load_all_into))
    try:
        yield url
    finally:
        databases.drop(name)


def refused(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, data: bytes
) -> list[str]:
    """Import ``data`` as ``kind``.csv, which must be refused; the lines of stderr."""
    before = dump(db_url)
    path = tmp_path / f"{kind}.csv"
    path.write_bytes(data)
    assert main(["--db", db_url, "import", kind, str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert dump(db_url) == before
    return err.splitlines()


@pytest.mark.parametrize(
    ("kind", "data", "errors"),
    [
        # --- not UTF-8, not text --------------------------------------------------------
        pytest.param(
            "customers",
            LATIN.encode("cp1252"),
            [
                "customers.csv:2: not UTF-8 text (byte 0xFC at byte 4 of the line, looks like Windows-1252 or Latin-1: save as UTF-8)"
            ],
            id="windows-1252",
        ),
        pytest.param(
            "customers",
            LATIN.encode("utf-16"),
            ["customers.csv:1: not UTF-8 text (looks like UTF-16: save as UTF-8)"],
            id="utf-16-with-bom",
        ),
        pytest.param(
            "customers",
            LATIN.encode("utf-16-le"),
            ["customers.csv:1: not UTF-8 text (looks like UTF-16: save as UTF-8)"],
            id="utf-16-without-bom",
        ),
        pytest.param(
            "customers",
            LATIN.encode("utf-32"),
            ["customers.csv:1: not UTF-8 text (looks like UTF-32: save as UTF-8)"],
            id="utf-32",
        ),
        pytest.param(
            "orders",
            b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00[Content_Types].xml",
            [
                "orders.csv:1: not a CSV text file (looks like a ZIP archive or an Excel .xlsx workbook: export it as CSV UTF-8)"
            ],
            id="xlsx",
        ),
        pytest.param(
            "orders",
            bytes(range(256)) * 4,
            ["orders.csv:1: not a CSV text file (binary data)"],
            id="binary-with-nul",
        ),
        pytest.param(
            "orders",
            ORDERS.encode() + bytes(range(0x80, 0x100)) + b"\n",
            [
                "orders.csv:2: not UTF-8 text (byte 0x80 at byte 1 of the line, an unknown encoding: save as UTF-8)"
            ],
            id="binary-line",
        ),
        # --- sizes ------------------------------------------------------------------------
        pytest.param(
            "customers",
            f"{CUSTOMERS}1,{'A' * 131_073},a@example.com\n".encode(),
            ["customers.csv:2: line longer than 8,192 bytes (in column name)"],
            id="field-over-csv-limit",
        ),
        pytest.param(
            "customers",
            f"{'x' * 9000}\n".encode(),
            ["customers.csv:1: line longer than 8,192 bytes"],
            id="header-too-long",
        ),
        pytest.param(
            "customers",
            f"{CUSTOMERS}1,{'A' * 201},a@example.com\n".encode(),
            ["customers.csv:2: name: longer than 200 characters (201)"],
            id="name",
        ),
        pytest.param(
            "customers",
            f"{CUSTOMERS}1,Anna,{'a' * 990}@example.com\n".encode(),
            ["customers.csv:2: email: longer than 254 characters (1,002)"],
            id="email",
        ),
        pytest.param(
            "suppliers",
            f"supplier_id,name,email\nSUP-2,Acme,{'a' * 190}@example.com\n".encode(),
            ["suppliers.csv:2: email: longer than 200 characters (202)"],
            id="supplier-email",
        ),
        pytest.param(
            "restocks",
            f"{RESTOCKS}{'P' * 65},SUP-1,KET-0001,1,2026-12-24\n".encode(),
            ["restocks.csv:2: restock_id: longer than 64 characters (65)"],
            id="restock-id",
        ),
        pytest.param(
            "stock",
            f"sku,on_hand\n{'K' * 33},1\n".encode(),
            ["stock.csv:2: sku: longer than 32 characters (33)"],
            id="sku",
        ),
        # --- numbers ----------------------------------------------------------------------
        pytest.param(
            "orders",
            f"{ORDERS}100003,1,2026-01-03T10:00:00Z,1,KET-0001,{2**62}\n".encode(),
            ["orders.csv:2: qty: must be from 1 to 1,000,000, got 4611686018427387904"],
            id="qty-2^62",
        ),
        pytest.param(
            "stock",
            f"sku,on_hand\nKET-0001,{2**63}\n".encode(),
            ["stock.csv:2: on_hand: must be from 0 to 1,000,000, got 9223372036854775808"],
            id="on-hand-2^63",
        ),
        pytest.param(
            "stock",
            f"sku,on_hand\nKET-0001,{'9' * 5000}\n".encode(),
            ["stock.csv:2: on_hand: longer than 20 characters (5,000)"],
            id="on-hand-5000-digits",
        ),
        pytest.param(
            "customers",
            f"{CUSTOMERS}{2**31},Anna,a@example.com\n".encode(),
            ["customers.csv:2: customer_id: must be from 1 to 2,147,483,647, got 2147483648"],
            id="customer-id",
        ),
        pytest.param(
            "restocks",
            f"{RESTOCKS}PO-2,SUP-1,KET-0001,1_000,2026-12-24\nPO-3,SUP-1,KET-0001,١٠,2026-12-24\nPO-4,SUP-1,KET-0001,+5,2026-12-24\n".encode(),
            [
                "restocks.csv:2: qty: not a whole number in ASCII digits: '1_000'",
                "restocks.csv:3: qty: not a whole number in ASCII digits: '١٠'",
                "restocks.csv:4: qty: not a whole number in ASCII digits: '+5'",
            ],
            id="qty-digits",
        ),
        pytest.param(
            "products",
            "sku,name_en,category,price_minor,currency\nKET-0003,Kettle,kettles,29.99,EUR\nKET-0004,Kettle,kettles,1000000001,EUR\nKET-0005,Kettle,kettles,100,ÄÖÜ\n".encode(),
            [
                "products.csv:2: price_minor: not a whole number in ASCII digits: '29.99'",
                "products.csv:3: price_minor: must be from 0 to 1,000,000,000, got 1000000001",
                "products.csv:4: currency: not a 3-letter code: 'ÄÖÜ'",
            ],
            id="money",
        ),
        pytest.param(
            "orders",
            f"{ORDERS}١٠٠٠٠٣,1,2026-01-03T10:00:00Z,1,KET-0001,1\n{'1' * 22},1,2026-01-03T10:00:00Z,1,KET-0001,1\n123,1,2026-01-03T10:00:00Z,1,KET-0001,1\n".encode(),
            [
                "orders.csv:2: order_number: 4 to 10 ASCII digits (what the bot reads in a message): '١٠٠٠٠٣'",
                "orders.csv:3: order_number: 4 to 10 ASCII digits (what the bot reads in a message): '1111111111111111111111'",
                "orders.csv:4: order_number: 4 to 10 ASCII digits (what the bot reads in a message): '123'",
            ],
            id="order-number",
        ),
        # --- dates ------------------------------------------------------------------------
        pytest.param(
            "restocks",
            f"{RESTOCKS}PO-2,SUP-1,KET-0001,1,2026-W50-1\nPO-3,SUP-1,KET-0001,1,1999-06-01\nPO-4,SUP-1,KET-0001,1,2999-06-01\nPO-5,SUP-1,KET-0001,1,2026-02-30\n".encode(),
            [
                "restocks.csv:2: expected_date: not an ISO date (YYYY-MM-DD): '2026-W50-1'",
                "restocks.csv:3: expected_date: more than 10 years back: '1999-06-01'",
                "restocks.csv:4: expected_date: more than 10 years ahead: '2999-06-01'",
                "restocks.csv:5: expected_date: not an ISO date (YYYY-MM-DD): '2026-02-30'",
            ],
            id="expected-date",
        ),
        pytest.param(
            "orders",
            f"{ORDERS}100003,1,9999-01-01T00:00:00Z,1,KET-0001,1\n100004,1,1999-01-01T00:00:00Z,1,KET-0001,1\n100005,1,2026-01-03,1,KET-0001,1\n100006,1,2026-01-03 10:00:00,1,KET-0001,1\n100007,1,0001-01-01T00:00:00+01:00,1,KET-0001,1\n".encode(),
            [
                "orders.csv:2: placed_at: in the future (more than a day ahead of this clock): '9999-01-01T00:00:00Z'",
                "orders.csv:3: placed_at: more than 10 years back: '1999-01-01T00:00:00Z'",
                "orders.csv:4: placed_at: not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM): '2026-01-03'",
                "orders.csv:5: placed_at: not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM): '2026-01-03 10:00:00'",
                "orders.csv:6: placed_at: not a date and time (YYYY-MM-DDTHH:MM:SS, then Z or +HH:MM): '0001-01-01T00:00:00+01:00'",
            ],
            id="placed-at",
        ),
        # --- header -----------------------------------------------------------------------
        pytest.param(
            "orders",
            b"order_number,customer_id,placed_at,line_no,sku,qty,qty\n100003,1,2026-01-03T10:00:00Z,1,KET-0001,1,5\n",
            ["orders.csv:1: duplicate column 'qty' (columns 6 and 7)"],
            id="duplicate-column",
        ),
        pytest.param(
            "stock",
            b"sku;on_hand\nKET-0001;3\n",
            ["stock.csv:1: columns are separated by ';': save as CSV with commas"],
            id="semicolons",
        ),
        pytest.param(
            "stock",
            b"sku\ton_hand\nKET-0001\t3\n",
            ["stock.csv:1: columns are separated by tabs: save as CSV with commas"],
            id="tabs",
        ),
        pytest.param(
            "stock",
            b"sku,on_hand,colour\nKET-0001,3,red\n",
            ["stock.csv:1: unknown columns: 'colour'"],
            id="unknown-column",
        ),
        pytest.param(
            "stock",
            b"sku,on_hand,,\nKET-0001,3,,\n",
            ["stock.csv:1: column 3 has no name"],
            id="empty-column-name",
        ),
        pytest.param(
            "stock",
            b"",
            ["stock.csv:1: missing columns: sku, on_hand"],
            id="empty-file",
        ),
        # --- control characters and quoting ------------------------------------------------
        pytest.param(
            "customers",
            f'{CUSTOMERS}1,Anna\x00Schmidt,a@example.com\n2,"John\tSmith",j@example.com\n3,"Maria\nGarcia",m@example.com\n4,Ivan\x7f,i@example.com\n'.encode(),
            [
                "customers.csv:2: name: control character U+0000 (NUL) at character 5",
                "customers.csv:3: name: control character U+0009 (tab) at character 5",
                "customers.csv:4: name: control character U+000A (line break) at character 6",
                "customers.csv:6: name: control character U+007F at character 5",
            ],
            id="control-characters",
        ),
        pytest.param(
            "customers",
            f'{CUSTOMERS}1,"Anna" Schmidt,a@example.com\n'.encode(),
            ["customers.csv:2: not valid CSV (',' expected after '\"')"],
            id="stray-quote",
        ),
        pytest.param(
            "customers",
            f'{CUSTOMERS}1,Anna,a@example.com\n2,"John,j@example.com\n'.encode(),
            ["customers.csv:3: not valid CSV (unexpected end of data)"],
            id="quote-not-closed-at-the-end",
        ),
        pytest.param(
            "customers",
            (f'{CUSTOMERS}2,"John,j@example.com\n' + "3,Maria,m@example.com\n" * 500).encode(),
            [
                "customers.csv:2: a quoted field runs on over 8,192 bytes of lines (a quote not closed?)"
            ],
            id="quote-not-closed",
        ),
        pytest.param(
            "customers",
            f"{CUSTOMERS}1,Anna,a@example.com\r2,John,j@example.com\r".encode(),
            [
                "customers.csv:2: not valid CSV (a carriage return (CR) alone in an unquoted field: save with LF or CRLF line ends)"
            ],
            id="old-mac-line-ends",
        ),
        pytest.param(
            "restocks",
            f"{RESTOCKS}PO-2,SUP-1,KET-0001,1,2026-12-24T10:00:00Z\n".encode(),
            ["restocks.csv:2: expected_date: not an ISO date (YYYY-MM-DD): '2026-12-24T10:00:00Z'"],
            id="expected-date-with-a-time",
        ),
        pytest.param(
            "products",
            b"sku,name_en,category,price_minor,currency,active\nKET-0003,Kettle,kettles,100,EURO,\nKET-0004,Kettle,kettles,100,EUR,maybe\n",
            [
                "products.csv:2: currency: not a 3-letter code: 'EURO'",
                "products.csv:3: active: not a boolean (true/false): 'maybe'",
            ],
            id="currency-and-boolean",
        ),
        pytest.param(
            "customers",
            f"{CUSTOMERS}1,Anna,anna.example.com\n2,John,john @example.com\n".encode(),
            [
                "customers.csv:2: email: not an email address: 'anna.example.com'",
                "customers.csv:3: email: not an email address: 'john @example.com'",
            ],
            id="email-form",
        ),
    ],
)
def test_a_bad_file_is_one_line_per_problem_and_writes_nothing(
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    data: bytes,
    errors: list[str],
) -> None:
    assert refused(db_url, tmp_path, capsys, kind, data) == [*errors, "nothing written"]


def test_check_refuses_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(LATIN.encode("utf-16"))
    url = f"sqlite+aiosqlite:///{tmp_path / 'none.sqlite3'}"
    assert main(["--db", url, "import", "customers", str(path), "--check"]) == 1
    assert capsys.readouterr() == (
        "",
        "customers.csv:1: not UTF-8 text (looks like UTF-16: save as UTF-8)\nnothing written\n",
    )
    # Refused before the store is opened: not even an empty database is created.
    assert not (tmp_path / "none.sqlite3").exists()


def test_a_file_wrong_throughout_is_reported_up_to_a_bound(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f"KET-{i:04d},x\n" for i in range(150))
    err = refused(db_url, tmp_path, capsys, "stock", f"sku,on_hand\n{rows}".encode())
    assert err[:2] == [
        "stock.csv:2: on_hand: not a whole number in ASCII digits: 'x'",
        "stock.csv:3: on_hand: not a whole number in ASCII digits: 'x'",
    ]
    assert err[99:] == [
        "stock.csv:101: on_hand: not a whole number in ASCII digits: 'x'",
        "stock.csv:102: more than 100 problems; stopped here",
        "nothing written",
    ]


def test_utf8_with_a_bom_and_crlf_line_ends_is_imported(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(b"\xef\xbb\xbf" + LATIN.replace("\n", "\r\n").encode())
    assert main(["--db", db_url, "import", "customers", str(path)]) == 0
    assert capsys.readouterr() == ("customers.csv: 1 rows, 1 changed\n", "")
    assert dump(db_url)["customers"][0][:3] == (1, "Jürgen Groß", "j@example.com")


def test_the_files_of_the_cli_test_are_within_every_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The other tests' files are the good case: all of them pass --check as they are.
    for kind, text in FILES.items():
        path = tmp_path / f"{kind}.csv"
        path.write_text(text, encoding="utf-8")
        assert main(["import", kind, str(path), "--check"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{kind}.csv: ok" for kind in FILES]


@pytest.mark.parametrize(
    ("error", "lines"),
    [
        (
            IntegrityError("INSERT", {}, Exception("CHECK constraint failed: x\nmore")),
            [
                "customers.csv:3: the store refused this row: CHECK constraint failed: x",
                "nothing written",
            ],
        ),
        # Not the row's fault: the busy line of every command.
        (OperationalError("UPDATE", {}, Exception("database is locked")), [BUSY]),
    ],
    ids=["refused", "busy"],
)
def test_a_database_error_while_applying_is_one_line_and_rolls_back(
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    lines: list[str],
) -> None:
    real = imports.upsert_customer

    async def second_fails(conn: AsyncConnection, customer: CustomerIn) -> bool:
        if customer.customer_id == 4:
            raise error
        return await real(conn, customer)

    monkeypatch.setattr(imports, "upsert_customer", second_fails)
    data = f"{CUSTOMERS}3,Maria,m@example.com\n4,Ivan,i@example.com\n".encode()
    assert refused(db_url, tmp_path, capsys, "customers", data) == lines
