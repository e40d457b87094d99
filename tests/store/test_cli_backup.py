"""backorder-admin backup: an online copy of a SQLite store, taken while another connection
holds a write transaction open, that opens as the same store."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from store import open_store
from store.cli import main
from store.master import CustomerIn, upsert_customer
from tests.pg import sqlite_url


async def _one_customer(url: str) -> None:
    store = await open_store(url)
    try:
        async with store.begin() as conn:
            await upsert_customer(conn, CustomerIn(1, "Ann", "ann@example.com"))
    finally:
        await store.close()


def test_a_backup_while_a_write_is_open_copies_the_committed_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path / "shop.sqlite3")
    asyncio.run(_one_customer(url))
    # A writer in the middle of its transaction: the copy has the committed state only.
    writer = sqlite3.connect(tmp_path / "shop.sqlite3")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE customers SET name = 'Changed' WHERE customer_id = 1")
    dest = tmp_path / "copy.sqlite3"
    assert main(["--db", url, "backup", str(dest)]) == 0
    writer.rollback()
    writer.close()
    out = capsys.readouterr().out
    assert out.startswith("backup: ") and out.endswith(f" pages written to {dest}\n")
    copy = sqlite3.connect(dest)
    assert copy.execute("SELECT customer_id, name FROM customers").fetchall() == [(1, "Ann")]
    copy.close()
    assert not (tmp_path / "copy.sqlite3.partial").exists()

    # Never over an existing file; PostgreSQL has pg_dump.
    assert main(["--db", url, "backup", str(dest)]) == 1
    assert capsys.readouterr().err == f"error: {dest} exists; not overwritten\n"
    pg = "postgresql+asyncpg://u@127.0.0.1:1/x"
    assert main(["--db", pg, "backup", str(tmp_path / "pg.dump")]) == 1
    assert "use pg_dump" in capsys.readouterr().err
