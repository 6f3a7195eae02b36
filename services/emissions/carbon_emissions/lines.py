"""Activity lines between the wire and the engine.

People send activity lines (:class:`ActivityInput`: a source, the fuel or material it names and
the activity figure); the engine computes with :class:`~carbon_emissions.calculation.ActivityLine`;
events carry the result as the contract's ``ReportLine`` (fuel, electricity, heat) and
``ProcessLine`` (industrial processes). Reporting and verification both convert through these
functions, so a report and its verification turn the same lines into the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carbon_contracts.errors import Invalid
from carbon_contracts.events import ProcessLine, ReportLine
from carbon_contracts.policy import Policy
from carbon_contracts.types import DecimalString, Identifier
from carbon_emissions.calculation import (
    ActivityLine,
    Calculation,
    CalculationError,
    FactorTable,
    calculate,
)

MAX_LINES = 500
"""Activity lines one report (or one verification) may carry."""


class ActivityInput(BaseModel):
    """One activity line as a person sends it; the emissions are computed, never sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["fuel", "process", "electricity", "heat"]
    fuel: Identifier | None = Field(default=None, description="fuel code, for source=fuel")
    material: Identifier | None = Field(
        default=None, description="material decomposed, for source=process (e.g. limestone)"
    )
    activity: DecimalString = Field(
        description="in the factor's unit (GET /factors): 10^4 kWh, GJ, t or 10^4 Nm3"
    )


@dataclass(frozen=True)
class ContractLines:
    """A calculation as the contract carries it: the fuel, electricity and heat lines, and the
    industrial process lines apart, each in the order they were given."""

    factor_table: str
    lines: list[ReportLine]
    process_lines: list[ProcessLine]
    total: Decimal
    """tCO2, three decimals: the sum of all the lines, process lines included."""

    def as_json(self) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        """Both lists as JSON-ready dicts, exactly as the events publish them."""
        return (
            [line.model_dump(mode="json") for line in self.lines],
            [line.model_dump(mode="json") for line in self.process_lines],
        )


def activity_lines(inputs: Iterable[ActivityInput]) -> list[ActivityLine]:
    """The engine's lines; a line it cannot take raises CalculationError naming its number."""
    lines = []
    for number, given in enumerate(inputs, start=1):
        try:
            lines.append(
                ActivityLine(
                    source=given.source,
                    activity=given.activity,
                    fuel=given.fuel,
                    material=given.material,
                )
            )
        except CalculationError as error:
            raise CalculationError(f"line {number}: {error}") from None
    return lines


def compute(inputs: Iterable[ActivityInput], table: FactorTable) -> ContractLines:
    """The emissions of the input lines by the engine, as the contract carries them."""
    return to_contract(calculate(activity_lines(inputs), table))


def compute_with_policy(inputs: Iterable[ActivityInput], policy: Policy) -> ContractLines:
    """:func:`compute` with the policy's factor table, for a command: lines the engine cannot
    take are refused as 422 ``invalid_activity`` with the engine's reason."""
    try:
        return compute(inputs, FactorTable.from_policy(policy))
    except CalculationError as error:
        raise Invalid("invalid_activity", str(error)) from None


def to_contract(calculation: Calculation) -> ContractLines:
    """Split the engine's result into the contract's report lines and process lines."""
    lines: list[ReportLine] = []
    process_lines: list[ProcessLine] = []
    for line in calculation.lines:
        if line.source == "process":
            assert line.material is not None  # the engine names the material of a process line
            process_lines.append(
                ProcessLine(
                    material=line.material,
                    activity=line.activity,
                    unit=line.unit,
                    factor=line.factor,
                    emissions=line.emissions,
                )
            )
        else:
            lines.append(
                ReportLine(
                    source=line.source,
                    fuel=line.fuel,
                    activity=line.activity,
                    unit=line.unit,
                    factor=line.factor,
                    emissions=line.emissions,
                )
            )
    return ContractLines(calculation.factor_table, lines, process_lines, calculation.total)


def inputs_of(
    lines: Iterable[ReportLine], process_lines: Iterable[ProcessLine] = ()
) -> list[ActivityInput]:
    """Computed contract lines back as input lines (their activity only): what to recompute
    them from, e.g. a verifier starting from the reported lines."""
    return [
        ActivityInput(source=line.source, fuel=line.fuel, activity=line.activity) for line in lines
    ] + [
        ActivityInput(source="process", material=line.material, activity=line.activity)
        for line in process_lines
    ]
