"""Verification tables: one case per submitted report."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CheckConstraint,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.tables import ScaledDecimal, UtcDateTime, messaging_tables
from verification.domain.case import Case

metadata = MetaData()
messaging = messaging_tables(metadata)

cases = Table(
    "cases",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("report_id", String(36), nullable=False, unique=True),
    Column("credit_code", String(18), nullable=False, index=True),
    Column("compliance_year", Integer, nullable=False),
    Column("reported_emissions", ScaledDecimal(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("agency_id", String(64), nullable=True, index=True),
    Column("verified_emissions", ScaledDecimal(3), nullable=True),
    Column("opened_at", UtcDateTime(), nullable=False),
    Column("assigned_at", UtcDateTime(), nullable=True),
    Column("approved_at", UtcDateTime(), nullable=True),
    Column("approved_by", String(128), nullable=True),
    CheckConstraint("status IN ('opened', 'assigned', 'approved')", name="ck_cases_status"),
    CheckConstraint(
        "(status = 'opened' AND agency_id IS NULL)"
        " OR (status <> 'opened' AND agency_id IS NOT NULL)",
        name="ck_cases_agency",
    ),
    CheckConstraint(
        "(status = 'approved') = (verified_emissions IS NOT NULL)", name="ck_cases_verified"
    ),
)


def to_case(row: Any) -> Case:
    return Case(
        case_id=UUID(row.case_id),
        report_id=UUID(row.report_id),
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        reported_emissions=row.reported_emissions,
        status=row.status,
        agency_id=row.agency_id,
        verified_emissions=row.verified_emissions,
    )


# Built once: executing a prepared statement with parameters costs a third of building one.
_CASE = select(cases).where(cases.c.case_id == bindparam("key"))
_OPEN = cases.insert()
_ASSIGN = (
    update(cases)
    .where(cases.c.case_id == bindparam("key"))
    .where(cases.c.status != "approved")  # an approved case is never reopened
)
_APPROVE = (
    update(cases)
    .where(cases.c.case_id == bindparam("key"))
    # Never approve twice, nor for an agency the case was reassigned away from meanwhile.
    .where(cases.c.status == "assigned")
    .where(cases.c.agency_id == bindparam("assigned_agency"))
)


async def get_case(conn: AsyncConnection, *, case_id: str) -> Any:
    return (await conn.execute(_CASE, {"key": case_id})).first()


async def list_cases(
    conn: AsyncConnection,
    *,
    credit_code: str | None = None,
    agency_id: str | None = None,
    status: str | None = None,
) -> list[Any]:
    query = select(cases).order_by(cases.c.opened_at)
    if credit_code:
        query = query.where(cases.c.credit_code == credit_code)
    if agency_id:
        query = query.where(cases.c.agency_id == agency_id)
    if status:
        query = query.where(cases.c.status == status)
    return list(await conn.execute(query))


async def open_case(conn: AsyncConnection, *, case: Case, at: datetime) -> None:
    await conn.execute(
        _OPEN,
        {
            "case_id": str(case.case_id),
            "report_id": str(case.report_id),
            "credit_code": case.credit_code,
            "compliance_year": case.compliance_year,
            "reported_emissions": case.reported_emissions,
            "status": case.status,
            "opened_at": at,
        },
    )


async def save_assignment(conn: AsyncConnection, *, case: Case, at: datetime) -> bool:
    """False when the case was approved meanwhile."""
    result = await conn.execute(
        _ASSIGN,
        {
            "key": str(case.case_id),
            "status": case.status,
            "agency_id": case.agency_id,
            "assigned_at": at,
        },
    )
    return result.rowcount == 1


async def save_approval(conn: AsyncConnection, *, case: Case, by: str, at: datetime) -> bool:
    """False when the case was no longer awaiting approval (a concurrent approval won)."""
    result = await conn.execute(
        _APPROVE,
        {
            "key": str(case.case_id),
            "assigned_agency": case.agency_id,
            "status": case.status,
            "verified_emissions": case.verified_emissions,
            "approved_at": at,
            "approved_by": by,
        },
    )
    return result.rowcount == 1
