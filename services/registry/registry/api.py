"""Registry HTTP API: roster, accounts, holdings, surrender and compliance status."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from carbon_contracts.events import (
    AccountOpened,
    EntityRegistered,
    PreallocationIssued,
    SurrenderCompleted,
)
from carbon_contracts.types import ComplianceYear, Identifier
from carbon_platform import metrics
from carbon_platform.auth import Principal, require
from carbon_platform.context import ServiceContext, Transaction, service_context
from carbon_platform.errors import Conflict, Invalid, NotFound
from registry import store
from registry.domain import compliance
from registry.domain.credit_code import InvalidCreditCode, validate_credit_code

router = APIRouter(tags=["registry"])
Context = Annotated[ServiceContext, Depends(service_context)]


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credit_code: str = Field(description="unified social credit code, GB 32100-2015")
    name: str = Field(min_length=1, max_length=200)
    district: Identifier
    sector: Identifier
    compliance_year: ComplianceYear
    new_entrant: bool = False


class SurrenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compliance_year: ComplianceYear
    allowances: int = Field(gt=0, description="whole allowances to surrender")


def _valid_code(credit_code: str) -> str:
    try:
        return validate_credit_code(credit_code)
    except InvalidCreditCode as error:
        raise Invalid("invalid_credit_code", str(error)) from error


def _may_read(principal: Principal, credit_code: str, district: str) -> None:
    allowed = (
        principal.role == "regulator"
        or (principal.role == "entity" and principal.credit_code == credit_code)
        or (principal.role == "district" and principal.district == district)
    )
    if not allowed:
        raise HTTPException(403, "you may only see your own entity or your district's entities")


def _must_be(principal: Principal, credit_code: str) -> None:
    if principal.role == "entity" and principal.credit_code != credit_code:
        raise HTTPException(403, "an entity token may only act for its own credit code")


@router.post("/entities", status_code=201)
async def register_entity(
    body: Registration,
    context: Context,
    _: Annotated[Principal, Depends(require("regulator"))],
) -> dict[str, Any]:
    """The Bureau puts a covered entity on the year's roster."""
    code = _valid_code(body.credit_code)
    if body.compliance_year != context.policy.compliance_year:
        raise Invalid(
            "no_policy",
            f"no compliance policy loaded for {body.compliance_year} "
            f"(running {context.policy.cycle})",
        )
    async with context.transaction() as tx:
        if await store.is_rostered(tx.conn, credit_code=code, compliance_year=body.compliance_year):
            raise Conflict(
                "already_registered", f"{code} is already on the {body.compliance_year} roster"
            )
        await store.register(
            tx.conn,
            credit_code=code,
            name=body.name,
            district=body.district,
            sector=body.sector,
            compliance_year=body.compliance_year,
            new_entrant=body.new_entrant,
            at=tx.now,
        )
        event = tx.publish(
            EntityRegistered(
                credit_code=code,
                compliance_year=body.compliance_year,
                name=body.name,
                district=body.district,
                sector=body.sector,
                new_entrant=body.new_entrant,
                registered_at=tx.now,
            )
        )
    return {**body.model_dump(), "credit_code": code, "event_id": event.event_id}


@router.post("/entities/{credit_code}/account", status_code=201)
async def open_account(
    credit_code: str,
    context: Context,
    principal: Annotated[Principal, Depends(require("entity", "regulator"))],
) -> dict[str, Any]:
    """The entity opens its allowance account (once)."""
    code = _valid_code(credit_code)
    _must_be(principal, code)
    account_id = f"SHEA-{code}"
    async with context.transaction() as tx:
        if await store.get_entity(tx.conn, credit_code=code) is None:
            raise NotFound("unknown_entity", f"{code} is not a registered entity")
        if await store.get_account(tx.conn, credit_code=code) is not None:
            raise Conflict("account_exists", f"{code} already has an allowance account")
        await store.open_account(tx.conn, account_id=account_id, credit_code=code, at=tx.now)
        event = tx.publish(
            AccountOpened(
                credit_code=code,
                compliance_year=context.policy.compliance_year,
                account_id=account_id,
                opened_at=tx.now,
            )
        )
    return {"account_id": account_id, "credit_code": code, "event_id": event.event_id}


@router.get("/entities/{credit_code}")
async def entity_status(
    credit_code: str,
    context: Context,
    principal: Annotated[Principal, Depends(require("regulator", "entity", "district"))],
) -> dict[str, Any]:
    """Entity, account, holdings by vintage and compliance status per year."""
    code = _valid_code(credit_code)
    _must_be(principal, code)  # before the lookup: a 404 must not tell who is registered
    async with context.engine.connect() as conn:
        entity = await store.get_entity(conn, credit_code=code)
        if entity is None:
            raise NotFound("unknown_entity", f"{code} is not a registered entity")
        _may_read(principal, code, entity.district)
        account = await store.get_account(conn, credit_code=code)
        holdings = await store.get_holdings(conn, credit_code=code)
        obligations = await store.list_obligations(conn, credit_code=code)
    return {
        "credit_code": code,
        "name": entity.name,
        "district": entity.district,
        "sector": entity.sector,
        "account_id": account.account_id if account else None,
        "holdings": [{"vintage": v, "allowances": n} for v, n in holdings.items()],
        "total_allowances": sum(holdings.values()),
        "compliance": [_compliance_view(row) for row in obligations],
    }


def _compliance_view(row: Any) -> dict[str, Any]:
    return {
        "compliance_year": row.compliance_year,
        "verified_emissions": f"{row.verified_emissions:.3f}",
        "obligation": row.obligation,
        "surrendered": row.surrendered,
        "remaining": row.obligation - row.surrendered,
        "status": "compliant" if row.completed_at else "open",
        "completed_at": row.completed_at.isoformat() if row.completed_at else None,
        "on_time": row.on_time,
    }


@router.post("/entities/{credit_code}/surrenders", status_code=201)
async def surrender(
    credit_code: str,
    body: SurrenderRequest,
    context: Context,
    principal: Annotated[Principal, Depends(require("entity"))],
) -> dict[str, Any]:
    """Surrender allowances for a year; meeting the whole obligation completes compliance and
    issues next year's pre-allocation in the same transaction."""
    code = _valid_code(credit_code)
    _must_be(principal, code)
    policy = context.policy
    year = body.compliance_year
    async with context.transaction() as tx:
        if await store.get_account(tx.conn, credit_code=code) is None:
            raise Conflict("account_not_open", f"{code} has no allowance account")
        due = await store.get_obligation(tx.conn, credit_code=code, compliance_year=year)
        if due is None:
            raise NotFound("no_obligation", f"{code} has no verified emissions for {year} yet")
        plan = compliance.plan_surrender(
            compliance_year=year,
            requested=body.allowances,
            obligation=due.obligation,
            surrendered=due.surrendered,
            holdings=await store.get_holdings(tx.conn, credit_code=code),
        )
        for vintage, amount in plan:
            await store.move_allowances(
                tx.conn,
                credit_code=code,
                vintage=vintage,
                amount=-amount,
                kind="surrender",
                reference=f"surrender-{year}",
                at=tx.now,
            )
        surrendered = due.surrendered + body.allowances
        complete = surrendered == due.obligation
        deadline = policy.deadlines.surrender
        on_time = tx.now <= deadline
        await store.add_surrendered(
            tx.conn,
            credit_code=code,
            compliance_year=year,
            amount=body.allowances,
            completed_at=tx.now if complete else None,
            on_time=on_time if complete else None,
        )
        preallocated: PreallocationIssued | None = None
        if complete:
            tx.publish(
                SurrenderCompleted(
                    credit_code=code,
                    compliance_year=year,
                    policy=policy.cycle,
                    verified_emissions=due.verified_emissions,
                    obligation=due.obligation,
                    allowances_surrendered=surrendered,
                    offsets_surrendered=0,
                    deadline=deadline,
                    on_time=on_time,
                    completed_at=tx.now,
                )
            )
            preallocated = await _preallocate(tx, context, code, year, due.verified_emissions)
        event_ids = [event.event_id for event in tx.pending]
    metrics.ALLOWANCES_SURRENDERED.inc(body.allowances)
    return {
        "credit_code": code,
        "compliance_year": year,
        "surrendered_now": body.allowances,
        "drawn_from": [{"vintage": v, "allowances": n} for v, n in plan],
        "obligation": due.obligation,
        "surrendered": surrendered,
        "remaining": due.obligation - surrendered,
        "status": "compliant" if complete else "open",
        "preallocation": (
            {"compliance_year": preallocated.compliance_year, "allowances": preallocated.allowances}
            if preallocated
            else None
        ),
        "event_ids": event_ids,
    }


async def _preallocate(
    tx: Transaction, context: ServiceContext, code: str, year: int, verified: Decimal
) -> PreallocationIssued:
    """Next year's pre-allocation, credited and published with the completed surrender."""
    policy = context.policy
    allowances = compliance.preallocation(policy, verified)
    next_year = year + 1
    await store.issue_allowances(
        tx.conn,
        credit_code=code,
        compliance_year=next_year,
        kind="preallocation",
        method="preallocation",
        basis_emissions=verified,
        allowances=allowances,
        reference=f"preallocation-{next_year}",
        at=tx.now,
    )
    tx.after_commit.append(
        lambda: metrics.ALLOWANCES_ISSUED.labels("preallocation").inc(allowances)
    )
    issued = PreallocationIssued(
        credit_code=code,
        compliance_year=next_year,
        policy=policy.cycle,
        basis_year=year,
        basis_verified_emissions=verified,
        ratio=policy.preallocation.ratio,
        allowances=allowances,
        issued_at=tx.now,
    )
    tx.publish(issued)
    return issued
