"""Verification opens a case for every submitted report."""

from __future__ import annotations

from typing import Any

from carbon_contracts.events import ReportSubmitted
from carbon_platform.codec import Event
from carbon_platform.context import ServiceContext, Transaction
from carbon_platform.errors import Conflict
from verification import store
from verification.domain.case import Case, case_id_for


async def on_report_submitted(event: Event[Any], tx: Transaction, _context: ServiceContext) -> None:
    report: ReportSubmitted = event.payload
    case_id = case_id_for(report.report_id)
    if await store.get_case(tx.conn, case_id=str(case_id)):
        raise Conflict("case_exists", f"report {report.report_id} already has case {case_id}")
    await store.open_case(
        tx.conn,
        case=Case(
            case_id=case_id,
            report_id=report.report_id,
            credit_code=report.credit_code,
            compliance_year=report.compliance_year,
            reported_emissions=report.total_emissions,
        ),
        at=tx.now,
    )


HANDLERS = {"report.submitted": {"report.submitted": on_report_submitted}}
