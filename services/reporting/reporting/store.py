"""Reporting tables: the entity roster it learns from registry events, and the reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.db import Upsert
from carbon_platform.tables import ScaledDecimal, UtcDateTime, messaging_tables
from carbon_emissions.calculation import Calculation

metadata = MetaData()
messaging = messaging_tables(metadata)

# Projection of entity.registered: who may report for which year, and where they are.
roster = Table(
    "roster",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("district", String(64), nullable=False),
)

reports = Table(
    "reports",
    metadata,
    Column("report_id", String(36), primary_key=True),
    Column("credit_code", String(18), nullable=False),
    Column("compliance_year", Integer, nullable=False),
    Column("factor_table", String(64), nullable=False),
    Column("lines", Text, nullable=False),  # JSON, as published in report.submitted
    Column("total_emissions", ScaledDecimal(3), nullable=False),
    Column("submitted_by", String(128), nullable=False),
    Column("submitted_at", UtcDateTime(), nullable=False),
    # One annual report per entity and year (corrections are not modelled yet).
    UniqueConstraint("credit_code", "compliance_year", name="uq_reports_entity_year"),
)


def _roster_entry(insert: Callable[[Table], Any]) -> Any:
    statement = insert(roster)
    return statement.on_conflict_do_update(
        index_elements=["credit_code", "compliance_year"],
        set_={"name": statement.excluded.name, "district": statement.excluded.district},
    )


# Built once: executing a prepared statement with parameters costs a third of building one.
_ROSTER_ENTRY = Upsert(_roster_entry)
_ROSTERED = (
    select(roster)
    .where(roster.c.credit_code == bindparam("code"))
    .where(roster.c.compliance_year == bindparam("year"))
)
_REPORT_OF = (
    select(reports)
    .where(reports.c.credit_code == bindparam("code"))
    .where(reports.c.compliance_year == bindparam("year"))
)
_REPORT = select(reports).where(reports.c.report_id == bindparam("key"))
_ADD_REPORT = reports.insert()


async def add_to_roster(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int, name: str, district: str
) -> None:
    await conn.execute(
        _ROSTER_ENTRY.on(conn),
        {
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "name": name,
            "district": district,
        },
    )


async def get_rostered(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    return (await conn.execute(_ROSTERED, {"code": credit_code, "year": compliance_year})).first()


async def find_report(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    return (await conn.execute(_REPORT_OF, {"code": credit_code, "year": compliance_year})).first()


async def get_report(conn: AsyncConnection, *, report_id: str) -> Any:
    return (await conn.execute(_REPORT, {"key": report_id})).first()


async def list_reports(
    conn: AsyncConnection, *, credit_code: str | None, district: str | None = None
) -> list[Any]:
    query = select(reports).order_by(reports.c.submitted_at)
    if credit_code:
        query = query.where(reports.c.credit_code == credit_code)
    if district:
        query = query.join(
            roster,
            (roster.c.credit_code == reports.c.credit_code)
            & (roster.c.compliance_year == reports.c.compliance_year),
        ).where(roster.c.district == district)
    return list(await conn.execute(query))


async def add_report(
    conn: AsyncConnection,
    *,
    report_id: str,
    credit_code: str,
    compliance_year: int,
    calculation: Calculation,
    lines_json: list[dict[str, Any]],
    submitted_by: str,
    at: datetime,
) -> None:
    await conn.execute(
        _ADD_REPORT,
        {
            "report_id": report_id,
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "factor_table": calculation.factor_table,
            "lines": json.dumps(lines_json, ensure_ascii=False),
            "total_emissions": calculation.total,
            "submitted_by": submitted_by,
            "submitted_at": at,
        },
    )
