"""Messaging tables version 2: parked outbox rows, outbox index by topic, relay lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from carbon_platform.migrations import upgrade_messaging_tables_v2

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    upgrade_messaging_tables_v2()


def downgrade() -> None:
    raise NotImplementedError("messaging tables are never downgraded")
