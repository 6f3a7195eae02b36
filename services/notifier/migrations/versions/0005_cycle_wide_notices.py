"""Notices about a whole cycle (a deadline passed) to the Bureau and the districts: they concern
no one entity, so a notification's credit_code may be NULL. Recipient types (now also `bureau`)
are not constrained in the database, so nothing else changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as notifications:
        notifications.alter_column("credit_code", existing_type=sa.String(length=18), nullable=True)


def downgrade() -> None:
    # The old schema cannot hold a cycle-wide notice: it goes, with its deliveries.
    op.execute(
        "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT d.id FROM deliveries d"
        " JOIN notifications n ON n.id = d.notification_id WHERE n.credit_code IS NULL)"
    )
    op.execute(
        "DELETE FROM deliveries WHERE notification_id IN"
        " (SELECT id FROM notifications WHERE credit_code IS NULL)"
    )
    op.execute("DELETE FROM notifications WHERE credit_code IS NULL")
    with op.batch_alter_table("notifications") as notifications:
        notifications.alter_column(
            "credit_code", existing_type=sa.String(length=18), nullable=False
        )
