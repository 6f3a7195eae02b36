"""Initial reporting schema: domain tables, inbox and outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from carbon_platform.migrations import create_messaging_tables_v1

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("factor_table", sa.String(length=64), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("total_emissions", sa.BigInteger(), nullable=False),
        sa.Column("submitted_by", sa.String(length=128), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("report_id"),
        sa.UniqueConstraint("credit_code", "compliance_year", name="uq_reports_entity_year"),
    )
    op.create_table(
        "roster",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("district", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("credit_code", "compliance_year"),
    )
    create_messaging_tables_v1()


def downgrade() -> None:
    op.drop_table("roster")
    op.drop_table("reports")
    op.drop_table("outbox")
    op.drop_table("inbox")
