"""chats.last_miss_update: a miss is counted once per update, so a crash replay of a message the
bot did not understand gets the same answer again, not "still didn't get that"

Revision ID: 0021_miss_once
Revises: 0016_catalog_notify
Create Date: 2026-12-02 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_miss_once"
down_revision: str | Sequence[str] | None = "0016_catalog_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("last_miss_update", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("last_miss_update")
