"""Verification by tender lot and re-verification: the roster projection, cases with rounds, site
visits, contacts, the final figure and an audit trail, and the years closed.

The cases table is rebuilt (its constraints change on both dialects alike): existing cases are
kept as verification-round cases of their report's version 1, an approved one with its agency as
the first agency, and their opening, assignment and approval go into the audit trail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BASIS = "COALESCE(final_basis, '')"


def upgrade() -> None:
    op.create_table(
        "roster",
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("district", sa.String(length=64), nullable=False),
        sa.Column("sector", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("credit_code", "compliance_year"),
    )
    # A copy without constraints or indexes, so that the new table may take their names.
    op.execute("CREATE TABLE cases_v1 AS SELECT * FROM cases")
    op.drop_table("cases")
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(length=36), nullable=False),
        sa.Column("report_id", sa.String(length=36), nullable=True),
        sa.Column("determination_id", sa.String(length=36), nullable=True),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("round", sa.String(length=16), nullable=False),
        sa.Column("report_version", sa.Integer(), nullable=True),
        sa.Column("reported_emissions", sa.BigInteger(), nullable=True),
        sa.Column("lot_id", sa.String(length=64), nullable=True),
        sa.Column("agency_id", sa.String(length=64), nullable=True),
        sa.Column("first_agency_id", sa.String(length=64), nullable=True),
        sa.Column("verified_emissions", sa.BigInteger(), nullable=True),
        sa.Column("reverified_emissions", sa.BigInteger(), nullable=True),
        sa.Column("final_emissions", sa.BigInteger(), nullable=True),
        sa.Column("final_basis", sa.String(length=16), nullable=True),
        sa.Column("selected_by", sa.String(length=16), nullable=True),
        sa.Column("selection_reason", sa.Text(), nullable=True),
        sa.Column("contact_name", sa.String(length=100), nullable=True),
        sa.Column("contact_phone", sa.String(length=32), nullable=True),
        sa.Column("verification_visited_on", sa.Date(), nullable=True),
        sa.Column("verification_findings", sa.Text(), nullable=True),
        sa.Column("reverification_visited_on", sa.Date(), nullable=True),
        sa.Column("reverification_findings", sa.Text(), nullable=True),
        sa.Column("verification_outside_window", sa.Boolean(), nullable=True),
        sa.Column("reverification_outside_window", sa.Boolean(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("selected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reverified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finalised_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('opened', 'assigned', 'returned', 'approved', 'selected', "
            "'reverifying', 'final')",
            name="ck_cases_status",
        ),
        sa.CheckConstraint("round IN ('verification', 'reverification')", name="ck_cases_round"),
        sa.CheckConstraint(
            "(report_id IS NULL) <> (determination_id IS NULL)", name="ck_cases_origin"
        ),
        sa.CheckConstraint(
            "(report_id IS NULL) = (report_version IS NULL)"
            " AND (report_id IS NULL) = (reported_emissions IS NULL)",
            name="ck_cases_report",
        ),
        sa.CheckConstraint(
            "(status = 'final') = (final_emissions IS NOT NULL)"
            " AND (final_emissions IS NULL) = (final_basis IS NULL)"
            f" AND {_BASIS} IN ('', 'verification', 'reverification', 'determination')"
            f" AND ({_BASIS} = 'determination') = (determination_id IS NOT NULL)",
            name="ck_cases_final",
        ),
        sa.CheckConstraint(
            "(agency_id IS NULL) = (status IN ('opened', 'selected')"
            " OR determination_id IS NOT NULL)"
            " AND (lot_id IS NULL OR agency_id IS NOT NULL)",
            name="ck_cases_agency",
        ),
        sa.CheckConstraint(
            "(round = 'reverification')"
            f" = (status IN ('selected', 'reverifying') OR {_BASIS} = 'reverification')",
            name="ck_cases_round_status",
        ),
        sa.CheckConstraint(
            "(verified_emissions IS NOT NULL) = (first_agency_id IS NOT NULL)"
            " AND (verified_emissions IS NOT NULL) = (status IN ('approved', 'selected',"
            f" 'reverifying') OR {_BASIS} IN ('verification', 'reverification'))"
            " AND (round = 'verification' OR agency_id IS NULL OR agency_id <> first_agency_id)",
            name="ck_cases_verified",
        ),
        sa.CheckConstraint(
            f"(reverified_emissions IS NOT NULL) = ({_BASIS} = 'reverification')"
            " AND (reverified_emissions IS NULL OR reverified_emissions = final_emissions)",
            name="ck_cases_reverified",
        ),
        sa.CheckConstraint(
            "(selected_by IS NULL) = (selection_reason IS NULL)"
            " AND (selected_by IS NULL OR selected_by IN ('bureau', 'rule'))"
            " AND (round = 'verification' OR selected_by IS NOT NULL)",
            name="ck_cases_selection",
        ),
        sa.CheckConstraint(
            "(contact_name IS NULL) = (contact_phone IS NULL)", name="ck_cases_contact"
        ),
        sa.CheckConstraint(
            "(verification_visited_on IS NULL) = (verification_findings IS NULL)"
            " AND (reverification_visited_on IS NULL) = (reverification_findings IS NULL)"
            " AND (verification_outside_window IS NULL OR verification_visited_on IS NOT NULL)"
            " AND (reverified_emissions IS NULL OR reverification_visited_on IS NOT NULL)",
            name="ck_cases_visits",
        ),
        sa.CheckConstraint(
            "(verified_emissions IS NOT NULL OR verification_outside_window IS NULL)"
            " AND (reverified_emissions IS NULL) = (reverification_outside_window IS NULL)",
            name="ck_cases_window",
        ),
        sa.CheckConstraint("revision >= 0", name="ck_cases_revision"),
        sa.PrimaryKeyConstraint("case_id"),
        sa.UniqueConstraint("report_id"),
        sa.UniqueConstraint("determination_id"),
    )
    op.create_index("ix_cases_agency_id", "cases", ["agency_id"], unique=False)
    op.create_index("ix_cases_credit_code", "cases", ["credit_code"], unique=False)
    op.create_index("ix_cases_year_status", "cases", ["compliance_year", "status"], unique=False)
    op.create_table(
        "case_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.case_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_history_case_id", "case_history", ["case_id"], unique=False)
    op.create_table(
        "year_closures",
        sa.Column("compliance_year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.Column("total_verified_emissions", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint("cases >= 0", name="ck_year_closures_cases"),
        sa.PrimaryKeyConstraint("compliance_year"),
    )
    _carry_over_cases()
    op.drop_table("cases_v1")


def _carry_over_cases() -> None:
    op.execute(
        """
        INSERT INTO cases (
            case_id, report_id, credit_code, compliance_year, status, round, report_version,
            reported_emissions, agency_id, first_agency_id, verified_emissions, opened_at,
            assigned_at, approved_at, revision
        )
        SELECT case_id, report_id, credit_code, compliance_year, status, 'verification', 1,
            reported_emissions, agency_id,
            CASE WHEN status = 'approved' THEN agency_id END,
            verified_emissions, opened_at, assigned_at, approved_at, 0
        FROM cases_v1
        """
    )
    history = 'INSERT INTO case_history (case_id, at, "by", action, from_status, to_status) '
    op.execute(
        history + "SELECT case_id, opened_at, 'reporting', 'open', NULL, 'opened' FROM cases_v1"
    )
    op.execute(
        history + "SELECT case_id, assigned_at, 'bureau', 'assign', 'opened', 'assigned' "
        "FROM cases_v1 WHERE assigned_at IS NOT NULL"
    )
    op.execute(
        history + "SELECT case_id, approved_at, COALESCE(approved_by, 'verifier'), 'approve', "
        "'assigned', 'approved' FROM cases_v1 WHERE status = 'approved'"
    )


def downgrade() -> None:
    raise NotImplementedError("verification cases are never downgraded")
