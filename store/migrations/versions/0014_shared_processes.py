"""several bot processes on one PostgreSQL: updates claimed chat by chat, the poller's lease,
the shared send pace, and the catalog's version (moved by a trigger on products)

Revision ID: 0014_shared_processes
Revises: 0013_insights
Create Date: 2026-12-02 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_shared_processes"
down_revision: str | Sequence[str] | None = "0012_counters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every statement that writes products moves the catalog's version, in its own transaction:
# a process that caches the product index sees another's import at its next read.
_BUMP = """
CREATE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE store_versions SET version = version + 1 WHERE name = 'catalog';
    RETURN NULL;
END $$
"""
_TRIGGER = """
CREATE TRIGGER products_catalog_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
ON products FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version()
"""


def upgrade() -> None:
    with op.batch_alter_table("update_inbox") as batch:
        batch.add_column(sa.Column("chat_key", sa.String(length=40), nullable=True))
    op.create_index(
        "ix_update_inbox_unanswered",
        "update_inbox",
        ["chat_key", "update_id"],
        postgresql_where=sa.text("answered_at IS NULL"),
        sqlite_where=sa.text("answered_at IS NULL"),
    )
    op.create_table(
        "chat_claims",
        sa.Column("chat_key", sa.String(length=40), nullable=False),
        sa.Column("worker", sa.String(length=120), nullable=False),
        sa.Column("until", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("chat_key", name=op.f("pk_chat_claims")),
    )
    op.create_table(
        "worker_leases",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("worker", sa.String(length=120), nullable=False),
        sa.Column("until", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_leases")),
    )
    op.create_table(
        "send_pace",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("next_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_send_pace")),
    )
    versions = op.create_table(
        "store_versions",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_store_versions")),
    )
    op.bulk_insert(versions, [{"name": "catalog", "version": 0}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_BUMP)
        op.execute(_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER products_catalog_version ON products")
        op.execute("DROP FUNCTION bump_catalog_version()")
    op.drop_table("store_versions")
    op.drop_table("send_pace")
    op.drop_table("worker_leases")
    op.drop_table("chat_claims")
    op.drop_index("ix_update_inbox_unanswered", table_name="update_inbox")
    with op.batch_alter_table("update_inbox") as batch:
        batch.drop_column("chat_key")
