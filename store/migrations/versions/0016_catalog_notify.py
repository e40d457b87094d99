"""the catalog's version trigger also notifies 'backorder_catalog': a bot process that listens
drops its product index at once instead of reading the version row at every product question

Revision ID: 0016_catalog_notify
Revises: 0018_sku_projections
Create Date: 2026-12-02 00:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016_catalog_notify"
down_revision: str | Sequence[str] | None = "0018_sku_projections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# NOTIFY is delivered at the writer's commit (never for a rolled-back write), and the
# notifications of one transaction with the same payload are one: an import of many
# statements wakes each listener once.
_BUMP = """
CREATE OR REPLACE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE store_versions SET version = version + 1 WHERE name = 'catalog';
    PERFORM pg_notify('backorder_catalog', '');
    RETURN NULL;
END $$
"""
_OLD = """
CREATE OR REPLACE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE store_versions SET version = version + 1 WHERE name = 'catalog';
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_BUMP)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_OLD)
