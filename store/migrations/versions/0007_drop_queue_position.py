"""order_lines: drop the stored queue_position; a line's place in the queue is counted on the
queue index when the line is read (a receipt no longer rewrites every line behind the ones it
filled)

Revision ID: 0007_drop_queue_position
Revises: 0006_handoff_per_customer
Create Date: 2026-11-26 23:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_drop_queue_position"
down_revision: str | Sequence[str] | None = "0006_handoff_per_customer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_column("queue_position")


def downgrade() -> None:
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue_position", sa.Integer(), nullable=True))
    # The places the code of 0005 kept: 1..n per SKU among the waiting lines, in queue order.
    op.execute(
        "UPDATE order_lines SET queue_position = q.pos FROM ("
        " SELECT line_id, row_number() OVER"
        " (PARTITION BY sku ORDER BY queue_rank, queued_at, line_id) AS pos"
        " FROM order_lines WHERE qty_waiting > 0) AS q"
        " WHERE order_lines.line_id = q.line_id"
    )
