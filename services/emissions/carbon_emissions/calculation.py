"""The emissions calculation engine: activity data times emission factors, by source.

A report's total is computed, never typed. Each activity line (fuel burnt, carbonate
decomposed in an industrial process, purchased electricity, purchased heat) is multiplied by its
factor from the cycle's versioned factor table. Reporting computes a report with it and
verification recomputes the verified figure from the verified activity data with it: one engine,
so the same lines give the same figure in both.

All arithmetic is exact decimal (or rational) arithmetic; rounding happens in exactly two
places, both ROUND_HALF_UP:

* a fuel's factor, derived from the policy's net calorific value, carbon content and
  oxidation rate, is rounded to :data:`FACTOR_DECIMALS` (9) decimals;
* each line's emissions are rounded to ``EMISSIONS_SCALE`` (3) decimals, kilogram precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from carbon_contracts.types import EMISSIONS_SCALE

if TYPE_CHECKING:
    from carbon_contracts.policy import Policy

Source = Literal["fuel", "process", "electricity", "heat"]
SOURCES: Final[tuple[Source, ...]] = ("fuel", "process", "electricity", "heat")
_NAMED: Final = {"fuel": "fuel", "process": "material"}
"""Sources whose lines name what was burnt or decomposed, and the field that names it."""

ACTIVITY_DECIMALS: Final = 9
"""At most this many decimals in activity data: the contract's decimal strings allow 9."""

FACTOR_DECIMALS: Final = 9
"""Decimals of every factor in a table, derived fuel factors rounded to it."""

QUANTITY_LIMIT: Final = Decimal(10) ** 12
"""Activity, factors and emissions stay below this: the contract allows 12 integer digits."""

_EMISSIONS_QUANTUM = Decimal(1).scaleb(-EMISSIONS_SCALE)
_ZERO_EMISSIONS = Decimal(0).quantize(_EMISSIONS_QUANTUM)
_NINE_DECIMALS = Decimal(1).scaleb(-ACTIVITY_DECIMALS)
# Operands have at most 12 + 9 = 21 digits, so products have at most 42: with 100 digits of
# precision, products and sums are exact, and the Inexact trap proves it at run time.
_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation, Overflow, DivisionByZero])
_ROUNDING = Context(prec=100, rounding=ROUND_HALF_UP, traps=[InvalidOperation, Overflow])


class CalculationError(ValueError):
    """Activity data or a factor table the engine cannot compute with; the message says why."""


@dataclass(frozen=True, slots=True)
class ActivityLine:
    """One line of activity data.

    ``activity`` is in the unit of the line's factor (e.g. 10^4 kWh of electricity, GJ of
    heat, t or 10^4 Nm3 of a fuel); ``fuel`` names the fuel of a ``"fuel"`` line and is
    ``None`` for electricity and heat. Invalid lines cannot be built: the constructor raises
    :class:`CalculationError`.
    """

    source: Source
    activity: Decimal
    fuel: str | None = None
    material: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise CalculationError(
                f"unknown source {self.source!r}: expected one of {', '.join(SOURCES)}"
            )
        for source, named in _NAMED.items():
            value = getattr(self, named)
            if self.source == source:
                if value is None or value == "":
                    raise CalculationError(f"a {source} line must name its {named}")
                if not isinstance(value, str):
                    raise CalculationError(f"a {named} is named by a string, not {value!r}")
            elif value is not None:
                article = "an" if self.source == "electricity" else "a"
                raise CalculationError(
                    f"{article} {self.source} line names no {named}, but {named} {value!r} "
                    "was given"
                )
        line = f"{self.name!r} {self.source} line" if self.name else f"{self.source} line"
        object.__setattr__(
            self, "activity", _quantity(self.activity, f"activity of the {line}", "activity")
        )

    @property
    def name(self) -> str | None:
        """The fuel or material the line names; None for electricity and heat."""
        return self.fuel if self.source == "fuel" else self.material


@dataclass(frozen=True, slots=True)
class UnitFactor:
    """An emission factor: tonnes of CO2 per ``unit`` of activity."""

    factor: Decimal
    unit: str


@dataclass(frozen=True)
class FactorTable:
    """One version of the emission factor table, as a policy file publishes it."""

    version: str
    electricity: UnitFactor
    heat: UnitFactor
    fuels: Mapping[str, UnitFactor]
    processes: Mapping[str, UnitFactor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fuels", MappingProxyType(dict(self.fuels)))
        object.__setattr__(self, "processes", MappingProxyType(dict(self.processes)))
        named = [("electricity", self.electricity), ("heat", self.heat)]
        named += [(f"fuel {name!r}", factor) for name, factor in self.fuels.items()]
        named += [(f"material {name!r}", factor) for name, factor in self.processes.items()]
        for what, unit_factor in named:
            if not unit_factor.unit:
                raise CalculationError(f"factor table {self.version!r}: {what} has no unit")
            _quantity(unit_factor.factor, f"factor table {self.version!r}: {what} factor", "factor")

    @classmethod
    def from_policy(cls, policy: Policy) -> FactorTable:
        """The policy's factor table, fuel factors derived by :func:`fuel_factor`."""
        factors = policy.emission_factors
        return cls(
            version=policy.factor_table,
            electricity=UnitFactor(factors.electricity.factor, factors.electricity.unit),
            heat=UnitFactor(factors.heat.factor, factors.heat.unit),
            fuels={
                name: UnitFactor(
                    fuel_factor(fuel.ncv, fuel.carbon_content, fuel.oxidation), fuel.unit
                )
                for name, fuel in factors.fuels.items()
            },
            processes={
                name: UnitFactor(process.factor, process.unit)
                for name, process in factors.processes.items()
            },
        )

    def factor_for(self, line: ActivityLine) -> tuple[Decimal, str]:
        """The line's factor (tCO2 per unit) and its unit."""
        if line.source == "electricity":
            return self.electricity.factor, self.electricity.unit
        if line.source == "heat":
            return self.heat.factor, self.heat.unit
        table, kind = (
            (self.fuels, "fuel") if line.source == "fuel" else (self.processes, "material")
        )
        assert line.name is not None  # ActivityLine guarantees it for fuel and process lines
        try:
            found = table[line.name]
        except KeyError:
            raise CalculationError(
                f"unknown {kind} {line.name!r}: factor table {self.version!r} knows "
                f"{', '.join(sorted(table)) or f'no {kind}s'}"
            ) from None
        return found.factor, found.unit


def fuel_factor(ncv: Decimal, carbon_content: Decimal, oxidation: Decimal) -> Decimal:
    """tCO2 per unit of a fuel: ncv x carbon content x oxidation x 44/12 / 1000.

    ``ncv`` is GJ per unit, ``carbon_content`` tC per TJ (hence the / 1000), 44/12 the mass
    ratio of CO2 to carbon. The product is computed exactly (as a fraction: 44/12 has no
    finite decimal expansion) and rounded half up to :data:`FACTOR_DECIMALS` decimals, so
    that the factor is a finite decimal that fits the contract's decimal strings (at most 9
    decimals) and can be published with a calculation and recomputed by anyone to the same
    digits; activity x factor is then exact before the emissions rounding. 9 decimals keep
    the factor's own rounding error below 0.5e-9 t per unit, far below the 0.001 t of the
    emissions.
    """
    exact = Fraction(ncv) * Fraction(carbon_content) * Fraction(oxidation) * Fraction(44, 12)
    return _round_half_up(exact / 1000, FACTOR_DECIMALS)


@dataclass(frozen=True, slots=True)
class CalculatedLine:
    source: Source
    fuel: str | None
    material: str | None
    activity: Decimal
    unit: str
    factor: Decimal
    """tCO2 per unit."""
    emissions: Decimal
    """tCO2, exactly ``EMISSIONS_SCALE`` decimals."""


@dataclass(frozen=True, slots=True)
class Calculation:
    factor_table: str
    """Version of the factor table the lines were computed with."""
    lines: tuple[CalculatedLine, ...]
    total: Decimal
    """tCO2, exactly ``EMISSIONS_SCALE`` decimals: the sum of the lines' emissions."""


def calculate(lines: Iterable[ActivityLine], table: FactorTable) -> Calculation:
    """Emissions of each line and their total, from one factor table."""
    activity_lines = tuple(lines)
    if not activity_lines:
        raise CalculationError("no activity lines: emissions are computed from at least one")
    calculated = []
    for number, line in enumerate(activity_lines, start=1):
        if not isinstance(line, ActivityLine):
            raise CalculationError(
                f"line {number}: expected an ActivityLine, got {type(line).__name__}"
            )
        try:
            factor, unit = table.factor_for(line)
        except CalculationError as exc:
            raise CalculationError(f"line {number}: {exc}") from None
        emissions = _EXACT.multiply(line.activity, factor).quantize(
            _EMISSIONS_QUANTUM, rounding=ROUND_HALF_UP, context=_ROUNDING
        )
        calculated.append(
            CalculatedLine(
                line.source, line.fuel, line.material, line.activity, unit, factor, emissions
            )
        )
    # The total is the sum of the lines as rounded, not the rounded sum of the exact products:
    # the lines shown on a report then add up to its total exactly, and anyone recomputing
    # line by line (verification, an auditor with a spreadsheet) reaches the same figure.
    total = _ZERO_EMISSIONS
    for line_result in calculated:
        total = _EXACT.add(total, line_result.emissions)
    if total >= QUANTITY_LIMIT:
        raise CalculationError(
            f"total emissions {total:f} t do not fit the contract: they must be below 10^12 t"
        )
    return Calculation(table.version, tuple(calculated), total)


def _quantity(value: object, what: str, kind: str) -> Decimal:
    """A non-negative finite Decimal below 10^12 with at most 9 decimals, else an error."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise CalculationError(f"{what} must be a Decimal, not {type(value).__name__}")
    amount = Decimal(value)
    if not amount.is_finite():
        raise CalculationError(f"{what} {amount:f} is not a finite number")
    if amount < 0:
        raise CalculationError(f"{what} {amount:f} is negative")
    if amount >= QUANTITY_LIMIT:
        raise CalculationError(f"{what} {amount:f} is too large: {kind} must be below 10^12")
    if amount.quantize(_NINE_DECIMALS, context=_ROUNDING) != amount:
        raise CalculationError(f"{what} {amount:f} has more than {ACTIVITY_DECIMALS} decimals")
    return amount.copy_abs()  # -0 becomes 0


def _round_half_up(value: Fraction, places: int) -> Decimal:
    if value < 0:  # pragma: no cover - policy decimals are non-negative
        raise CalculationError(f"negative factor {value}")
    scaled = math.floor(value * 10**places + Fraction(1, 2))
    return Decimal(scaled).scaleb(-places, context=_EXACT)
