"""Roster uploads (CSV) and the result of each row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "roster_imports",
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("uploaded_by", sa.String(length=128), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("rows > 0", name="ck_roster_imports_rows"),
        sa.PrimaryKeyConstraint("import_id"),
    )
    op.create_table(
        "roster_import_rows",
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("credit_code", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("message", sa.String(length=1000), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'registered', 'refused')",
            name="ck_roster_import_rows_status",
        ),
        sa.CheckConstraint(
            "(status = 'registered') = (event_id IS NOT NULL)",
            name="ck_roster_import_rows_event",
        ),
        sa.ForeignKeyConstraint(["import_id"], ["roster_imports.import_id"]),
        sa.PrimaryKeyConstraint("import_id", "line"),
    )
    op.create_index(
        "ix_roster_import_rows_pending", "roster_import_rows", ["status", "import_id", "line"]
    )


def downgrade() -> None:
    op.drop_index("ix_roster_import_rows_pending", table_name="roster_import_rows")
    op.drop_table("roster_import_rows")
    op.drop_table("roster_imports")
