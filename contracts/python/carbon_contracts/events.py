"""Event payloads, version 1. Closed models: producers validate what they send with them.

Every payload carries the covered entity's credit code (also the Kafka key) and the compliance
year it belongs to. Timestamps are aware datetimes (RFC 3339).
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from carbon_contracts.types import (
    Allowances,
    ComplianceYear,
    CreditCode,
    DecimalString,
    Flag,
    Identifier,
    TonnesCO2,
)


class EventPayload(BaseModel):
    """Base of every event payload: closed, immutable, and named by its event type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    EVENT: ClassVar[str]
    VERSION: ClassVar[int] = 1

    credit_code: CreditCode
    compliance_year: ComplianceYear


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


class ReportLine(BaseModel):
    """One activity line of a report and the emissions computed from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["fuel", "electricity", "heat"]
    fuel: Identifier | None = Field(default=None, description="fuel code, for source=fuel")
    activity: DecimalString = Field(description="activity data in `unit`")
    unit: str = Field(min_length=1, max_length=32)
    factor: DecimalString = Field(description="emission factor, tCO2 per `unit`")
    emissions: TonnesCO2


class ReportSubmitted(EventPayload):
    """The entity submitted its annual emissions report; the total is computed, not typed."""

    EVENT = "report.submitted"

    report_id: UUID
    factor_table: str = Field(min_length=1, description="version of the factor table used")
    lines: list[ReportLine] = Field(min_length=1)
    total_emissions: TonnesCO2
    submitted_at: AwareDatetime


class VerificationAssigned(EventPayload):
    """The Bureau assigned a verification agency to a report's case."""

    EVENT = "verification.assigned"

    case_id: UUID
    report_id: UUID
    agency_id: Identifier
    assigned_at: AwareDatetime


class VerificationApproved(EventPayload):
    """The assigned agency approved the case with the verified emissions."""

    EVENT = "verification.approved"

    case_id: UUID
    report_id: UUID
    agency_id: Identifier
    reported_emissions: TonnesCO2
    verified_emissions: TonnesCO2
    approved_at: AwareDatetime


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


class PreallocationIssued(EventPayload):
    """Next year's pre-allocated allowances, issued after the year's surrender."""

    EVENT = "preallocation.issued"

    policy: Identifier
    basis_year: ComplianceYear = Field(description="year whose verified emissions are the basis")
    basis_verified_emissions: TonnesCO2
    ratio: DecimalString
    allowances: Allowances
    issued_at: AwareDatetime


EVENT_MODELS: dict[str, type[EventPayload]] = {
    model.EVENT: model
    for model in (
        EntityRegistered,
        AccountOpened,
        ReportSubmitted,
        VerificationAssigned,
        VerificationApproved,
        AllocationIssued,
        SurrenderCompleted,
        PreallocationIssued,
    )
}


def model_for(event: str, major: int = 1) -> type[EventPayload]:
    """The payload model of an event type and major version; KeyError if unknown."""
    model = EVENT_MODELS[event]
    if major != model.VERSION:
        raise KeyError(f"{event} v{major}")
    return model
