from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from store import Store, open_store
from tests.pg import Databases, sqlite_url

settings.register_profile(
    "store",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("store")


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty store of this test's own: a new SQLite file, or on PostgreSQL a new database
    with the schema migrated (copied from the worker's template)."""
    if backend == "sqlite":
        yield sqlite_url(tmp_path / "store.sqlite3")
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    name, url = databases.fresh(databases.template("store"))
    try:
        yield url
    finally:
        databases.drop(name)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await open_store(db_url)
    try:
        yield s
    finally:
        await s.close()
