"""Deadlines: the obligation tables of carbon_platform.obligations (accounts_opening and
surrender per entity, their history, each deadline's pass and who was overdue then, reminders
sent), and each entity's latest reported emissions (`report.submitted`) for the shortfall.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from carbon_platform.migrations import create_obligation_tables_v1

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_obligation_tables_v1()
    op.create_table(
        "reported_emissions",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("total_emissions", sa.BigInteger(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name="ck_reported_emissions_version"),
        sa.ForeignKeyConstraint(["credit_code"], ["entities.credit_code"]),
        sa.PrimaryKeyConstraint("credit_code", "compliance_year"),
    )


def downgrade() -> None:
    op.drop_table("reported_emissions")
    op.drop_table("obligation_reminders")
    op.drop_table("deadline_overdue")
    op.drop_table("deadline_passes")
    op.drop_index("ix_obligation_history_entity", table_name="obligation_history")
    op.drop_table("obligation_history")
    op.drop_index("ix_obligation_status_district", table_name="obligation_status")
    op.drop_index("ix_obligation_status_deadline", table_name="obligation_status")
    op.drop_table("obligation_status")
