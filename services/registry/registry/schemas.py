"""What goes into the registry's commands and what comes out: requests, commands and the typed
views the API answers with, built from the contract types."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carbon_contracts.types import (
    Allowances,
    ComplianceYear,
    Flag,
    Identifier,
    TonnesCO2,
    WholeNumber,
)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Registration(_Closed):
    """The Bureau puts a covered entity on a compliance year's roster."""

    credit_code: str = Field(description="unified social credit code, GB 32100-2015")
    name: str = Field(min_length=1, max_length=200)
    district: Identifier = Field(description="district bureau or zone committee supervising it")
    sector: Identifier
    compliance_year: ComplianceYear
    new_entrant: Flag = False


class RegisteredEntity(Registration):
    event_id: str = Field(description="ce_id of the entity.registered event")


class OpenAccount(_Closed):
    credit_code: str


class Account(_Closed):
    account_id: str
    credit_code: str
    event_id: str = Field(description="ce_id of the account.opened event")


class SurrenderRequest(_Closed):
    compliance_year: ComplianceYear
    allowances: WholeNumber = Field(gt=0, description="whole allowances to surrender")


class Surrender(SurrenderRequest):
    credit_code: str


class Holding(_Closed):
    vintage: int
    allowances: Allowances


class PreallocationView(_Closed):
    compliance_year: ComplianceYear
    allowances: Allowances


class SurrenderReceipt(_Closed):
    credit_code: str
    compliance_year: ComplianceYear
    surrendered_now: Allowances
    drawn_from: list[Holding] = Field(description="vintages debited, oldest first")
    obligation: Allowances
    surrendered: Allowances
    remaining: Allowances
    status: Literal["open", "compliant"]
    preallocation: PreallocationView | None = Field(
        description="next year's pre-allocation, issued when this surrender completed the year"
    )
    event_ids: list[str] = Field(description="ce_ids of the events this surrender caused")


class ComplianceView(_Closed):
    compliance_year: ComplianceYear
    verified_emissions: TonnesCO2
    obligation: Allowances
    surrendered: Allowances
    remaining: Allowances
    status: Literal["open", "compliant"]
    completed_at: datetime | None
    on_time: bool | None


class EntityStatus(_Closed):
    credit_code: str
    name: str
    district: str
    sector: str
    account_id: str | None
    holdings: list[Holding]
    total_allowances: Allowances
    compliance: list[ComplianceView]


class RosterUpload(_Closed):
    text: str = Field(description="the CSV file, decoded")
    uploaded_by: str


ImportStatus = Literal["pending", "running", "done"]
RowStatus = Literal["pending", "registered", "refused"]


class RosterImport(_Closed):
    """A roster upload (CSV) and how far it has got."""

    import_id: str
    status: ImportStatus
    rows: int = Field(description="data rows in the upload")
    done: int = Field(description="rows with a result")
    registered: int
    refused: int
    uploaded_at: datetime
    finished_at: datetime | None


class ImportRow(_Closed):
    """One row of a roster upload and what became of it."""

    line: int = Field(description="line of the CSV file, the header being line 1")
    credit_code: str
    status: RowStatus
    code: str | None = Field(description="why it was refused (the error code of POST /entities)")
    message: str | None
    event_id: str | None = Field(description="ce_id of its entity.registered event")
