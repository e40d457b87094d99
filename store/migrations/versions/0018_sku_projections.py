"""sku_projections: a change to a SKU's restocks, stock or queue records that its queue owes a
projection (a generation and a cursor), and the projection then walks the queue in short
batches from that cursor (store.backorders.projection_batch) instead of inside the change

Revision ID: 0018_sku_projections
Revises: 0011_notice_marks
Create Date: 2026-12-02 05:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_sku_projections"
down_revision: str | Sequence[str] | None = "0011_notice_marks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sku_projections",
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("after_rank", sa.Integer(), nullable=True),
        sa.Column("after_at", sa.DateTime(), nullable=True),
        sa.Column("after_line", sa.Integer(), nullable=True),
        sa.Column("need_before", sa.BigInteger(), nullable=False),
        sa.Column("lines_before", sa.Integer(), nullable=False),
        sa.Column("moved", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_sku_projections")),
    )
    op.create_index(
        op.f("ix_sku_projections_pending_requested_at"),
        "sku_projections",
        ["pending", "requested_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_sku_projections_pending_requested_at"), table_name="sku_projections")
    op.drop_table("sku_projections")
