"""Verification HTTP API: the Bureau assigns agencies; agencies approve verified emissions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from carbon_contracts.events import VerificationApproved, VerificationAssigned
from carbon_contracts.types import Identifier, TonnesCO2
from carbon_platform.auth import Principal, require
from carbon_platform.context import ServiceContext, service_context
from carbon_platform.errors import Conflict, NotFound
from verification import store

router = APIRouter(tags=["verification"])
Context = Annotated[ServiceContext, Depends(service_context)]


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agency_id: Identifier = Field(description="verification agency from the tender results")


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verified_emissions: TonnesCO2 = Field(description="tCO2e, decimal string with 3 decimals")


def _case_view(row: Any) -> dict[str, Any]:
    return {
        "case_id": row.case_id,
        "report_id": row.report_id,
        "credit_code": row.credit_code,
        "compliance_year": row.compliance_year,
        "status": row.status,
        "agency_id": row.agency_id,
        "reported_emissions": f"{row.reported_emissions:.3f}",
        "verified_emissions": (
            f"{row.verified_emissions:.3f}" if row.verified_emissions is not None else None
        ),
        "opened_at": row.opened_at.isoformat(),
        "assigned_at": row.assigned_at.isoformat() if row.assigned_at else None,
        "approved_at": row.approved_at.isoformat() if row.approved_at else None,
    }


def _may_see(principal: Principal, row: Any) -> bool:
    return (
        principal.role == "regulator"
        or (principal.role == "verifier" and principal.agency == row.agency_id)
        or (principal.role == "entity" and principal.credit_code == row.credit_code)
    )


@router.get("/cases")
async def list_cases(
    context: Context,
    principal: Annotated[Principal, Depends(require("regulator", "verifier", "entity"))],
    credit_code: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Cases: the Bureau sees all, an agency its own, an entity its own."""
    async with context.engine.connect() as conn:
        rows = await store.list_cases(
            conn,
            credit_code=principal.credit_code if principal.role == "entity" else credit_code,
            agency_id=principal.agency if principal.role == "verifier" else None,
            status=status,
        )
    return [_case_view(row) for row in rows]


async def _load(conn: Any, case_id: str) -> Any:
    row = await store.get_case(conn, case_id=case_id)
    if row is None:
        raise NotFound("unknown_case", f"no verification case {case_id}")
    return row


@router.get("/cases/{case_id}")
async def get_case(
    case_id: str,
    context: Context,
    principal: Annotated[Principal, Depends(require("regulator", "verifier", "entity"))],
) -> dict[str, Any]:
    async with context.engine.connect() as conn:
        row = await _load(conn, case_id)
    if not _may_see(principal, row):
        raise HTTPException(403, "this case belongs to another entity or agency")
    return _case_view(row)


@router.post("/cases/{case_id}/assign")
async def assign(
    case_id: str,
    body: Assignment,
    context: Context,
    _: Annotated[Principal, Depends(require("regulator"))],
) -> dict[str, Any]:
    """The Bureau assigns the verification agency."""
    async with context.transaction() as tx:
        case = store.to_case(await _load(tx.conn, case_id)).assign(body.agency_id)
        if not await store.save_assignment(tx.conn, case=case, at=tx.now):
            raise Conflict("case_closed", f"case {case_id} was approved meanwhile")
        event = tx.publish(
            VerificationAssigned(
                credit_code=case.credit_code,
                compliance_year=case.compliance_year,
                case_id=case.case_id,
                report_id=case.report_id,
                agency_id=body.agency_id,
                assigned_at=tx.now,
            )
        )
        row = await _load(tx.conn, case_id)
    return {**_case_view(row), "event_id": event.event_id}


@router.post("/cases/{case_id}/approve")
async def approve(
    case_id: str,
    body: Approval,
    context: Context,
    principal: Annotated[Principal, Depends(require("verifier"))],
) -> dict[str, Any]:
    """The assigned agency records the verified emissions and approves."""
    async with context.transaction() as tx:
        case = store.to_case(await _load(tx.conn, case_id)).approve(
            agency_id=principal.agency or "", verified_emissions=body.verified_emissions
        )
        if not await store.save_approval(tx.conn, case=case, by=principal.subject, at=tx.now):
            raise Conflict("case_changed", f"case {case_id} was approved or reassigned meanwhile")
        event = tx.publish(
            VerificationApproved(
                credit_code=case.credit_code,
                compliance_year=case.compliance_year,
                case_id=case.case_id,
                report_id=case.report_id,
                agency_id=case.agency_id or "",
                reported_emissions=case.reported_emissions,
                verified_emissions=body.verified_emissions,
                approved_at=tx.now,
            )
        )
        row = await _load(tx.conn, case_id)
    return {**_case_view(row), "event_id": event.event_id}
