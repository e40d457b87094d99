"""order_lines: the queue index covers what the projection reads (waiting quantity, date,
awaited restock), so re-projecting a SKU walks the index instead of the table

Revision ID: 0005_queue_covering_index
Revises: 0004_handoffs
Create Date: 2026-11-26 22:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_queue_covering_index"
down_revision: str | Sequence[str] | None = "0004_handoffs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "qty_waiting > 0"
KEY = ["sku", "queue_rank", "queued_at", "line_id"]
COVERED = ["qty_waiting", "projected_date", "waits_for_restock_id"]


def _queue_index(columns: list[str]) -> None:
    op.create_index(
        "ix_order_lines_queue",
        "order_lines",
        columns,
        unique=False,
        sqlite_where=sa.text(WAITING),
        postgresql_where=sa.text(WAITING),
    )


def upgrade() -> None:
    op.drop_index("ix_order_lines_queue", table_name="order_lines")
    _queue_index(KEY + COVERED)


def downgrade() -> None:
    op.drop_index("ix_order_lines_queue", table_name="order_lines")
    _queue_index(KEY)
