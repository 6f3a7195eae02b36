"""Obligation, surrender and pre-allocation rules of one compliance cycle (the allocation is in
domain/allocation.py). Pure: numbers from the policy file, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from carbon_contracts.errors import Conflict, Invalid
from carbon_contracts.policy import Policy
from registry.domain.offsets import Proof, check_cap


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
    """What one surrender does: the surrender-only allowances and the vintages it draws on, the
    offsets it uses and where the obligation then stands (`surrendered` counts allowances and
    offsets together)."""

    surrender_only: int
    drawn: list[tuple[int, int]]
    offsets: int
    surrendered: int
    offsets_surrendered: int
    remaining: int
    complete: bool
    on_time: bool


def surrender(
    policy: Policy,
    *,
    compliance_year: int,
    allowances: int,
    offsets: Sequence[Proof] = (),
    verified_emissions: Decimal,
    obligation: int,
    surrendered: int,
    offsets_surrendered: int = 0,
    holdings: Mapping[int, int],
    surrender_only: int = 0,
    at: datetime,
) -> Surrendered:
    """Surrender `allowances` and the checked offset proofs `offsets` against the year's
    obligation at instant `at`. The year's offsets stay within the policy's cap. Meeting the
    whole obligation completes compliance; it is on time only before the deadline (the notice:
    before 17:00, so 17:00:00 itself is late)."""
    _ensure_not_met(compliance_year, obligation, surrendered)  # first: nothing more is taken
    offset_units = sum(proof.quantity for proof in offsets)
    if offset_units:
        check_cap(
            policy,
            verified_emissions=verified_emissions,
            already_used=offsets_surrendered,
            requested=offset_units,
        )
    restricted, drawn = plan_surrender(
        compliance_year=compliance_year,
        requested=allowances,
        offsets=offset_units,
        obligation=obligation,
        surrendered=surrendered,
        holdings=holdings,
        surrender_only=surrender_only,
    )
    total = surrendered + allowances + offset_units
    return Surrendered(
        surrender_only=restricted,
        drawn=drawn,
        offsets=offset_units,
        surrendered=total,
        offsets_surrendered=offsets_surrendered + offset_units,
        remaining=obligation - total,
        complete=total == obligation,
        on_time=at < policy.deadlines.surrender,
    )


def plan_surrender(
    *,
    compliance_year: int,
    requested: int,
    offsets: int = 0,
    obligation: int,
    surrendered: int,
    holdings: Mapping[int, int],
    surrender_only: int = 0,
) -> tuple[int, list[tuple[int, int]]]:
    """Where to draw `requested` allowances from when `offsets` units of offsets are surrendered
    with them: first the `surrender_only` allowances held for this year (they serve nothing
    else), then the vintages, oldest first. Returns (surrender-only drawn, [(vintage, drawn)]).

    Only vintages up to the compliance year count; a surrender may not exceed the remaining
    obligation nor the usable holdings.
    """
    if requested < 0 or offsets < 0 or requested + offsets <= 0:
        what = "allowances to surrender" if not offsets else "allowances and offsets"
        raise Invalid("invalid_amount", f"{what} must be a positive whole number")
    _ensure_not_met(compliance_year, obligation, surrendered)
    remaining = obligation - surrendered
    if requested + offsets > remaining:
        what = f"{requested} allowances" + (f" and {offsets} offsets" if offsets else "")
        raise Invalid(
            "exceeds_obligation", f"{what} exceed the remaining obligation of {remaining}"
        )
    usable = {vintage: amount for vintage, amount in holdings.items() if vintage <= compliance_year}
    available = sum(usable.values()) + surrender_only
    if requested > available:
        raise Conflict(
            "insufficient_holdings",
            f"{requested} allowances requested but only {available} of vintage "
            f"{compliance_year} or earlier are held",
        )
    restricted = min(surrender_only, requested)
    plan: list[tuple[int, int]] = []
    left = requested - restricted
    for vintage in sorted(usable):
        take = min(usable[vintage], left)
        if take:
            plan.append((vintage, take))
            left -= take
    return restricted, plan


def _ensure_not_met(compliance_year: int, obligation: int, surrendered: int) -> None:
    if surrendered >= obligation:
        raise Conflict("already_compliant", f"the {compliance_year} obligation is already met")
