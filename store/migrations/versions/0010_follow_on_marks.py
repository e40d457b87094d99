"""follow_on_marks and follow_on_cursors: a change marks the lines it touched and the delay
policy works from the marks in short batches; the cursor row makes the first pass over an
existing store a scan of line_id ranges, batch by batch

Revision ID: 0010_follow_on_marks
Revises: 0009_update_inbox
Create Date: 2026-12-02 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_follow_on_marks"
down_revision: str | Sequence[str] | None = "0009_update_inbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "follow_on_marks",
        sa.Column("line_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["order_lines.line_id"],
            name=op.f("fk_follow_on_marks_line_id_order_lines"),
        ),
        sa.PrimaryKeyConstraint("line_id", name=op.f("pk_follow_on_marks")),
    )
    cursors = op.create_table(
        "follow_on_cursors",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("next_line_id", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_follow_on_cursors")),
    )
    # From line 0: every line of an existing store is looked at once more, in batches, since
    # no earlier pass left marks of what it had not done yet.
    op.bulk_insert(cursors, [{"name": "delay", "next_line_id": 0, "batches": 0}])


def downgrade() -> None:
    op.drop_table("follow_on_cursors")
    op.drop_table("follow_on_marks")
