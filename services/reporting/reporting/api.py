"""Reporting HTTP API: the direct reporting system's annual emissions reports."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from uuid import uuid4

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from carbon_contracts.events import ReportLine, ReportSubmitted
from carbon_contracts.types import ComplianceYear, DecimalString, Identifier
from carbon_platform import metrics
from carbon_platform.auth import Principal, require
from carbon_platform.context import ServiceContext, service_context
from carbon_platform.errors import Conflict, Invalid, NotFound
from reporting import store
from reporting.domain.calculation import (
    ActivityLine,
    CalculationError,
    FactorTable,
    calculate,
)

router = APIRouter(tags=["reporting"])
Context = Annotated[ServiceContext, Depends(service_context)]


class ActivityInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["fuel", "electricity", "heat"]
    fuel: Identifier | None = Field(default=None, description="fuel code for source=fuel")
    activity: DecimalString = Field(
        description="decimal string in the factor's unit: 10^4 kWh, GJ, t or 10^4 Nm3"
    )


class ReportInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compliance_year: ComplianceYear
    lines: list[ActivityInput] = Field(min_length=1, max_length=500)


def _factor_table(context: ServiceContext) -> FactorTable:
    return FactorTable.from_policy(context.policy)


@router.get("/factors")
async def factor_table(context: Context) -> dict[str, Any]:
    """The versioned emission factor table in force."""
    table = _factor_table(context)
    return {
        "version": table.version,
        "electricity": {"unit": table.electricity.unit, "factor": str(table.electricity.factor)},
        "heat": {"unit": table.heat.unit, "factor": str(table.heat.factor)},
        "fuels": {
            name: {"unit": factor.unit, "factor": str(factor.factor)}
            for name, factor in table.fuels.items()
        },
    }


@router.post("/reports", status_code=201)
async def submit_report(
    body: ReportInput,
    context: Context,
    principal: Annotated[Principal, Depends(require("entity"))],
) -> dict[str, Any]:
    """The entity submits its annual report as activity lines; the total is computed."""
    code = principal.credit_code or ""
    try:
        calculation = calculate(
            [ActivityLine(source=i.source, activity=i.activity, fuel=i.fuel) for i in body.lines],
            _factor_table(context),
        )
    except CalculationError as error:
        raise Invalid("invalid_activity", str(error)) from error
    lines = [
        ReportLine(
            source=line.source,
            fuel=line.fuel,
            activity=line.activity,
            unit=line.unit,
            factor=line.factor,
            emissions=line.emissions,
        )
        for line in calculation.lines
    ]
    report_id = uuid4()
    async with context.transaction() as tx:
        if not await store.get_rostered(
            tx.conn, credit_code=code, compliance_year=body.compliance_year
        ):
            raise NotFound(
                "unknown_entity",
                f"{code} is not a registered covered entity for {body.compliance_year}",
            )
        if await store.find_report(tx.conn, credit_code=code, compliance_year=body.compliance_year):
            raise Conflict(
                "already_submitted", f"{code} already submitted its {body.compliance_year} report"
            )
        await store.add_report(
            tx.conn,
            report_id=str(report_id),
            credit_code=code,
            compliance_year=body.compliance_year,
            calculation=calculation,
            lines_json=[line.model_dump(mode="json") for line in lines],
            submitted_by=principal.subject,
            at=tx.now,
        )
        event = tx.publish(
            ReportSubmitted(
                credit_code=code,
                compliance_year=body.compliance_year,
                report_id=report_id,
                factor_table=calculation.factor_table,
                lines=lines,
                total_emissions=calculation.total,
                submitted_at=tx.now,
            )
        )
        tx.after_commit.append(metrics.REPORTS_SUBMITTED.inc)
    return {
        "report_id": str(report_id),
        "credit_code": code,
        "compliance_year": body.compliance_year,
        "factor_table": calculation.factor_table,
        "lines": [line.model_dump(mode="json") for line in lines],
        "total_emissions": f"{calculation.total:.3f}",
        "event_id": event.event_id,
    }


def _report_view(row: Any) -> dict[str, Any]:
    return {
        "report_id": row.report_id,
        "credit_code": row.credit_code,
        "compliance_year": row.compliance_year,
        "factor_table": row.factor_table,
        "lines": json.loads(row.lines),
        "total_emissions": f"{row.total_emissions:.3f}",
        "submitted_at": row.submitted_at.isoformat(),
    }


@router.get("/reports/{report_id}")
async def get_report(
    report_id: str,
    context: Context,
    principal: Annotated[Principal, Depends(require("regulator", "entity", "district"))],
) -> dict[str, Any]:
    async with context.engine.connect() as conn:
        row = await store.get_report(conn, report_id=report_id)
        rostered = row and await store.get_rostered(
            conn, credit_code=row.credit_code, compliance_year=row.compliance_year
        )
    if row is None:
        raise NotFound("unknown_report", f"no report {report_id}")
    if not (
        principal.role == "regulator"
        or (principal.role == "entity" and principal.credit_code == row.credit_code)
        or (principal.role == "district" and rostered and principal.district == rostered.district)
    ):
        raise HTTPException(403, "this report belongs to another entity")
    return _report_view(row)


@router.get("/reports")
async def list_reports(
    context: Context,
    principal: Annotated[Principal, Depends(require("regulator", "entity", "district"))],
    credit_code: str | None = None,
) -> list[dict[str, Any]]:
    """Reports; an entity sees only its own, a district those of its entities."""
    if principal.role == "entity":
        credit_code = principal.credit_code
    async with context.engine.connect() as conn:
        rows = await store.list_reports(
            conn,
            credit_code=credit_code,
            district=principal.district if principal.role == "district" else None,
        )
    return [_report_view(row) for row in rows]
