"""The compliance policy file of one cycle (`contracts/policies/<cycle>.yaml`).

Dates, ratios, rounding and emission factors are one year's policy, never constants in code.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from carbon_contracts.errors import Invalid, NotFound
from carbon_contracts.events import OBLIGATIONS, OffsetType
from carbon_contracts.resources import contract_path
from carbon_contracts.types import INSTRUMENT_PATTERN, DecimalString, Identifier

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
    """Each deadline is the first instant that is late: done at `at`, on time iff at < deadline."""

    monitoring_plan: AwareDatetime
    report: AwareDatetime
    accounts_opening: AwareDatetime
    verification_start: AwareDatetime
    verification_end: AwareDatetime
    shcercir1_cancellation: AwareDatetime
    surrender: AwareDatetime


class Supervision(_Closed):
    """How the platform chases an entity: reminders before each obligation's deadline, and a case
    in its district's queue from the deadline, escalated to the Bureau when its SLA passes."""

    reminders_before: list[timedelta] = Field(
        min_length=1,
        description="how long before each deadline an entity still open is reminded (ISO 8601 "
        "durations, e.g. P14D, PT2H)",
    )
    case_sla: timedelta = Field(description="from the deadline until an open case is escalated")

    @model_validator(mode="after")
    def _positive(self) -> Supervision:
        before = self.reminders_before
        if any(b <= timedelta(0) or b % timedelta(seconds=1) for b in before):
            raise ValueError("reminders_before: positive durations in whole seconds")
        if len(set(before)) != len(before):
            raise ValueError("reminders_before: each at most once")
        if self.case_sla <= timedelta(0):
            raise ValueError("case_sla must be positive")
        return self


class Offsets(_Closed):
    cap_ratio: DecimalString = Field(description="of verified emissions, all types together")
    allowed: dict[OffsetType, bool] = Field(description="the types usable this cycle (a switch)")

    def is_allowed(self, offset_type: str) -> bool:
        return any(kind == offset_type and on for kind, on in self.allowed.items())


class Preallocation(_Closed):
    ratio: DecimalString


class RoundingRules(_Closed):
    obligation: Rounding
    allocation: Rounding
    preallocation: Rounding
    offset_cap: Rounding
    reserve_price: Rounding = Field(description="to the fen (0.01 yuan)")


class Benchmark(_Closed):
    """Verified output x benchmark x every adjustment factor."""

    method: Literal["benchmark"]
    product: Identifier
    unit: str
    benchmark: DecimalString = Field(description="tCO2 per unit of output")
    adjustments: dict[Identifier, DecimalString] = Field(default_factory=dict)


class HistoricalIntensity(_Closed):
    """Verified output x base intensity x decline factor."""

    method: Literal["historical_intensity"]
    product: Identifier
    unit: str
    base_intensity: DecimalString = Field(description="tCO2 per unit of output")
    decline: DecimalString


class HistoricalEmissions(_Closed):
    """Average verified emissions of the base years x decline factor."""

    method: Literal["historical_emissions"]
    decline: DecimalString


SectorAllocation = Annotated[
    Benchmark | HistoricalIntensity | HistoricalEmissions, Field(discriminator="method")
]


class Allocation(_Closed):
    """The allocation plan: a method and its parameters per sector."""

    base_years: list[int] = Field(min_length=1)
    default: SectorAllocation
    sectors: dict[Identifier, SectorAllocation] = Field(default_factory=dict)

    def for_sector(self, sector: str) -> Benchmark | HistoricalIntensity | HistoricalEmissions:
        return self.sectors.get(sector, self.default)


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
    processes: dict[str, Factor] = Field(
        default_factory=dict, description="industrial processes: tCO2 per unit of material"
    )


class MonitoringPlanRules(_Closed):
    year: int = Field(description="the year the plan submitted in this cycle is for")
    paper_copy: bool


class ReportRules(_Closed):
    paper_copy: bool


class Agency(_Closed):
    id: Identifier
    name: str


class Lot(_Closed):
    """A tender lot: the agency that won it and the entities it covers (empty: all)."""

    id: Identifier
    round: Literal["verification", "reverification"]
    agency: Identifier
    sectors: list[Identifier] = Field(default_factory=list)
    districts: list[Identifier] = Field(default_factory=list)

    def covers(self, *, sector: str, district: str) -> bool:
        return (not self.sectors or sector in self.sectors) and (
            not self.districts or district in self.districts
        )


class ReverificationRule(_Closed):
    difference_ratio: DecimalString = Field(description="of the reported figure")
    sample_per_mille: int = Field(ge=0, le=1000)


class VerificationRules(_Closed):
    agencies: list[Agency]
    lots: list[Lot]
    reverification: ReverificationRule

    @model_validator(mode="after")
    def _lots_name_known_agencies(self) -> VerificationRules:
        known = {agency.id for agency in self.agencies}
        for lot in self.lots:
            if lot.agency not in known:
                raise ValueError(f"lot {lot.id} names unknown agency {lot.agency}")
        if len({lot.id for lot in self.lots}) != len(self.lots):
            raise ValueError("lot ids must be unique")
        return self

    def lot_for(self, round_: str, *, sector: str, district: str) -> Lot | None:
        """The first lot of the round that covers the entity, in the policy's order."""
        return next(
            (
                lot
                for lot in self.lots
                if lot.round == round_ and lot.covers(sector=sector, district=district)
            ),
            None,
        )


class ReservePrice(_Closed):
    """Reserve = multiplier x the volume-weighted average price of `instrument` over the
    reference window's trading days (both dates included), rounded per rounding.reserve_price."""

    instrument: str = Field(pattern=INSTRUMENT_PATTERN)
    reference_from: date
    reference_to: date
    multiplier: DecimalString


class Auction(_Closed):
    """One paid auction (有偿竞价发放) as its announcement fixes it."""

    id: Identifier
    compliance_year: int
    volume: int = Field(gt=0, description="allowances offered, at most")
    opens_at: AwareDatetime = Field(description="bids from this instant")
    closes_at: AwareDatetime = Field(description="the first instant bids are refused")
    bidders: Literal["covered"] = Field(
        description="entities covered for the compliance year with an open registry account"
    )
    bidder_cap: int = Field(gt=0, description="all of one bidder's bids together")
    reserve: ReservePrice
    use: Literal["surrender_only"] = Field(
        description="usable only for the compliance year's surrender; never transferred"
    )
    payment_due: AwareDatetime = Field(description="an award not paid before this is cancelled")

    @model_validator(mode="after")
    def _in_order(self) -> Auction:
        if not self.reserve.reference_from <= self.reserve.reference_to:
            raise ValueError(f"auction {self.id}: reference window ends before it starts")
        if not self.opens_at < self.closes_at <= self.payment_due:
            raise ValueError(f"auction {self.id}: opens_at < closes_at <= payment_due")
        return self


class Policy(_Closed):
    cycle: str
    compliance_year: int
    timezone: str
    source: str
    districts: dict[Identifier, str] = Field(
        min_length=1,
        description="the platform's code of each district bureau and zone committee: its name",
    )
    deadlines: Deadlines
    monitoring_plan: MonitoringPlanRules
    report: ReportRules
    offsets: Offsets
    preallocation: Preallocation
    rounding: RoundingRules
    allocation: Allocation
    factor_table: str
    emission_factors: EmissionFactors
    verification: VerificationRules
    auctions: list[Auction] = Field(default_factory=list)
    supervision: Supervision

    def due_at(self, obligation: str) -> datetime:
        """The first instant the obligation is late (its deadline)."""
        if obligation not in OBLIGATIONS:
            raise KeyError(obligation)
        due: datetime = getattr(self.deadlines, obligation)
        return due

    @model_validator(mode="after")
    def _lots_name_known_districts(self) -> Policy:
        for lot in self.verification.lots:
            unknown = [district for district in lot.districts if district not in self.districts]
            if unknown:
                raise ValueError(f"lot {lot.id} names unknown districts {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _auctions_of_this_year(self) -> Policy:
        ids = [auction.id for auction in self.auctions]
        if len(set(ids)) != len(ids):
            raise ValueError("auction ids must be unique")
        for auction in self.auctions:
            if auction.compliance_year != self.compliance_year:
                raise ValueError(f"auction {auction.id} is for another compliance year")
        return self

    def auction(self, auction_id: str) -> Auction:
        """The announced auction; NotFound `unknown_auction` if the policy has none by that id."""
        for auction in self.auctions:
            if auction.id == auction_id:
                return auction
        raise NotFound("unknown_auction", f"the policy {self.cycle} has no auction {auction_id}")

    def ensure_district(self, district: str) -> None:
        """Refuse (422 `unknown_district`) a district that is not in the policy's code list."""
        if district not in self.districts:
            raise Invalid(
                "unknown_district",
                f"unknown district {district!r}: not in the districts code list of the policy"
                f" {self.cycle}",
            )

    def ensure_year(self, year: int) -> None:
        """Refuse (422 `no_policy`) work on a compliance year this policy does not govern."""
        if year != self.compliance_year:
            raise Invalid(
                "no_policy", f"no compliance policy loaded for {year} (running {self.cycle})"
            )

    def to_allowances(self, tonnes: Decimal, rule: Rounding) -> int:
        """Whole allowances from decimal tonnes by one of the policy's rounding rules."""
        return int(tonnes.quantize(Decimal(1), rounding=_DECIMAL_ROUNDING[rule]))


def load_policy(path: Path) -> Policy:
    return Policy.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def default_policy_path(cycle: str = "shanghai-2024") -> Path:
    return contract_path(f"policies/{cycle}.yaml")
