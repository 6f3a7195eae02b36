"""The year's final allocation by the policy's plan, and its true-up against what was already
pre-allocated. Pure: numbers from the policy file and the registry's figures, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from carbon_contracts.errors import Invalid
from carbon_contracts.policy import Benchmark, HistoricalEmissions, HistoricalIntensity, Policy

EMISSIONS_QUANTUM = Decimal("0.001")
PARAMETER_DECIMALS = 9
"""A parameter (the event's decimal strings) carries at most this many decimals."""


@dataclass(frozen=True)
class Output:
    """A verified production output (as in `verification.finalised`)."""

    product: str
    unit: str
    quantity: Decimal


@dataclass(frozen=True)
class Computed:
    """The final allocation of one entity and the inputs it came from."""

    method: str
    final_allocation: int
    parameters: dict[str, Decimal] = field(default_factory=dict)


def compute(
    policy: Policy,
    *,
    sector: str,
    compliance_year: int,
    verified_emissions: Decimal,
    outputs: Iterable[Output],
    base_figures: Mapping[int, Decimal],
) -> Computed:
    """The final allocation of an entity of `sector` for the year, by its sector's method.

    `base_figures` are the verified emissions the registry knows for other years (its own final
    figures and imported opening balances); the year's own figure is `verified_emissions`. The
    historical-emissions average runs over the policy's base years with a known figure only.
    """
    plan = policy.allocation.for_sector(sector)
    rule = policy.rounding.allocation
    if isinstance(plan, HistoricalEmissions):
        known = {**base_figures, compliance_year: verified_emissions}
        years = [year for year in policy.allocation.base_years if year in known]
        if not years:
            raise Invalid(
                "missing_base_years",
                f"no verified emissions known for any base year "
                f"({', '.join(map(str, policy.allocation.base_years))})",
            )
        figures = {year: known[year].quantize(EMISSIONS_QUANTUM) for year in years}
        average = sum(figures.values(), start=Decimal(0)) / len(figures)
        return Computed(
            method=plan.method,
            final_allocation=policy.to_allowances(average * plan.decline, rule),
            parameters={
                **{f"base_{year}": figure for year, figure in figures.items()},
                "decline": plan.decline,
            },
        )
    output = _output(plan, outputs)
    if isinstance(plan, Benchmark):
        allocation = output * plan.benchmark
        for factor in plan.adjustments.values():
            allocation *= factor
        return Computed(
            method=plan.method,
            final_allocation=policy.to_allowances(allocation, rule),
            parameters={"output": output, "benchmark": plan.benchmark, **plan.adjustments},
        )
    return Computed(
        method=plan.method,
        final_allocation=policy.to_allowances(output * plan.base_intensity * plan.decline, rule),
        parameters={
            "output": output,
            "base_intensity": plan.base_intensity,
            "decline": plan.decline,
        },
    )


def _output(plan: Benchmark | HistoricalIntensity, outputs: Iterable[Output]) -> Decimal:
    """The verified output of the plan's product in the plan's unit (lines of it added up)."""
    matching = [o.quantity for o in outputs if o.product == plan.product and o.unit == plan.unit]
    if not matching:
        raise Invalid(
            "missing_output",
            f"the {plan.method} method needs the verified output of {plan.product} in "
            f"{plan.unit}, and verification reported none",
        )
    return sum(matching, start=Decimal(0))


def parameter_text(value: Decimal) -> str:
    """A parameter as the event's decimal string: no exponent, no trailing zeros, at most
    PARAMETER_DECIMALS decimals (the inputs are exact; anything finer is noise)."""
    rounded = value.quantize(Decimal(1).scaleb(-PARAMETER_DECIMALS)).normalize()
    return format(rounded, "f")


@dataclass(frozen=True)
class TrueUp:
    """What issuing the final allocation does against the year's pre-allocation: top up the
    difference, or take the excess back from the vintage's holdings and record the rest owed.
    Always topped_up - clawed_back - owed == final - preallocated."""

    topped_up: int
    clawed_back: int
    owed: int


def true_up(*, final_allocation: int, preallocated: int, held: int) -> TrueUp:
    """`held`: what the entity holds of the year's vintage now (sold allowances are gone)."""
    if min(final_allocation, preallocated, held) < 0:
        raise Invalid("invalid_amount", "allocations and holdings are never negative")
    excess = preallocated - final_allocation
    if excess <= 0:
        return TrueUp(topped_up=-excess, clawed_back=0, owed=0)
    clawed_back = min(excess, held)
    return TrueUp(topped_up=0, clawed_back=clawed_back, owed=excess - clawed_back)
