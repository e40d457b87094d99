"""outbox: notices are indexed only while they wait (status 'pending'), by due time and by
customer; the (status, not_before) and (customer_id, status) indexes over every notice ever
sent go

Revision ID: 0024_pending_notices
Revises: 0023_due_offers_in_order
Create Date: 2026-12-02 19:15:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024_pending_notices"
down_revision: str | Sequence[str] | None = "0023_due_offers_in_order"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_outbox_pending_due",
        "outbox",
        ["not_before"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_outbox_pending_customer",
        "outbox",
        ["customer_id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.drop_index(op.f("ix_outbox_customer_id_status"), table_name="outbox")
    op.drop_index(op.f("ix_outbox_status_not_before"), table_name="outbox")


def downgrade() -> None:
    op.create_index(op.f("ix_outbox_status_not_before"), "outbox", ["status", "not_before"])
    op.create_index(op.f("ix_outbox_customer_id_status"), "outbox", ["customer_id", "status"])
    op.drop_index("ix_outbox_pending_customer", table_name="outbox")
    op.drop_index("ix_outbox_pending_due", table_name="outbox")
