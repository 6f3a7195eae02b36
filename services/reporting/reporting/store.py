"""Reporting tables: the entity roster it learns from registry events, and the reports."""

from __future__ import annotations

import json
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
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.db import upsert
from carbon_platform.tables import ScaledDecimal, UtcDateTime, messaging_tables
from reporting.domain.calculation import Calculation

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


async def add_to_roster(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int, name: str, district: str
) -> None:
    await conn.execute(
        upsert(conn, roster)
        .values(
            credit_code=credit_code, compliance_year=compliance_year, name=name, district=district
        )
        .on_conflict_do_update(
            index_elements=["credit_code", "compliance_year"],
            set_={"name": name, "district": district},
        )
    )


async def get_rostered(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    return (
        await conn.execute(
            select(roster)
            .where(roster.c.credit_code == credit_code)
            .where(roster.c.compliance_year == compliance_year)
        )
    ).first()


async def find_report(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    return (
        await conn.execute(
            select(reports)
            .where(reports.c.credit_code == credit_code)
            .where(reports.c.compliance_year == compliance_year)
        )
    ).first()


async def get_report(conn: AsyncConnection, *, report_id: str) -> Any:
    return (await conn.execute(select(reports).where(reports.c.report_id == report_id))).first()


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
        reports.insert().values(
            report_id=report_id,
            credit_code=credit_code,
            compliance_year=compliance_year,
            factor_table=calculation.factor_table,
            lines=json.dumps(lines_json, ensure_ascii=False),
            total_emissions=calculation.total,
            submitted_by=submitted_by,
            submitted_at=at,
        )
    )
