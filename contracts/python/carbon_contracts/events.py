"""Event payloads, version 1. Closed models: producers validate what they send with them.

Every payload carries the covered entity's credit code (also the Kafka key) and the compliance
year it belongs to. Timestamps are aware datetimes (RFC 3339).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, ClassVar, Literal, get_args
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from carbon_contracts.types import (
    IDENTIFIER_PATTERN,
    INSTRUMENT_PATTERN,
    Allowances,
    ComplianceYear,
    CreditCode,
    DecimalString,
    Flag,
    Identifier,
    TonnesCO2,
    WholeNumber,
    Yuan,
)

OffsetType = Literal["CCER", "SHCERCIR1"]
ProofId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
TradingAccountId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
Instrument = Annotated[
    str,
    Field(pattern=INSTRUMENT_PATTERN, description="instrument traded, e.g. SHEA (allowances)"),
]
ObligationName = Literal["monitoring_plan", "report", "accounts_opening", "surrender"]
"""What an entity must do by the policy deadline of the same name; its status is watched per
entity by the service that owns it (reporting: the first two; registry: the others)."""
OBLIGATIONS: tuple[str, ...] = get_args(ObligationName)
PaymentId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
SurrenderOnly = Literal["surrender_only"]
"""Auctioned allowances: usable only for the auction's compliance year's surrender, never
transferred."""


class Payload(BaseModel):
    """Base of every event payload: closed, immutable, and named by its event type. Each kind
    declares its key field first, then `compliance_year`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    EVENT: ClassVar[str]
    VERSION: ClassVar[int] = 1

    @property
    def subject(self) -> str:
        """What the event is about: its Kafka key and `ce_subject`."""
        raise NotImplementedError


class EventPayload(Payload):
    """An event about one covered entity, keyed by its credit code."""

    credit_code: CreditCode
    compliance_year: ComplianceYear

    @property
    def subject(self) -> str:
        return self.credit_code


class CyclePayload(Payload):
    """An event about a whole compliance cycle, keyed by the policy cycle (e.g. shanghai-2024)."""

    policy: Identifier = Field(description="compliance policy cycle, e.g. shanghai-2024")
    compliance_year: ComplianceYear

    @property
    def subject(self) -> str:
        return self.policy


class EntityRegistered(EventPayload):
    """The Bureau put a covered entity on the roster of a compliance year."""

    EVENT = "entity.registered"

    name: str = Field(min_length=1, max_length=200)
    district: Identifier = Field(description="district bureau or zone committee supervising it")
    sector: Identifier
    new_entrant: Flag = Field(description="newly covered this year: must open accounts")
    registered_at: AwareDatetime


class AccountOpened(EventPayload):
    """The entity opened its allowance account in the registry."""

    EVENT = "account.opened"

    account_id: str = Field(pattern=r"^SHEA-[0-9A-Z]{18}$")
    opened_at: AwareDatetime
    on_time: Flag | None = Field(
        default=None,
        description="new entrants only: opened before the policy's accounts_opening deadline",
    )


class ReportLine(BaseModel):
    """One activity line of a report and the emissions computed from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["fuel", "electricity", "heat"]
    fuel: Identifier | None = Field(default=None, description="fuel code, for source=fuel")
    activity: DecimalString = Field(description="activity data in `unit`")
    unit: str = Field(min_length=1, max_length=32)
    factor: DecimalString = Field(description="emission factor, tCO2 per `unit`")
    emissions: TonnesCO2


class ProcessLine(BaseModel):
    """One industrial process line: material decomposed (e.g. limestone) and its emissions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    material: Identifier = Field(description="material code from the policy's process factors")
    activity: DecimalString = Field(description="material decomposed, in `unit`")
    unit: str = Field(min_length=1, max_length=32)
    factor: DecimalString = Field(description="emission factor, tCO2 per `unit`")
    emissions: TonnesCO2


class ProductionOutput(BaseModel):
    """A production output the allocation methods need (e.g. clinker, t)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product: Identifier
    unit: str = Field(min_length=1, max_length=32)
    quantity: DecimalString


class ReportSubmitted(EventPayload):
    """The entity submitted (or corrected) its annual emissions report; the total is computed
    from all its lines, never typed. A correction is a new `version` with a reason; the latest
    version is the report."""

    EVENT = "report.submitted"

    report_id: UUID
    factor_table: str = Field(min_length=1, description="version of the factor table used")
    lines: list[ReportLine] = Field(
        min_length=1, description="fuel, electricity and heat lines (processes: process_lines)"
    )
    total_emissions: TonnesCO2 = Field(description="all lines, process lines included")
    submitted_at: AwareDatetime
    version: WholeNumber = Field(default=1, ge=1, description="1, then one more per correction")
    correction_reason: str | None = Field(
        default=None, max_length=2000, description="why this version replaces the previous one"
    )
    late: Flag | None = Field(
        default=None, description="submitted at or after the policy's report deadline"
    )
    process_lines: list[ProcessLine] = Field(default_factory=list)
    outputs: list[ProductionOutput] = Field(default_factory=list)


Round = Literal["verification", "reverification"]
ReturnedBy = Literal["bureau", "verifier"]


class VerificationAssigned(EventPayload):
    """The Bureau assigned a verification agency to a report's case (a tender lot's winner)."""

    EVENT = "verification.assigned"

    case_id: UUID
    report_id: UUID
    agency_id: Identifier
    assigned_at: AwareDatetime
    round: Round | None = Field(default=None, description="absent on early events: verification")
    lot_id: Identifier | None = Field(default=None, description="the tender lot assigning it")


class VerificationApproved(EventPayload):
    """The assigned agency approved the case: the verified emissions are recomputed by the
    calculation engine from the verified lines. Not yet final: re-verification may follow
    (the final figure is `verification.finalised`)."""

    EVENT = "verification.approved"

    case_id: UUID
    report_id: UUID
    agency_id: Identifier
    reported_emissions: TonnesCO2
    verified_emissions: TonnesCO2
    approved_at: AwareDatetime
    report_version: WholeNumber | None = Field(
        default=None, ge=1, description="the version verified"
    )
    factor_table: str | None = Field(default=None, min_length=1)
    lines: list[ReportLine] = Field(default_factory=list, description="verified lines")
    process_lines: list[ProcessLine] = Field(default_factory=list)
    outside_window: Flag | None = Field(
        default=None, description="approved outside the policy's verification window"
    )


class MonitoringPlanSource(BaseModel):
    """An emission source of a monitoring plan and how its activity figure is monitored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["fuel", "process", "electricity", "heat"]
    fuel: Identifier | None = Field(default=None, description="for source=fuel")
    material: Identifier | None = Field(default=None, description="for source=process")
    monitoring: Literal["meter", "invoice", "lab_measurement"]
    factor: Literal["default", "measured"] = Field(description="policy default or measured")
    description: str | None = Field(default=None, max_length=500)


class MonitoringPlanOutput(BaseModel):
    """A production output the plan will report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product: Identifier
    unit: str = Field(min_length=1, max_length=32)


class MonitoringPlanSubmitted(EventPayload):
    """The entity submitted a version of its monitoring plan for `plan_year` (online only)."""

    EVENT = "monitoring_plan.submitted"

    plan_id: UUID
    plan_year: ComplianceYear
    version: WholeNumber = Field(ge=1)
    sources: list[MonitoringPlanSource] = Field(min_length=1)
    outputs: list[MonitoringPlanOutput]
    late: Flag = Field(description="submitted at or after the policy's plan deadline")
    submitted_at: AwareDatetime


class MonitoringPlanApproved(EventPayload):
    """The Bureau (or the technical centre for it) approved a monitoring plan version."""

    EVENT = "monitoring_plan.approved"

    plan_id: UUID
    plan_year: ComplianceYear
    version: WholeNumber = Field(ge=1)
    approved_at: AwareDatetime


class MonitoringPlanReturned(EventPayload):
    """The Bureau returned a monitoring plan version; the entity submits a new version."""

    EVENT = "monitoring_plan.returned"

    plan_id: UUID
    plan_year: ComplianceYear
    version: WholeNumber = Field(ge=1)
    reason: str = Field(min_length=1, max_length=2000)
    returned_at: AwareDatetime


class ReportReturned(EventPayload):
    """A report version was returned to the entity for correction, by the Bureau or by the
    verifier; the entity submits a corrected version."""

    EVENT = "report.returned"

    report_id: UUID
    version: WholeNumber = Field(ge=1)
    returned_by: ReturnedBy
    reason: str = Field(min_length=1, max_length=2000)
    returned_at: AwareDatetime


class ReportAccepted(EventPayload):
    """The Bureau accepted a report version: submitted online and its paper copy received."""

    EVENT = "report.accepted"

    report_id: UUID
    version: WholeNumber = Field(ge=1)
    total_emissions: TonnesCO2
    accepted_at: AwareDatetime


class PaperCopyReceived(EventPayload):
    """The Bureau received the report's sealed paper copy."""

    EVENT = "report.paper_copy_received"

    report_id: UUID
    received_on: date = Field(description="date the copy arrived (Asia/Shanghai)")
    delivery: Literal["post", "courier", "in_person"]
    recorded_at: AwareDatetime


class EmissionsDetermined(EventPayload):
    """No report came: the Bureau determined the entity's emissions itself, with a reason.
    The figure is computed from the lines like a report's, and is final."""

    EVENT = "emissions.determined"

    determination_id: UUID
    factor_table: str = Field(min_length=1)
    lines: list[ReportLine] = Field(default_factory=list)
    process_lines: list[ProcessLine] = Field(default_factory=list)
    total_emissions: TonnesCO2
    reason: str = Field(min_length=1, max_length=2000)
    determined_at: AwareDatetime


class VerificationReturned(EventPayload):
    """The verifier returned the report to the entity for correction."""

    EVENT = "verification.returned"

    case_id: UUID
    report_id: UUID
    report_version: WholeNumber = Field(ge=1)
    agency_id: Identifier
    reason: str = Field(min_length=1, max_length=2000)
    returned_at: AwareDatetime


class ReverificationSelected(EventPayload):
    """The Bureau selected an approved case for re-verification (复查)."""

    EVENT = "reverification.selected"

    case_id: UUID
    report_id: UUID
    selected_by: Literal["bureau", "rule"]
    reason: str = Field(min_length=1, max_length=2000)
    first_verified_emissions: TonnesCO2
    selected_at: AwareDatetime


class ReverificationCompleted(EventPayload):
    """The re-verification agency (not the first one) recomputed the verified emissions."""

    EVENT = "reverification.completed"

    case_id: UUID
    report_id: UUID
    agency_id: Identifier
    first_verified_emissions: TonnesCO2
    verified_emissions: TonnesCO2
    factor_table: str = Field(min_length=1)
    lines: list[ReportLine] = Field(default_factory=list)
    process_lines: list[ProcessLine] = Field(default_factory=list)
    outside_window: Flag
    completed_at: AwareDatetime


class VerificationFinalised(EventPayload):
    """The entity's final verified emissions for the year: re-verification can no longer change
    them. Allocation and the surrender obligation rest on this figure only."""

    EVENT = "verification.finalised"

    case_id: UUID
    report_id: UUID | None = Field(description="None for a regulator determination")
    basis: Literal["verification", "reverification", "determination"]
    verified_emissions: TonnesCO2
    finalised_at: AwareDatetime
    outputs: list[ProductionOutput] = Field(
        default_factory=list,
        description="verified production outputs (the output-based allocation methods read "
        "them); absent on early events",
    )


class VerificationClosed(CyclePayload):
    """The Bureau closed verification for the year: every case is final."""

    EVENT = "verification.closed"

    cases: WholeNumber = Field(ge=0, description="final cases of the year")
    total_verified_emissions: TonnesCO2
    closed_at: AwareDatetime


class AllocationIssued(EventPayload):
    """The registry issued the year's allowances computed from the verified emissions."""

    EVENT = "allocation.issued"

    policy: Identifier = Field(description="compliance policy cycle, e.g. shanghai-2024")
    method: Identifier = Field(description="allocation method from the policy file")
    verified_emissions: TonnesCO2
    final_allocation: Allowances = Field(description="the year's allowances by the method")
    preallocated: Allowances = Field(description="pre-allocated for this year earlier")
    allowances: Allowances = Field(description="credited now: final minus pre-allocated")
    issued_at: AwareDatetime
    batch_id: UUID | None = Field(
        default=None, description="the allocation batch the Bureau approved; absent on early events"
    )
    parameters: dict[Identifier, DecimalString] = Field(
        default_factory=dict,
        description="the method's inputs: e.g. output, benchmark and each adjustment factor; "
        "or base_<year> for each base year used, and decline",
        json_schema_extra={"additionalProperties": False},  # keys match the pattern, nothing else
    )
    clawed_back: Allowances = Field(
        default=0, description="pre-allocated above the final allocation, taken back from holdings"
    )
    owed: Allowances = Field(
        default=0, description="pre-allocated above the final allocation and no longer held"
    )


class SurrenderCompleted(EventPayload):
    """The entity surrendered allowances covering its whole obligation for the year."""

    EVENT = "surrender.completed"

    policy: Identifier
    verified_emissions: TonnesCO2
    obligation: Allowances = Field(description="verified emissions rounded per policy")
    allowances_surrendered: Allowances
    offsets_surrendered: Allowances
    deadline: AwareDatetime
    on_time: Flag
    completed_at: AwareDatetime
    offsets_by_type: dict[OffsetType, Allowances] = Field(
        default_factory=dict, description="offsets_surrendered by type; absent on early events"
    )


class PreallocationIssued(EventPayload):
    """Next year's pre-allocated allowances, issued after the year's surrender."""

    EVENT = "preallocation.issued"

    policy: Identifier
    basis_year: ComplianceYear = Field(description="year whose verified emissions are the basis")
    basis_verified_emissions: TonnesCO2
    ratio: DecimalString
    allowances: Allowances
    issued_at: AwareDatetime


class AllowancesTransferred(EventPayload):
    """The registry moved allowances from the entity's registry account to its trading account
    at the exchange (the exchange credits them there)."""

    EVENT = "allowances.transferred"

    transfer_id: UUID
    account_id: str = Field(pattern=r"^SHEA-[0-9A-Z]{18}$")
    trading_account_id: TradingAccountId
    vintage: ComplianceYear
    allowances: Allowances = Field(gt=0)
    transferred_at: AwareDatetime


class AuctionAnnounced(CyclePayload):
    """The Bureau announced a paid auction (有偿竞价发放) of allowances, with its reserve price
    computed from the exchange's daily summaries over the reference window."""

    EVENT = "auction.announced"

    auction_id: Identifier
    volume: Allowances = Field(gt=0, description="allowances offered, at most")
    opens_at: AwareDatetime = Field(description="bids from this instant")
    closes_at: AwareDatetime = Field(description="the first instant bids are refused")
    bidders: Literal["covered"] = Field(
        description="covered entities of the compliance year with an open registry account"
    )
    bidder_cap: Allowances = Field(gt=0, description="all of one bidder's bids together")
    use: SurrenderOnly
    instrument: Instrument
    reference_from: date = Field(description="first trading day of the reference window")
    reference_to: date = Field(description="last trading day of the reference window")
    reference_trading_days: WholeNumber = Field(ge=1, description="days with trades in it")
    reference_volume: Allowances = Field(gt=0, description="allowances traded in the window")
    reference_turnover: Yuan = Field(description="their value")
    multiplier: DecimalString = Field(description="of the volume-weighted average price")
    reserve_price: Yuan = Field(
        description="multiplier x turnover / volume, rounded to the fen per the policy; "
        "bids below it are invalid"
    )
    payment_due: AwareDatetime = Field(description="an unpaid award is cancelled from here")
    announced_at: AwareDatetime


class AuctionCleared(CyclePayload):
    """The auction closed and cleared once: best prices first, then earliest bids; every winner
    pays the uniform clearing price, the lowest accepted bid. No sale: clearing_price absent."""

    EVENT = "auction.cleared"

    auction_id: Identifier
    volume: Allowances = Field(gt=0)
    reserve_price: Yuan
    clearing_price: Yuan | None = Field(default=None, description="absent when nothing sold")
    sold: Allowances
    bids: WholeNumber = Field(ge=0, description="valid bids at the close")
    bid_volume: Allowances = Field(description="allowances bid for, all bids together")
    bidders: WholeNumber = Field(ge=0)
    winners: WholeNumber = Field(ge=0)
    cleared_at: AwareDatetime


class FilledBid(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bid_id: UUID
    price: Yuan
    quantity: Allowances = Field(gt=0)
    filled: Allowances = Field(description="of quantity; less on the marginal bid")


class AuctionWon(EventPayload):
    """The entity won allowances at the auction; it pays the exchange `amount_due` by
    `payment_due`, then the registry credits them as surrender-only."""

    EVENT = "auction.won"

    auction_id: Identifier
    allowances: Allowances = Field(gt=0)
    price: Yuan = Field(description="the uniform clearing price")
    amount_due: Yuan = Field(description="allowances x price")
    payment_due: AwareDatetime
    use: SurrenderOnly
    bids: list[FilledBid] = Field(min_length=1, description="the entity's bids that won")
    won_at: AwareDatetime


class AuctionSettled(EventPayload):
    """The exchange confirmed the winner's payment; the registry credited the allowances as
    surrender-only for the compliance year (vintage = compliance_year)."""

    EVENT = "auction.settled"

    auction_id: Identifier
    payment_id: PaymentId
    allowances: Allowances = Field(gt=0)
    price: Yuan
    amount: Yuan
    use: SurrenderOnly
    settled_at: AwareDatetime


class AuctionAwardCancelled(EventPayload):
    """The winner did not pay by the payment deadline: its award is cancelled, nothing is
    credited."""

    EVENT = "auction.award_cancelled"

    auction_id: Identifier
    allowances: Allowances = Field(gt=0)
    amount_due: Yuan
    payment_due: AwareDatetime
    reason: Literal["unpaid"]
    cancelled_at: AwareDatetime


# --- Deadlines: each obligation's owner watches it per entity ----------------------------------
Missing = Annotated[str, Field(min_length=1, max_length=500)]


class ObligationEvent(EventPayload):
    """About one entity's obligation and its deadline (the first instant that is late)."""

    policy: Identifier
    obligation: ObligationName
    district: Identifier = Field(description="the district bureau or zone committee supervising")
    due_at: AwareDatetime

    @model_validator(mode="after")
    def _named_by_its_type(self) -> ObligationEvent:
        _check_obligation(self)
        return self


class ReminderDue(ObligationEvent):
    """The deadline is near and the entity's obligation is still open: what is still missing."""

    before: timedelta = Field(
        description="which of the policy's reminders this is: how long before the deadline "
        "(ISO 8601 duration, e.g. P1D)"
    )
    missing: Missing = Field(description="e.g. 'surrendered 18000 of 24252 allowances'")
    reminded_at: AwareDatetime


class Overdue(ObligationEvent):
    """The deadline passed with the obligation unmet: a case opens in the district's queue."""

    missing: Missing
    escalates_at: AwareDatetime = Field(description="the case goes to the Bureau from here")


class DoneLate(ObligationEvent):
    """The entity met the obligation after its deadline; its case, if open, is closed."""

    done_at: AwareDatetime


class CaseEscalated(ObligationEvent):
    """The case stayed open until its SLA passed: it goes to the Bureau."""

    missing: Missing
    opened_at: AwareDatetime
    escalated_at: AwareDatetime


def _closed_district_map(schema: dict[str, Any]) -> None:
    # A map closed the way the exporter checks: keys by propertyNames, values by
    # additionalProperties (pydantic would say patternProperties, which leaves it open).
    schema.pop("patternProperties", None)
    schema["propertyNames"] = {"pattern": IDENTIFIER_PATTERN}
    schema["additionalProperties"] = {"type": "integer", "minimum": 0}


class DeadlinePassed(CyclePayload):
    """A deadline passed: who had met it then, and who had not (each an overdue event)."""

    obligation: ObligationName
    due_at: AwareDatetime
    obligated: WholeNumber = Field(ge=0, description="entities bound by it")
    done_on_time: WholeNumber = Field(ge=0)
    overdue: WholeNumber = Field(ge=0, description="not met at the instant it passed")
    overdue_by_district: dict[Identifier, WholeNumber] = Field(
        default_factory=dict,
        description="overdue, per district (districts with none absent)",
        json_schema_extra=_closed_district_map,
    )
    passed_at: AwareDatetime

    @model_validator(mode="after")
    def _named_by_its_type(self) -> DeadlinePassed:
        _check_obligation(self)
        if sum(self.overdue_by_district.values()) != self.overdue:
            raise ValueError("overdue_by_district must add up to overdue")
        if self.done_on_time + self.overdue > self.obligated:
            raise ValueError("done_on_time + overdue cannot exceed obligated")
        return self


def _check_obligation(payload: ObligationEvent | DeadlinePassed) -> None:
    # surrender.overdue is about the surrender: the field repeats what the event type says.
    event = getattr(type(payload), "EVENT", None)
    if event is not None and event.split(".")[0] != payload.obligation:
        raise ValueError(f"{event} is about {event.split('.')[0]}, not {payload.obligation}")


def _per_obligation(kind: type[Payload], suffix: str) -> list[type[Payload]]:
    """One event type per obligation, e.g. surrender.overdue: the same shape, its own name."""
    return [
        type(
            f"{obligation.title().replace('_', '')}{kind.__name__}",
            (kind,),
            {"EVENT": f"{obligation}.{suffix}", "__doc__": kind.__doc__},
        )
        for obligation in OBLIGATIONS
    ]


DEADLINE_EVENTS: tuple[type[Payload], ...] = tuple(
    model
    for kind, suffix in (
        (ReminderDue, "reminder_due"),
        (Overdue, "overdue"),
        (DoneLate, "done_late"),
        (CaseEscalated, "case_escalated"),
        (DeadlinePassed, "deadline_passed"),
    )
    for model in _per_obligation(kind, suffix)
)


# --- Inbound: written by external systems, read by the registry -------------------------------


class OffsetCancelled(EventPayload):
    """An offset issuer cancelled offsets for the entity and issued a cancellation proof. The
    entity names the proof when it surrenders; the registry checks it against this event."""

    OFFSET_TYPE: ClassVar[str]

    proof_id: ProofId = Field(description="the cancellation proof's number, unique per issuer")
    quantity: Allowances = Field(gt=0, description="tCO2e cancelled, whole units")
    project_id: str = Field(min_length=1, max_length=64, description="the originating project")
    cancelled_on: date = Field(description="the date on the cancellation proof (certificate)")
    cancelled_at: AwareDatetime


class CcerCancelled(OffsetCancelled):
    """The national CCER registry cancelled CCERs for the entity's surrender."""

    EVENT = "ccer.cancelled"
    OFFSET_TYPE = "CCER"


class Shcercir1Cancelled(OffsetCancelled):
    """The carbon inclusion platform cancelled SHCERCIR1 (碳普惠Ⅰ类减排量) for the entity and
    issued its cancellation certificate (注销证明)."""

    EVENT = "shcercir1.cancelled"
    OFFSET_TYPE = "SHCERCIR1"


class TradingAccountOpened(EventPayload):
    """The exchange opened the entity's trading account; the registry links it to the entity's
    registry account."""

    EVENT = "trading_account.opened"

    trading_account_id: TradingAccountId
    opened_at: AwareDatetime


class ExchangeTransferSettled(EventPayload):
    """The exchange moved allowances from the entity's trading account back to its registry
    account (after trades settled there)."""

    EVENT = "exchange_transfer.settled"

    transfer_id: UUID = Field(description="the exchange's id: applied once, however often sent")
    trading_account_id: TradingAccountId
    vintage: ComplianceYear
    allowances: Allowances = Field(gt=0)
    settled_at: AwareDatetime


class MarketDayClosed(Payload):
    """The exchange's summary of one trading day of an instrument: volume and turnover of its
    trades (the reserve price of an auction is computed from these). Keyed by the instrument."""

    EVENT = "market_day.closed"

    instrument: Instrument
    trading_date: date
    volume: Allowances = Field(description="units traded that day")
    turnover: Yuan = Field(description="value of those trades")
    closed_at: AwareDatetime

    @model_validator(mode="after")
    def _turnover_with_volume(self) -> MarketDayClosed:
        if (self.volume == 0) != (self.turnover == 0):
            raise ValueError("volume and turnover are both zero or both positive")
        return self

    @property
    def subject(self) -> str:
        return self.instrument


class AuctionPaymentConfirmed(EventPayload):
    """The exchange received the winner's payment for allowances won at an auction."""

    EVENT = "auction_payment.confirmed"

    auction_id: Identifier
    payment_id: PaymentId = Field(description="the exchange's id: applied once, however often sent")
    amount: Yuan
    paid_at: AwareDatetime


_MODELS: tuple[type[Payload], ...] = (
    EntityRegistered,
    AccountOpened,
    MonitoringPlanSubmitted,
    MonitoringPlanApproved,
    MonitoringPlanReturned,
    ReportSubmitted,
    ReportReturned,
    PaperCopyReceived,
    ReportAccepted,
    EmissionsDetermined,
    VerificationAssigned,
    VerificationReturned,
    VerificationApproved,
    ReverificationSelected,
    ReverificationCompleted,
    VerificationFinalised,
    VerificationClosed,
    AllocationIssued,
    SurrenderCompleted,
    PreallocationIssued,
    AllowancesTransferred,
    CcerCancelled,
    Shcercir1Cancelled,
    TradingAccountOpened,
    ExchangeTransferSettled,
    AuctionAnnounced,
    AuctionCleared,
    AuctionWon,
    AuctionSettled,
    AuctionAwardCancelled,
    MarketDayClosed,
    AuctionPaymentConfirmed,
    *DEADLINE_EVENTS,
)
EVENT_MODELS: dict[str, type[Payload]] = {model.EVENT: model for model in _MODELS}


def model_for(event: str, major: int = 1) -> type[Payload]:
    """The payload model of an event type and major version; KeyError if unknown."""
    model = EVENT_MODELS[event]
    if major != model.VERSION:
        raise KeyError(f"{event} v{major}")
    return model
