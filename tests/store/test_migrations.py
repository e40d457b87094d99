from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from store import open_store
from store.db import create_engine_for, migrate
from tests.pg import sqlite_url


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A new SQLite file, not yet migrated (the store's db_url is a migrated copy)."""
    return sqlite_url(tmp_path / "store.sqlite3")


@pytest.mark.sqlite_only(
    "SQLite's batch-mode table rebuilds under rows that refer to them; on PostgreSQL db_url is"
    " migrated already (every test's database is a copy of a template migrated from scratch)"
)
async def test_upgrade_from_first_revision_with_data(db_url: str) -> None:
    # Later migrations may rebuild tables (SQLite batch mode) that rows already refer to.
    engine = create_engine_for(db_url)
    await migrate(engine, "0001")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO customers (customer_id, name, email, language, notify_delays,"
                " notify_back_in_stock, created_at)"
                " VALUES (1, 'A', 'a@x', 'en', 1, 1, '2026-01-01')"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO orders (order_number, customer_id, placed_at, priority, currency)"
                " VALUES ('100001', 1, '2026-01-01', 0, 'EUR')"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO chats (chat_id, customer_id, misses, created_at, updated_at)"
                " VALUES (5, 1, 0, '2026-01-01', '2026-01-01')"
            )
        )
    await engine.dispose()
    store = await open_store(db_url)
    async with store.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.execute(text("SELECT count(*) FROM orders"))).scalar() == 1
    await store.close()
