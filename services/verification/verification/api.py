"""Verification HTTP API: routes parse, authorise, call a command and answer with its typed
view; queries read the database."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter

from carbon_platform.access import CASE, Owner, allowed
from carbon_platform.auth import Principal
from carbon_platform.context import Context
from carbon_platform.http import refusals
from verification import commands, store
from verification.schemas import (
    Approval,
    ApproveCase,
    AssignCase,
    Assignment,
    CaseView,
    ChangedCase,
)

router = APIRouter(tags=["verification"])


@router.get("/cases", responses=refusals(403), response_model=list[CaseView])
async def list_cases(
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "read")],
    credit_code: str | None = None,
    status: Literal["opened", "assigned", "approved"] | None = None,
) -> list[CaseView]:
    """Cases in the order they were opened: the Bureau sees all, an agency those assigned to
    it, an entity its own."""
    scope = CASE.scope(principal, "read")
    async with context.reader.connect() as conn:
        rows = await store.list_cases(
            conn,
            credit_code=scope.credit_code or credit_code,
            agency_id=scope.agency,
            status=status,
        )
    return [commands.case_view(row) for row in rows]


@router.get("/cases/{case_id}", responses=refusals(403, 404), response_model=CaseView)
async def get_case(
    case_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "read")],
) -> CaseView:
    async with context.reader.connect() as conn:
        row = await commands.load_case(conn, case_id)
    CASE.check(principal, "read", Owner(credit_code=row.credit_code, agency=row.agency_id))
    return commands.case_view(row)


@router.post(
    "/cases/{case_id}/assign", responses=refusals(403, 404, 409), response_model=ChangedCase
)
async def assign(
    case_id: str,
    body: Assignment,
    context: Context,
    _: Annotated[Principal, allowed(CASE, "assign")],
) -> ChangedCase:
    """The Bureau assigns the verification agency (`verification.assigned`)."""
    return await context.execute(
        commands.assign, AssignCase(case_id=case_id, agency_id=body.agency_id)
    )


@router.post(
    "/cases/{case_id}/approve", responses=refusals(403, 404, 409), response_model=ChangedCase
)
async def approve(
    case_id: str,
    body: Approval,
    context: Context,
    principal: Annotated[Principal, allowed(CASE, "approve")],
) -> ChangedCase:
    """The assigned agency records the verified emissions and approves
    (`verification.approved`)."""
    command = ApproveCase(
        case_id=case_id,
        agency_id=principal.agency or "",
        approved_by=principal.subject,
        verified_emissions=body.verified_emissions,
    )
    return await context.execute(commands.approve, command)
