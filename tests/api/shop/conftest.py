"""The API under test: the real web application (shopapi.server.build_web_app) on the demo
shop's store, both backends, served by aiohttp's test server on a free port; the clock and
the rate limit's clock are the test's."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from bot.settings import Settings, load_settings
from shopapi.server import build_web_app, follow_on_settings
from store import Store, open_store
from store.cli import follow_on
from store.demo import fill_demo
from store.schema import metadata
from tests.conftest import LINK_SECRET, START, TODAY, Clock
from tests.pg import Databases, sqlite_url

ERP_TOKEN = "erp-token-0123456789abcdefghijklmnopqrstuvwxyz"
POS_TOKEN = "pos-token-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"
AUTH = {"Authorization": f"Bearer {ERP_TOKEN}"}


@dataclass
class Ticks:
    """The rate limit's monotonic clock, moved by the test."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def api_settings(db_url: str, **extra: str) -> Settings:
    return load_settings(
        {
            "DATABASE_URL": db_url,
            "API_PORT": "0",
            "API_TOKENS": f"erp:{ERP_TOKEN},pos:{POS_TOKEN}",
            "LINK_SECRET": LINK_SECRET,
            "BOT_USERNAME": "shop_test_bot",
            "API_RATE_PER_SECOND": "1000",
            **extra,
        }
    )


async def _fill_settled_demo(store: Store) -> None:
    """The small demo shop with its follow-on work done (the delay policy's first pass over
    every line: 2-3 s that each test would otherwise pay on its first change)."""
    await fill_demo(store, "small", today=TODAY)
    await follow_on(store, follow_on_settings(api_settings("")), now=START, show=False)


@pytest.fixture(scope="session")
def settled_demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api-demo") / "demo.sqlite3"

    async def build() -> None:
        store = await open_store(sqlite_url(path))
        try:
            await _fill_settled_demo(store)
        finally:
            await store.close()

    asyncio.run(build())
    return path


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this test's own with the small demo shop, its follow-on work done."""
    if backend == "sqlite":
        path = tmp_path / "api.sqlite3"
        shutil.copyfile(request.getfixturevalue("settled_demo_template"), path)
        yield sqlite_url(path)
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    name, url = databases.fresh(databases.template("api_demo", _fill_settled_demo))
    try:
        yield url
    finally:
        databases.drop(name)


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def api_environ() -> dict[str, str]:
    return {}


@pytest.fixture
async def api(
    store: Store, db_url: str, clock: Clock, ticks: Ticks, api_environ: dict[str, str]
) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_web_app(api_settings(db_url, **api_environ), store, now=clock, monotonic=ticks)
    async with TestClient(TestServer(app)) as client:
        yield client


async def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table as the database holds it, time stamps included
    (tests/store/store_dump.py on an open store, without the columns' type conversions)."""
    async with store.connect() as conn:
        out = {}
        for table in metadata.sorted_tables:
            order = ", ".join(str(i + 1) for i in range(len(table.columns)))
            result = await conn.execute(text(f'SELECT * FROM "{table.name}" ORDER BY {order}'))
            out[table.name] = [tuple(row) for row in result]
        return out
