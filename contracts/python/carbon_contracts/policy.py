"""The compliance policy file of one cycle (`contracts/policies/<cycle>.yaml`).

Dates, ratios, rounding and emission factors are one year's policy, never constants in code.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from carbon_contracts.resources import contract_path
from carbon_contracts.types import DecimalString, Identifier

Rounding = Literal["half_up", "half_even", "ceiling", "floor"]
_DECIMAL_ROUNDING = {
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
    "ceiling": ROUND_CEILING,
    "floor": ROUND_FLOOR,
}


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Deadlines(_Closed):
    monitoring_plan: AwareDatetime
    report: AwareDatetime
    accounts_opening: AwareDatetime
    verification_start: AwareDatetime
    verification_end: AwareDatetime
    shcercir1_cancellation: AwareDatetime
    surrender: AwareDatetime


class Offsets(_Closed):
    cap_ratio: DecimalString
    types: list[str]


class Preallocation(_Closed):
    ratio: DecimalString


class RoundingRules(_Closed):
    obligation: Rounding
    allocation: Rounding
    preallocation: Rounding


class Allocation(_Closed):
    method: Identifier
    ratio: DecimalString


class Factor(_Closed):
    unit: str
    factor: DecimalString


class FuelFactor(_Closed):
    unit: str
    ncv: DecimalString = Field(description="net calorific value, GJ per unit")
    carbon_content: DecimalString = Field(description="tC per TJ")
    oxidation: DecimalString


class EmissionFactors(_Closed):
    electricity: Factor
    heat: Factor
    fuels: dict[str, FuelFactor]


class Policy(_Closed):
    cycle: str
    compliance_year: int
    timezone: str
    source: str
    deadlines: Deadlines
    offsets: Offsets
    preallocation: Preallocation
    rounding: RoundingRules
    allocation: Allocation
    factor_table: str
    emission_factors: EmissionFactors

    def to_allowances(self, tonnes: Decimal, rule: Rounding) -> int:
        """Whole allowances from decimal tonnes by one of the policy's rounding rules."""
        return int(tonnes.quantize(Decimal(1), rounding=_DECIMAL_ROUNDING[rule]))


def load_policy(path: Path) -> Policy:
    return Policy.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def default_policy_path(cycle: str = "shanghai-2024") -> Path:
    return contract_path(f"policies/{cycle}.yaml")
