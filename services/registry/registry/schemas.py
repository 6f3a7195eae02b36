"""What goes into the registry's commands and what comes out: requests, commands and the typed
views the API answers with, built from the contract types."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from carbon_contracts.events import OffsetType, ProofId
from carbon_contracts.types import (
    Allowances,
    ComplianceYear,
    DecimalString,
    Flag,
    Identifier,
    TonnesCO2,
    WholeNumber,
    Yuan,
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


class OffsetRef(_Closed):
    """An offset cancellation proof named in a surrender."""

    type: OffsetType
    proof_id: ProofId


class SurrenderRequest(_Closed):
    compliance_year: ComplianceYear
    allowances: Allowances = Field(default=0, description="whole allowances to surrender")
    offsets: list[OffsetRef] = Field(
        default_factory=list,
        max_length=1000,
        description="cancellation proofs to surrender as offsets (CCER, SHCERCIR1), each once; "
        "all offsets of the year together at most the policy's cap",
    )

    @model_validator(mode="after")
    def _something_once_each(self) -> SurrenderRequest:
        if not self.allowances and not self.offsets:
            raise ValueError("surrender at least one allowance or one offset")
        keys = [(offset.type, offset.proof_id) for offset in self.offsets]
        if len(set(keys)) != len(keys):
            raise ValueError("each offset proof may be named once")
        return self


class Surrender(SurrenderRequest):
    credit_code: str


class Holding(_Closed):
    vintage: int
    allowances: Allowances


class PreallocationView(_Closed):
    compliance_year: ComplianceYear
    allowances: Allowances


class OffsetUsed(_Closed):
    type: OffsetType
    proof_id: str
    quantity: Allowances


class SurrenderReceipt(_Closed):
    credit_code: str
    compliance_year: ComplianceYear
    surrendered_now: Allowances = Field(description="allowances and offsets this surrender")
    surrender_only_drawn: Allowances = Field(
        description="of the allowances, those bought at auction for this year, drawn first"
    )
    drawn_from: list[Holding] = Field(description="vintages debited, oldest first")
    offsets: list[OffsetUsed] = Field(description="the offset proofs this surrender used")
    obligation: Allowances
    surrendered: Allowances = Field(description="for the year so far: allowances and offsets")
    offsets_surrendered: Allowances = Field(description="of `surrendered`, the offsets")
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
    surrendered: Allowances = Field(description="allowances and offsets together")
    offsets_surrendered: Allowances = Field(description="of `surrendered`, the offsets")
    remaining: Allowances
    status: Literal["open", "compliant"]
    completed_at: datetime | None
    on_time: bool | None
    allocation: AllocationSummary | None = Field(
        description="the year's allocation, once previewed (after verification closed)"
    )


class EntityStatus(_Closed):
    credit_code: str
    name: str
    district: str
    sector: str
    account_id: str | None
    trading_account_id: str | None = Field(description="its trading account at the exchange")
    holdings: list[Holding] = Field(description="allowances by vintage, transferable")
    surrender_only: list[Holding] = Field(
        description="allowances bought at auction, by the compliance year whose surrender alone "
        "may use them; never transferred"
    )
    total_allowances: Allowances = Field(description="both together")
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


# --- allocation: previews, batches, issuance, opening balances --------------------------------

AllocationStatus = Literal["previewed", "approved", "issued"]
"""previewed: computed, waiting for the Bureau; approved: in an approved batch, waiting for the
entity's account to open; issued: credited (or clawed back) into the account."""


class AllocationSummary(_Closed):
    """The year's allocation as the entity sees it beside its obligation."""

    status: AllocationStatus = Field(
        description="previewed (waiting for the Bureau), approved (waiting for the account to "
        "open) or issued"
    )
    final_allocation: Allowances
    preallocated: Allowances
    topped_up: Allowances
    clawed_back: Allowances
    owed: Allowances = Field(
        description="pre-allocated above the final allocation and no longer held: still owed"
    )
    issued_at: datetime | None


class ApproveAllocation(_Closed):
    credit_codes: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=50_000,
        description="the entities to approve; absent or null: every entity previewed this year",
    )


class Approval(ApproveAllocation):
    compliance_year: int = Field(description="as in the path; refused unless the policy's year")
    approved_by: str


class AllocationLine(_Closed):
    """One entity's allocation of the year: its preview and what became of it."""

    credit_code: str
    name: str
    district: str
    sector: str
    compliance_year: ComplianceYear
    status: AllocationStatus
    waiting_for_account: bool = Field(description="approved, issued once the account opens")
    method: str
    parameters: dict[str, str] = Field(description="the method's inputs, decimal strings")
    verified_emissions: TonnesCO2
    final_allocation: Allowances
    preallocated: Allowances
    difference: int = Field(
        description="final allocation minus pre-allocated: above zero topped up, below zero "
        "clawed back (or owed) at issuance"
    )
    topped_up: Allowances
    clawed_back: Allowances
    owed: Allowances
    computed_at: datetime
    batch_id: str | None
    issued_at: datetime | None


class AllocationBatch(_Closed):
    """A batch the Bureau approved: issued into open accounts at once, the rest waiting."""

    batch_id: str
    compliance_year: ComplianceYear
    approved_by: str
    approved_at: datetime
    entities: int
    final_allocation: Allowances = Field(description="the batch's final allocations, summed")
    issued: int = Field(description="entities issued now")
    waiting_for_account: int = Field(description="entities issued when their account opens")
    lines: list[AllocationLine]
    event_ids: list[str] = Field(description="ce_ids of the allocation.issued events")


class AllocationTotals(_Closed):
    entities: int
    final_allocation: int
    preallocated: int
    topped_up: int
    clawed_back: int
    owed: int
    by_status: dict[AllocationStatus, int]


class Unpreviewed(_Closed):
    """A final figure whose allocation could not be computed, and why."""

    credit_code: str
    code: str
    message: str


class AllocationYear(_Closed):
    """The year's allocation: every preview the caller may see, with totals."""

    compliance_year: ComplianceYear
    policy: str
    verification_closed_at: datetime | None = Field(
        description="previews are computed once verification has closed for the year"
    )
    totals: AllocationTotals = Field(description="over every preview listed, all statuses")
    allocations: list[AllocationLine]
    unpreviewed: list[Unpreviewed] = Field(
        description="final figures without a preview (e.g. no verified output for the method)"
    )


class PreviewRun(_Closed):
    compliance_year: ComplianceYear
    computed: int = Field(description="previews computed now")
    unpreviewed: list[Unpreviewed]


class OpeningBalancesUpload(_Closed):
    text: str = Field(description="the CSV file, decoded")
    imported_by: str


class OpeningBalanceRefusal(_Closed):
    line: int = Field(description="line of the CSV file, the header being line 1")
    credit_code: str = Field(description="as written in the file")
    code: str
    message: str


class OpeningBalancesImport(_Closed):
    """What an opening balances import applied and refused (every row on its own)."""

    import_id: str
    rows: int
    applied: int
    refused: int
    refusals: list[OpeningBalanceRefusal]


# --- offsets, transfers and the reconciliation ------------------------------------------------


class OffsetProofView(_Closed):
    """A cancellation proof received from its issuer, and whether a surrender used it."""

    type: OffsetType
    proof_id: str
    compliance_year: ComplianceYear
    quantity: Allowances
    project_id: str
    cancelled_on: date = Field(description="the date on the proof (certificate)")
    cancelled_at: datetime
    received_at: datetime
    status: Literal["unused", "used"]
    used_for_year: int | None = Field(description="the year whose surrender used it")
    used_at: datetime | None


class TransferRequest(_Closed):
    """Allowances of one vintage to move to the entity's trading account at the exchange."""

    vintage: ComplianceYear
    allowances: WholeNumber = Field(gt=0, description="whole allowances to move")


class TransferOut(TransferRequest):
    credit_code: str


class TransferReceipt(_Closed):
    transfer_id: str
    credit_code: str
    account_id: str
    trading_account_id: str
    vintage: ComplianceYear
    allowances: Allowances
    transferred_at: datetime
    holdings: list[Holding] = Field(description="the registry account's holdings after it")
    event_id: str = Field(description="ce_id of the allowances.transferred event")


class TransferView(_Closed):
    transfer_id: str
    direction: Literal["to_exchange", "from_exchange"]
    trading_account_id: str
    vintage: int
    allowances: Allowances
    at: datetime = Field(description="moved out by the registry, or settled by the exchange")


class LedgerDifference(_Closed):
    """A position whose holdings differ from the sum of its journal entries."""

    credit_code: str
    asset: Literal["SHEA", "CCER", "SHCERCIR1"]
    vintage: int | None = Field(description="allowances: the vintage; offsets: none")
    holdings: int = Field(description="allowances held, or unused proofs' quantity")
    journal: int = Field(description="sum of the journal for the position")


class Reconciliation(_Closed):
    """Holdings against the journal: balanced when no position differs."""

    checked_at: datetime
    accounts: int = Field(description="entities with any allowance or offset position")
    allowances_held: int
    journal_allowances: int
    offsets_unused: int
    journal_offsets: int
    differences: list[LedgerDifference]
    balanced: bool


# --- auctions -----------------------------------------------------------------------------------


class BidBody(_Closed):
    price: Yuan = Field(description='yuan per allowance, at most two decimals, e.g. "95.00"')
    quantity: Allowances = Field(gt=0, description="whole allowances")


class BidRequest(BidBody):
    auction_id: str
    credit_code: str


class BidChange(_Closed):
    auction_id: str
    bid_id: str
    credit_code: str
    price: Yuan | None = None
    quantity: Allowances | None = None
    withdraw: bool = False


class BidView(_Closed):
    bid_id: str
    auction_id: str
    credit_code: str
    price: Yuan
    quantity: Allowances
    placed_at: datetime = Field(description="it ranks from here (a change places it anew)")
    status: Literal["live", "withdrawn"]
    filled: Allowances | None = Field(description="allowances won by this bid, once cleared")


class ReserveView(_Closed):
    instrument: str
    reference_from: date
    reference_to: date
    multiplier: DecimalString
    trading_days: int | None = Field(description="days with trades in the window (announced)")
    volume: int | None
    turnover: Yuan | None
    price: Yuan | None = Field(description="the reserve price, fixed at the announcement")


class AuctionResult(_Closed):
    clearing_price: Yuan | None = Field(description="the uniform price; none when nothing sold")
    sold: Allowances
    bids: int
    bid_volume: Allowances
    bidders: int
    winners: int
    cleared_at: datetime


class AuctionView(_Closed):
    auction_id: str
    compliance_year: ComplianceYear
    status: Literal["planned", "announced", "cleared"]
    volume: Allowances
    opens_at: datetime
    closes_at: datetime = Field(description="the first instant bids are refused")
    bidders: str
    bidder_cap: Allowances
    use: str
    payment_due: datetime = Field(description="an award still unpaid then is cancelled")
    reserve: ReserveView
    announced_at: datetime | None
    result: AuctionResult | None


class AwardView(_Closed):
    auction_id: str
    credit_code: str
    allowances: Allowances
    price: Yuan
    amount_due: Yuan
    status: Literal["awarded", "settled", "cancelled"]
    payment_id: str | None
    paid_at: datetime | None
    closed_at: datetime | None


class Shortfall(_Closed):
    """One entity's projected shortfall for the year's surrender: what it may still have to
    surrender against what it holds that the surrender could use."""

    credit_code: str
    name: str
    compliance_year: ComplianceYear
    held: Allowances = Field(
        description="allowances the year's surrender may draw: transferable ones of vintages up "
        "to the year, and the surrender-only ones of the year (offsets not counted)"
    )
    basis: Allowances | None = Field(
        description="the obligation once determined, else the latest reported emissions rounded "
        "per the policy's rounding.obligation, else null"
    )
    basis_source: Literal["obligation", "reported_emissions"] | None
    reported_emissions: TonnesCO2 | None = Field(
        description="the latest version's reported total (report.submitted), if any"
    )
    report_version: int | None
    surrendered: Allowances = Field(description="already surrendered for the year")
    shortfall: Allowances | None = Field(
        description="max(0, basis - surrendered - held); null without a basis"
    )
