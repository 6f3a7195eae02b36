"""What goes into verification's commands and what comes out: requests, commands and the typed
views the API answers with, built from the contract types."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from carbon_contracts.types import ComplianceYear, Identifier, TonnesCO2


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Assignment(_Closed):
    agency_id: Identifier = Field(description="verification agency from the tender results")


class AssignCase(Assignment):
    case_id: str


class Approval(_Closed):
    verified_emissions: TonnesCO2 = Field(description="tCO2e, decimal string with 3 decimals")


class ApproveCase(Approval):
    case_id: str
    agency_id: str = Field(description="the approving verifier's agency")
    approved_by: str


class CaseView(_Closed):
    case_id: UUID
    report_id: UUID
    credit_code: str
    compliance_year: ComplianceYear
    status: Literal["opened", "assigned", "approved"]
    agency_id: str | None
    reported_emissions: TonnesCO2
    verified_emissions: TonnesCO2 | None
    opened_at: datetime
    assigned_at: datetime | None
    approved_at: datetime | None


class ChangedCase(CaseView):
    event_id: str = Field(description="ce_id of the event the change published")
