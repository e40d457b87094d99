from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
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
    """An empty store of this test's own with the schema migrated, on either backend a copy
    of the worker's template (migrating took about a second per test on SQLite, a copy a few
    milliseconds). tests/store/test_migrations.py migrates from scratch itself."""
    if backend == "sqlite":
        path = tmp_path / "store.sqlite3"
        shutil.copyfile(sqlite_template(request, "store"), path)
        yield sqlite_url(path)
        return
    databases: Databases = request.getfixturevalue("pg_databases")
    name, url = databases.fresh(databases.template("store"))
    try:
        yield url
    finally:
        databases.drop(name)


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SQLite files migrated and filled once per worker, by kind (see filled_db_url)."""
    return {}


@contextmanager
def copied_db(
    request: pytest.FixtureRequest,
    backend: str,
    kind: str,
    fill: Callable[[Store], Awaitable[None]] | None = None,
) -> Iterator[str]:
    """The URL of a new database: a copy of this worker's template ``kind``, migrated and
    ``fill``-ed once (a fresh migration took about a second per test, or per example of a
    property), dropped or deleted afterwards."""
    if backend == "postgresql":
        databases: Databases = request.getfixturevalue("pg_databases")
        name, url = databases.fresh(databases.template(kind, fill))
        try:
            yield url
        finally:
            databases.drop(name)
        return
    tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    template = sqlite_template(request, kind, fill)
    with tempfile.TemporaryDirectory(dir=tmp.getbasetemp()) as folder:
        copy = Path(folder) / "store.sqlite3"
        shutil.copyfile(template, copy)
        yield sqlite_url(copy)


def sqlite_template(
    request: pytest.FixtureRequest,
    kind: str,
    fill: Callable[[Store], Awaitable[None]] | None = None,
) -> Path:
    """This worker's SQLite template ``kind``: migrated and ``fill``-ed once."""
    templates: dict[str, Path] = request.getfixturevalue("sqlite_templates")
    if kind not in templates:
        tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        path = tmp.mktemp(kind) / "template.sqlite3"

        async def build() -> None:
            s = await open_store(sqlite_url(path))
            try:
                if fill is not None:
                    await fill(s)
            finally:
                await s.close()

        asyncio.run(build())
        templates[kind] = path
    return templates[kind]


def filled_db_url(
    request: pytest.FixtureRequest,
    backend: str,
    kind: str,
    fill: Callable[[Store], Awaitable[None]],
) -> Iterator[str]:
    """For a ``db_url`` fixture: a copy of template ``kind`` (see copied_db)."""
    with copied_db(request, backend, kind, fill) as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await open_store(db_url)
    try:
        yield s
    finally:
        await s.close()
