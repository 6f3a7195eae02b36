"""Reporting tables: the entity roster it learns from registry events, monitoring plans and
reports with their versions, regulator determinations, the audit trail of every transition, and
the obligations with deadlines it watches per entity (the monitoring plan and the report).

Every state change is a conditional update on the state it starts from (`transition_*`): when
another instance changed the row first, nothing is updated and the caller answers 409."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    exists,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform import obligations
from carbon_platform.db import Upsert
from carbon_platform.tables import ScaledDecimal, UtcDateTime, messaging_tables

metadata = MetaData()
messaging = messaging_tables(metadata)
# Each rostered entity's monitoring plan and report against their deadlines (migration 0004).
obligation_tables = obligations.obligation_tables(metadata)

# Projection of entity.registered: who may report for which year, where they are supervised and
# in which sector. `filing` says what the year's figure comes from once there is one: the
# entity's report or the Bureau's determination, never both.
roster = Table(
    "roster",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("district", String(64), nullable=False),
    Column("sector", String(64), nullable=True),  # None: learnt before migration 0003
    Column("filing", String(16), nullable=True),
    CheckConstraint("filing IN ('report', 'determination')", name="ck_roster_filing"),
)

monitoring_plans = Table(
    "monitoring_plans",
    metadata,
    Column("plan_id", String(36), primary_key=True),
    Column("credit_code", String(18), nullable=False),
    Column("compliance_year", Integer, nullable=False),
    Column("plan_year", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("late", Boolean, nullable=False),
    Column("first_submitted_at", UtcDateTime(), nullable=False),
    UniqueConstraint("credit_code", "plan_year", name="uq_monitoring_plans_entity_year"),
    CheckConstraint(
        "status IN ('submitted', 'approved', 'returned')", name="ck_monitoring_plans_status"
    ),
    CheckConstraint("version >= 1", name="ck_monitoring_plans_version"),
)

monitoring_plan_versions = Table(
    "monitoring_plan_versions",
    metadata,
    Column("plan_id", ForeignKey("monitoring_plans.plan_id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("sources", Text, nullable=False),  # JSON, as published
    Column("outputs", Text, nullable=False),  # JSON, as published
    Column("submitted_by", String(128), nullable=False),
    Column("submitted_at", UtcDateTime(), nullable=False),
    Column("decision", String(16), nullable=True),
    Column("decided_by", String(128), nullable=True),
    Column("decided_at", UtcDateTime(), nullable=True),
    Column("reason", String(2000), nullable=True),
    CheckConstraint(
        "decision IN ('approved', 'returned')", name="ck_monitoring_plan_versions_decision"
    ),
    CheckConstraint(
        "(decision IS NULL AND decided_by IS NULL AND decided_at IS NULL)"
        " OR (decision IS NOT NULL AND decided_by IS NOT NULL AND decided_at IS NOT NULL)",
        name="ck_monitoring_plan_versions_decided",
    ),
    CheckConstraint(
        "CASE decision WHEN 'returned' THEN reason IS NOT NULL ELSE reason IS NULL END",
        name="ck_monitoring_plan_versions_reason",
    ),
)

reports = Table(
    "reports",
    metadata,
    Column("report_id", String(36), primary_key=True),
    Column("credit_code", String(18), nullable=False),
    Column("compliance_year", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),  # the latest
    Column("late", Boolean, nullable=True),
    Column("first_submitted_at", UtcDateTime(), nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("paper_copy_received_on", Date, nullable=True),
    Column("paper_copy_delivery", String(16), nullable=True),
    Column("paper_copy_recorded_by", String(128), nullable=True),
    Column("paper_copy_recorded_at", UtcDateTime(), nullable=True),
    Column("accepted_version", Integer, nullable=True),
    Column("accepted_by", String(128), nullable=True),
    Column("accepted_at", UtcDateTime(), nullable=True),
    # One annual report per entity and year; corrections are its versions.
    UniqueConstraint("credit_code", "compliance_year", name="uq_reports_entity_year"),
    CheckConstraint(
        "status IN ('draft', 'submitted', 'returned', 'accepted')",
        name="ck_reports_status",
    ),
    CheckConstraint("version >= 1", name="ck_reports_version"),
    CheckConstraint(
        "(status = 'draft' AND version = 1 AND first_submitted_at IS NULL AND late IS NULL)"
        " OR (status <> 'draft' AND first_submitted_at IS NOT NULL)",
        name="ck_reports_submitted",
    ),
    CheckConstraint(
        "(paper_copy_received_on IS NULL AND paper_copy_delivery IS NULL"
        " AND paper_copy_recorded_by IS NULL AND paper_copy_recorded_at IS NULL)"
        " OR (status <> 'draft' AND paper_copy_received_on IS NOT NULL"
        " AND paper_copy_delivery IN ('post', 'courier', 'in_person')"
        " AND paper_copy_recorded_by IS NOT NULL AND paper_copy_recorded_at IS NOT NULL)",
        name="ck_reports_paper_copy",
    ),
    CheckConstraint(
        "status <> 'accepted' OR (accepted_version IS NOT NULL AND accepted_version = version"
        " AND accepted_at IS NOT NULL)",
        name="ck_reports_accepted",
    ),
)

report_versions = Table(
    "report_versions",
    metadata,
    Column("report_id", ForeignKey("reports.report_id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("factor_table", String(64), nullable=False),
    Column("lines", Text, nullable=False),  # JSON, as published in report.submitted
    Column("process_lines", Text, nullable=False),  # JSON, as published
    Column("outputs", Text, nullable=False),  # JSON, as published
    Column("total_emissions", ScaledDecimal(3), nullable=False),
    Column("correction_reason", String(2000), nullable=True),
    Column("submitted_by", String(128), nullable=True),  # None: a draft
    Column("submitted_at", UtcDateTime(), nullable=True),
    CheckConstraint("version >= 1", name="ck_report_versions_version"),
    CheckConstraint(
        "(version = 1 AND correction_reason IS NULL)"
        " OR (version > 1 AND correction_reason IS NOT NULL)",
        name="ck_report_versions_reason",
    ),
    CheckConstraint(
        "(submitted_at IS NULL AND submitted_by IS NULL AND version = 1)"
        " OR (submitted_at IS NOT NULL AND submitted_by IS NOT NULL)",
        name="ck_report_versions_submitted",
    ),
)

determinations = Table(
    "determinations",
    metadata,
    Column("determination_id", String(36), primary_key=True),
    Column("credit_code", String(18), nullable=False),
    Column("compliance_year", Integer, nullable=False),
    Column("factor_table", String(64), nullable=False),
    Column("lines", Text, nullable=False),  # JSON, as published in emissions.determined
    Column("process_lines", Text, nullable=False),
    Column("total_emissions", ScaledDecimal(3), nullable=False),
    Column("reason", String(2000), nullable=False),
    Column("determined_by", String(128), nullable=False),
    Column("determined_at", UtcDateTime(), nullable=False),
    UniqueConstraint("credit_code", "compliance_year", name="uq_determinations_entity_year"),
)

# The audit trail: every transition of a plan or a report, who made it, when and why.
transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("subject_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", String(32), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("reason", String(2000), nullable=True),
    Column("event_id", String(64), nullable=True),
    CheckConstraint("kind IN ('plan', 'report')", name="ck_transitions_kind"),
    Index("ix_transitions_subject", "kind", "subject_id", "id"),
)


def dumps(items: Sequence[Any]) -> str:
    """Contract models (or JSON-ready dicts) as the JSON text a column keeps."""
    return json.dumps(
        [item if isinstance(item, dict) else item.model_dump(mode="json") for item in items],
        ensure_ascii=False,
    )


def loads(text: str) -> list[Any]:
    result: list[Any] = json.loads(text)
    return result


# --- roster -----------------------------------------------------------------------------------


def _roster_entry(insert: Callable[[Table], Any]) -> Any:
    statement = insert(roster)
    return statement.on_conflict_do_update(
        index_elements=["credit_code", "compliance_year"],
        set_={
            "name": statement.excluded.name,
            "district": statement.excluded.district,
            "sector": statement.excluded.sector,
        },
    )


# Built once: executing a prepared statement with parameters costs a third of building one.
_ROSTER_ENTRY = Upsert(_roster_entry)
_ROSTERED = (
    select(roster)
    .where(roster.c.credit_code == bindparam("code"))
    .where(roster.c.compliance_year == bindparam("year"))
)
_FILE = (
    update(roster)
    .where(roster.c.credit_code == bindparam("code"))
    .where(roster.c.compliance_year == bindparam("year"))
    .where(roster.c.filing.is_(None))
)


async def add_to_roster(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    name: str,
    district: str,
    sector: str | None = None,
) -> None:
    await conn.execute(
        _ROSTER_ENTRY.on(conn),
        {
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "name": name,
            "district": district,
            "sector": sector,
        },
    )


async def get_rostered(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    return (await conn.execute(_ROSTERED, {"code": credit_code, "year": compliance_year})).first()


async def claim_filing(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int, filing: str
) -> bool:
    """Mark the year's figure as coming from a report or a determination; False when the other
    (or the same) got there first."""
    result = await conn.execute(
        _FILE, {"code": credit_code, "year": compliance_year, "filing": filing}
    )
    return result.rowcount == 1


def _with_roster(query: Select[Any], table: Table) -> Select[Any]:
    """The entity's district and sector, from the roster of the row's compliance year."""
    return query.add_columns(roster.c.district, roster.c.sector).outerjoin(
        roster,
        and_(
            roster.c.credit_code == table.c.credit_code,
            roster.c.compliance_year == table.c.compliance_year,
        ),
    )


def _filtered(
    query: Select[Any],
    table: Table,
    *,
    credit_code: str | None,
    district: str | None,
    sector: str | None,
    compliance_year: int | None = None,
) -> Select[Any]:
    if credit_code:
        query = query.where(table.c.credit_code == credit_code)
    if district:
        query = query.where(roster.c.district == district)
    if sector:
        query = query.where(roster.c.sector == sector)
    if compliance_year is not None:
        query = query.where(table.c.compliance_year == compliance_year)
    return query


# --- audit trail ------------------------------------------------------------------------------

_ADD_TRANSITION = transitions.insert()


async def add_transition(
    conn: AsyncConnection,
    *,
    kind: str,
    subject_id: str,
    version: int,
    action: str,
    from_status: str | None,
    to_status: str,
    actor: str,
    at: datetime,
    reason: str | None = None,
    event_id: str | None = None,
) -> None:
    await conn.execute(
        _ADD_TRANSITION,
        {
            "kind": kind,
            "subject_id": subject_id,
            "version": version,
            "action": action,
            "from_status": from_status,
            "to_status": to_status,
            "actor": actor,
            "at": at,
            "reason": reason,
            "event_id": event_id,
        },
    )


_TRAIL = (
    select(transitions)
    .where(transitions.c.kind == bindparam("kind"))
    .where(transitions.c.subject_id == bindparam("subject"))
    .order_by(transitions.c.id)
)


async def list_transitions(conn: AsyncConnection, *, kind: str, subject_id: str) -> list[Any]:
    return list(await conn.execute(_TRAIL, {"kind": kind, "subject": subject_id}))


# --- monitoring plans -------------------------------------------------------------------------

_PLAN_COLUMNS = select(
    monitoring_plans,
    monitoring_plan_versions.c.sources,
    monitoring_plan_versions.c.outputs,
).join(
    monitoring_plan_versions,
    and_(
        monitoring_plan_versions.c.plan_id == monitoring_plans.c.plan_id,
        monitoring_plan_versions.c.version == monitoring_plans.c.version,
    ),
)
_PLAN = _with_roster(_PLAN_COLUMNS, monitoring_plans).where(
    monitoring_plans.c.plan_id == bindparam("key")
)
_PLAN_OF = (
    select(monitoring_plans)
    .where(monitoring_plans.c.credit_code == bindparam("code"))
    .where(monitoring_plans.c.plan_year == bindparam("year"))
)
_PLAN_VERSIONS = (
    select(monitoring_plan_versions)
    .where(monitoring_plan_versions.c.plan_id == bindparam("key"))
    .order_by(monitoring_plan_versions.c.version)
)
_ADD_PLAN = monitoring_plans.insert()
_ADD_PLAN_VERSION = monitoring_plan_versions.insert()
_TRANSITION_PLAN = (
    update(monitoring_plans)
    .where(monitoring_plans.c.plan_id == bindparam("key"))
    .where(monitoring_plans.c.status == bindparam("from_status"))
    .where(monitoring_plans.c.version == bindparam("from_version"))
)
_DECIDE_PLAN_VERSION = (
    update(monitoring_plan_versions)
    .where(monitoring_plan_versions.c.plan_id == bindparam("key"))
    .where(monitoring_plan_versions.c.version == bindparam("decided_version"))
    .where(monitoring_plan_versions.c.decision.is_(None))
)


async def get_plan(conn: AsyncConnection, *, plan_id: str) -> Any:
    """The plan with its latest version's sources and outputs, district and sector."""
    return (await conn.execute(_PLAN, {"key": plan_id})).first()


async def find_plan(conn: AsyncConnection, *, credit_code: str, plan_year: int) -> Any:
    return (await conn.execute(_PLAN_OF, {"code": credit_code, "year": plan_year})).first()


async def list_plan_versions(conn: AsyncConnection, *, plan_id: str) -> list[Any]:
    return list(await conn.execute(_PLAN_VERSIONS, {"key": plan_id}))


async def list_plans(
    conn: AsyncConnection,
    *,
    credit_code: str | None = None,
    district: str | None = None,
    sector: str | None = None,
    plan_year: int | None = None,
    status: str | None = None,
    late: bool | None = None,
) -> list[Any]:
    query = _filtered(
        _with_roster(_PLAN_COLUMNS, monitoring_plans),
        monitoring_plans,
        credit_code=credit_code,
        district=district,
        sector=sector,
    ).order_by(monitoring_plans.c.first_submitted_at, monitoring_plans.c.plan_id)
    if plan_year is not None:
        query = query.where(monitoring_plans.c.plan_year == plan_year)
    if status:
        query = query.where(monitoring_plans.c.status == status)
    if late is not None:
        query = query.where(monitoring_plans.c.late == late)
    return list(await conn.execute(query))


async def add_plan(
    conn: AsyncConnection,
    *,
    plan_id: str,
    credit_code: str,
    compliance_year: int,
    plan_year: int,
    late: bool,
    at: datetime,
) -> None:
    await conn.execute(
        _ADD_PLAN,
        {
            "plan_id": plan_id,
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "plan_year": plan_year,
            "status": "submitted",
            "version": 1,
            "late": late,
            "first_submitted_at": at,
        },
    )


async def add_plan_version(
    conn: AsyncConnection,
    *,
    plan_id: str,
    version: int,
    sources: Sequence[Any],
    outputs: Sequence[Any],
    submitted_by: str,
    at: datetime,
) -> None:
    await conn.execute(
        _ADD_PLAN_VERSION,
        {
            "plan_id": plan_id,
            "version": version,
            "sources": dumps(sources),
            "outputs": dumps(outputs),
            "submitted_by": submitted_by,
            "submitted_at": at,
        },
    )


async def transition_plan(
    conn: AsyncConnection,
    *,
    plan_id: str,
    from_status: str,
    from_version: int,
    status: str,
    version: int,
) -> bool:
    """False when the plan is no longer in the state the transition starts from."""
    result = await conn.execute(
        _TRANSITION_PLAN,
        {
            "key": plan_id,
            "from_status": from_status,
            "from_version": from_version,
            "status": status,
            "version": version,
        },
    )
    return result.rowcount == 1


async def decide_plan_version(
    conn: AsyncConnection,
    *,
    plan_id: str,
    version: int,
    decision: str,
    reason: str | None,
    decided_by: str,
    at: datetime,
) -> bool:
    """False when the version was decided meanwhile."""
    result = await conn.execute(
        _DECIDE_PLAN_VERSION,
        {
            "key": plan_id,
            "decided_version": version,
            "decision": decision,
            "reason": reason,
            "decided_by": decided_by,
            "decided_at": at,
        },
    )
    return result.rowcount == 1


# --- reports ----------------------------------------------------------------------------------

_REPORT_COLUMNS = select(
    reports,
    report_versions.c.factor_table,
    report_versions.c.lines,
    report_versions.c.process_lines,
    report_versions.c.outputs,
    report_versions.c.total_emissions,
    report_versions.c.correction_reason,
    report_versions.c.submitted_by,
    report_versions.c.submitted_at,
).join(
    report_versions,
    and_(
        report_versions.c.report_id == reports.c.report_id,
        report_versions.c.version == reports.c.version,
    ),
)
_REPORT = _with_roster(_REPORT_COLUMNS, reports).where(reports.c.report_id == bindparam("key"))
_REPORT_OF = (
    select(reports)
    .where(reports.c.credit_code == bindparam("code"))
    .where(reports.c.compliance_year == bindparam("year"))
)
_REPORT_VERSIONS = (
    select(report_versions)
    .where(report_versions.c.report_id == bindparam("key"))
    .order_by(report_versions.c.version)
)
_ADD_REPORT = reports.insert()
_ADD_REPORT_VERSION = report_versions.insert()
_TRANSITION_REPORT = (
    update(reports)
    .where(reports.c.report_id == bindparam("key"))
    .where(reports.c.status == bindparam("from_status"))
    .where(reports.c.version == bindparam("from_version"))
)
_REWRITE_DRAFT = (
    update(report_versions)
    .where(report_versions.c.report_id == bindparam("key"))
    .where(report_versions.c.version == 1)
    .where(report_versions.c.submitted_at.is_(None))
)
_PAPER_COPY = (
    update(reports)
    .where(reports.c.report_id == bindparam("key"))
    .where(reports.c.status != "draft")
    .where(reports.c.paper_copy_received_on.is_(None))
)


async def get_report(conn: AsyncConnection, *, report_id: str) -> Any:
    """The report with its latest version's contents, district and sector."""
    return (await conn.execute(_REPORT, {"key": report_id})).first()


async def find_report(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    return (await conn.execute(_REPORT_OF, {"code": credit_code, "year": compliance_year})).first()


async def list_report_versions(conn: AsyncConnection, *, report_id: str) -> list[Any]:
    return list(await conn.execute(_REPORT_VERSIONS, {"key": report_id}))


async def list_reports(
    conn: AsyncConnection,
    *,
    credit_code: str | None,
    district: str | None = None,
    sector: str | None = None,
    compliance_year: int | None = None,
    status: str | None = None,
    late: bool | None = None,
    paper_copy: bool | None = None,
) -> list[Any]:
    """Reports in order of creation with their latest version, filtered."""
    query = _filtered(
        _with_roster(_REPORT_COLUMNS, reports),
        reports,
        credit_code=credit_code,
        district=district,
        sector=sector,
        compliance_year=compliance_year,
    ).order_by(reports.c.created_at, reports.c.report_id)
    if status:
        query = query.where(reports.c.status == status)
    if late is not None:
        query = query.where(reports.c.late == late)
    if paper_copy is not None:
        received = reports.c.paper_copy_received_on
        query = query.where(received.is_not(None) if paper_copy else received.is_(None))
    return list(await conn.execute(query))


async def add_report(
    conn: AsyncConnection,
    *,
    report_id: str,
    credit_code: str,
    compliance_year: int,
    status: str,
    late: bool | None,
    created_by: str,
    at: datetime,
) -> None:
    await conn.execute(
        _ADD_REPORT,
        {
            "report_id": report_id,
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "status": status,
            "version": 1,
            "late": late,
            "first_submitted_at": None if status == "draft" else at,
            "created_by": created_by,
            "created_at": at,
        },
    )


async def add_report_version(
    conn: AsyncConnection,
    *,
    report_id: str,
    version: int,
    factor_table: str,
    lines: Sequence[Any],
    process_lines: Sequence[Any],
    outputs: Sequence[Any],
    total_emissions: Decimal,
    correction_reason: str | None = None,
    submitted_by: str | None,
    submitted_at: datetime | None,
) -> None:
    await conn.execute(
        _ADD_REPORT_VERSION,
        {
            "report_id": report_id,
            "version": version,
            "factor_table": factor_table,
            "lines": dumps(lines),
            "process_lines": dumps(process_lines),
            "outputs": dumps(outputs),
            "total_emissions": total_emissions,
            "correction_reason": correction_reason,
            "submitted_by": submitted_by,
            "submitted_at": submitted_at,
        },
    )


async def rewrite_draft(
    conn: AsyncConnection,
    *,
    report_id: str,
    factor_table: str,
    lines: Sequence[Any],
    process_lines: Sequence[Any],
    outputs: Sequence[Any],
    total_emissions: Decimal,
    submitted_by: str | None = None,
    submitted_at: datetime | None = None,
) -> bool:
    """Replace a draft's contents (and, given who and when, submit them); False when it is no
    longer a draft."""
    values: dict[str, Any] = {
        "key": report_id,
        "factor_table": factor_table,
        "lines": dumps(lines),
        "process_lines": dumps(process_lines),
        "outputs": dumps(outputs),
        "total_emissions": total_emissions,
    }
    if submitted_at is not None:
        values |= {"submitted_by": submitted_by, "submitted_at": submitted_at}
    result = await conn.execute(_REWRITE_DRAFT, values)
    return result.rowcount == 1


async def transition_report(
    conn: AsyncConnection,
    *,
    report_id: str,
    from_status: str,
    from_version: int,
    **changes: Any,
) -> bool:
    """Set `changes` (status, version, ...) if the report is still at (from_status,
    from_version); False when another request changed it first."""
    result = await conn.execute(
        _TRANSITION_REPORT,
        {"key": report_id, "from_status": from_status, "from_version": from_version, **changes},
    )
    return result.rowcount == 1


async def record_paper_copy(
    conn: AsyncConnection,
    *,
    report_id: str,
    received_on: date,
    delivery: str,
    recorded_by: str,
    at: datetime,
) -> bool:
    """False when a paper copy was recorded meanwhile."""
    result = await conn.execute(
        _PAPER_COPY,
        {
            "key": report_id,
            "paper_copy_received_on": received_on,
            "paper_copy_delivery": delivery,
            "paper_copy_recorded_by": recorded_by,
            "paper_copy_recorded_at": at,
        },
    )
    return result.rowcount == 1


# --- regulator determinations -----------------------------------------------------------------

_DETERMINATION = _with_roster(select(determinations), determinations).where(
    determinations.c.determination_id == bindparam("key")
)
_DETERMINATION_OF = (
    select(determinations)
    .where(determinations.c.credit_code == bindparam("code"))
    .where(determinations.c.compliance_year == bindparam("year"))
)
_ADD_DETERMINATION = determinations.insert()


async def get_determination(conn: AsyncConnection, *, determination_id: str) -> Any:
    return (await conn.execute(_DETERMINATION, {"key": determination_id})).first()


async def find_determination(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int
) -> Any:
    return (
        await conn.execute(_DETERMINATION_OF, {"code": credit_code, "year": compliance_year})
    ).first()


async def list_determinations(
    conn: AsyncConnection,
    *,
    credit_code: str | None = None,
    district: str | None = None,
    sector: str | None = None,
    compliance_year: int | None = None,
) -> list[Any]:
    query = _filtered(
        _with_roster(select(determinations), determinations),
        determinations,
        credit_code=credit_code,
        district=district,
        sector=sector,
        compliance_year=compliance_year,
    ).order_by(determinations.c.determined_at, determinations.c.determination_id)
    return list(await conn.execute(query))


async def add_determination(
    conn: AsyncConnection,
    *,
    determination_id: str,
    credit_code: str,
    compliance_year: int,
    factor_table: str,
    lines: Sequence[Any],
    process_lines: Sequence[Any],
    total_emissions: Decimal,
    reason: str,
    determined_by: str,
    at: datetime,
) -> None:
    await conn.execute(
        _ADD_DETERMINATION,
        {
            "determination_id": determination_id,
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "factor_table": factor_table,
            "lines": dumps(lines),
            "process_lines": dumps(process_lines),
            "total_emissions": total_emissions,
            "reason": reason,
            "determined_by": determined_by,
            "determined_at": at,
        },
    )


# --- obligations of entities rostered before they were watched --------------------------------


def _unenrolled(obligation: str, progress: Table, *columns: Any, on: Any) -> Select[Any]:
    """The year's rostered entities not bound by `obligation` yet (rostered before migration
    0004 added the obligation tables), with what they did towards it from `progress`: one
    query over the roster, not one per entity."""
    status = obligation_tables.status
    return (
        select(roster.c.credit_code, roster.c.name, roster.c.district, *columns)
        .outerjoin(progress, on)
        .where(roster.c.compliance_year == bindparam("year"))
        .where(
            ~exists().where(
                status.c.credit_code == roster.c.credit_code,
                status.c.compliance_year == roster.c.compliance_year,
                status.c.obligation == obligation,
            )
        )
        .order_by(roster.c.credit_code)
    )


_UNENROLLED_FOR_PLAN = _unenrolled(
    "monitoring_plan",
    monitoring_plans,
    monitoring_plans.c.first_submitted_at,
    on=and_(
        monitoring_plans.c.credit_code == roster.c.credit_code,
        monitoring_plans.c.plan_year == bindparam("plan_year"),
    ),
)
_UNENROLLED_FOR_REPORT = _unenrolled(
    "report",
    reports,
    reports.c.first_submitted_at,
    reports.c.paper_copy_recorded_at,
    on=and_(
        reports.c.credit_code == roster.c.credit_code,
        reports.c.compliance_year == roster.c.compliance_year,
    ),
)


async def unenrolled_for_plan(
    conn: AsyncConnection, *, compliance_year: int, plan_year: int
) -> list[Any]:
    """Rostered entities of the year not yet bound by their monitoring plan, each with the
    instant it first submitted its plan for `plan_year` (`first_submitted_at`, None if not)."""
    arguments = {"year": compliance_year, "plan_year": plan_year}
    return list(await conn.execute(_UNENROLLED_FOR_PLAN, arguments))


async def unenrolled_for_report(conn: AsyncConnection, *, compliance_year: int) -> list[Any]:
    """Rostered entities of the year not yet bound by their report, each with the instants its
    report of the year was first submitted online (`first_submitted_at`) and its paper copy
    recorded (`paper_copy_recorded_at`), None for what has not happened."""
    return list(await conn.execute(_UNENROLLED_FOR_REPORT, {"year": compliance_year}))
