"""handoffs: one support topic per customer chat, its escalations and relayed message links

Revision ID: 0004_handoffs
Revises: 0003_notices
Create Date: 2026-11-27 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_handoffs"
down_revision: str | Sequence[str] | None = "0003_notices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "handoffs",
        sa.Column("handoff_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("support_chat_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("card_message_id", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("telegram_language", sa.String(length=16), nullable=True),
        sa.Column("escalations", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("no_answer_due_at", sa.DateTime(), nullable=True),
        sa.Column("no_answer_told_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("customer_blocked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "state IN ('waiting', 'answered', 'closed')", name=op.f("ck_handoffs_state_known")
        ),
        sa.CheckConstraint(
            "reason IN ('asked', 'misunderstood', 'delay_policy', 'agent_pulled')",
            name=op.f("ck_handoffs_reason_known"),
        ),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.chat_id"], name=op.f("fk_handoffs_chat_id_chats")
        ),
        sa.PrimaryKeyConstraint("handoff_id", name=op.f("pk_handoffs")),
        sa.UniqueConstraint("chat_id", name=op.f("uq_handoffs_chat_id")),
        sa.UniqueConstraint(
            "support_chat_id", "thread_id", name=op.f("uq_handoffs_support_chat_id_thread_id")
        ),
    )
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_handoffs_state_no_answer_due_at"), ["state", "no_answer_due_at"]
        )
        batch_op.create_index(
            batch_op.f("ix_handoffs_state_last_activity_at"), ["state", "last_activity_at"]
        )

    op.create_table(
        "handoff_escalations",
        sa.Column("escalation_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("ended_by", sa.String(length=16), nullable=True),
        sa.Column("agent_name", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["handoff_id"],
            ["handoffs.handoff_id"],
            name=op.f("fk_handoff_escalations_handoff_id_handoffs"),
        ),
        sa.PrimaryKeyConstraint("escalation_id", name=op.f("pk_handoff_escalations")),
    )
    with op.batch_alter_table("handoff_escalations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_handoff_escalations_handoff_id_started_at"),
            ["handoff_id", "started_at"],
        )

    op.create_table(
        "handoff_messages",
        sa.Column("link_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=False),
        sa.Column("source_chat_id", sa.BigInteger(), nullable=False),
        sa.Column("source_message_id", sa.BigInteger(), nullable=False),
        sa.Column("copy_chat_id", sa.BigInteger(), nullable=False),
        sa.Column("copy_message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["handoff_id"],
            ["handoffs.handoff_id"],
            name=op.f("fk_handoff_messages_handoff_id_handoffs"),
        ),
        sa.PrimaryKeyConstraint("link_id", name=op.f("pk_handoff_messages")),
        sa.UniqueConstraint(
            "source_chat_id",
            "source_message_id",
            name=op.f("uq_handoff_messages_source_chat_id_source_message_id"),
        ),
    )
    with op.batch_alter_table("handoff_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handoff_messages_handoff_id"), ["handoff_id"])


def downgrade() -> None:
    op.drop_table("handoff_messages")
    op.drop_table("handoff_escalations")
    op.drop_table("handoffs")
