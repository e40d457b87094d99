"""insights (#18): track records of suppliers and SKUs, causes of waiting lines, their daily
snapshots, reorder points, the team's alerts and the ops side's small state

Revision ID: 0013_insights
Revises: 0015_shopify
Create Date: 2026-12-02 02:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_insights"
down_revision: str | Sequence[str] | None = "0015_shopify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "track_records",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("on_time", sa.Integer(), nullable=False),
        sa.Column("moved", sa.Integer(), nullable=False),
        sa.Column("slip_median", sa.Integer(), nullable=False),
        sa.Column("slip_p80", sa.Integer(), nullable=False),
        sa.Column("slip_worst", sa.Integer(), nullable=False),
        sa.Column("lead_median", sa.Integer(), nullable=True),
        sa.Column("enough", sa.Boolean(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "scope IN ('supplier', 'sku')", name=op.f("ck_track_records_scope_known")
        ),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_track_records")),
    )
    op.create_table(
        "wait_causes",
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("restock_key", sa.String(length=64), nullable=False),
        sa.Column("cause", sa.String(length=24), nullable=False),
        sa.Column("supplier_id", sa.String(length=64), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "cause IN ('no_restock', 'supplier_slip', 'demand_ahead', 'not_backorderable',"
            " 'on_schedule')",
            name=op.f("ck_wait_causes_cause_known"),
        ),
        sa.PrimaryKeyConstraint("sku", "restock_key", name=op.f("pk_wait_causes")),
    )
    op.create_index(op.f("ix_wait_causes_cause"), "wait_causes", ["cause"])
    op.create_table(
        "cause_snapshots",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("cause", sa.String(length=24), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "cause", name=op.f("pk_cause_snapshots")),
    )
    op.create_table(
        "reorder_points",
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("point", sa.Integer(), nullable=False),
        sa.CheckConstraint("point >= 0", name=op.f("ck_reorder_points_point_nonneg")),
        sa.ForeignKeyConstraint(
            ["sku"], ["products.sku"], name=op.f("fk_reorder_points_sku_products")
        ),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_reorder_points")),
    )
    op.create_table(
        "ops_alerts",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("told_at", sa.DateTime(), nullable=True),
        sa.Column("cleared_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_ops_alerts")),
    )
    op.create_index(op.f("ix_ops_alerts_active_told_at"), "ops_alerts", ["active", "told_at"])
    op.create_table(
        "ops_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ops_state")),
    )


def downgrade() -> None:
    op.drop_table("ops_state")
    op.drop_index(op.f("ix_ops_alerts_active_told_at"), table_name="ops_alerts")
    op.drop_table("ops_alerts")
    op.drop_table("reorder_points")
    op.drop_table("cause_snapshots")
    op.drop_index(op.f("ix_wait_causes_cause"), table_name="wait_causes")
    op.drop_table("wait_causes")
    op.drop_table("track_records")
