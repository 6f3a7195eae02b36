"""The reporting system's commands and event handlers: each a function over a unit of work that
loads state, applies the domain rules and records the events it causes. No HTTP, no Kafka."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from carbon_contracts.errors import Conflict, Invalid, NotFound
from carbon_contracts.events import EntityRegistered, ReportLine, ReportSubmitted
from carbon_platform import metrics
from carbon_platform.codec import Event
from carbon_platform.context import Handler, UnitOfWork
from reporting import store
from carbon_emissions.calculation import ActivityLine, CalculationError, FactorTable, calculate
from reporting.schemas import SubmitReport, SubmittedReport


async def submit_report(uow: UnitOfWork, command: SubmitReport) -> SubmittedReport:
    """A covered entity submits its annual report as activity lines; the total is computed from
    the policy's factor table, never typed."""
    code, year = command.credit_code, command.compliance_year
    try:
        calculation = calculate(
            [
                ActivityLine(source=i.source, activity=i.activity, fuel=i.fuel)
                for i in command.lines
            ],
            FactorTable.from_policy(uow.policy),
        )
    except CalculationError as error:
        raise Invalid("invalid_activity", str(error)) from error
    if not await store.get_rostered(uow.conn, credit_code=code, compliance_year=year):
        raise NotFound("unknown_entity", f"{code} is not a registered covered entity for {year}")
    if await store.find_report(uow.conn, credit_code=code, compliance_year=year):
        raise Conflict("already_submitted", f"{code} already submitted its {year} report")
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
    await store.add_report(
        uow.conn,
        report_id=str(report_id),
        credit_code=code,
        compliance_year=year,
        calculation=calculation,
        lines_json=[line.model_dump(mode="json") for line in lines],
        submitted_by=command.submitted_by,
        at=uow.now,
    )
    event = uow.record(
        ReportSubmitted(
            credit_code=code,
            compliance_year=year,
            report_id=report_id,
            factor_table=calculation.factor_table,
            lines=lines,
            total_emissions=calculation.total,
            submitted_at=uow.now,
        )
    )
    uow.on_commit(metrics.REPORTS_SUBMITTED.inc)
    return SubmittedReport(
        report_id=report_id,
        credit_code=code,
        compliance_year=year,
        factor_table=calculation.factor_table,
        lines=lines,
        total_emissions=calculation.total,
        submitted_at=uow.now,
        event_id=event.event_id,
    )


async def on_entity_registered(uow: UnitOfWork, event: Event[Any]) -> None:
    """Reporting learns who may report, and where they are supervised, from the registry."""
    registered: EntityRegistered = event.payload
    await store.add_to_roster(
        uow.conn,
        credit_code=registered.credit_code,
        compliance_year=registered.compliance_year,
        name=registered.name,
        district=registered.district,
    )


HANDLERS: dict[str, dict[str, Handler]] = {
    "entity.registered": {"entity.registered": on_entity_registered}
}
