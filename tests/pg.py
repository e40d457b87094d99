"""The test databases on both backends.

``TEST_DATABASE_URL`` (``postgresql+asyncpg://user@host:port/dbname``, set by
``scripts/pg_throwaway.sh`` when ``bash scripts/test`` runs) names a PostgreSQL server the
tests may create and drop databases on; without it the tests run on SQLite only.

On PostgreSQL every test gets a database of its own, copied from a template its worker built
once (``CREATE DATABASE ... TEMPLATE``: a few milliseconds for the demo shop, where migrating and
filling took a second). Names carry a random token per process, so several workers and several
runs can share one server; a test's database is dropped after it, the templates at the end of
the session.

Tests that only make sense on SQLite (the inline engines, file locks, pragmas, a test that
opens the file itself) carry ``@pytest.mark.sqlite_only("why")``; their PostgreSQL case is
deselected."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from store import Store, open_store

SERVER_URL = os.environ.get("TEST_DATABASE_URL") or None
BACKENDS = ["sqlite", "postgresql"] if SERVER_URL else ["sqlite"]


def backend_param() -> list[str]:
    """The `params` of a backend fixture: the ids are the backend names."""
    return BACKENDS


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _admin_dsn() -> str:
    assert SERVER_URL is not None
    url = make_url(SERVER_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _url_of(database: str) -> str:
    assert SERVER_URL is not None
    return make_url(SERVER_URL).set(database=database).render_as_string(hide_password=False)


async def _admin(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_admin_dsn())
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


class Databases:
    """The PostgreSQL databases of this process: templates built once, copies per test."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(4)
        self._n = itertools.count(1)
        self._templates: dict[str, str] = {}

    def _name(self, what: str) -> str:
        return f"bt_{self.token}_{what}"

    def template(
        self,
        kind: str,
        fill: Callable[[Store], Awaitable[None]] | None = None,
        *,
        fill_url: Callable[[str], None] | None = None,
    ) -> str:
        """The name of this process's template ``kind``: migrated, then ``fill``-ed (or given by
        its URL to ``fill_url``, which runs outside any event loop: the admin CLI, say)."""
        name = self._templates.get(kind)
        if name is None:
            name = self._name(f"tmpl_{kind}")

            async def build() -> None:
                await _admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
                store = await open_store(_url_of(name))
                try:
                    if fill is not None:
                        await fill(store)
                finally:
                    await store.close()

            asyncio.run(build())
            if fill_url is not None:
                fill_url(_url_of(name))
            self._templates[kind] = name
        return name

    def fresh(self, template: str | None) -> tuple[str, str]:
        """A new database (a copy of ``template``, else empty): (its name, its URL)."""
        name = self._name(str(next(self._n)))
        source = f' TEMPLATE "{template}"' if template else " TEMPLATE template0"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"{source}'))
        return name, _url_of(name)

    def drop(self, name: str) -> None:
        # FORCE: a connection the test left open (which it must not; the warning then fails
        # the test) does not keep the database, nor the next test's name, alive.
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def drop_templates(self) -> None:
        names = list(self._templates.values())
        self._templates.clear()
        if names:
            asyncio.run(_admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names)))


def sqlite_only_deselect(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the PostgreSQL case of every test marked ``sqlite_only`` (or named in
    ``SQLITE_ONLY`` by its module or node id)."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("backend") == "postgresql"
        if on_pg and item.get_closest_marker("sqlite_only") is not None:
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
