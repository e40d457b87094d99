"""handoffs: one topic per customer (customer_id, UNIQUE), a topic may be detached from any
chat (chat_id NULL), a lease on opening the topic, the card's digest for keeping it current,
and customer messages held until the topic exists

Revision ID: 0006_handoff_per_customer
Revises: 0005_queue_covering_index
Create Date: 2026-11-26 23:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_handoff_per_customer"
down_revision: str | Sequence[str] | None = "0005_queue_covering_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.alter_column("chat_id", existing_type=sa.BigInteger(), nullable=True)
        batch_op.add_column(sa.Column("customer_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("topic_lease_until", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("card_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("card_checked_at", sa.DateTime(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_handoffs_customer_id_customers"),
            "customers",
            ["customer_id"],
            ["customer_id"],
        )
        batch_op.create_unique_constraint(batch_op.f("uq_handoffs_customer_id"), ["customer_id"])
    # Existing topics belong to the customer their chat is linked to now.
    op.execute(
        "UPDATE handoffs SET customer_id = (SELECT chats.customer_id FROM chats"
        " WHERE chats.chat_id = handoffs.chat_id)"
    )
    op.create_table(
        "handoff_held",
        sa.Column("held_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("handoff_id", sa.Integer(), nullable=False),
        sa.Column("source_chat_id", sa.BigInteger(), nullable=False),
        sa.Column("source_message_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["handoff_id"],
            ["handoffs.handoff_id"],
            name=op.f("fk_handoff_held_handoff_id_handoffs"),
        ),
        sa.PrimaryKeyConstraint("held_id", name=op.f("pk_handoff_held")),
        sa.UniqueConstraint(
            "source_chat_id",
            "source_message_id",
            name=op.f("uq_handoff_held_source_chat_id_source_message_id"),
        ),
    )
    with op.batch_alter_table("handoff_held", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_handoff_held_handoff_id_held_id"), ["handoff_id", "held_id"]
        )


def downgrade() -> None:
    op.drop_table("handoff_held")
    op.execute(
        "DELETE FROM handoff_messages WHERE handoff_id IN"
        " (SELECT handoff_id FROM handoffs WHERE chat_id IS NULL)"
    )
    op.execute(
        "DELETE FROM handoff_escalations WHERE handoff_id IN"
        " (SELECT handoff_id FROM handoffs WHERE chat_id IS NULL)"
    )
    op.execute("DELETE FROM handoffs WHERE chat_id IS NULL")
    with op.batch_alter_table("handoffs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_handoffs_customer_id"), type_="unique")
        batch_op.drop_constraint(
            batch_op.f("fk_handoffs_customer_id_customers"), type_="foreignkey"
        )
        batch_op.drop_column("card_checked_at")
        batch_op.drop_column("card_digest")
        batch_op.drop_column("topic_lease_until")
        batch_op.drop_column("customer_id")
        batch_op.alter_column("chat_id", existing_type=sa.BigInteger(), nullable=False)
