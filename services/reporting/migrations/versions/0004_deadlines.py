"""Obligations with deadlines: each rostered entity's monitoring plan and report, watched per
entity (status, history, each deadline's pass and who was overdue then, reminders sent).

Entities rostered before this migration are not enrolled by it: enrolment needs the policy
(deadline, missing text), which a migration does not read; a later entity.registered enrols them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from carbon_platform.migrations import create_obligation_tables_v1

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_obligation_tables_v1()


def downgrade() -> None:
    raise NotImplementedError("obligations are never downgraded: their history would be lost")
