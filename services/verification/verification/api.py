"""Verification HTTP API: routes parse, authorise, call a command and answer with its typed
view; queries read the database."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from carbon_platform.access import CASE, allowed
from carbon_platform.auth import Principal, current_principal
from carbon_platform.context import Context
from carbon_platform.http import refusals
from verification import commands, store
from verification.domain.case import Round, Status
from verification.schemas import (
    AgencyView,
    ApprovalInput,
    ApproveCase,
    ApprovedCase,
    AssignCase,
    AssignLot,
    Assignment,
    CaseDetail,
    CaseView,
    ChangedCase,
    ContactInput,
    FinaliseCase,
    LotAssignment,
    LotsView,
    LotView,
    NameContact,
    RecordSiteVisit,
    ReturnCase,
    ReturnInput,
    SelectCase,
    Selection,
    SelectionInput,
    SiteVisitInput,
    YearClosure,
    YearCommand,
    YearView,
)

router = APIRouter(tags=["verification"])
Bureau = Annotated[Principal, allowed(CASE, "select")]


@router.get("/lots", response_model=LotsView)
async def lots(context: Context, _: Annotated[Principal, Depends(current_principal)]) -> LotsView:
    """The policy's verification agencies and tender lots (any valid token)."""
    policy = context.policy
    rules = policy.verification
    return LotsView(
        policy=policy.cycle,
        compliance_year=policy.compliance_year,
        agencies=[AgencyView(id=agency.id, name=agency.name) for agency in rules.agencies],
        lots=[
            LotView(
                id=lot.id,
                round=lot.round,
                agency=lot.agency,
                sectors=lot.sectors,
                districts=lot.districts,
            )
            for lot in rules.lots
        ],
    )


@router.get("/cases", responses=refusals(403), response_model=list[CaseView])
async def list_cases(
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "read")],
    credit_code: str | None = None,
    status: Status | None = None,
    district: str | None = None,
    sector: str | None = None,
    lot_id: str | None = None,
    round: Round | None = None,
    agency_id: str | None = None,
    compliance_year: int | None = None,
) -> list[CaseView]:
    """Cases in the order they were opened: the Bureau sees all, an entity its own, a district
    its entities', an agency the cases it is at work on or verified in the first round. A filter
    never widens that."""
    scope = CASE.scope(principal, "read")
    async with context.reader.connect() as conn:
        rows = await store.list_cases(
            conn,
            compliance_year=compliance_year,
            credit_code=scope.credit_code or credit_code,
            status=status,
            round_=round,
            agency_id=agency_id,
            worked_by=scope.agency,
            district=scope.district or district,
            sector=sector,
        )
    views = [
        commands.case_view(store.to_case(row), row.district, row.sector, context.policy)
        for row in rows
    ]
    return [view for view in views if lot_id is None or view.lot_id == lot_id]


@router.get("/cases/{case_id}", responses=refusals(403, 404), response_model=CaseDetail)
async def get_case(
    case_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "read")],
) -> CaseDetail:
    """One case with its audit trail: its entity, the entity's district, the agency at work
    and the Bureau may read it."""
    async with context.reader.connect() as conn:
        row = await commands.load_case(conn, case_id)
        CASE.check_any(principal, "read", commands.readers_of(row))
        return await commands.case_detail(conn, row, context.policy)


@router.post(
    "/lots/{lot_id}/assign", responses=refusals(403, 404, 409), response_model=LotAssignment
)
async def assign_lot(
    lot_id: str, context: Context, principal: Annotated[Principal, allowed(CASE, "assign")]
) -> LotAssignment:
    """The Bureau assigns every waiting case of a tender lot to the lot's agency
    (`verification.assigned` each)."""
    return await context.execute(
        commands.assign_lot, AssignLot(lot_id=lot_id, by=principal.subject)
    )


@router.post(
    "/cases/{case_id}/assign", responses=refusals(403, 404, 409), response_model=ChangedCase
)
async def assign(
    case_id: str,
    body: Assignment,
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "assign")],
) -> ChangedCase:
    """The Bureau assigns one case to the agency of its lot (`verification.assigned`)."""
    command = AssignCase(case_id=case_id, agency_id=body.agency_id, by=principal.subject)
    return await context.execute(commands.assign_case, command)


@router.post(
    "/cases/{case_id}/contact", responses=refusals(403, 404, 409), response_model=ChangedCase
)
async def name_contact(
    case_id: str,
    body: ContactInput,
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "name_contact")],
) -> ChangedCase:
    """The entity names its contact person for the agency."""
    async with context.reader.connect() as conn:
        CASE.check(
            principal, "name_contact", commands.owner_of(await commands.load_case(conn, case_id))
        )
    command = NameContact(case_id=case_id, by=principal.subject, **body.model_dump())
    return await context.execute(commands.name_contact, command)


@router.post(
    "/cases/{case_id}/site-visit", responses=refusals(403, 404, 409), response_model=ChangedCase
)
async def record_site_visit(
    case_id: str,
    body: SiteVisitInput,
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "verify")],
) -> ChangedCase:
    """The agency at work records its site visit and findings for the current round."""
    command = RecordSiteVisit(
        case_id=case_id, agency_id=principal.agency or "", by=principal.subject, **dict(body)
    )
    return await context.execute(commands.record_site_visit, command)


@router.post(
    "/cases/{case_id}/return", responses=refusals(403, 404, 409), response_model=ChangedCase
)
async def return_case(
    case_id: str,
    body: ReturnInput,
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "verify")],
) -> ChangedCase:
    """The verifier returns the report to the entity for correction (`verification.returned`)."""
    command = ReturnCase(
        case_id=case_id, agency_id=principal.agency or "", by=principal.subject, reason=body.reason
    )
    return await context.execute(commands.return_case, command)


@router.post(
    "/cases/{case_id}/approve", responses=refusals(403, 404, 409), response_model=ApprovedCase
)
async def approve(
    case_id: str,
    body: ApprovalInput,
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "approve")],
) -> ApprovedCase:
    """The agency at work approves with the verified activity lines, recomputed by the engine
    (`verification.approved`; in re-verification `reverification.completed` and
    `verification.finalised`)."""
    command = ApproveCase(
        case_id=case_id, agency_id=principal.agency or "", by=principal.subject, lines=body.lines
    )
    return await context.execute(commands.approve, command)


@router.post(
    "/cases/{case_id}/select", responses=refusals(403, 404, 409), response_model=ChangedCase
)
async def select(
    case_id: str, body: SelectionInput, context: Context, principal: Bureau
) -> ChangedCase:
    """The Bureau selects an approved case for re-verification (`reverification.selected`)."""
    command = SelectCase(case_id=case_id, by=principal.subject, reason=body.reason)
    return await context.execute(commands.select, command)


@router.post(
    "/cases/{case_id}/finalise", responses=refusals(403, 404, 409), response_model=ChangedCase
)
async def finalise(case_id: str, context: Context, principal: Bureau) -> ChangedCase:
    """The Bureau makes an approved case's figure final without re-verification
    (`verification.finalised`)."""
    command = FinaliseCase(case_id=case_id, by=principal.subject)
    return await context.execute(commands.finalise, command)


@router.post("/years/{year}/selection", responses=refusals(403, 409), response_model=Selection)
async def apply_selection_rule(year: int, context: Context, principal: Bureau) -> Selection:
    """The policy's re-verification rule over every approved case of the year: selected
    (`reverification.selected`) or final (`verification.finalised`)."""
    command = YearCommand(compliance_year=year, by=principal.subject)
    return await context.execute(commands.apply_selection_rule, command)


@router.post("/years/{year}/close", responses=refusals(403, 409), response_model=YearClosure)
async def close_year(
    year: int, context: Context, principal: Annotated[Principal, allowed(CASE, "close")]
) -> YearClosure:
    """The Bureau closes the year's verification once every case is final
    (`verification.closed`)."""
    command = YearCommand(compliance_year=year, by=principal.subject)
    return await context.execute(commands.close_year, command)


@router.get("/years/{year}", responses=refusals(403), response_model=YearView)
async def year(year: int, context: Context, _: Bureau) -> YearView:
    """Where the year's verification stands: cases by status, entities without a case, closed."""
    async with context.reader.connect() as conn:
        return await commands.year_view(conn, context.policy, year)
