"""Initial notifier schema: domain tables, inbox and outbox.

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
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recipient_type", sa.String(length=16), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "recipient_type", "recipient_id", "event_id", name="uq_notifications_once"
        ),
    )
    op.create_table(
        "supervision",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("district", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("credit_code"),
    )
    create_messaging_tables_v1()


def downgrade() -> None:
    op.drop_table("supervision")
    op.drop_table("outbox")
    op.drop_table("notifications")
    op.drop_table("inbox")
