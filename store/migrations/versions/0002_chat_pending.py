"""chats: the pending conversation step (account linking asks one question at a time)

Revision ID: 0002_chat_pending
Revises: 0001
Create Date: 2026-11-27 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_chat_pending"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chats", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("pending_order", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("pending_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chats", schema=None) as batch_op:
        batch_op.drop_column("pending_at")
        batch_op.drop_column("pending_order")
        batch_op.drop_column("pending")
