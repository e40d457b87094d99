"""shopify_webhooks, shopify_orders, shopify_inventory_items, shopify_inventory_levels: what the
Shopify adapter (shopapi/shopify.py) keeps to apply each webhook once and to map Shopify's ids
onto the store's (order ids to order numbers, inventory items to SKUs, stock per location)

Revision ID: 0015_shopify
Revises: 0010_follow_on_marks
Create Date: 2026-12-02 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_shopify"
down_revision: str | Sequence[str] | None = "0010_follow_on_marks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shopify_webhooks",
        sa.Column("webhook_id", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id", name=op.f("pk_shopify_webhooks")),
    )
    op.create_index(op.f("ix_shopify_webhooks_received_at"), "shopify_webhooks", ["received_at"])
    op.create_table(
        "shopify_orders",
        sa.Column("shopify_order_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("order_number", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("shopify_order_id", name=op.f("pk_shopify_orders")),
    )
    op.create_table(
        "shopify_inventory_items",
        sa.Column("inventory_item_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("inventory_item_id", name=op.f("pk_shopify_inventory_items")),
    )
    op.create_table(
        "shopify_inventory_levels",
        sa.Column("inventory_item_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("location_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "inventory_item_id", "location_id", name=op.f("pk_shopify_inventory_levels")
        ),
    )


def downgrade() -> None:
    op.drop_table("shopify_inventory_levels")
    op.drop_table("shopify_inventory_items")
    op.drop_table("shopify_orders")
    op.drop_index(op.f("ix_shopify_webhooks_received_at"), table_name="shopify_webhooks")
    op.drop_table("shopify_webhooks")
