"""What goes into the reporting system's commands and what comes out: requests, commands and
the typed views the API answers with, built from the contract types."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from carbon_contracts.events import (
    MonitoringPlanOutput,
    MonitoringPlanSource,
    ProcessLine,
    ProductionOutput,
    ReportLine,
)
from carbon_contracts.types import (
    ComplianceYear,
    CreditCode,
    DecimalString,
    Flag,
    TonnesCO2,
    WholeNumber,
)
from carbon_emissions.lines import MAX_LINES, ActivityInput
from reporting.domain import plan, report

__all__ = ["ActivityInput"]  # the input line is the engine's own (carbon_emissions.lines)

MAX_OUTPUTS = 100
MAX_SOURCES = 200


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _iso_date(value: Any) -> Any:
    # On the wire a date is a "YYYY-MM-DD" string only: never a number of seconds, never a
    # date-time. (A command built from a parsed request already holds a date.)
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError('a date is a string "YYYY-MM-DD"')
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Version = Annotated[
    WholeNumber | None,
    Field(
        ge=1,
        description="the version the decision was made on, refused unless it is the latest; "
        "leave it out to decide the latest",
    ),
]
Lines = Annotated[list[ActivityInput], Field(min_length=1, max_length=MAX_LINES)]
Outputs = Annotated[list[ProductionOutput], Field(max_length=MAX_OUTPUTS)]


# --- monitoring plans -------------------------------------------------------------------------


class PlanContents(_Closed):
    sources: list[MonitoringPlanSource] = Field(min_length=1, max_length=MAX_SOURCES)
    outputs: list[MonitoringPlanOutput] = Field(default_factory=list, max_length=MAX_OUTPUTS)


class PlanInput(PlanContents):
    plan_year: ComplianceYear = Field(description="the year the plan is for (the policy's)")


class SubmitPlan(PlanInput):
    """The first version of the plan of the caller's entity."""

    credit_code: str
    submitted_by: str


class ResubmitPlan(PlanContents):
    """A new version of a returned plan."""

    plan_id: UUID
    submitted_by: str


class ApproveInput(_Closed):
    version: Version = None


class ReturnInput(_Closed):
    version: Version = None
    reason: Reason


class DecidePlan(_Closed):
    plan_id: UUID
    version: int | None = None
    decision: plan.Decision
    reason: str | None = None
    decided_by: str


class PlanVersionView(_Closed):
    version: int
    sources: list[MonitoringPlanSource]
    outputs: list[MonitoringPlanOutput]
    submitted_at: datetime
    decision: plan.Decision | None
    decided_at: datetime | None
    reason: str | None = Field(description="why it was returned")


class TransitionView(_Closed):
    """One step of the audit trail: who did what to which version, when and why."""

    version: int
    action: str
    from_status: str | None
    to_status: str
    by: str = Field(description="the token subject, or the agency for a verifier's return")
    at: datetime
    reason: str | None
    event_id: str | None = Field(description="ce_id of the event it published, if any")


class PlanView(_Closed):
    plan_id: UUID
    credit_code: str
    compliance_year: ComplianceYear
    plan_year: ComplianceYear
    district: str | None
    sector: str | None
    status: plan.Status
    version: int = Field(description="the latest version")
    late: bool = Field(description="first submitted at or after the policy's plan deadline")
    first_submitted_at: datetime
    sources: list[MonitoringPlanSource] = Field(description="of the latest version")
    outputs: list[MonitoringPlanOutput]


class PlanDetail(PlanView):
    versions: list[PlanVersionView]
    history: list[TransitionView]


class PlanChange(PlanView):
    event_id: str = Field(description="ce_id of the event it published")


# --- reports ----------------------------------------------------------------------------------


class ReportContents(_Closed):
    lines: Lines = Field(description="fuel, process, electricity and heat lines")
    outputs: Outputs = Field(default_factory=list, description="production outputs")


class ReportInput(ReportContents):
    compliance_year: ComplianceYear
    draft: Flag = Field(default=False, description="keep it as a draft: submit it later")


class SubmitReport(ReportInput):
    """A report (or a draft of one) for the entity of the caller's token."""

    credit_code: str
    submitted_by: str


class EditDraft(ReportContents):
    report_id: UUID
    edited_by: str


class SubmitDraft(_Closed):
    report_id: UUID
    submitted_by: str


class CorrectionInput(ReportContents):
    reason: Reason = Field(description="why this version replaces the previous one")


class CorrectReport(CorrectionInput):
    report_id: UUID
    submitted_by: str


class ReturnReport(_Closed):
    report_id: UUID
    version: int | None = None
    reason: str
    returned_by: str


class PaperCopyInput(_Closed):
    received_on: IsoDate = Field(description="the day the sealed copy arrived (Asia/Shanghai)")
    delivery: Literal["post", "courier", "in_person"]


class RecordPaperCopy(PaperCopyInput):
    report_id: UUID
    recorded_by: str


class AcceptReport(_Closed):
    report_id: UUID
    version: int | None = None
    accepted_by: str


class PaperCopyView(_Closed):
    received_on: date
    delivery: Literal["post", "courier", "in_person"]
    recorded_at: datetime


class ReportVersionView(_Closed):
    version: int
    factor_table: str = Field(description="version of the factor table the lines used")
    lines: list[ReportLine]
    process_lines: list[ProcessLine]
    outputs: list[ProductionOutput]
    total_emissions: TonnesCO2
    submitted_at: datetime | None = Field(description="None while a draft")
    correction_reason: str | None


class ReportView(_Closed):
    report_id: UUID
    credit_code: str
    compliance_year: ComplianceYear
    district: str | None
    sector: str | None
    status: report.Status
    version: int = Field(description="the latest version (a draft is version 1 to be)")
    late: bool | None = Field(
        description="first submitted at or after the policy's report deadline; None while a "
        "draft, and for reports submitted before lateness was recorded"
    )
    first_submitted_at: datetime | None
    paper_copy: PaperCopyView | None
    complete: bool = Field(description="submitted online and (if the policy asks) on paper")
    accepted_version: int | None
    factor_table: str = Field(description="of the latest version")
    lines: list[ReportLine]
    process_lines: list[ProcessLine]
    outputs: list[ProductionOutput]
    total_emissions: TonnesCO2
    submitted_at: datetime | None = Field(description="of the latest version; None for a draft")
    correction_reason: str | None


class ReportDetail(ReportView):
    versions: list[ReportVersionView]
    history: list[TransitionView]


class ReportChange(ReportView):
    event_id: str | None = Field(description="ce_id of the event it published; None for a draft")


SubmittedReport = ReportChange


# --- regulator determinations -----------------------------------------------------------------


class DeterminationInput(_Closed):
    credit_code: CreditCode
    compliance_year: ComplianceYear
    lines: Lines
    reason: Reason = Field(description="why the Bureau determines the emissions itself")


class Determine(DeterminationInput):
    determined_by: str


class DeterminationView(_Closed):
    determination_id: UUID
    credit_code: str
    compliance_year: ComplianceYear
    district: str | None
    sector: str | None
    factor_table: str
    lines: list[ReportLine]
    process_lines: list[ProcessLine]
    total_emissions: TonnesCO2
    reason: str
    determined_at: datetime


class DeterminationChange(DeterminationView):
    event_id: str = Field(description="ce_id of the emissions.determined event")


# --- the factor table -------------------------------------------------------------------------


class FactorView(_Closed):
    unit: str
    factor: DecimalString = Field(description="tCO2 per unit")


class FactorTableView(_Closed):
    version: str
    electricity: FactorView
    heat: FactorView
    fuels: dict[str, FactorView]
    processes: dict[str, FactorView] = Field(description="industrial processes, per material")
