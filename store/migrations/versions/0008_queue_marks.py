"""queue_marks: every 500th waiting line of each SKU with the number of lines ahead of it, so
a line's place is counted from the nearest mark instead of from the head of the queue

Revision ID: 0008_queue_marks
Revises: 0007_drop_queue_position
Create Date: 2026-11-26 23:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_queue_marks"
down_revision: str | Sequence[str] | None = "0007_drop_queue_position"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARK_EVERY = 500  # store.backorders.MARK_EVERY when this was written


def upgrade() -> None:
    op.create_table(
        "queue_marks",
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("queue_rank", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("line_id", sa.Integer(), nullable=False),
        sa.Column("lines_before", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "sku", "queue_rank", "queued_at", "line_id", name=op.f("pk_queue_marks")
        ),
    )
    op.execute(
        "INSERT INTO queue_marks (sku, queue_rank, queued_at, line_id, lines_before)"
        " SELECT sku, queue_rank, queued_at, line_id, lines_before FROM ("
        " SELECT sku, queue_rank, queued_at, line_id, row_number() OVER"
        " (PARTITION BY sku ORDER BY queue_rank, queued_at, line_id) - 1 AS lines_before"
        " FROM order_lines WHERE qty_waiting > 0) AS q"
        f" WHERE lines_before % {MARK_EVERY} = 0"
    )


def downgrade() -> None:
    op.drop_table("queue_marks")
