"""Monitoring plans, the report lifecycle (versions, states, paper copy, acceptance), regulator
determinations and the audit trail; the roster keeps sectors and what the year's figure comes
from.

A report of 0001 becomes a submitted report whose version 1 holds its lines; its lateness was
never recorded (`late` stays NULL).

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
    with op.batch_alter_table("roster") as roster:
        roster.add_column(sa.Column("sector", sa.String(length=64), nullable=True))
        roster.add_column(sa.Column("filing", sa.String(length=16), nullable=True))
        roster.create_check_constraint("ck_roster_filing", "filing IN ('report', 'determination')")
    op.execute(
        "UPDATE roster SET filing = 'report' WHERE EXISTS (SELECT 1 FROM reports"
        " WHERE reports.credit_code = roster.credit_code"
        " AND reports.compliance_year = roster.compliance_year)"
    )

    # Versions first, filled from the reports of 0001, which then lose their contents. The
    # foreign key comes last: SQLite rebuilds `reports` to drop columns, and a table that rows
    # refer to cannot be dropped.
    op.create_table(
        "report_versions",
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("factor_table", sa.String(length=64), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("process_lines", sa.Text(), nullable=False),
        sa.Column("outputs", sa.Text(), nullable=False),
        sa.Column("total_emissions", sa.BigInteger(), nullable=False),
        sa.Column("correction_reason", sa.String(length=2000), nullable=True),
        sa.Column("submitted_by", sa.String(length=128), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("version >= 1", name="ck_report_versions_version"),
        sa.CheckConstraint(
            "(version = 1 AND correction_reason IS NULL)"
            " OR (version > 1 AND correction_reason IS NOT NULL)",
            name="ck_report_versions_reason",
        ),
        sa.CheckConstraint(
            "(submitted_at IS NULL AND submitted_by IS NULL AND version = 1)"
            " OR (submitted_at IS NOT NULL AND submitted_by IS NOT NULL)",
            name="ck_report_versions_submitted",
        ),
        sa.PrimaryKeyConstraint("report_id", "version"),
    )
    op.execute(
        "INSERT INTO report_versions (report_id, version, factor_table, lines, process_lines,"
        " outputs, total_emissions, correction_reason, submitted_by, submitted_at)"
        " SELECT report_id, 1, factor_table, lines, '[]', '[]', total_emissions, NULL,"
        " submitted_by, submitted_at FROM reports"
    )
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint("kind IN ('plan', 'report')", name="ck_transitions_kind"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_transitions_subject", "transitions", ["kind", "subject_id", "id"])
    op.execute(
        "INSERT INTO transitions (kind, subject_id, version, action, from_status, to_status,"
        " actor, at) SELECT 'report', report_id, 1, 'submitted', NULL, 'submitted',"
        " submitted_by, submitted_at FROM reports"
    )

    for column in (
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=True),
        sa.Column("first_submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paper_copy_received_on", sa.Date(), nullable=True),
        sa.Column("paper_copy_delivery", sa.String(length=16), nullable=True),
        sa.Column("paper_copy_recorded_by", sa.String(length=128), nullable=True),
        sa.Column("paper_copy_recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_version", sa.Integer(), nullable=True),
        sa.Column("accepted_by", sa.String(length=128), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
    ):
        op.add_column("reports", column)
    op.execute(
        "UPDATE reports SET status = 'submitted', version = 1,"
        " first_submitted_at = submitted_at, created_by = submitted_by, created_at = submitted_at"
    )
    with op.batch_alter_table("reports") as reports:
        for name in ("status", "version", "created_by", "created_at"):
            reports.alter_column(name, nullable=False)
        for name in ("factor_table", "lines", "total_emissions", "submitted_by", "submitted_at"):
            reports.drop_column(name)
        reports.create_check_constraint(
            "ck_reports_status",
            "status IN ('draft', 'submitted', 'returned', 'accepted')",
        )
        reports.create_check_constraint("ck_reports_version", "version >= 1")
        reports.create_check_constraint(
            "ck_reports_submitted",
            "(status = 'draft' AND version = 1 AND first_submitted_at IS NULL AND late IS NULL)"
            " OR (status <> 'draft' AND first_submitted_at IS NOT NULL)",
        )
        reports.create_check_constraint(
            "ck_reports_paper_copy",
            "(paper_copy_received_on IS NULL AND paper_copy_delivery IS NULL"
            " AND paper_copy_recorded_by IS NULL AND paper_copy_recorded_at IS NULL)"
            " OR (status <> 'draft' AND paper_copy_received_on IS NOT NULL"
            " AND paper_copy_delivery IN ('post', 'courier', 'in_person')"
            " AND paper_copy_recorded_by IS NOT NULL AND paper_copy_recorded_at IS NOT NULL)",
        )
        reports.create_check_constraint(
            "ck_reports_accepted",
            "status <> 'accepted' OR (accepted_version IS NOT NULL AND accepted_version = version"
            " AND accepted_at IS NOT NULL)",
        )
    with op.batch_alter_table("report_versions") as versions:
        versions.create_foreign_key(
            "fk_report_versions_report", "reports", ["report_id"], ["report_id"]
        )

    op.create_table(
        "monitoring_plans",
        sa.Column("plan_id", sa.String(length=36), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("plan_year", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("first_submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('submitted', 'approved', 'returned')", name="ck_monitoring_plans_status"
        ),
        sa.CheckConstraint("version >= 1", name="ck_monitoring_plans_version"),
        sa.PrimaryKeyConstraint("plan_id"),
        sa.UniqueConstraint("credit_code", "plan_year", name="uq_monitoring_plans_entity_year"),
    )
    op.create_table(
        "monitoring_plan_versions",
        sa.Column("plan_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sources", sa.Text(), nullable=False),
        sa.Column("outputs", sa.Text(), nullable=False),
        sa.Column("submitted_by", sa.String(length=128), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.CheckConstraint(
            "decision IN ('approved', 'returned')", name="ck_monitoring_plan_versions_decision"
        ),
        sa.CheckConstraint(
            "(decision IS NULL AND decided_by IS NULL AND decided_at IS NULL)"
            " OR (decision IS NOT NULL AND decided_by IS NOT NULL AND decided_at IS NOT NULL)",
            name="ck_monitoring_plan_versions_decided",
        ),
        sa.CheckConstraint(
            "CASE decision WHEN 'returned' THEN reason IS NOT NULL ELSE reason IS NULL END",
            name="ck_monitoring_plan_versions_reason",
        ),
        sa.ForeignKeyConstraint(["plan_id"], ["monitoring_plans.plan_id"]),
        sa.PrimaryKeyConstraint("plan_id", "version"),
    )
    op.create_table(
        "determinations",
        sa.Column("determination_id", sa.String(length=36), nullable=False),
        sa.Column("credit_code", sa.String(length=18), nullable=False),
        sa.Column("compliance_year", sa.Integer(), nullable=False),
        sa.Column("factor_table", sa.String(length=64), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("process_lines", sa.Text(), nullable=False),
        sa.Column("total_emissions", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("determined_by", sa.String(length=128), nullable=False),
        sa.Column("determined_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("determination_id"),
        sa.UniqueConstraint("credit_code", "compliance_year", name="uq_determinations_entity_year"),
    )


def downgrade() -> None:
    raise NotImplementedError("the report lifecycle is never downgraded: versions would be lost")
