"""Verification tables: the roster projection, one case per report or determination with its
audit trail, and the years closed. Every invariant of a case is a check constraint too, and every
change of a case is an update guarded by the status and revision it was read with."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.db import Upsert
from carbon_platform.tables import ScaledDecimal, UtcDateTime, messaging_tables
from verification.domain.case import STATUSES, Case, SiteVisit

metadata = MetaData()
messaging = messaging_tables(metadata)

# Who is covered, and where: from entity.registered. Cases join it when they are listed or
# assigned, never copy it, since a report may arrive before its entity's registration.
roster = Table(
    "roster",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("district", String(64), nullable=False),
    Column("sector", String(64), nullable=False),
    Column("registered_at", UtcDateTime(), nullable=False),
)

_STATUS_LIST = ", ".join(f"'{status}'" for status in STATUSES)
_BASIS = "COALESCE(final_basis, '')"  # a comparison with NULL would pass any check
cases = Table(
    "cases",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("report_id", String(36), nullable=True, unique=True),
    Column("determination_id", String(36), nullable=True, unique=True),
    Column("credit_code", String(18), nullable=False, index=True),
    Column("compliance_year", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("round", String(16), nullable=False),
    Column("report_version", Integer, nullable=True),
    Column("reported_emissions", ScaledDecimal(3), nullable=True),
    Column("lot_id", String(64), nullable=True),
    Column("agency_id", String(64), nullable=True, index=True),
    Column("first_agency_id", String(64), nullable=True),
    Column("verified_emissions", ScaledDecimal(3), nullable=True),
    Column("reverified_emissions", ScaledDecimal(3), nullable=True),
    Column("final_emissions", ScaledDecimal(3), nullable=True),
    Column("final_basis", String(16), nullable=True),
    Column("selected_by", String(16), nullable=True),
    Column("selection_reason", Text, nullable=True),
    Column("contact_name", String(100), nullable=True),
    Column("contact_phone", String(32), nullable=True),
    Column("verification_visited_on", Date, nullable=True),
    Column("verification_findings", Text, nullable=True),
    Column("reverification_visited_on", Date, nullable=True),
    Column("reverification_findings", Text, nullable=True),
    Column("verification_outside_window", Boolean, nullable=True),
    Column("reverification_outside_window", Boolean, nullable=True),
    Column("opened_at", UtcDateTime(), nullable=False),
    Column("assigned_at", UtcDateTime(), nullable=True),
    Column("returned_at", UtcDateTime(), nullable=True),
    Column("approved_at", UtcDateTime(), nullable=True),
    Column("selected_at", UtcDateTime(), nullable=True),
    Column("reverified_at", UtcDateTime(), nullable=True),
    Column("finalised_at", UtcDateTime(), nullable=True),
    Column("revision", Integer, nullable=False),
    CheckConstraint(f"status IN ({_STATUS_LIST})", name="ck_cases_status"),
    CheckConstraint("round IN ('verification', 'reverification')", name="ck_cases_round"),
    # Opened for a report (with its version and total) or for a determination, never both.
    CheckConstraint("(report_id IS NULL) <> (determination_id IS NULL)", name="ck_cases_origin"),
    CheckConstraint(
        "(report_id IS NULL) = (report_version IS NULL)"
        " AND (report_id IS NULL) = (reported_emissions IS NULL)",
        name="ck_cases_report",
    ),
    CheckConstraint(
        "(status = 'final') = (final_emissions IS NOT NULL)"
        " AND (final_emissions IS NULL) = (final_basis IS NULL)"
        f" AND {_BASIS} IN ('', 'verification', 'reverification', 'determination')"
        f" AND ({_BASIS} = 'determination') = (determination_id IS NOT NULL)",
        name="ck_cases_final",
    ),
    # An agency is at work exactly when the case is neither waiting for one nor determined.
    CheckConstraint(
        "(agency_id IS NULL) = (status IN ('opened', 'selected') OR determination_id IS NOT NULL)"
        " AND (lot_id IS NULL OR agency_id IS NOT NULL)",
        name="ck_cases_agency",
    ),
    CheckConstraint(
        "(round = 'reverification')"
        f" = (status IN ('selected', 'reverifying') OR {_BASIS} = 'reverification')",
        name="ck_cases_round_status",
    ),
    # The first agency's approval stands until a new version voids it; another agency
    # re-verifies.
    CheckConstraint(
        "(verified_emissions IS NOT NULL) = (first_agency_id IS NOT NULL)"
        " AND (verified_emissions IS NOT NULL) = (status IN ('approved', 'selected',"
        f" 'reverifying') OR {_BASIS} IN ('verification', 'reverification'))"
        " AND (round = 'verification' OR agency_id IS NULL OR agency_id <> first_agency_id)",
        name="ck_cases_verified",
    ),
    CheckConstraint(
        f"(reverified_emissions IS NOT NULL) = ({_BASIS} = 'reverification')"
        " AND (reverified_emissions IS NULL OR reverified_emissions = final_emissions)",
        name="ck_cases_reverified",
    ),
    CheckConstraint(
        "(selected_by IS NULL) = (selection_reason IS NULL)"
        " AND (selected_by IS NULL OR selected_by IN ('bureau', 'rule'))"
        " AND (round = 'verification' OR selected_by IS NOT NULL)",
        name="ck_cases_selection",
    ),
    CheckConstraint("(contact_name IS NULL) = (contact_phone IS NULL)", name="ck_cases_contact"),
    # No approval without its round's site visit (but for approvals from before site visits
    # and the window were recorded: those have no window flag).
    CheckConstraint(
        "(verification_visited_on IS NULL) = (verification_findings IS NULL)"
        " AND (reverification_visited_on IS NULL) = (reverification_findings IS NULL)"
        " AND (verification_outside_window IS NULL OR verification_visited_on IS NOT NULL)"
        " AND (reverified_emissions IS NULL OR reverification_visited_on IS NOT NULL)",
        name="ck_cases_visits",
    ),
    CheckConstraint(
        "(verified_emissions IS NOT NULL OR verification_outside_window IS NULL)"
        " AND (reverified_emissions IS NULL) = (reverification_outside_window IS NULL)",
        name="ck_cases_window",
    ),
    CheckConstraint("revision >= 0", name="ck_cases_revision"),
    Index("ix_cases_year_status", "compliance_year", "status"),
)

# Every change of every case: who, when, from which status to which, and why.
case_history = Table(
    "case_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", ForeignKey("cases.case_id"), nullable=False, index=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("by", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
)

# Production outputs of a case, as JSON lists: as reported ("report-<version>") and as the
# agency verified them in each round ("verification", "reverification"). The final figure
# carries the final round's (allocation by output reads them).
case_outputs = Table(
    "case_outputs",
    metadata,
    Column("case_id", ForeignKey("cases.case_id"), primary_key=True),
    Column("source", String(32), primary_key=True),
    Column("outputs", Text, nullable=False),
)

# A year's verification closes once.
year_closures = Table(
    "year_closures",
    metadata,
    Column("compliance_year", Integer, primary_key=True, autoincrement=False),
    Column("policy", String(64), nullable=False),
    Column("cases", Integer, nullable=False),
    Column("total_verified_emissions", ScaledDecimal(3), nullable=False),
    Column("closed_at", UtcDateTime(), nullable=False),
    Column("closed_by", String(128), nullable=False),
    CheckConstraint("cases >= 0", name="ck_year_closures_cases"),
)


def _replace_outputs(insert: Callable[[Table], Any]) -> Any:
    statement = insert(case_outputs)
    return statement.on_conflict_do_update(
        index_elements=["case_id", "source"], set_={"outputs": statement.excluded.outputs}
    )


def _insert_new(table: Table) -> Callable[[Callable[[Table], Any]], Any]:
    def build(insert: Callable[[Table], Any]) -> Any:
        return insert(table).on_conflict_do_nothing()

    return build


# Built once: executing a prepared statement with parameters costs a third of building one.
_WITH_ROSTER = cases.outerjoin(
    roster,
    and_(
        roster.c.credit_code == cases.c.credit_code,
        roster.c.compliance_year == cases.c.compliance_year,
    ),
)
_CASES = select(cases, roster.c.district, roster.c.sector).select_from(_WITH_ROSTER)
_CASE = _CASES.where(cases.c.case_id == bindparam("key"))
_ROSTERED = (
    select(roster)
    .where(roster.c.credit_code == bindparam("code"))
    .where(roster.c.compliance_year == bindparam("year"))
)
_ADD_TO_ROSTER = Upsert(_insert_new(roster))
_OPEN = Upsert(_insert_new(cases))
_SAVE = (
    update(cases)
    .where(cases.c.case_id == bindparam("key"))
    # Never over a change made since the case was read (another instance, another request).
    .where(cases.c.status == bindparam("expected_status"))
    .where(cases.c.revision == bindparam("expected_revision"))
)
_HISTORY = case_history.insert()
_HISTORY_OF = (
    select(case_history)
    .where(case_history.c.case_id == bindparam("key"))
    .order_by(case_history.c.id)
)
_BY_STATUS = (
    select(cases.c.status, func.count())
    .where(cases.c.compliance_year == bindparam("year"))
    .group_by(cases.c.status)
)
_ROSTER_SIZE = (
    select(func.count()).select_from(roster).where(roster.c.compliance_year == bindparam("year"))
)
_WITHOUT_CASE = (
    select(roster.c.credit_code)
    .where(roster.c.compliance_year == bindparam("year"))
    .where(
        ~exists().where(
            cases.c.credit_code == roster.c.credit_code,
            cases.c.compliance_year == roster.c.compliance_year,
        )
    )
    .order_by(roster.c.credit_code)
)
_SAVE_OUTPUTS = Upsert(_replace_outputs)
_OUTPUTS = select(case_outputs.c.source, case_outputs.c.outputs).where(
    case_outputs.c.case_id == bindparam("key")
)
_CLOSURE = select(year_closures).where(year_closures.c.compliance_year == bindparam("year"))
_CLOSE = year_closures.insert()


# --- the roster -------------------------------------------------------------------------------


async def add_to_roster(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    district: str,
    sector: str,
    at: datetime,
) -> None:
    """Once per entity and year: a redelivered registration changes nothing."""
    await conn.execute(
        _ADD_TO_ROSTER.on(conn),
        {
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "district": district,
            "sector": sector,
            "registered_at": at,
        },
    )


async def get_rostered(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    return (await conn.execute(_ROSTERED, {"code": credit_code, "year": compliance_year})).first()


async def count_rostered(conn: AsyncConnection, *, compliance_year: int) -> int:
    return int((await conn.execute(_ROSTER_SIZE, {"year": compliance_year})).scalar_one())


async def rostered_without_case(conn: AsyncConnection, *, compliance_year: int) -> list[str]:
    """Credit codes on the year's roster with neither a report's case nor a determination."""
    return list((await conn.execute(_WITHOUT_CASE, {"year": compliance_year})).scalars())


# --- cases ------------------------------------------------------------------------------------


async def get_case(conn: AsyncConnection, *, case_id: str) -> Any:
    """The case with its entity's district and sector (None while not on the roster)."""
    return (await conn.execute(_CASE, {"key": case_id})).first()


async def list_cases(
    conn: AsyncConnection,
    *,
    compliance_year: int | None = None,
    credit_code: str | None = None,
    status: str | None = None,
    round_: str | None = None,
    agency_id: str | None = None,
    worked_by: str | None = None,
    district: str | None = None,
    sector: str | None = None,
) -> list[Any]:
    """Cases in the order they were opened, each with its entity's district and sector.
    `worked_by`: an agency at work on the case or that verified its first round."""
    query = _CASES.order_by(cases.c.opened_at, cases.c.case_id)
    if worked_by is not None:
        query = query.where(
            (cases.c.agency_id == worked_by) | (cases.c.first_agency_id == worked_by)
        )
    for column, wanted in (
        (cases.c.compliance_year, compliance_year),
        (cases.c.credit_code, credit_code),
        (cases.c.status, status),
        (cases.c.round, round_),
        (cases.c.agency_id, agency_id),
        (roster.c.district, district),
        (roster.c.sector, sector),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    return list(await conn.execute(query))


async def cases_by_status(conn: AsyncConnection, *, compliance_year: int) -> dict[str, int]:
    rows = await conn.execute(_BY_STATUS, {"year": compliance_year})
    return {status: int(count) for status, count in rows}


async def open_case(conn: AsyncConnection, *, case: Case) -> bool:
    """False when the case exists already (a redelivery, or another instance opened it)."""
    opened = await conn.execute(_OPEN.on(conn), {**_values(case), **_identity(case)})
    return opened.rowcount == 1


async def save_case(conn: AsyncConnection, *, before: Case, after: Case) -> bool:
    """False when the case changed since `before` was read: nothing is written then."""
    saved = await conn.execute(
        _SAVE,
        {
            **_values(replace(after, revision=before.revision + 1)),
            "key": str(before.case_id),
            "expected_status": before.status,
            "expected_revision": before.revision,
        },
    )
    return saved.rowcount == 1


async def add_history(
    conn: AsyncConnection,
    *,
    case_id: UUID,
    at: datetime,
    by: str,
    action: str,
    from_status: str | None,
    to_status: str,
    reason: str | None,
) -> None:
    await conn.execute(
        _HISTORY,
        {
            "case_id": str(case_id),
            "at": at,
            "by": by,
            "action": action,
            "from_status": from_status,
            "to_status": to_status,
            "reason": reason,
        },
    )


async def get_history(conn: AsyncConnection, *, case_id: str) -> list[Any]:
    return list(await conn.execute(_HISTORY_OF, {"key": case_id}))


def to_case(row: Any) -> Case:
    return Case(
        case_id=UUID(row.case_id),
        report_id=UUID(row.report_id) if row.report_id else None,
        determination_id=UUID(row.determination_id) if row.determination_id else None,
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        status=row.status,
        round=row.round,
        report_version=row.report_version,
        reported_emissions=row.reported_emissions,
        lot_id=row.lot_id,
        agency_id=row.agency_id,
        first_agency_id=row.first_agency_id,
        verified_emissions=row.verified_emissions,
        reverified_emissions=row.reverified_emissions,
        final_emissions=row.final_emissions,
        final_basis=row.final_basis,
        selected_by=row.selected_by,
        selection_reason=row.selection_reason,
        contact_name=row.contact_name,
        contact_phone=row.contact_phone,
        verification_visit=_visit(row.verification_visited_on, row.verification_findings),
        reverification_visit=_visit(row.reverification_visited_on, row.reverification_findings),
        verification_outside_window=row.verification_outside_window,
        reverification_outside_window=row.reverification_outside_window,
        opened_at=row.opened_at,
        assigned_at=row.assigned_at,
        returned_at=row.returned_at,
        approved_at=row.approved_at,
        selected_at=row.selected_at,
        reverified_at=row.reverified_at,
        finalised_at=row.finalised_at,
        revision=row.revision,
    )


def _visit(visited_on: Any, findings: str | None) -> SiteVisit | None:
    return SiteVisit(visited_on, findings) if visited_on is not None and findings else None


def _identity(case: Case) -> dict[str, Any]:
    return {
        "case_id": str(case.case_id),
        "report_id": str(case.report_id) if case.report_id else None,
        "determination_id": str(case.determination_id) if case.determination_id else None,
        "credit_code": case.credit_code,
        "compliance_year": case.compliance_year,
        "opened_at": case.opened_at,
    }


def _values(case: Case) -> dict[str, Any]:
    """The columns a change may write."""
    visit, revisit = case.verification_visit, case.reverification_visit
    values: dict[str, Any] = {
        "status": case.status,
        "round": case.round,
        "report_version": case.report_version,
        "reported_emissions": case.reported_emissions,
        "lot_id": case.lot_id,
        "agency_id": case.agency_id,
        "first_agency_id": case.first_agency_id,
        "verified_emissions": case.verified_emissions,
        "reverified_emissions": case.reverified_emissions,
        "final_emissions": case.final_emissions,
        "final_basis": case.final_basis,
        "selected_by": case.selected_by,
        "selection_reason": case.selection_reason,
        "contact_name": case.contact_name,
        "contact_phone": case.contact_phone,
        "verification_visited_on": visit.visited_on if visit else None,
        "verification_findings": visit.findings if visit else None,
        "reverification_visited_on": revisit.visited_on if revisit else None,
        "reverification_findings": revisit.findings if revisit else None,
        "verification_outside_window": case.verification_outside_window,
        "reverification_outside_window": case.reverification_outside_window,
        "assigned_at": case.assigned_at,
        "returned_at": case.returned_at,
        "approved_at": case.approved_at,
        "selected_at": case.selected_at,
        "reverified_at": case.reverified_at,
        "finalised_at": case.finalised_at,
        "revision": case.revision,
    }
    return values


# --- closing the year -------------------------------------------------------------------------


async def save_outputs(
    conn: AsyncConnection, *, case_id: str, source: str, outputs: list[dict[str, Any]]
) -> None:
    await conn.execute(
        _SAVE_OUTPUTS.on(conn),
        {"case_id": case_id, "source": source, "outputs": json.dumps(outputs)},
    )


async def get_outputs(conn: AsyncConnection, *, case_id: str) -> dict[str, list[dict[str, Any]]]:
    rows = await conn.execute(_OUTPUTS, {"key": case_id})
    return {row.source: json.loads(row.outputs) for row in rows}


async def get_closure(conn: AsyncConnection, *, compliance_year: int) -> Any:
    return (await conn.execute(_CLOSURE, {"year": compliance_year})).first()


async def close_year(
    conn: AsyncConnection,
    *,
    compliance_year: int,
    policy: str,
    cases: int,
    total_verified_emissions: Decimal,
    closed_by: str,
    at: datetime,
) -> None:
    """The primary key closes a year once, whichever instance gets there first."""
    await conn.execute(
        _CLOSE,
        {
            "compliance_year": compliance_year,
            "policy": policy,
            "cases": cases,
            "total_verified_emissions": total_verified_emissions,
            "closed_at": at,
            "closed_by": closed_by,
        },
    )
