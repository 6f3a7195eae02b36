"""Allocation plan and batches, opening balances, offset proofs, transfers and trading
accounts; the journal records offsets and every kind of movement.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOURNAL_KINDS = (
    "allocation",
    "preallocation",
    "opening_balance",
    "clawback",
    "surrender",
    "transfer_out",
    "transfer_in",
    "offset_in",
    "offset_use",
)
ASSETS = ("SHEA", "CCER", "SHCERCIR1")


def upgrade() -> None:
    with op.batch_alter_table("journal") as journal:
        journal.add_column(
            sa.Column("asset", sa.String(length=16), nullable=False, server_default="SHEA")
        )
        journal.drop_constraint("ck_journal_kind", type_="check")
        journal.create_check_constraint("ck_journal_kind", f"kind IN {JOURNAL_KINDS}")
        journal.create_check_constraint("ck_journal_asset", f"asset IN {ASSETS}")
    op.create_index("ix_journal_account", "journal", ["credit_code", "asset", "vintage"])
    with op.batch_alter_table("accounts") as accounts:
        accounts.add_column(sa.Column("on_time", sa.Boolean(), nullable=True))
    with op.batch_alter_table("obligations") as obligations:
        obligations.add_column(
            sa.Column("offsets_surrendered", sa.Integer(), nullable=False, server_default="0")
        )
        obligations.add_column(sa.Column("outputs", sa.Text(), nullable=True))
        obligations.create_check_constraint(
            "ck_obligations_offsets",
            "offsets_surrendered >= 0 AND offsets_surrendered <= surrendered",
        )
    op.create_table(
        "trading_accounts",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("trading_account_id", sa.String(length=32), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["credit_code"], ["entities.credit_code"]),
        sa.PrimaryKeyConstraint("credit_code"),
        sa.UniqueConstraint("trading_account_id"),
    )
    op.create_table(
        "verification_closures",
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("compliance_year"),
    )
    op.create_table(
        "allocation_batches",
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("approved_by", sa.String(length=128), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entities", sa.Integer(), nullable=False),
        sa.Column("final_allocation", sa.Integer(), nullable=False),
        sa.CheckConstraint("entities > 0", name="ck_allocation_batches_entities"),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_table(
        "allocation_previews",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("verified_emissions", sa.BigInteger(), nullable=False),
        sa.Column("final_allocation", sa.Integer(), nullable=False),
        sa.Column("preallocated", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("topped_up", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("clawed_back", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("owed", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint(
            "status IN ('previewed', 'approved', 'issued')", name="ck_allocation_previews_status"
        ),
        sa.CheckConstraint(
            "(status = 'previewed') = (batch_id IS NULL)", name="ck_allocation_previews_batch"
        ),
        sa.CheckConstraint(
            "(status = 'issued') = (issued_at IS NOT NULL)", name="ck_allocation_previews_issued"
        ),
        sa.CheckConstraint(
            "final_allocation >= 0 AND preallocated >= 0 AND topped_up >= 0 AND clawed_back >= 0"
            " AND owed >= 0",
            name="ck_allocation_previews_amounts",
        ),
        sa.ForeignKeyConstraint(["credit_code"], ["entities.credit_code"]),
        sa.ForeignKeyConstraint(["batch_id"], ["allocation_batches.batch_id"]),
        sa.PrimaryKeyConstraint("credit_code", "compliance_year"),
    )
    op.create_index(
        "ix_allocation_previews_year", "allocation_previews", ["compliance_year", "status"]
    )
    op.create_table(
        "opening_balances",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("verified_emissions", sa.BigInteger(), nullable=True),
        sa.Column("preallocated", sa.Integer(), nullable=True),
        sa.Column("held", sa.Integer(), nullable=True),
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "verified_emissions IS NOT NULL OR preallocated IS NOT NULL OR held IS NOT NULL",
            name="ck_opening_balances_something",
        ),
        sa.CheckConstraint(
            "(preallocated IS NULL OR preallocated >= 0) AND (held IS NULL OR held >= 0)",
            name="ck_opening_balances_amounts",
        ),
        sa.ForeignKeyConstraint(["credit_code"], ["entities.credit_code"]),
        sa.PrimaryKeyConstraint("credit_code", "compliance_year"),
    )
    op.create_table(
        "offset_proofs",
        sa.Column("offset_type", sa.String(length=16), nullable=False),
        sa.Column("proof_id", sa.String(length=64), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("cancelled_on", sa.Date(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("used_for_year", sa.Integer(), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("offset_type IN ('CCER', 'SHCERCIR1')", name="ck_offset_proofs_type"),
        sa.CheckConstraint("quantity > 0", name="ck_offset_proofs_quantity"),
        sa.CheckConstraint(
            "(used_for_year IS NULL) = (used_at IS NULL)", name="ck_offset_proofs_used"
        ),
        sa.ForeignKeyConstraint(["credit_code"], ["entities.credit_code"]),
        sa.PrimaryKeyConstraint("offset_type", "proof_id"),
    )
    op.create_index("ix_offset_proofs_entity", "offset_proofs", ["credit_code"])
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.String(length=36), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("trading_account_id", sa.String(length=32), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("allowances", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "direction IN ('to_exchange', 'from_exchange')", name="ck_transfers_direction"
        ),
        sa.CheckConstraint("allowances > 0", name="ck_transfers_allowances"),
        sa.ForeignKeyConstraint(["credit_code"], ["entities.credit_code"]),
        sa.PrimaryKeyConstraint("transfer_id"),
    )
    op.create_index("ix_transfers_entity", "transfers", ["credit_code"])


def downgrade() -> None:
    raise NotImplementedError("the registry's ledger is never downgraded")
