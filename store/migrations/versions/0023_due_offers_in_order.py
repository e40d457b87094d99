"""delay_offers: the offers due are read in the order the policy decides them (answer-by day,
then offer), from the index instead of sorted: (status, answer_by) becomes (status,
answer_by, offer_id)

Revision ID: 0023_due_offers_in_order
Revises: 0022_sku_allocations
Create Date: 2026-12-02 16:10:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023_due_offers_in_order"
down_revision: str | Sequence[str] | None = "0022_sku_allocations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_delay_offers_status_answer_by_offer_id"),
        "delay_offers",
        ["status", "answer_by", "offer_id"],
    )
    op.drop_index(op.f("ix_delay_offers_status_answer_by"), table_name="delay_offers")


def downgrade() -> None:
    op.create_index(
        op.f("ix_delay_offers_status_answer_by"), "delay_offers", ["status", "answer_by"]
    )
    op.drop_index(op.f("ix_delay_offers_status_answer_by_offer_id"), table_name="delay_offers")
