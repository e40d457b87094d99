"""notices: outbox statuses and index, notice preferences, unreachable customers, told-state
of ready/shipped/cancelled units, and the record of delay offers (FTC rule)

Revision ID: 0003_notices
Revises: 0002_chat_pending
Create Date: 2026-11-28 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_notices"
down_revision: str | Sequence[str] | None = "0002_chat_pending"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('pending', 'sent', 'failed', 'dead')"
NEW_STATUSES = "status IN ('pending', 'sent', 'failed', 'dead', 'no_chat', 'skipped', 'superseded')"


def upgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("notify_shipping", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(sa.Column("unreachable_at", sa.DateTime(), nullable=True))

    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("told_ready_qty", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("told_shipped_qty", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "told_cancelled_qty", sa.Integer(), server_default=sa.text("0"), nullable=False
            )
        )
    # What happened before notices existed is not news.
    op.execute(
        "UPDATE order_lines SET told_ready_qty = qty_allocated + qty_shipped,"
        " told_shipped_qty = qty_shipped, told_cancelled_qty = qty_cancelled"
    )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_outbox_status_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_outbox_status_known"), NEW_STATUSES)
        batch_op.create_index(
            batch_op.f("ix_outbox_customer_id_status"), ["customer_id", "status"], unique=False
        )

    op.create_table(
        "delay_offers",
        sa.Column("offer_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("line_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("promised_date", sa.Date(), nullable=False),
        sa.Column("revised_date", sa.Date(), nullable=True),
        sa.Column("consent_needed", sa.Boolean(), nullable=False),
        sa.Column("answer_by", sa.Date(), nullable=True),
        sa.Column("buttons", sa.Text(), nullable=False),
        sa.Column("shown_text", sa.Text(), nullable=True),
        sa.Column("offered_at", sa.DateTime(), nullable=False),
        sa.Column("shown_at", sa.DateTime(), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("answer", sa.String(length=32), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("answer_channel", sa.String(length=32), nullable=True),
        sa.Column("answer_detail", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'consented', 'cancelled', 'to_agents', 'superseded', 'closed')",
            name=op.f("ck_delay_offers_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name=op.f("fk_delay_offers_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["line_id"], ["order_lines.line_id"], name=op.f("fk_delay_offers_line_id_order_lines")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name=op.f("fk_delay_offers_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("offer_id", name=op.f("pk_delay_offers")),
        sa.UniqueConstraint("line_id", "seq", name=op.f("uq_delay_offers_line_id_seq")),
    )
    with op.batch_alter_table("delay_offers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delay_offers_status_answer_by"), ["status", "answer_by"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("delay_offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delay_offers_status_answer_by"))
    op.drop_table("delay_offers")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_customer_id_status"))
        batch_op.drop_constraint(op.f("ck_outbox_status_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_outbox_status_known"), OLD_STATUSES)
    with op.batch_alter_table("order_lines", schema=None) as batch_op:
        batch_op.drop_column("told_cancelled_qty")
        batch_op.drop_column("told_shipped_qty")
        batch_op.drop_column("told_ready_qty")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("unreachable_at")
        batch_op.drop_column("notify_shipping")
