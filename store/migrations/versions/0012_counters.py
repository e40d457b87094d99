"""counters: numbers the store hands out itself, one row each, taken with one atomic UPDATE
(the order numbers of orders the bot places: max + 1 gave two processes the same number);
on PostgreSQL, order_lines vacuumed sooner (its visibility map keeps the queue-place count an
index-only scan)

Revision ID: 0012_counters
Revises: 0015_shopify
Create Date: 2026-12-02 03:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_counters"
down_revision: str | Sequence[str] | None = "0013_insights"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_counters")),
    )
    # 0: the next number is taken past the largest order number there is (store.delays.
    # next_order_number), which also covers the orders already in the store.
    op.bulk_insert(counters, [{"name": "order_number", "value": 0}])
    if op.get_bind().dialect.name == "postgresql":
        # A line's place is counted on the queue index (store.queries). An index entry whose
        # table page is not marked all-visible costs a visit to the table: on the 1M store's
        # hot queue the order view took 3.6 ms instead of 2.5 before a VACUUM. Autovacuum
        # marks pages after 20% of a table changed by default; 2% here.
        op.execute(
            "ALTER TABLE order_lines SET (autovacuum_vacuum_scale_factor = 0.02,"
            " autovacuum_vacuum_insert_scale_factor = 0.02)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE order_lines RESET (autovacuum_vacuum_scale_factor,"
            " autovacuum_vacuum_insert_scale_factor)"
        )
    op.drop_table("counters")
