"""Issue #14: after a migration on SQLite (foreign keys off while Alembic's batch mode rebuilds
tables) `store.db.migrate` checks the foreign keys of the tables the migration touched and of
the tables that refer to those, not the whole database (every row of a 1M-order store). A
throwaway migration after the head breaks a foreign key in each way a migration can: the
breakage is still caught and nothing is committed (on PostgreSQL the constraints themselves
refuse it). Harmless throwaway migrations show which tables get checked: a table nobody
touched, nor any table it refers to, is not read."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

import store.db
from store.db import alembic_config, create_engine_for, migrate
from tests.conftest import fill_small_demo
from tests.store.conftest import filled_db_url

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

THROWAWAY = """
import sqlalchemy as sa
from alembic import op

revision = "9999_throwaway"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
"""

FIRST_LINE = "(SELECT min(line_id) FROM order_lines)"
FIRST_ORDER = "(SELECT min(order_id) FROM order_lines)"

# Each breaks one foreign key; on SQLite only the check after the migration can see it.
BREAKING = {
    # a data migration: no schema changes, one child row points nowhere
    "child_updated": 'op.execute("UPDATE order_lines SET order_id = 999999'
    f' WHERE line_id = {FIRST_LINE}")',
    # the parent's row goes, the children (not written) keep pointing at it
    "parent_deleted": f'op.execute("DELETE FROM orders WHERE order_id = {FIRST_ORDER}")',
    # a batch rebuild of the parent that leaves a row behind
    "parent_rebuilt": f'op.execute("DELETE FROM orders WHERE order_id = {FIRST_ORDER}")\n'
    'with op.batch_alter_table("orders") as batch:\n'
    '    batch.add_column(sa.Column("throwaway", sa.Integer(), nullable=True))',
    # a new table whose rows refer to nothing
    "new_table": 'op.create_table("throwaway", sa.Column("order_id", sa.Integer(),'
    ' sa.ForeignKey("orders.order_id"), nullable=False))\n'
    'op.execute("INSERT INTO throwaway (order_id) VALUES (999999)")',
}


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The small demo shop at the head: rows in every table a migration might break."""
    yield from filled_db_url(request, backend, "demo", fill_small_demo)


@pytest.fixture
def throwaway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The store's migrations, with the test's own migration after the head."""
    scripts = tmp_path / "migrations"
    shutil.copytree(store.db.MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(store.db, "MIGRATIONS", scripts)
    yield


def write_migration(body: str) -> None:
    indented = "\n".join("    " + line for line in body.split("\n"))
    path = store.db.MIGRATIONS / "versions" / "9999_throwaway.py"
    path.write_text(THROWAWAY.format(head=HEAD, body=indented))


async def migrate_watched(db_url: str) -> list[str]:
    """Migrate to the throwaway head; the tables whose foreign keys were checked."""
    engine = create_engine_for(db_url)
    checked: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def watch(_c: object, _cur: object, statement: str, params: object, *_: object) -> None:
        if "foreign_key_check" in statement.lower():
            assert "pragma_foreign_key_check(?)" in statement, "a check of the whole database"
            assert isinstance(params, tuple)
            checked.append(params[0])

    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return checked


async def revision_and_lines(db_url: str) -> tuple[str, int, int]:
    engine = create_engine_for(db_url)
    try:
        async with engine.connect() as conn:
            scalar = conn.scalar
            revision = await scalar(text("SELECT version_num FROM alembic_version"))
            lines = await scalar(text("SELECT count(*) FROM order_lines"))
            orders = await scalar(text("SELECT count(*) FROM orders"))
    finally:
        await engine.dispose()
    assert isinstance(revision, str) and isinstance(lines, int) and isinstance(orders, int)
    return revision, lines, orders


@pytest.mark.parametrize("breaking", sorted(BREAKING))
async def test_a_broken_foreign_key_is_still_caught(
    db_url: str, throwaway: None, breaking: str
) -> None:
    before = await revision_and_lines(db_url)
    assert before[0] == HEAD and before[1] > 0
    write_migration(BREAKING[breaking])
    sqlite = db_url.startswith("sqlite")
    with pytest.raises(RuntimeError if sqlite else DBAPIError) as caught:
        await migrate_watched(db_url)
    if sqlite:
        assert "broke foreign keys" in str(caught.value)
    assert await revision_and_lines(db_url) == before  # nothing committed


@pytest.mark.sqlite_only("which tables SQLite's foreign_key_check reads after a migration")
@pytest.mark.parametrize(
    ("body", "checked", "not_checked"),
    [
        # a new empty table with a foreign key: only it
        (
            'op.create_table("throwaway", sa.Column("order_id", sa.Integer(),'
            ' sa.ForeignKey("orders.order_id"), nullable=True))',
            ["throwaway"],
            ["orders", "order_lines"],
        ),
        # a data migration on a parent: the tables that refer to it, not their children
        (
            'op.execute("UPDATE customers SET name = name WHERE customer_id = 1")',
            ["chats", "orders", "outbox"],
            ["order_lines", "customers", "restocks"],
        ),
        # a batch rebuild (0021's kind): the table, which refers to customers, and its children
        (
            'with op.batch_alter_table("chats") as batch:\n'
            '    batch.add_column(sa.Column("throwaway", sa.Integer(), nullable=True))',
            ["chats", "handoffs", "back_in_stock_subscriptions"],
            ["orders", "order_lines", "customers"],
        ),
        # a table without foreign keys that nothing refers to: nothing
        ('op.execute("UPDATE update_inbox SET update_id = update_id")', [], []),
    ],
    ids=["new_table", "parent_updated", "batch_rebuild", "no_references"],
)
async def test_only_touched_tables_and_their_children_are_checked(
    db_url: str, throwaway: None, body: str, checked: list[str], not_checked: list[str]
) -> None:
    write_migration(body)
    seen = await migrate_watched(db_url)
    assert len(seen) == len(set(seen))
    assert set(checked) <= set(seen)
    assert not set(not_checked) & set(seen)
    if not checked:
        assert seen == []
    assert (await revision_and_lines(db_url))[0] == "9999_throwaway"


@pytest.mark.sqlite_only("SQLite's check after a migration")
async def test_no_check_without_a_migration(db_url: str) -> None:
    assert await migrate_watched(db_url) == []
