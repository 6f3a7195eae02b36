"""Initial registry schema: domain tables, inbox and outbox.

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
        "entities",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("district", sa.String(length=64), nullable=False),
        sa.Column("sector", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("credit_code"),
    )
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_code"],
            ["entities.credit_code"],
        ),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("credit_code"),
    )
    op.create_table(
        "allocations",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("basis_emissions", sa.BigInteger(), nullable=False),
        sa.Column("allowances", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('allocation', 'preallocation')", name="ck_allocations_kind"),
        sa.CheckConstraint("allowances >= 0", name="ck_allocations_allowances"),
        sa.ForeignKeyConstraint(
            ["credit_code"],
            ["entities.credit_code"],
        ),
        sa.PrimaryKeyConstraint("credit_code", "compliance_year", "kind"),
    )
    op.create_table(
        "holdings",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("balance", sa.Integer(), nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_holdings_balance_non_negative"),
        sa.ForeignKeyConstraint(
            ["credit_code"],
            ["entities.credit_code"],
        ),
        sa.PrimaryKeyConstraint("credit_code", "vintage"),
    )
    op.create_table(
        "journal",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('allocation', 'preallocation', 'surrender')", name="ck_journal_kind"
        ),
        sa.CheckConstraint("amount <> 0", name="ck_journal_amount_non_zero"),
        sa.ForeignKeyConstraint(
            ["credit_code"],
            ["entities.credit_code"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "obligations",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.String(length=36), nullable=False),
        sa.Column("verified_emissions", sa.BigInteger(), nullable=False),
        sa.Column("obligation", sa.Integer(), nullable=False),
        sa.Column("surrendered", sa.Integer(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("on_time", sa.Boolean(), nullable=True),
        sa.CheckConstraint("obligation >= 0", name="ck_obligations_obligation"),
        sa.CheckConstraint(
            "surrendered >= 0 AND surrendered <= obligation", name="ck_obligations_surrendered"
        ),
        sa.ForeignKeyConstraint(
            ["credit_code"],
            ["entities.credit_code"],
        ),
        sa.PrimaryKeyConstraint("credit_code", "compliance_year"),
    )
    op.create_table(
        "roster",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("new_entrant", sa.Boolean(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_code"],
            ["entities.credit_code"],
        ),
        sa.PrimaryKeyConstraint("credit_code", "compliance_year"),
    )
    create_messaging_tables_v1()


def downgrade() -> None:
    op.drop_table("roster")
    op.drop_table("obligations")
    op.drop_table("journal")
    op.drop_table("holdings")
    op.drop_table("allocations")
    op.drop_table("accounts")
    op.drop_table("outbox")
    op.drop_table("inbox")
    op.drop_table("entities")
