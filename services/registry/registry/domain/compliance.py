"""Allocation, surrender and pre-allocation rules of one compliance cycle. Pure: numbers from the
policy file, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from carbon_contracts.errors import Conflict, Invalid
from carbon_contracts.policy import Policy


@dataclass(frozen=True)
class Allocation:
    method: str
    final_allocation: int
    preallocated: int
    allowances: int


def allocate(policy: Policy, verified_emissions: Decimal, *, preallocated: int) -> Allocation:
    """The year's allowances by the policy's method, less what was pre-allocated for the year."""
    if policy.allocation.method != "historical_emissions":
        raise Invalid("unknown_allocation_method", f"method {policy.allocation.method!r}")
    final = policy.to_allowances(
        verified_emissions * policy.allocation.ratio, policy.rounding.allocation
    )
    # A pre-allocation above the final allocation would be clawed back by the Bureau; that
    # adjustment is not modelled yet, so nothing further is credited in that case.
    return Allocation(
        method=policy.allocation.method,
        final_allocation=final,
        preallocated=preallocated,
        allowances=max(final - preallocated, 0),
    )


def obligation(policy: Policy, verified_emissions: Decimal) -> int:
    """Allowances to surrender: the verified emissions as whole tonnes, rounded per policy."""
    return policy.to_allowances(verified_emissions, policy.rounding.obligation)


def preallocation(policy: Policy, verified_emissions: Decimal) -> int:
    """Next year's pre-allocated allowances: the policy's share of this year's verified
    emissions."""
    return policy.to_allowances(
        verified_emissions * policy.preallocation.ratio, policy.rounding.preallocation
    )


@dataclass(frozen=True)
class Surrendered:
    """What one surrender does: the vintages it draws on and where the obligation then stands."""

    drawn: list[tuple[int, int]]
    surrendered: int
    remaining: int
    complete: bool
    on_time: bool


def surrender(
    policy: Policy,
    *,
    compliance_year: int,
    requested: int,
    obligation: int,
    surrendered: int,
    holdings: Mapping[int, int],
    at: datetime,
) -> Surrendered:
    """Surrender `requested` allowances against the year's obligation at instant `at`. Meeting
    the whole obligation completes compliance; it is on time only before the deadline (the
    notice: before 17:00, so 17:00:00 itself is late)."""
    drawn = plan_surrender(
        compliance_year=compliance_year,
        requested=requested,
        obligation=obligation,
        surrendered=surrendered,
        holdings=holdings,
    )
    total = surrendered + requested
    return Surrendered(
        drawn=drawn,
        surrendered=total,
        remaining=obligation - total,
        complete=total == obligation,
        on_time=at < policy.deadlines.surrender,
    )


def plan_surrender(
    *,
    compliance_year: int,
    requested: int,
    obligation: int,
    surrendered: int,
    holdings: Mapping[int, int],
) -> list[tuple[int, int]]:
    """Which vintages to draw `requested` allowances from, oldest first.

    Only vintages up to the compliance year count; a surrender may not exceed the remaining
    obligation nor the usable holdings.
    """
    if requested <= 0:
        raise Invalid("invalid_amount", "allowances to surrender must be a positive whole number")
    remaining = obligation - surrendered
    if remaining <= 0:
        raise Conflict("already_compliant", f"the {compliance_year} obligation is already met")
    if requested > remaining:
        raise Invalid(
            "exceeds_obligation",
            f"{requested} allowances exceed the remaining obligation of {remaining}",
        )
    usable = {vintage: amount for vintage, amount in holdings.items() if vintage <= compliance_year}
    available = sum(usable.values())
    if requested > available:
        raise Conflict(
            "insufficient_holdings",
            f"{requested} allowances requested but only {available} of vintage "
            f"{compliance_year} or earlier are held",
        )
    plan: list[tuple[int, int]] = []
    left = requested
    for vintage in sorted(usable):
        take = min(usable[vintage], left)
        if take:
            plan.append((vintage, take))
            left -= take
    return plan
