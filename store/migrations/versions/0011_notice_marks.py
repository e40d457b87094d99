"""follow_on_marks by stage: the notice queueing works from marks of its own ('notice'), as the
delay policy does from its ('delay'), each stage taking and deleting only its own; a 'notice'
cursor makes its first pass over an existing store a scan in line_id ranges

Revision ID: 0011_notice_marks
Revises: 0014_shared_processes
Create Date: 2026-12-02 02:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_notice_marks"
down_revision: str | Sequence[str] | None = "0014_shared_processes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _marks(*stage: sa.Column) -> None:
    keys = [c.name for c in stage] + ["line_id"]
    op.create_table(
        "follow_on_marks",
        *stage,
        sa.Column("line_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["order_lines.line_id"],
            name=op.f("fk_follow_on_marks_line_id_order_lines"),
        ),
        sa.PrimaryKeyConstraint(*keys, name=op.f("pk_follow_on_marks")),
    )


def upgrade() -> None:
    # The marks move through a table without constraints: the new table's keys carry the old
    # one's names (PostgreSQL's index names are unique per schema).
    op.create_table("follow_on_marks_moving", sa.Column("line_id", sa.Integer(), nullable=False))
    op.execute("INSERT INTO follow_on_marks_moving (line_id) SELECT line_id FROM follow_on_marks")
    op.drop_table("follow_on_marks")
    _marks(sa.Column("stage", sa.String(length=16), nullable=False))
    # A line the delay policy still owes is one the notices owe too.
    for stage in ("delay", "notice"):
        op.execute(
            "INSERT INTO follow_on_marks (stage, line_id)"
            f" SELECT '{stage}', line_id FROM follow_on_marks_moving"
        )
    op.drop_table("follow_on_marks_moving")
    cursors = sa.table(
        "follow_on_cursors",
        sa.column("name", sa.String),
        sa.column("next_line_id", sa.Integer),
        sa.column("batches", sa.Integer),
    )
    # From line 0: the notices were queued by a scan of every line until now, and lines that
    # scan left untold (customers without a chat) are looked at once more, in batches.
    op.bulk_insert(cursors, [{"name": "notice", "next_line_id": 0, "batches": 0}])


def downgrade() -> None:
    op.create_table("follow_on_marks_moving", sa.Column("line_id", sa.Integer(), nullable=False))
    op.execute(
        "INSERT INTO follow_on_marks_moving (line_id)"
        " SELECT line_id FROM follow_on_marks WHERE stage = 'delay'"
    )
    op.drop_table("follow_on_marks")
    _marks()
    op.execute("INSERT INTO follow_on_marks (line_id) SELECT line_id FROM follow_on_marks_moving")
    op.drop_table("follow_on_marks_moving")
    op.execute("DELETE FROM follow_on_cursors WHERE name = 'notice'")
