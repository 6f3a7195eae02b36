"""Paid auctions: the exchange's daily market summaries, announced auctions, sealed bids, each
bidder's committed total, awards and their settlement; surrender-only holdings and their journal.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
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
    "auction",
)
ASSETS = ("SHEA", "SHEA_RESTRICTED", "CCER", "SHCERCIR1")


def upgrade() -> None:
    with op.batch_alter_table("journal") as journal:
        journal.drop_constraint("ck_journal_kind", type_="check")
        journal.create_check_constraint("ck_journal_kind", f"kind IN {JOURNAL_KINDS}")
        journal.drop_constraint("ck_journal_asset", type_="check")
        journal.create_check_constraint("ck_journal_asset", f"asset IN {ASSETS}")
    op.create_table(
        "surrender_only_holdings",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("balance", sa.Integer(), nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_surrender_only_holdings_balance"),
        sa.ForeignKeyConstraint(["credit_code"], ["entities.credit_code"]),
        sa.PrimaryKeyConstraint("credit_code", "vintage"),
    )
    op.create_table(
        "market_days",
        sa.Column("instrument", sa.String(length=16), nullable=False),
        sa.Column("trading_date", sa.Date(), nullable=False),
        sa.Column("volume", sa.BigInteger(), nullable=False),
        sa.Column("turnover", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "volume >= 0 AND turnover >= 0 AND (volume = 0) = (turnover = 0)",
            name="ck_market_days_amounts",
        ),
        sa.PrimaryKeyConstraint("instrument", "trading_date"),
    )
    op.create_table(
        "auctions",
        sa.Column("auction_id", sa.String(length=64), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("volume", sa.Integer(), nullable=False),
        sa.Column("reserve_price", sa.BigInteger(), nullable=False),
        sa.Column("reference_trading_days", sa.Integer(), nullable=False),
        sa.Column("reference_volume", sa.BigInteger(), nullable=False),
        sa.Column("reference_turnover", sa.BigInteger(), nullable=False),
        sa.Column("announced_by", sa.String(length=128), nullable=False),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("clearing_price", sa.BigInteger(), nullable=True),
        sa.Column("sold", sa.Integer(), nullable=True),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('announced', 'cleared')", name="ck_auctions_status"),
        sa.CheckConstraint(
            "(status = 'cleared') = (cleared_at IS NOT NULL AND sold IS NOT NULL)",
            name="ck_auctions_cleared",
        ),
        sa.CheckConstraint(
            "volume > 0 AND reserve_price > 0 AND (sold IS NULL OR sold BETWEEN 0 AND volume)"
            " AND (clearing_price IS NULL OR clearing_price >= reserve_price)",
            name="ck_auctions_amounts",
        ),
        sa.PrimaryKeyConstraint("auction_id"),
    )
    op.create_table(
        "auction_bidders",
        sa.Column("auction_id", sa.String(length=64), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("committed", sa.Integer(), nullable=False),
        sa.CheckConstraint("committed >= 0", name="ck_auction_bidders_committed"),
        sa.ForeignKeyConstraint(["auction_id"], ["auctions.auction_id"]),
        sa.ForeignKeyConstraint(["credit_code"], ["entities.credit_code"]),
        sa.PrimaryKeyConstraint("auction_id", "credit_code"),
    )
    op.create_table(
        "auction_bids",
        sa.Column("bid_id", sa.String(length=36), nullable=False),
        sa.Column("auction_id", sa.String(length=64), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("filled", sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('live', 'withdrawn')", name="ck_auction_bids_status"),
        sa.CheckConstraint(
            "price > 0 AND quantity > 0 AND (filled IS NULL OR filled BETWEEN 0 AND quantity)",
            name="ck_auction_bids_amounts",
        ),
        sa.ForeignKeyConstraint(
            ["auction_id", "credit_code"],
            ["auction_bidders.auction_id", "auction_bidders.credit_code"],
        ),
        sa.PrimaryKeyConstraint("bid_id"),
    )
    op.create_index("ix_auction_bids_bidder", "auction_bids", ["auction_id", "credit_code"])
    op.create_table(
        "auction_awards",
        sa.Column("auction_id", sa.String(length=64), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("allowances", sa.Integer(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('awarded', 'settled', 'cancelled')", name="ck_auction_awards_status"
        ),
        sa.CheckConstraint(
            "(status = 'settled') = (payment_id IS NOT NULL AND paid_at IS NOT NULL)"
            " AND (status = 'awarded') = (closed_at IS NULL)",
            name="ck_auction_awards_closed",
        ),
        sa.CheckConstraint(
            "allowances > 0 AND amount_due = allowances * price", name="ck_auction_awards_amount"
        ),
        sa.ForeignKeyConstraint(
            ["auction_id", "credit_code"],
            ["auction_bidders.auction_id", "auction_bidders.credit_code"],
        ),
        sa.PrimaryKeyConstraint("auction_id", "credit_code"),
        sa.UniqueConstraint("payment_id"),
    )


def downgrade() -> None:
    raise NotImplementedError("the registry's ledger is never downgraded")
