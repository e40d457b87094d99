"""sku_allocations: a receipt too big to allocate in its own transaction records that its SKU's
free units are owed to the queue, and the allocation then goes on in short batches
(store.backorders.allocation_batch) until they are given out

Revision ID: 0022_sku_allocations
Revises: 0021_miss_once
Create Date: 2026-12-02 08:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_sku_allocations"
down_revision: str | Sequence[str] | None = "0021_miss_once"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sku_allocations",
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_sku_allocations")),
    )


def downgrade() -> None:
    op.drop_table("sku_allocations")
