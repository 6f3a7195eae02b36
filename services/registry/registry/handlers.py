"""Registry reactions to other services' events."""

from __future__ import annotations

from typing import Any

from carbon_contracts.events import AllocationIssued, VerificationApproved
from carbon_platform import metrics
from carbon_platform.codec import Event
from carbon_platform.context import ServiceContext, Transaction
from carbon_platform.errors import Conflict, Invalid, NotFound
from registry import store
from registry.domain import compliance


async def on_verification_approved(
    event: Event[Any], tx: Transaction, context: ServiceContext
) -> None:
    """Record the verified emissions as the year's obligation and issue the year's allowances."""
    approved: VerificationApproved = event.payload
    policy = context.policy
    code, year = approved.credit_code, approved.compliance_year
    if year != policy.compliance_year:
        raise Invalid("no_policy", f"no compliance policy loaded for {year}")
    if not await store.is_rostered(tx.conn, credit_code=code, compliance_year=year):
        raise NotFound("unknown_entity", f"{code} is not on the {year} roster")
    if await store.get_obligation(tx.conn, credit_code=code, compliance_year=year):
        raise Conflict("already_verified", f"{code} already has verified emissions for {year}")
    await store.create_obligation(
        tx.conn,
        credit_code=code,
        compliance_year=year,
        case_id=str(approved.case_id),
        verified_emissions=approved.verified_emissions,
        obligation=compliance.obligation(policy, approved.verified_emissions),
    )
    earlier = await store.get_allocation(
        tx.conn, credit_code=code, compliance_year=year, kind="preallocation"
    )
    allocation = compliance.allocate(
        policy, approved.verified_emissions, preallocated=earlier.allowances if earlier else 0
    )
    await store.issue_allowances(
        tx.conn,
        credit_code=code,
        compliance_year=year,
        kind="allocation",
        method=allocation.method,
        basis_emissions=approved.verified_emissions,
        allowances=allocation.allowances,
        reference=str(approved.case_id),
        at=tx.now,
    )
    tx.publish(
        AllocationIssued(
            credit_code=code,
            compliance_year=year,
            policy=policy.cycle,
            method=allocation.method,
            verified_emissions=approved.verified_emissions,
            final_allocation=allocation.final_allocation,
            preallocated=allocation.preallocated,
            allowances=allocation.allowances,
            issued_at=tx.now,
        )
    )
    tx.after_commit.append(
        lambda: metrics.ALLOWANCES_ISSUED.labels("allocation").inc(allocation.allowances)
    )


HANDLERS = {"verification.approved": {"verification.approved": on_verification_approved}}
