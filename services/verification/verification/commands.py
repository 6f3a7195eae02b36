"""Verification's commands and event handlers: each a function over a unit of work that loads
state, applies the domain rules and records the events it causes. No HTTP, no Kafka."""

from __future__ import annotations

from typing import Any

from carbon_contracts.errors import Conflict, NotFound
from carbon_contracts.events import ReportSubmitted, VerificationApproved, VerificationAssigned
from carbon_platform.codec import Event
from carbon_platform.context import Handler, UnitOfWork
from verification import store
from verification.domain.case import Case, case_id_for
from verification.schemas import ApproveCase, AssignCase, CaseView, ChangedCase


async def on_report_submitted(uow: UnitOfWork, event: Event[Any]) -> None:
    """Every submitted report opens one verification case."""
    report: ReportSubmitted = event.payload
    case_id = case_id_for(report.report_id)
    if await store.get_case(uow.conn, case_id=str(case_id)):
        raise Conflict("case_exists", f"report {report.report_id} already has case {case_id}")
    await store.open_case(
        uow.conn,
        case=Case(
            case_id=case_id,
            report_id=report.report_id,
            credit_code=report.credit_code,
            compliance_year=report.compliance_year,
            reported_emissions=report.total_emissions,
        ),
        at=uow.now,
    )


HANDLERS: dict[str, dict[str, Handler]] = {
    "report.submitted": {"report.submitted": on_report_submitted}
}


async def assign(uow: UnitOfWork, command: AssignCase) -> ChangedCase:
    """The Bureau assigns (or, before approval, reassigns) a verification agency."""
    case = store.to_case(await load_case(uow.conn, command.case_id)).assign(command.agency_id)
    if not await store.save_assignment(uow.conn, case=case, at=uow.now):
        raise Conflict("case_closed", f"case {command.case_id} was approved meanwhile")
    event = uow.record(
        VerificationAssigned(
            credit_code=case.credit_code,
            compliance_year=case.compliance_year,
            case_id=case.case_id,
            report_id=case.report_id,
            agency_id=command.agency_id,
            assigned_at=uow.now,
        )
    )
    return await _changed(uow, command.case_id, event.event_id)


async def approve(uow: UnitOfWork, command: ApproveCase) -> ChangedCase:
    """The assigned agency approves the case with the verified emissions, once."""
    case = store.to_case(await load_case(uow.conn, command.case_id)).approve(
        agency_id=command.agency_id, verified_emissions=command.verified_emissions
    )
    if not await store.save_approval(uow.conn, case=case, by=command.approved_by, at=uow.now):
        raise Conflict(
            "case_changed", f"case {command.case_id} was approved or reassigned meanwhile"
        )
    event = uow.record(
        VerificationApproved(
            credit_code=case.credit_code,
            compliance_year=case.compliance_year,
            case_id=case.case_id,
            report_id=case.report_id,
            agency_id=case.agency_id or "",
            reported_emissions=case.reported_emissions,
            verified_emissions=command.verified_emissions,
            approved_at=uow.now,
        )
    )
    return await _changed(uow, command.case_id, event.event_id)


async def load_case(conn: Any, case_id: str) -> Any:
    row = await store.get_case(conn, case_id=case_id)
    if row is None:
        raise NotFound("unknown_case", f"no verification case {case_id}")
    return row


async def _changed(uow: UnitOfWork, case_id: str, event_id: str) -> ChangedCase:
    view = case_view(await load_case(uow.conn, case_id))
    return ChangedCase(**view.model_dump(), event_id=event_id)


def case_view(row: Any) -> CaseView:
    return CaseView(
        case_id=row.case_id,
        report_id=row.report_id,
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        status=row.status,
        agency_id=row.agency_id,
        reported_emissions=row.reported_emissions,
        verified_emissions=row.verified_emissions,
        opened_at=row.opened_at,
        assigned_at=row.assigned_at,
        approved_at=row.approved_at,
    )
