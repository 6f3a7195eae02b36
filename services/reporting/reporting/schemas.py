"""What goes into the reporting system's commands and what comes out: requests, commands and
the typed views the API answers with, built from the contract types."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from carbon_contracts.events import ReportLine
from carbon_contracts.types import ComplianceYear, DecimalString, Identifier, TonnesCO2


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActivityInput(_Closed):
    source: Literal["fuel", "electricity", "heat"]
    fuel: Identifier | None = Field(default=None, description="fuel code for source=fuel")
    activity: DecimalString = Field(
        description="decimal string in the factor's unit: 10^4 kWh, GJ, t or 10^4 Nm3"
    )


class ReportInput(_Closed):
    compliance_year: ComplianceYear
    lines: list[ActivityInput] = Field(min_length=1, max_length=500)


class SubmitReport(ReportInput):
    """A report submitted for the entity of the caller's token."""

    credit_code: str
    submitted_by: str


class ReportView(_Closed):
    report_id: UUID
    credit_code: str
    compliance_year: ComplianceYear
    factor_table: str = Field(description="version of the factor table the lines used")
    lines: list[ReportLine]
    total_emissions: TonnesCO2
    submitted_at: datetime


class SubmittedReport(ReportView):
    event_id: str = Field(description="ce_id of the report.submitted event")


class FactorView(_Closed):
    unit: str
    factor: DecimalString = Field(description="tCO2 per unit")


class FactorTableView(_Closed):
    version: str
    electricity: FactorView
    heat: FactorView
    fuels: dict[str, FactorView]
