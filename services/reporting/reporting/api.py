"""Reporting HTTP API: routes parse, authorise, call a command and answer with its typed view;
queries read the database."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter

from carbon_contracts.errors import NotFound
from carbon_platform.access import REPORT, Owner, allowed
from carbon_platform.auth import Principal
from carbon_platform.context import Context
from carbon_platform.http import refusals
from reporting import commands, store
from carbon_emissions.calculation import FactorTable
from reporting.schemas import (
    FactorTableView,
    FactorView,
    ReportInput,
    ReportView,
    SubmitReport,
    SubmittedReport,
)

router = APIRouter(tags=["reporting"])


@router.get("/factors", response_model=FactorTableView)
async def factor_table(context: Context) -> FactorTableView:
    """The versioned emission factor table in force (no token needed)."""
    table = FactorTable.from_policy(context.policy)
    return FactorTableView(
        version=table.version,
        electricity=FactorView(unit=table.electricity.unit, factor=table.electricity.factor),
        heat=FactorView(unit=table.heat.unit, factor=table.heat.factor),
        fuels={
            name: FactorView(unit=factor.unit, factor=factor.factor)
            for name, factor in table.fuels.items()
        },
    )


@router.post(
    "/reports", status_code=201, responses=refusals(403, 404, 409), response_model=SubmittedReport
)
async def submit_report(
    body: ReportInput,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "submit")],
) -> SubmittedReport:
    """The entity submits its annual report as activity lines; the total is computed
    (`report.submitted`). The report is always the token's entity's."""
    command = SubmitReport(
        **body.model_dump(), credit_code=principal.credit_code or "", submitted_by=principal.subject
    )
    return await context.execute(commands.submit_report, command)


def _report_view(row: Any) -> ReportView:
    return ReportView(
        report_id=row.report_id,
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        factor_table=row.factor_table,
        lines=json.loads(row.lines),
        total_emissions=row.total_emissions,
        submitted_at=row.submitted_at,
    )


@router.get("/reports/{report_id}", responses=refusals(403, 404), response_model=ReportView)
async def get_report(
    report_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "read")],
) -> ReportView:
    async with context.reader.connect() as conn:
        row = await store.get_report(conn, report_id=report_id)
        if row is None:
            raise NotFound("unknown_report", f"no report {report_id}")
        rostered = await store.get_rostered(
            conn, credit_code=row.credit_code, compliance_year=row.compliance_year
        )
    owner = Owner(credit_code=row.credit_code, district=rostered.district if rostered else None)
    REPORT.check(principal, "read", owner)
    return _report_view(row)


@router.get("/reports", responses=refusals(403), response_model=list[ReportView])
async def list_reports(
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "read")],
    credit_code: str | None = None,
) -> list[ReportView]:
    """Reports in submission order: an entity sees its own, a district those of its entities,
    the Bureau all (filtered by `credit_code` if given)."""
    scope = REPORT.scope(principal, "read")
    async with context.reader.connect() as conn:
        rows = await store.list_reports(
            conn, credit_code=scope.credit_code or credit_code, district=scope.district
        )
    return [_report_view(row) for row in rows]
