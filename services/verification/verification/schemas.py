"""What goes into verification's commands and what comes out: requests, commands and the typed
views the API answers with, built from the contract types."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from carbon_contracts.events import ProcessLine, ProductionOutput, ReportLine
from carbon_contracts.types import ComplianceYear, Identifier, TonnesCO2
from carbon_emissions.lines import MAX_LINES, ActivityInput
from verification.domain.case import Basis, Round, SelectedBy, Status

SignedTonnes = Annotated[
    Decimal,
    PlainSerializer(lambda value: f"{value:.3f}", return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^-?(0|[1-9][0-9]{0,11})\.[0-9]{3}$",
            "description": "tCO2e, signed, as a decimal string with exactly three decimals",
        }
    ),
]


def _day(value: Any) -> Any:
    # A date as people write it, never a number (a timestamp) nor a date-time.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return date.fromisoformat(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ValueError("a date is written YYYY-MM-DD")


Day = Annotated[date, BeforeValidator(_day), Field(description="YYYY-MM-DD, Asia/Shanghai")]
Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- requests ---------------------------------------------------------------------------------


class Assignment(_Closed):
    agency_id: Identifier = Field(description="the agency of the case's tender lot (GET /lots)")


class ContactInput(_Closed):
    name: str = Field(min_length=1, max_length=100, description="the entity's contact person")
    phone: str = Field(pattern=r"^\+?[0-9][0-9 -]{4,30}$", max_length=32)


class SiteVisitInput(_Closed):
    visited_on: Day
    findings: str = Field(min_length=1, max_length=4000)


class ReturnInput(_Closed):
    reason: Reason = Field(description="what the entity must correct")


class ApprovalInput(_Closed):
    lines: list[ActivityInput] = Field(
        min_length=1,
        max_length=MAX_LINES,
        description="the verified activity lines: the emissions are recomputed from them",
    )
    outputs: list[ProductionOutput] | None = Field(
        default=None,
        max_length=MAX_LINES,
        description="the verified production outputs (the allocation by output reads them); "
        "absent: as reported",
    )


class SelectionInput(_Closed):
    reason: Reason = Field(description="why the Bureau selects the case for re-verification")


# --- commands ---------------------------------------------------------------------------------


class _CaseCommand(_Closed):
    case_id: str
    by: str = Field(description="the caller's token subject, for the audit trail")


class AssignCase(_CaseCommand, Assignment):
    pass


class AssignLot(_Closed):
    lot_id: str
    by: str


class NameContact(_CaseCommand, ContactInput):
    pass


class RecordSiteVisit(_CaseCommand, SiteVisitInput):
    agency_id: str = Field(description="the caller's agency")


class ReturnCase(_CaseCommand, ReturnInput):
    agency_id: str


class ApproveCase(_CaseCommand, ApprovalInput):
    agency_id: str


class SelectCase(_CaseCommand, SelectionInput):
    pass


class FinaliseCase(_CaseCommand):
    pass


class YearCommand(_Closed):
    compliance_year: int
    by: str


# --- views ------------------------------------------------------------------------------------


class SiteVisitView(_Closed):
    visited_on: date
    findings: str


class ContactView(_Closed):
    name: str
    phone: str


class CaseView(_Closed):
    case_id: UUID
    report_id: UUID | None = Field(description="None for a regulator determination")
    determination_id: UUID | None
    credit_code: str
    compliance_year: ComplianceYear
    district: str | None = Field(description="from the roster; None while not on it")
    sector: str | None
    status: Status
    round: Round
    lot_id: str | None = Field(
        description="the current round's lot: the one assigned through, else the first lot of "
        "the round covering the entity (None when not on the roster)"
    )
    agency_id: str | None = Field(description="the agency at work in the current round")
    first_agency_id: str | None = Field(description="the agency whose verification approved")
    report_version: int | None
    reported_emissions: TonnesCO2 | None
    verified_emissions: TonnesCO2 | None = Field(description="the first verification's figure")
    reverified_emissions: TonnesCO2 | None
    difference: SignedTonnes | None = Field(
        description="latest verified (re-verified, if any) minus reported"
    )
    final_emissions: TonnesCO2 | None
    final_basis: Basis | None
    selected_by: SelectedBy | None
    selection_reason: str | None
    contact: ContactView | None
    verification_visit: SiteVisitView | None
    reverification_visit: SiteVisitView | None
    verification_outside_window: bool | None
    reverification_outside_window: bool | None
    opened_at: datetime
    assigned_at: datetime | None
    returned_at: datetime | None
    approved_at: datetime | None
    selected_at: datetime | None
    reverified_at: datetime | None
    finalised_at: datetime | None


class HistoryEntry(_Closed):
    at: datetime
    by: str
    action: str
    from_status: Status | None
    to_status: Status
    reason: str | None


class CaseDetail(CaseView):
    history: list[HistoryEntry] = Field(description="every change, oldest first")


class ChangedCase(CaseDetail):
    event_ids: list[str] = Field(description="ce_ids of the events the change published, in order")


class CalculationView(_Closed):
    factor_table: str
    lines: list[ReportLine]
    process_lines: list[ProcessLine]
    total: TonnesCO2


class ApprovedCase(ChangedCase):
    calculation: CalculationView = Field(description="the verified lines as the engine computed")


class LotAssignment(_Closed):
    lot_id: str
    assigned: list[CaseView]
    skipped_not_on_roster: int = Field(
        description="cases waiting for this round whose entity is not on the roster yet (their "
        "lot is unknown, of any lot)"
    )
    skipped_same_agency: int = Field(
        description="cases of this re-verification lot whose first agency is the lot's own"
    )
    event_ids: list[str]


class AgencyView(_Closed):
    id: str
    name: str


class LotView(_Closed):
    id: str
    round: Round
    agency: str
    sectors: list[str] = Field(description="empty: every sector")
    districts: list[str] = Field(description="empty: every district")


class LotsView(_Closed):
    policy: str
    compliance_year: ComplianceYear
    agencies: list[AgencyView]
    lots: list[LotView] = Field(
        description="a case belongs to the first lot of its round covering it"
    )


class Selection(_Closed):
    compliance_year: ComplianceYear
    selected: list[UUID]
    finalised: list[UUID]
    event_ids: list[str]


class YearView(_Closed):
    compliance_year: ComplianceYear
    closed: bool
    closed_at: datetime | None
    rostered: int = Field(description="entities on the year's roster")
    cases: int
    cases_by_status: dict[Status, int]
    without_case: int = Field(description="rostered entities with no report case nor determination")


class YearClosure(_Closed):
    compliance_year: ComplianceYear
    policy: str
    cases: int
    total_verified_emissions: TonnesCO2
    closed_at: datetime
    event_id: str
