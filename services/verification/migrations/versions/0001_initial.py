"""Initial verification schema: domain tables, inbox and outbox.

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
        "cases",
        sa.Column("case_id", sa.String(length=36), nullable=False),
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("reported_emissions", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("agency_id", sa.String(length=64), nullable=True),
        sa.Column("verified_emissions", sa.BigInteger(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_by", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "(status = 'approved') = (verified_emissions IS NOT NULL)", name="ck_cases_verified"
        ),
        sa.CheckConstraint(
            "(status = 'opened' AND agency_id IS NULL)"
            " OR (status <> 'opened' AND agency_id IS NOT NULL)",
            name="ck_cases_agency",
        ),
        sa.CheckConstraint("status IN ('opened', 'assigned', 'approved')", name="ck_cases_status"),
        sa.PrimaryKeyConstraint("case_id"),
        sa.UniqueConstraint("report_id"),
    )
    op.create_index(op.f("ix_cases_agency_id"), "cases", ["agency_id"], unique=False)
    op.create_index(op.f("ix_cases_credit_code"), "cases", ["credit_code"], unique=False)
    create_messaging_tables_v1()


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("inbox")
    op.drop_table("cases")
