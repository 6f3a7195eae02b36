"""Registry tables and keyword-only repository functions."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    distinct,
    exists,
    func,
    literal_column,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.errors import Conflict, Invalid, NotFound
from carbon_platform.db import Upsert
from carbon_platform.obligations import obligation_tables as _obligation_tables
from carbon_platform.tables import ScaledDecimal, UtcDateTime, messaging_tables

metadata = MetaData()
messaging = messaging_tables(metadata)
# The registry's obligations with deadlines (accounts_opening, surrender), watched per entity.
obligation_tables = _obligation_tables(metadata)

entities = Table(
    "entities",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("district", String(64), nullable=False),
    Column("sector", String(64), nullable=False),
    Column("registered_at", UtcDateTime(), nullable=False),
)

roster = Table(
    "roster",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("new_entrant", Boolean, nullable=False),
    Column("registered_at", UtcDateTime(), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("credit_code", ForeignKey("entities.credit_code"), nullable=False, unique=True),
    Column("opened_at", UtcDateTime(), nullable=False),
    # New entrants only: opened before the policy's accounts_opening deadline.
    Column("on_time", Boolean, nullable=True),
)

# The entity's trading account at the exchange, linked when the exchange says it opened (which
# may come before or after the registry account).
trading_accounts = Table(
    "trading_accounts",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("trading_account_id", String(32), nullable=False, unique=True),
    Column("opened_at", UtcDateTime(), nullable=False),
    Column("linked_at", UtcDateTime(), nullable=False),
)

holdings = Table(
    "holdings",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("vintage", Integer, primary_key=True),
    Column("balance", Integer, nullable=False),
    CheckConstraint("balance >= 0", name="ck_holdings_balance_non_negative"),
)

JOURNAL_KINDS = (
    "allocation",  # the year's allocation topped up after the Bureau approved it
    "preallocation",  # next year's, issued with a completed surrender
    "opening_balance",  # held before this registry existed (Bureau import)
    "clawback",  # pre-allocated above the final allocation, taken back
    "surrender",  # allowances surrendered
    "transfer_out",  # to the entity's trading account at the exchange
    "transfer_in",  # back from the exchange
    "offset_in",  # an offset cancellation proof received for the entity
    "offset_use",  # that proof used in a surrender
    "auction",  # bought at auction and paid: credited as surrender-only
)
# Allowances; allowances usable only for one year's surrender (bought at auction, vintage = that
# year), never transferred; and the two offset types.
ASSETS = ("SHEA", "SHEA_RESTRICTED", "CCER", "SHCERCIR1")
ALLOWANCE_ASSETS = ("SHEA", "SHEA_RESTRICTED")

# Every movement of allowances and offsets. Holdings of allowances (`holdings`) and of offsets
# (unused proofs) always equal the sum of this journal; the reconciliation proves it.
journal = Table(
    "journal",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("credit_code", ForeignKey("entities.credit_code"), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("amount", Integer, nullable=False),
    Column("reference", String(64), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("asset", String(16), nullable=False, server_default="SHEA"),
    CheckConstraint("amount <> 0", name="ck_journal_amount_non_zero"),
    CheckConstraint(f"kind IN {JOURNAL_KINDS}", name="ck_journal_kind"),
    CheckConstraint(f"asset IN {ASSETS}", name="ck_journal_asset"),
    Index("ix_journal_account", "credit_code", "asset", "vintage"),
)

obligations = Table(
    "obligations",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("case_id", String(36), nullable=False),
    Column("verified_emissions", ScaledDecimal(3), nullable=False),
    Column("obligation", Integer, nullable=False),
    Column("surrendered", Integer, nullable=False, default=0),
    Column("completed_at", UtcDateTime(), nullable=True),
    Column("on_time", Boolean, nullable=True),
    # Of `surrendered` (allowances and offsets), the offsets.
    Column("offsets_surrendered", Integer, nullable=False, server_default="0"),
    Column("outputs", Text, nullable=True),  # JSON: verified production outputs
    CheckConstraint("obligation >= 0", name="ck_obligations_obligation"),
    CheckConstraint(
        "surrendered >= 0 AND surrendered <= obligation", name="ck_obligations_surrendered"
    ),
    CheckConstraint(
        "offsets_surrendered >= 0 AND offsets_surrendered <= surrendered",
        name="ck_obligations_offsets",
    ),
)

allocations = Table(
    "allocations",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("method", String(64), nullable=False),
    Column("basis_emissions", ScaledDecimal(3), nullable=False),
    Column("allowances", Integer, nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
    CheckConstraint("allowances >= 0", name="ck_allocations_allowances"),
    CheckConstraint("kind IN ('allocation', 'preallocation')", name="ck_allocations_kind"),
)

# Verification closed for a year (`verification.closed`): previews are computed from then on.
verification_closures = Table(
    "verification_closures",
    metadata,
    Column("compliance_year", Integer, primary_key=True),
    Column("cases", Integer, nullable=False),
    Column("closed_at", UtcDateTime(), nullable=False),
)

# The year's allocation per entity: previewed from the final verified figure, approved by the
# Bureau in a batch, then issued into the entity's account (at once, or when it opens).
allocation_previews = Table(
    "allocation_previews",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("method", String(64), nullable=False),
    Column("parameters", Text, nullable=False),  # JSON object of decimal strings
    Column("verified_emissions", ScaledDecimal(3), nullable=False),
    Column("final_allocation", Integer, nullable=False),
    Column("preallocated", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("computed_at", UtcDateTime(), nullable=False),
    Column("batch_id", ForeignKey("allocation_batches.batch_id"), nullable=True),
    Column("issued_at", UtcDateTime(), nullable=True),
    Column("topped_up", Integer, nullable=False, server_default="0"),
    Column("clawed_back", Integer, nullable=False, server_default="0"),
    Column("owed", Integer, nullable=False, server_default="0"),
    CheckConstraint(
        "status IN ('previewed', 'approved', 'issued')", name="ck_allocation_previews_status"
    ),
    CheckConstraint(
        "(status = 'previewed') = (batch_id IS NULL)", name="ck_allocation_previews_batch"
    ),
    CheckConstraint(
        "(status = 'issued') = (issued_at IS NOT NULL)", name="ck_allocation_previews_issued"
    ),
    CheckConstraint(
        "final_allocation >= 0 AND preallocated >= 0 AND topped_up >= 0 AND clawed_back >= 0"
        " AND owed >= 0",
        name="ck_allocation_previews_amounts",
    ),
    Index("ix_allocation_previews_year", "compliance_year", "status"),
)

allocation_batches = Table(
    "allocation_batches",
    metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("compliance_year", Integer, nullable=False),
    Column("approved_by", String(128), nullable=False),
    Column("approved_at", UtcDateTime(), nullable=False),
    Column("entities", Integer, nullable=False),
    Column("final_allocation", Integer, nullable=False),
    CheckConstraint("entities > 0", name="ck_allocation_batches_entities"),
)

# What the registry would have known had it run before: per entity and year, verified
# emissions (for historical baselines), and for the current year the pre-allocation issued
# and what of it is still held. Imported by the Bureau (CSV), once per entity and year.
opening_balances = Table(
    "opening_balances",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("verified_emissions", ScaledDecimal(3), nullable=True),
    Column("preallocated", Integer, nullable=True),
    Column("held", Integer, nullable=True),
    Column("import_id", String(36), nullable=False),
    Column("imported_at", UtcDateTime(), nullable=False),
    CheckConstraint(
        "verified_emissions IS NOT NULL OR preallocated IS NOT NULL OR held IS NOT NULL",
        name="ck_opening_balances_something",
    ),
    CheckConstraint(
        "(preallocated IS NULL OR preallocated >= 0) AND (held IS NULL OR held >= 0)",
        name="ck_opening_balances_amounts",
    ),
)

# Offset cancellation proofs received from their issuers; used at most once, in a surrender.
offset_proofs = Table(
    "offset_proofs",
    metadata,
    Column("offset_type", String(16), primary_key=True),
    Column("proof_id", String(64), primary_key=True),
    Column("credit_code", ForeignKey("entities.credit_code"), nullable=False),
    Column("compliance_year", Integer, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("cancelled_on", Date, nullable=False),
    Column("cancelled_at", UtcDateTime(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("used_for_year", Integer, nullable=True),
    Column("used_at", UtcDateTime(), nullable=True),
    CheckConstraint("offset_type IN ('CCER', 'SHCERCIR1')", name="ck_offset_proofs_type"),
    CheckConstraint("quantity > 0", name="ck_offset_proofs_quantity"),
    CheckConstraint("(used_for_year IS NULL) = (used_at IS NULL)", name="ck_offset_proofs_used"),
    Index("ix_offset_proofs_entity", "credit_code"),
)

# Transfers between the registry account and the exchange trading account, both ways; the
# exchange's transfer id makes an inbound transfer apply once.
transfers = Table(
    "transfers",
    metadata,
    Column("transfer_id", String(36), primary_key=True),
    Column("credit_code", ForeignKey("entities.credit_code"), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("trading_account_id", String(32), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("allowances", Integer, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    CheckConstraint("direction IN ('to_exchange', 'from_exchange')", name="ck_transfers_direction"),
    CheckConstraint("allowances > 0", name="ck_transfers_allowances"),
    Index("ix_transfers_entity", "credit_code"),
)

# Surrender-only allowances (asset SHEA_RESTRICTED): bought at auction for the compliance year
# `vintage`, usable only in that year's surrender; no transfer or clawback touches them.
surrender_only_holdings = Table(
    "surrender_only_holdings",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("vintage", Integer, primary_key=True),
    Column("balance", Integer, nullable=False),
    CheckConstraint("balance >= 0", name="ck_surrender_only_holdings_balance"),
)

# The exchange's daily summaries per instrument (`market_day.closed`), once per day.
market_days = Table(
    "market_days",
    metadata,
    Column("instrument", String(16), primary_key=True),
    Column("trading_date", Date, primary_key=True),
    Column("volume", BigInteger, nullable=False),
    Column("turnover", ScaledDecimal(2), nullable=False),
    Column("closed_at", UtcDateTime(), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    CheckConstraint(
        "volume >= 0 AND turnover >= 0 AND (volume = 0) = (turnover = 0)",
        name="ck_market_days_amounts",
    ),
)

# An auction of the policy once the Bureau announced it (its reserve fixed then), and its result.
auctions = Table(
    "auctions",
    metadata,
    Column("auction_id", String(64), primary_key=True),
    Column("compliance_year", Integer, nullable=False),
    Column("volume", Integer, nullable=False),
    Column("reserve_price", ScaledDecimal(2), nullable=False),
    Column("reference_trading_days", Integer, nullable=False),
    Column("reference_volume", BigInteger, nullable=False),
    Column("reference_turnover", ScaledDecimal(2), nullable=False),
    Column("announced_by", String(128), nullable=False),
    Column("announced_at", UtcDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("clearing_price", ScaledDecimal(2), nullable=True),
    Column("sold", Integer, nullable=True),
    Column("cleared_at", UtcDateTime(), nullable=True),
    CheckConstraint("status IN ('announced', 'cleared')", name="ck_auctions_status"),
    CheckConstraint(
        "(status = 'cleared') = (cleared_at IS NOT NULL AND sold IS NOT NULL)",
        name="ck_auctions_cleared",
    ),
    CheckConstraint(
        "volume > 0 AND reserve_price > 0 AND (sold IS NULL OR sold BETWEEN 0 AND volume)"
        " AND (clearing_price IS NULL OR clearing_price >= reserve_price)",
        name="ck_auctions_amounts",
    ),
)

# One row per bidder and auction: the allowances of its live bids together. Changed by a
# conditional update, so that concurrent bids of one bidder never pass the cap together.
auction_bidders = Table(
    "auction_bidders",
    metadata,
    Column("auction_id", ForeignKey("auctions.auction_id"), primary_key=True),
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("committed", Integer, nullable=False),
    CheckConstraint("committed >= 0", name="ck_auction_bidders_committed"),
)

_BIDDER = ["auction_bidders.auction_id", "auction_bidders.credit_code"]

auction_bids = Table(
    "auction_bids",
    metadata,
    Column("bid_id", String(36), primary_key=True),
    Column("auction_id", String(64), nullable=False),
    Column("credit_code", String(18), nullable=False),
    Column("price", ScaledDecimal(2), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("placed_at", UtcDateTime(), nullable=False),  # a change places the bid anew
    Column("status", String(16), nullable=False),
    Column("filled", Integer, nullable=True),  # set at the clearing
    CheckConstraint("status IN ('live', 'withdrawn')", name="ck_auction_bids_status"),
    CheckConstraint(
        "price > 0 AND quantity > 0 AND (filled IS NULL OR filled BETWEEN 0 AND quantity)",
        name="ck_auction_bids_amounts",
    ),
    ForeignKeyConstraint(["auction_id", "credit_code"], _BIDDER),
    Index("ix_auction_bids_bidder", "auction_id", "credit_code"),
)

# What each winner won; settled on the exchange's payment confirmation, or cancelled unpaid.
auction_awards = Table(
    "auction_awards",
    metadata,
    Column("auction_id", String(64), primary_key=True),
    Column("credit_code", String(18), primary_key=True),
    Column("allowances", Integer, nullable=False),
    Column("price", ScaledDecimal(2), nullable=False),
    Column("amount_due", ScaledDecimal(2), nullable=False),
    Column("status", String(16), nullable=False),
    Column("payment_id", String(64), nullable=True, unique=True),
    Column("paid_at", UtcDateTime(), nullable=True),
    Column("closed_at", UtcDateTime(), nullable=True),  # settled or cancelled
    CheckConstraint(
        "status IN ('awarded', 'settled', 'cancelled')", name="ck_auction_awards_status"
    ),
    CheckConstraint(
        "(status = 'settled') = (payment_id IS NOT NULL AND paid_at IS NOT NULL)"
        " AND (status = 'awarded') = (closed_at IS NULL)",
        name="ck_auction_awards_closed",
    ),
    CheckConstraint(
        "allowances > 0 AND amount_due = allowances * price", name="ck_auction_awards_amount"
    ),
    ForeignKeyConstraint(["auction_id", "credit_code"], _BIDDER),
)

# Roster uploads (CSV): every row is kept with its result, so progress survives a restart and
# any instance can carry an upload on.
roster_imports = Table(
    "roster_imports",
    metadata,
    Column("import_id", String(36), primary_key=True),
    Column("uploaded_by", String(128), nullable=False),
    Column("uploaded_at", UtcDateTime(), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    CheckConstraint("rows > 0", name="ck_roster_imports_rows"),
)

roster_import_rows = Table(
    "roster_import_rows",
    metadata,
    Column("import_id", ForeignKey("roster_imports.import_id"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("credit_code", String(64), nullable=False),
    Column("fields", Text, nullable=False),  # JSON object of the row, by CSV header
    Column("status", String(16), nullable=False),
    Column("code", String(64), nullable=True),
    Column("message", String(1000), nullable=True),
    Column("event_id", String(64), nullable=True),
    CheckConstraint(
        "status IN ('pending', 'registered', 'refused')", name="ck_roster_import_rows_status"
    ),
    CheckConstraint(
        "(status = 'registered') = (event_id IS NOT NULL)", name="ck_roster_import_rows_event"
    ),
    Index("ix_roster_import_rows_pending", "status", "import_id", "line"),
)


# Each entity's latest reported emissions of a year (`report.submitted`, latest version only):
# the basis of its projected shortfall until verification determines its obligation.
reported_emissions = Table(
    "reported_emissions",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("compliance_year", Integer, primary_key=True),
    Column("report_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("total_emissions", ScaledDecimal(3), nullable=False),
    Column("submitted_at", UtcDateTime(), nullable=False),
    CheckConstraint("version >= 1", name="ck_reported_emissions_version"),
)


def _entity(insert: Callable[[Table], Any]) -> Any:
    statement = insert(entities)
    return statement.on_conflict_do_update(
        index_elements=["credit_code"],
        set_={name: statement.excluded[name] for name in ("name", "district", "sector")},
    )


# Built once: executing a prepared statement with parameters costs a third of building one.
_CODE: BindParameter[str] = bindparam("code")
_YEAR: BindParameter[int] = bindparam("year")
_ENTITY = select(entities).where(entities.c.credit_code == _CODE)
_UPSERT_ENTITY = Upsert(_entity)
_ROSTERED = (
    select(roster.c.credit_code)
    .where(roster.c.credit_code == _CODE)
    .where(roster.c.compliance_year == _YEAR)
)
_ROSTER = roster.insert()
_ACCOUNT = select(accounts).where(accounts.c.credit_code == _CODE)
_OPEN_ACCOUNT = accounts.insert()
_HOLDINGS = (
    select(holdings.c.vintage, holdings.c.balance)
    .where(holdings.c.credit_code == _CODE)
    .order_by(holdings.c.vintage)
)
_JOURNAL = journal.insert()
_ISSUE = allocations.insert()
_ALLOCATION = (
    select(allocations)
    .where(allocations.c.credit_code == _CODE)
    .where(allocations.c.compliance_year == _YEAR)
    .where(allocations.c.kind == bindparam("kind_"))
)
_OBLIGATION = (
    select(obligations)
    .where(obligations.c.credit_code == _CODE)
    .where(obligations.c.compliance_year == _YEAR)
)
_OBLIGATIONS = (
    select(obligations)
    .where(obligations.c.credit_code == _CODE)
    .order_by(obligations.c.compliance_year)
)
_CREATE_OBLIGATION = obligations.insert()


async def get_entity(conn: AsyncConnection, *, credit_code: str) -> Any:
    return (await conn.execute(_ENTITY, {"code": credit_code})).first()


async def known_entity(conn: AsyncConnection, *, credit_code: str) -> Any:
    """The registered entity; NotFound `unknown_entity` if it never was."""
    entity = await get_entity(conn, credit_code=credit_code)
    if entity is None:
        raise NotFound("unknown_entity", f"{credit_code} is not a registered entity")
    return entity


async def is_rostered(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> bool:
    found = await conn.execute(_ROSTERED, {"code": credit_code, "year": compliance_year})
    return found.first() is not None


async def register(
    conn: AsyncConnection,
    *,
    credit_code: str,
    name: str,
    district: str,
    sector: str,
    compliance_year: int,
    new_entrant: bool,
    at: datetime,
) -> None:
    """The entity (its name, district and sector updated if known) and its roster entry."""
    await conn.execute(
        _UPSERT_ENTITY.on(conn),
        {
            "credit_code": credit_code,
            "name": name,
            "district": district,
            "sector": sector,
            "registered_at": at,
        },
    )
    await conn.execute(
        _ROSTER,
        {
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "new_entrant": new_entrant,
            "registered_at": at,
        },
    )


async def get_account(conn: AsyncConnection, *, credit_code: str) -> Any:
    return (await conn.execute(_ACCOUNT, {"code": credit_code})).first()


async def open_account(
    conn: AsyncConnection, *, account_id: str, credit_code: str, at: datetime
) -> None:
    await conn.execute(
        _OPEN_ACCOUNT, {"account_id": account_id, "credit_code": credit_code, "opened_at": at}
    )


async def get_holdings(conn: AsyncConnection, *, credit_code: str) -> dict[int, int]:
    rows = await conn.execute(_HOLDINGS, {"code": credit_code})
    return {row.vintage: row.balance for row in rows}


class _Balances:
    """A table of balances per (credit_code, vintage), never below zero, and the journal asset
    it holds; its credit and debit statements are built once."""

    def __init__(self, table: Table, *, asset: str, shortfall: str) -> None:
        self.asset = asset
        self.shortfall = shortfall  # the refusal of a debit, with {vintage} and {amount}

        def credit(insert: Callable[[Table], Any]) -> Any:
            statement = insert(table)
            return statement.on_conflict_do_update(
                index_elements=["credit_code", "vintage"],
                set_={"balance": table.c.balance + statement.excluded.balance},
            )

        self.credit = Upsert(credit)
        self.debit = (
            update(table)
            .where(table.c.credit_code == _CODE)
            .where(table.c.vintage == bindparam("vintage_"))
            .where(table.c.balance >= bindparam("debit"))  # never below zero
            .values(balance=table.c.balance - bindparam("debit"))
        )

    async def move(
        self,
        conn: AsyncConnection,
        *,
        credit_code: str,
        vintage: int,
        amount: int,
        kind: str,
        reference: str,
        at: datetime,
    ) -> None:
        """Credit (amount > 0) or debit (amount < 0) a vintage, journalled in the same
        transaction. A debit never takes a balance below zero (the check constraint backs that
        up)."""
        if amount > 0:
            await conn.execute(
                self.credit.on(conn),
                {"credit_code": credit_code, "vintage": vintage, "balance": amount},
            )
        else:
            debited = await conn.execute(
                self.debit, {"code": credit_code, "vintage_": vintage, "debit": -amount}
            )
            if debited.rowcount != 1:
                raise Conflict(
                    "insufficient_holdings", self.shortfall.format(vintage=vintage, amount=-amount)
                )
        await _journal(
            conn,
            credit_code=credit_code,
            asset=self.asset,
            vintage=vintage,
            kind=kind,
            amount=amount,
            reference=reference,
            at=at,
        )


_ALLOWANCES = _Balances(
    holdings, asset="SHEA", shortfall="vintage {vintage} holds fewer than {amount} allowances"
)
_SURRENDER_ONLY = _Balances(
    surrender_only_holdings,
    asset="SHEA_RESTRICTED",
    shortfall="fewer than {amount} surrender-only allowances for {vintage} are held",
)


async def move_allowances(
    conn: AsyncConnection,
    *,
    credit_code: str,
    vintage: int,
    amount: int,
    kind: str,
    reference: str,
    at: datetime,
) -> None:
    """Credit (amount > 0) or debit (amount < 0) allowances of a vintage, journalled (SHEA)."""
    await _ALLOWANCES.move(
        conn,
        credit_code=credit_code,
        vintage=vintage,
        amount=amount,
        kind=kind,
        reference=reference,
        at=at,
    )


async def _journal(
    conn: AsyncConnection,
    *,
    credit_code: str,
    asset: str,
    vintage: int,
    kind: str,
    amount: int,
    reference: str,
    at: datetime,
) -> None:
    await conn.execute(
        _JOURNAL,
        {
            "credit_code": credit_code,
            "asset": asset,
            "vintage": vintage,
            "kind": kind,
            "amount": amount,
            "reference": reference,
            "at": at,
        },
    )


async def issue_allowances(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    kind: str,
    method: str,
    basis_emissions: Decimal,
    allowances: int,
    reference: str,
    at: datetime,
) -> None:
    """Record an allocation or pre-allocation for a year and credit that year's vintage."""
    await conn.execute(
        _ISSUE,
        {
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "kind": kind,
            "method": method,
            "basis_emissions": basis_emissions,
            "allowances": allowances,
            "issued_at": at,
        },
    )
    if allowances:
        await move_allowances(
            conn,
            credit_code=credit_code,
            vintage=compliance_year,
            amount=allowances,
            kind=kind,
            reference=reference,
            at=at,
        )


async def get_allocation(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int, kind: str
) -> Any:
    found = await conn.execute(
        _ALLOCATION, {"code": credit_code, "year": compliance_year, "kind_": kind}
    )
    return found.first()


async def get_obligation(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    found = await conn.execute(_OBLIGATION, {"code": credit_code, "year": compliance_year})
    return found.first()


async def list_obligations(conn: AsyncConnection, *, credit_code: str) -> list[Any]:
    return list(await conn.execute(_OBLIGATIONS, {"code": credit_code}))


async def create_obligation(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    case_id: str,
    verified_emissions: Decimal,
    obligation: int,
    outputs: list[dict[str, str]] | None = None,
) -> None:
    """The year's obligation from the final figure, with the verified production outputs
    behind it (the output-based allocation methods read them)."""
    await conn.execute(
        _CREATE_OBLIGATION,
        {
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "case_id": case_id,
            "verified_emissions": verified_emissions,
            "obligation": obligation,
            "surrendered": 0,
            "outputs": json.dumps(outputs or [], ensure_ascii=False),
        },
    )


async def add_roster_import(
    conn: AsyncConnection,
    *,
    import_id: str,
    uploaded_by: str,
    rows: list[tuple[int, str, dict[str, str]]],
    at: datetime,
) -> None:
    """An upload and its rows (line, credit code as written, fields), all pending."""
    await conn.execute(
        roster_imports.insert().values(
            import_id=import_id, uploaded_by=uploaded_by, uploaded_at=at, rows=len(rows)
        )
    )
    await conn.execute(
        roster_import_rows.insert(),
        [
            {
                "import_id": import_id,
                "line": line,
                "credit_code": code[:64],
                "fields": json.dumps(fields, ensure_ascii=False),
                "status": "pending",
            }
            for line, code, fields in rows
        ],
    )


async def claim_pending_rows(conn: AsyncConnection, *, limit: int) -> list[Any]:
    """The oldest pending rows, uploads in the order they arrived; on PostgreSQL locked for
    this transaction and skipped by other instances' (SQLite serialises writers anyway)."""
    rows = roster_import_rows
    return list(
        await conn.execute(
            select(rows.c.import_id, rows.c.line, rows.c.fields)
            .join(roster_imports, roster_imports.c.import_id == rows.c.import_id)
            .where(rows.c.status == "pending")
            .order_by(roster_imports.c.uploaded_at, rows.c.import_id, rows.c.line)
            .limit(limit)
            .with_for_update(of=rows, skip_locked=True)
        )
    )


async def record_row_results(conn: AsyncConnection, *, results: list[dict[str, Any]]) -> None:
    """Each dict: import_id, line, status, code, message, event_id."""
    rows = roster_import_rows
    # The SET clause comes from the parameter names that are columns (SQLAlchemy executemany).
    await conn.execute(
        update(rows)
        .where(rows.c.import_id == bindparam("b_import_id"))
        .where(rows.c.line == bindparam("b_line")),
        [
            {
                "b_import_id": r["import_id"],
                "b_line": r["line"],
                "status": r["status"],
                "code": r["code"] and r["code"][:64],
                "message": r["message"] and r["message"][:1000],
                "event_id": r["event_id"],
            }
            for r in results
        ],
    )


async def finish_imports(conn: AsyncConnection, *, import_ids: set[str], at: datetime) -> None:
    """Mark done the uploads among these that have no pending row left."""
    rows = roster_import_rows
    for import_id in import_ids:
        pending = await conn.scalar(
            select(func.count())
            .where(rows.c.import_id == import_id)
            .where(rows.c.status == "pending")
        )
        if not pending:
            await conn.execute(
                update(roster_imports)
                .where(roster_imports.c.import_id == import_id)
                .values(finished_at=at)
            )


async def get_roster_import(conn: AsyncConnection, *, import_id: str) -> Any:
    return (
        await conn.execute(select(roster_imports).where(roster_imports.c.import_id == import_id))
    ).first()


async def count_rows_by_status(conn: AsyncConnection, *, import_id: str) -> dict[str, int]:
    rows = roster_import_rows
    counted = await conn.execute(
        select(rows.c.status, func.count())
        .where(rows.c.import_id == import_id)
        .group_by(rows.c.status)
    )
    return {status: count for status, count in counted.all()}


async def list_import_rows(
    conn: AsyncConnection, *, import_id: str, status: str | None, after_line: int, limit: int
) -> list[Any]:
    rows = roster_import_rows
    query = (
        select(rows)
        .where(rows.c.import_id == import_id)
        .where(rows.c.line > after_line)
        .order_by(rows.c.line)
        .limit(limit)
    )
    if status:
        query = query.where(rows.c.status == status)
    return list(await conn.execute(query))


# --- allocation: previews, batches, issuance, opening balances --------------------------------


async def get_roster_entry(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    found = await conn.execute(
        select(roster)
        .where(roster.c.credit_code == credit_code)
        .where(roster.c.compliance_year == compliance_year)
    )
    return found.first()


async def set_account_on_time(conn: AsyncConnection, *, credit_code: str, on_time: bool) -> None:
    await conn.execute(
        update(accounts).where(accounts.c.credit_code == credit_code).values(on_time=on_time)
    )


async def get_closure(conn: AsyncConnection, *, compliance_year: int) -> Any:
    found = await conn.execute(
        select(verification_closures).where(
            verification_closures.c.compliance_year == compliance_year
        )
    )
    return found.first()


async def add_closure(
    conn: AsyncConnection, *, compliance_year: int, cases: int, at: datetime
) -> None:
    await conn.execute(
        verification_closures.insert().values(
            compliance_year=compliance_year, cases=cases, closed_at=at
        )
    )


def _obligations_with_sector() -> Any:
    return select(
        obligations,
        entities.c.sector,
        entities.c.district,
        entities.c.name,
    ).join(entities, entities.c.credit_code == obligations.c.credit_code)


async def get_obligation_for_preview(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int
) -> Any:
    """The obligation with its entity's sector, district and name."""
    found = await conn.execute(
        _obligations_with_sector()
        .where(obligations.c.credit_code == credit_code)
        .where(obligations.c.compliance_year == compliance_year)
    )
    return found.first()


async def obligations_without_preview(
    conn: AsyncConnection, *, compliance_year: int, credit_code: str | None, district: str | None
) -> list[Any]:
    """The year's obligations (with sector, district and name) that have no preview yet."""
    query = (
        _obligations_with_sector()
        .outerjoin(
            allocation_previews,
            (allocation_previews.c.credit_code == obligations.c.credit_code)
            & (allocation_previews.c.compliance_year == obligations.c.compliance_year),
        )
        .where(obligations.c.compliance_year == compliance_year)
        .where(allocation_previews.c.credit_code.is_(None))
        .order_by(obligations.c.credit_code)
    )
    if credit_code is not None:
        query = query.where(obligations.c.credit_code == credit_code)
    if district is not None:
        query = query.where(entities.c.district == district)
    return list(await conn.execute(query))


async def known_emissions(conn: AsyncConnection, *, credit_code: str) -> dict[int, Decimal]:
    """Verified emissions per year: the registry's own final figures, else imported ones."""
    imported = await conn.execute(
        select(opening_balances.c.compliance_year, opening_balances.c.verified_emissions)
        .where(opening_balances.c.credit_code == credit_code)
        .where(opening_balances.c.verified_emissions.is_not(None))
    )
    known: dict[int, Decimal] = {row.compliance_year: row.verified_emissions for row in imported}
    own = await conn.execute(
        select(obligations.c.compliance_year, obligations.c.verified_emissions).where(
            obligations.c.credit_code == credit_code
        )
    )
    known.update({row.compliance_year: row.verified_emissions for row in own})
    return known


async def get_opening_balance(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int
) -> Any:
    found = await conn.execute(
        select(opening_balances)
        .where(opening_balances.c.credit_code == credit_code)
        .where(opening_balances.c.compliance_year == compliance_year)
    )
    return found.first()


async def add_opening_balance(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    verified_emissions: Decimal | None,
    preallocated: int | None,
    held: int | None,
    import_id: str,
    at: datetime,
) -> None:
    await conn.execute(
        opening_balances.insert().values(
            credit_code=credit_code,
            compliance_year=compliance_year,
            verified_emissions=verified_emissions,
            preallocated=preallocated,
            held=held,
            import_id=import_id,
            imported_at=at,
        )
    )


def _preview_values(
    *,
    method: str,
    parameters: dict[str, str],
    verified_emissions: Decimal,
    final_allocation: int,
    preallocated: int,
    at: datetime,
) -> dict[str, Any]:
    return {
        "method": method,
        "parameters": json.dumps(parameters),
        "verified_emissions": verified_emissions,
        "final_allocation": final_allocation,
        "preallocated": preallocated,
        "computed_at": at,
    }


async def add_preview(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    method: str,
    parameters: dict[str, str],
    verified_emissions: Decimal,
    final_allocation: int,
    preallocated: int,
    at: datetime,
) -> None:
    await conn.execute(
        allocation_previews.insert().values(
            credit_code=credit_code,
            compliance_year=compliance_year,
            status="previewed",
            **_preview_values(
                method=method,
                parameters=parameters,
                verified_emissions=verified_emissions,
                final_allocation=final_allocation,
                preallocated=preallocated,
                at=at,
            ),
        )
    )


async def replace_preview(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    method: str,
    parameters: dict[str, str],
    verified_emissions: Decimal,
    final_allocation: int,
    preallocated: int,
    at: datetime,
) -> None:
    """Recompute a preview nobody has approved yet (an approved one is refused)."""
    replaced = await conn.execute(
        update(allocation_previews)
        .where(allocation_previews.c.credit_code == credit_code)
        .where(allocation_previews.c.compliance_year == compliance_year)
        .where(allocation_previews.c.status == "previewed")
        .values(
            **_preview_values(
                method=method,
                parameters=parameters,
                verified_emissions=verified_emissions,
                final_allocation=final_allocation,
                preallocated=preallocated,
                at=at,
            )
        )
    )
    if replaced.rowcount != 1:
        raise Conflict(
            "allocation_approved", f"the {compliance_year} allocation of {credit_code} is approved"
        )


def _previews() -> Any:
    return select(
        allocation_previews, entities.c.name, entities.c.district, entities.c.sector
    ).join(entities, entities.c.credit_code == allocation_previews.c.credit_code)


async def get_preview(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int, for_update: bool = False
) -> Any:
    """The entity's allocation preview of the year (with its name, district and sector)."""
    query = (
        _previews()
        .where(allocation_previews.c.credit_code == credit_code)
        .where(allocation_previews.c.compliance_year == compliance_year)
    )
    if for_update:
        query = query.with_for_update(of=allocation_previews)
    return (await conn.execute(query)).first()


async def list_previews(
    conn: AsyncConnection,
    *,
    compliance_year: int | None = None,
    credit_code: str | None = None,
    district: str | None = None,
    status: str | None = None,
    batch_id: str | None = None,
    for_update: bool = False,
) -> list[Any]:
    """Previews (with name, district and sector) by year, entity, district, status, batch;
    `for_update`: locked until the transaction ends (PostgreSQL; SQLite serialises writers)."""
    query = _previews().order_by(
        allocation_previews.c.compliance_year, allocation_previews.c.credit_code
    )
    if for_update:
        query = query.with_for_update(of=allocation_previews)
    if batch_id is not None:
        query = query.where(allocation_previews.c.batch_id == batch_id)
    if compliance_year is not None:
        query = query.where(allocation_previews.c.compliance_year == compliance_year)
    if credit_code is not None:
        query = query.where(allocation_previews.c.credit_code == credit_code)
    if district is not None:
        query = query.where(entities.c.district == district)
    if status is not None:
        query = query.where(allocation_previews.c.status == status)
    return list(await conn.execute(query))


async def add_batch(
    conn: AsyncConnection,
    *,
    batch_id: str,
    compliance_year: int,
    approved_by: str,
    entities: int,
    final_allocation: int,
    at: datetime,
) -> None:
    await conn.execute(
        allocation_batches.insert().values(
            batch_id=batch_id,
            compliance_year=compliance_year,
            approved_by=approved_by,
            approved_at=at,
            entities=entities,
            final_allocation=final_allocation,
        )
    )


_APPROVE = (
    update(allocation_previews)
    .where(allocation_previews.c.credit_code == _CODE)
    .where(allocation_previews.c.compliance_year == _YEAR)
    .where(allocation_previews.c.status == "previewed")  # approved once, whoever is first
    .values(status="approved", batch_id=bindparam("batch"))
)
_ISSUED = (
    update(allocation_previews)
    .where(allocation_previews.c.credit_code == _CODE)
    .where(allocation_previews.c.compliance_year == _YEAR)
    .where(allocation_previews.c.status == "approved")  # issued once, whoever is first
    .values(
        status="issued",
        issued_at=bindparam("at"),
        topped_up=bindparam("topped_up_"),
        clawed_back=bindparam("clawed_back_"),
        owed=bindparam("owed_"),
    )
)


async def approve_preview(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int, batch_id: str
) -> None:
    approved = await conn.execute(
        _APPROVE, {"code": credit_code, "year": compliance_year, "batch": batch_id}
    )
    if approved.rowcount != 1:
        raise Conflict(
            "not_previewed",
            f"the {compliance_year} allocation of {credit_code} is no longer waiting for "
            "approval (approved meanwhile)",
        )


async def mark_issued(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    topped_up: int,
    clawed_back: int,
    owed: int,
    at: datetime,
) -> None:
    issued = await conn.execute(
        _ISSUED,
        {
            "code": credit_code,
            "year": compliance_year,
            "at": at,
            "topped_up_": topped_up,
            "clawed_back_": clawed_back,
            "owed_": owed,
        },
    )
    if issued.rowcount != 1:
        raise Conflict(
            "already_issued", f"the {compliance_year} allocation of {credit_code} is issued"
        )


# --- offsets, transfers and the reconciliation ------------------------------------------------


async def get_trading_account(conn: AsyncConnection, *, credit_code: str) -> Any:
    found = await conn.execute(
        select(trading_accounts).where(trading_accounts.c.credit_code == credit_code)
    )
    return found.first()


async def get_trading_account_by_id(conn: AsyncConnection, *, trading_account_id: str) -> Any:
    found = await conn.execute(
        select(trading_accounts).where(trading_accounts.c.trading_account_id == trading_account_id)
    )
    return found.first()


async def link_trading_account(
    conn: AsyncConnection,
    *,
    credit_code: str,
    trading_account_id: str,
    opened_at: datetime,
    at: datetime,
) -> None:
    await conn.execute(
        trading_accounts.insert().values(
            credit_code=credit_code,
            trading_account_id=trading_account_id,
            opened_at=opened_at,
            linked_at=at,
        )
    )


async def get_offset_proofs(
    conn: AsyncConnection, *, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Any]:
    """The proofs among these (offset type, proof id) keys that the registry received."""
    if not keys:
        return {}
    by_type: dict[str, list[str]] = {}
    for offset_type, proof_id in keys:
        by_type.setdefault(offset_type, []).append(proof_id)
    rows = await conn.execute(
        select(offset_proofs).where(
            or_(
                *(
                    and_(offset_proofs.c.offset_type == kind, offset_proofs.c.proof_id.in_(ids))
                    for kind, ids in by_type.items()
                )
            )
        )
    )
    return {(row.offset_type, row.proof_id): row for row in rows}


async def list_offset_proofs(conn: AsyncConnection, *, credit_code: str) -> list[Any]:
    return list(
        await conn.execute(
            select(offset_proofs)
            .where(offset_proofs.c.credit_code == credit_code)
            .order_by(offset_proofs.c.cancelled_at, offset_proofs.c.offset_type)
            .order_by(offset_proofs.c.proof_id)
        )
    )


async def add_offset_proof(
    conn: AsyncConnection,
    *,
    offset_type: str,
    proof_id: str,
    credit_code: str,
    compliance_year: int,
    quantity: int,
    project_id: str,
    cancelled_on: date,
    cancelled_at: datetime,
    event_id: str,
    at: datetime,
) -> None:
    """A proof received from its issuer, journalled as offsets the entity now holds."""
    await conn.execute(
        offset_proofs.insert().values(
            offset_type=offset_type,
            proof_id=proof_id,
            credit_code=credit_code,
            compliance_year=compliance_year,
            quantity=quantity,
            project_id=project_id,
            cancelled_on=cancelled_on,
            cancelled_at=cancelled_at,
            received_at=at,
            event_id=event_id,
        )
    )
    await _journal(
        conn,
        credit_code=credit_code,
        asset=offset_type,
        vintage=compliance_year,
        kind="offset_in",
        amount=quantity,
        reference=proof_id,
        at=at,
    )


_USE_PROOF = (
    update(offset_proofs)
    .where(offset_proofs.c.offset_type == bindparam("type_"))
    .where(offset_proofs.c.proof_id == bindparam("proof_"))
    .where(offset_proofs.c.credit_code == _CODE)
    .where(offset_proofs.c.used_at.is_(None))  # used once: a concurrent use finds no row
    .values(used_for_year=bindparam("year"), used_at=bindparam("at"))
)


async def use_offset_proofs(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    proofs: Sequence[Any],
    at: datetime,
) -> None:
    """Mark the entity's proofs (rows of offset_proofs) used for the year's surrender and
    journal their use; a proof used meanwhile is refused. In key order, so that two surrenders
    naming the same proofs wait for each other instead of deadlocking."""
    for proof in sorted(proofs, key=lambda row: (row.offset_type, row.proof_id)):
        used = await conn.execute(
            _USE_PROOF,
            {
                "type_": proof.offset_type,
                "proof_": proof.proof_id,
                "code": credit_code,
                "year": compliance_year,
                "at": at,
            },
        )
        if used.rowcount != 1:
            raise Conflict(
                "proof_used",
                f"{proof.offset_type} proof {proof.proof_id} was already surrendered",
            )
        await _journal(
            conn,
            credit_code=credit_code,
            asset=proof.offset_type,
            vintage=proof.compliance_year,
            kind="offset_use",
            amount=-proof.quantity,
            reference=proof.proof_id,
            at=at,
        )


async def offsets_used_by_type(
    conn: AsyncConnection, *, credit_code: str, compliance_year: int
) -> dict[str, int]:
    """Offsets surrendered for the year, by type (only the types used)."""
    rows = await conn.execute(
        select(offset_proofs.c.offset_type, func.sum(offset_proofs.c.quantity))
        .where(offset_proofs.c.credit_code == credit_code)
        .where(offset_proofs.c.used_for_year == compliance_year)
        .group_by(offset_proofs.c.offset_type)
        .order_by(offset_proofs.c.offset_type)
    )
    return {kind: int(total) for kind, total in rows.all()}


async def lock_obligation(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    """The year's obligation, locked for this transaction on PostgreSQL (SQLite serialises
    writers anyway): a second surrender of the entity waits, then sees what the first did."""
    found = await conn.execute(
        _OBLIGATION.with_for_update(), {"code": credit_code, "year": compliance_year}
    )
    return found.first()


async def add_surrender(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    allowances: int,
    offsets: int,
    completed_at: datetime | None,
    on_time: bool | None,
) -> None:
    """Count a surrender of allowances and offsets towards the year's obligation."""
    await conn.execute(
        update(obligations)
        .where(obligations.c.credit_code == credit_code)
        .where(obligations.c.compliance_year == compliance_year)
        .values(
            surrendered=obligations.c.surrendered + allowances + offsets,
            offsets_surrendered=obligations.c.offsets_surrendered + offsets,
            completed_at=completed_at,
            on_time=on_time,
        )
    )


async def add_transfer(
    conn: AsyncConnection,
    *,
    transfer_id: str,
    credit_code: str,
    direction: str,
    trading_account_id: str,
    vintage: int,
    allowances: int,
    at: datetime,
) -> None:
    await conn.execute(
        transfers.insert().values(
            transfer_id=transfer_id,
            credit_code=credit_code,
            direction=direction,
            trading_account_id=trading_account_id,
            vintage=vintage,
            allowances=allowances,
            at=at,
        )
    )


async def get_transfer(conn: AsyncConnection, *, transfer_id: str) -> Any:
    found = await conn.execute(select(transfers).where(transfers.c.transfer_id == transfer_id))
    return found.first()


async def list_transfers(conn: AsyncConnection, *, credit_code: str) -> list[Any]:
    return list(
        await conn.execute(
            select(transfers)
            .where(transfers.c.credit_code == credit_code)
            .order_by(transfers.c.at, transfers.c.transfer_id)
        )
    )


@dataclass(frozen=True)
class LedgerCheck:
    """Holdings against the journal. Positions: allowances per (entity, vintage), offsets per
    (entity, type) with vintage None; `differences` rows: credit_code, asset, vintage, held,
    journalled."""

    accounts: int
    allowances_held: int
    journal_allowances: int
    offsets_unused: int
    journal_offsets: int
    differences: list[Any]


def _positions() -> Any:
    """Every amount held and every journal entry, as (entity, asset, vintage, held, journalled)."""
    zero = literal_column("0", Integer)
    no_vintage = cast(null(), Integer)
    allowances = journal.c.asset.in_(ALLOWANCE_ASSETS)
    return union_all(
        select(
            holdings.c.credit_code,
            cast(literal_column("'SHEA'"), String(16)).label("asset"),
            holdings.c.vintage,
            holdings.c.balance.label("held"),
            zero.label("journalled"),
        ),
        select(
            surrender_only_holdings.c.credit_code,
            cast(literal_column("'SHEA_RESTRICTED'"), String(16)),
            surrender_only_holdings.c.vintage,
            surrender_only_holdings.c.balance,
            zero,
        ),
        select(
            journal.c.credit_code, journal.c.asset, journal.c.vintage, zero, journal.c.amount
        ).where(allowances),
        select(
            offset_proofs.c.credit_code,
            offset_proofs.c.offset_type,
            no_vintage,
            offset_proofs.c.quantity,
            zero,
        ).where(offset_proofs.c.used_at.is_(None)),
        select(journal.c.credit_code, journal.c.asset, no_vintage, zero, journal.c.amount).where(
            ~allowances
        ),
    ).subquery("positions")


async def reconcile(conn: AsyncConnection) -> LedgerCheck:
    """Compare holdings with the journal. Two statements: run them in one snapshot (a
    repeatable-read transaction on PostgreSQL; one SQLite transaction is one)."""
    positions = _positions()
    allowances = positions.c.asset.in_(ALLOWANCE_ASSETS)

    def total(column: Any, where: Any) -> Any:
        return func.coalesce(func.sum(case((where, column), else_=0)), 0)

    totals = (
        await conn.execute(
            select(
                func.count(distinct(positions.c.credit_code)),
                total(positions.c.held, allowances),
                total(positions.c.journalled, allowances),
                total(positions.c.held, ~allowances),
                total(positions.c.journalled, ~allowances),
            )
        )
    ).one()
    held = func.sum(positions.c.held)
    journalled = func.sum(positions.c.journalled)
    differences = await conn.execute(
        select(
            positions.c.credit_code,
            positions.c.asset,
            positions.c.vintage,
            held.label("held"),
            journalled.label("journalled"),
        )
        .group_by(positions.c.credit_code, positions.c.asset, positions.c.vintage)
        .having(held != journalled)
        .order_by(positions.c.credit_code, positions.c.asset, positions.c.vintage)
    )
    accounts, allowances_held, journal_allowances, offsets_unused, journal_offsets = totals
    return LedgerCheck(
        accounts=int(accounts),
        allowances_held=int(allowances_held),
        journal_allowances=int(journal_allowances),
        offsets_unused=int(offsets_unused),
        journal_offsets=int(journal_offsets),
        differences=list(differences),
    )


# --- surrender-only holdings ------------------------------------------------------------------


async def get_surrender_only(conn: AsyncConnection, *, credit_code: str) -> dict[int, int]:
    """Surrender-only allowances by the compliance year they may be surrendered for."""
    rows = await conn.execute(
        select(surrender_only_holdings.c.vintage, surrender_only_holdings.c.balance)
        .where(surrender_only_holdings.c.credit_code == credit_code)
        .order_by(surrender_only_holdings.c.vintage)
    )
    return {row.vintage: row.balance for row in rows}


async def move_surrender_only(
    conn: AsyncConnection,
    *,
    credit_code: str,
    vintage: int,
    amount: int,
    kind: str,
    reference: str,
    at: datetime,
) -> None:
    """Credit or debit surrender-only allowances of a year, journalled as SHEA_RESTRICTED."""
    await _SURRENDER_ONLY.move(
        conn,
        credit_code=credit_code,
        vintage=vintage,
        amount=amount,
        kind=kind,
        reference=reference,
        at=at,
    )


# --- auctions ---------------------------------------------------------------------------------


async def get_market_day(conn: AsyncConnection, *, instrument: str, trading_date: date) -> Any:
    found = await conn.execute(
        select(market_days)
        .where(market_days.c.instrument == instrument)
        .where(market_days.c.trading_date == trading_date)
    )
    return found.first()


async def add_market_day(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(market_days.insert().values(**values))


async def list_market_days(
    conn: AsyncConnection, *, instrument: str, first: date, last: date
) -> list[Any]:
    return list(
        await conn.execute(
            select(market_days)
            .where(market_days.c.instrument == instrument)
            .where(market_days.c.trading_date.between(first, last))
            .order_by(market_days.c.trading_date)
        )
    )


async def get_auction(
    conn: AsyncConnection, *, auction_id: str, lock: Literal["share", "update"] | None = None
) -> Any:
    """The announced auction, or None. Locked on PostgreSQL: a bid takes it `share`, the
    clearing `update`, so the clearing waits for bids under way and then sees them all, and a
    bid after it sees the auction cleared (SQLite serialises writers anyway)."""
    query = select(auctions).where(auctions.c.auction_id == auction_id)
    if lock is not None:
        query = query.with_for_update(read=lock == "share")
    return (await conn.execute(query)).first()


async def list_auctions(conn: AsyncConnection) -> list[Any]:
    return list(await conn.execute(select(auctions).order_by(auctions.c.announced_at)))


async def add_auction(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(auctions.insert().values(status="announced", **values))


async def mark_cleared(
    conn: AsyncConnection, *, auction_id: str, price: Decimal | None, sold: int, at: datetime
) -> bool:
    """Mark the auction cleared, once: False when another run got there first."""
    cleared = await conn.execute(
        update(auctions)
        .where(auctions.c.auction_id == auction_id)
        .where(auctions.c.status == "announced")
        .values(status="cleared", clearing_price=price, sold=sold, cleared_at=at)
    )
    return cleared.rowcount == 1


def _bidder(insert: Callable[[Table], Any]) -> Any:
    return insert(auction_bidders).on_conflict_do_nothing(
        index_elements=["auction_id", "credit_code"]
    )


_BIDDER_ROW = Upsert(_bidder)


async def commit_to_cap(
    conn: AsyncConnection, *, auction_id: str, credit_code: str, change: int, cap: int
) -> int:
    """Add `change` (negative: release) to the bidder's committed allowances if the total stays
    within `cap`, atomically; returns what it had committed before. Invalid `over_bidder_cap`
    otherwise."""
    await conn.execute(
        _BIDDER_ROW.on(conn),
        {"auction_id": auction_id, "credit_code": credit_code, "committed": 0},
    )
    row = auction_bidders.c
    changed = await conn.execute(
        update(auction_bidders)
        .where(row.auction_id == auction_id)
        .where(row.credit_code == credit_code)
        .where(row.committed + change <= cap)
        .values(committed=row.committed + change)
        .returning(row.committed)
    )
    after = changed.scalar()
    if after is None:
        committed = (
            await conn.execute(
                select(row.committed)
                .where(row.auction_id == auction_id)
                .where(row.credit_code == credit_code)
            )
        ).scalar_one()
        raise Invalid(
            "over_bidder_cap",
            f"{change} more allowances with the {committed} already bid exceed the cap of "
            f"{cap} per bidder",
        )
    return int(after) - change


async def add_bid(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(auction_bids.insert().values(status="live", **values))


async def get_bid(conn: AsyncConnection, *, auction_id: str, bid_id: str) -> Any:
    found = await conn.execute(
        select(auction_bids)
        .where(auction_bids.c.auction_id == auction_id)
        .where(auction_bids.c.bid_id == bid_id)
    )
    return found.first()


async def change_bid(conn: AsyncConnection, *, bid_id: str, **values: Any) -> None:
    await conn.execute(
        update(auction_bids)
        .where(auction_bids.c.bid_id == bid_id)
        .where(auction_bids.c.status == "live")
        .values(**values)
    )


async def list_bids(
    conn: AsyncConnection, *, auction_id: str, credit_code: str | None = None
) -> list[Any]:
    query = select(auction_bids).where(auction_bids.c.auction_id == auction_id)
    if credit_code is not None:
        query = query.where(auction_bids.c.credit_code == credit_code)
    return list(await conn.execute(query.order_by(auction_bids.c.placed_at, auction_bids.c.bid_id)))


async def tally_bids(conn: AsyncConnection, *, auction_id: str) -> dict[str, int]:
    """The auction's live bids counted for its result: `bids`, `bid_volume` and `bidders`."""
    bids = auction_bids.c
    row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(bids.quantity), 0),
                func.count(distinct(bids.credit_code)),
            )
            .where(bids.auction_id == auction_id)
            .where(bids.status == "live")
        )
    ).one()
    return {"bids": int(row[0]), "bid_volume": int(row[1]), "bidders": int(row[2])}


async def set_filled(conn: AsyncConnection, *, fills: list[dict[str, Any]]) -> None:
    if fills:
        await conn.execute(
            update(auction_bids)
            .where(auction_bids.c.bid_id == bindparam("bid"))
            .values(filled=bindparam("filled_")),
            fills,
        )


async def add_award(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(auction_awards.insert().values(status="awarded", **values))


async def get_award(
    conn: AsyncConnection, *, auction_id: str, credit_code: str, lock: bool = False
) -> Any:
    query = (
        select(auction_awards)
        .where(auction_awards.c.auction_id == auction_id)
        .where(auction_awards.c.credit_code == credit_code)
    )
    if lock:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def get_award_by_payment(conn: AsyncConnection, *, payment_id: str) -> Any:
    found = await conn.execute(
        select(auction_awards).where(auction_awards.c.payment_id == payment_id)
    )
    return found.first()


async def list_awards(
    conn: AsyncConnection,
    *,
    auction_id: str | None = None,
    credit_code: str | None = None,
    status: str | None = None,
) -> list[Any]:
    query = select(auction_awards)
    if status is not None:
        query = query.where(auction_awards.c.status == status)
    if auction_id is not None:
        query = query.where(auction_awards.c.auction_id == auction_id)
    if credit_code is not None:
        query = query.where(auction_awards.c.credit_code == credit_code)
    return list(
        await conn.execute(
            query.order_by(auction_awards.c.auction_id, auction_awards.c.credit_code)
        )
    )


async def close_award(
    conn: AsyncConnection,
    *,
    auction_id: str,
    credit_code: str,
    status: str,
    at: datetime,
    payment_id: str | None = None,
    paid_at: datetime | None = None,
) -> bool:
    """Settle or cancel an open award, once: False when it was no longer open."""
    closed = await conn.execute(
        update(auction_awards)
        .where(auction_awards.c.auction_id == auction_id)
        .where(auction_awards.c.credit_code == credit_code)
        .where(auction_awards.c.status == "awarded")
        .values(status=status, closed_at=at, payment_id=payment_id, paid_at=paid_at)
    )
    return closed.rowcount == 1


# --- deadlines: reported emissions and projected shortfalls -----------------------------------


def _reported(insert: Callable[[Table], Any]) -> Any:
    statement = insert(reported_emissions)
    columns = ("report_id", "version", "total_emissions", "submitted_at")
    return statement.on_conflict_do_update(
        index_elements=["credit_code", "compliance_year"],
        set_={name: statement.excluded[name] for name in columns},
        # Only a later version replaces what is kept: a redelivered or reordered earlier one
        # changes nothing.
        where=statement.excluded.version > reported_emissions.c.version,
    )


_REPORTED = Upsert(_reported)


async def keep_reported_emissions(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    report_id: str,
    version: int,
    total_emissions: Decimal,
    submitted_at: datetime,
) -> None:
    """The entity's reported total for the year, if this version is later than the one kept."""
    await conn.execute(
        _REPORTED.on(conn),
        {
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "report_id": report_id,
            "version": version,
            "total_emissions": total_emissions,
            "submitted_at": submitted_at,
        },
    )


async def shortfall_positions(
    conn: AsyncConnection, *, district: str, compliance_year: int
) -> list[Any]:
    """Per entity of the district on the year's roster: `name`, `held` (allowances the year's
    surrender may draw: transferable ones of vintages up to the year, and the surrender-only
    ones of the year), `obligation` and `surrendered` (None until determined), and the latest
    reported `total_emissions` and its `version` (None without a report)."""
    usable = (
        select(holdings.c.credit_code, func.sum(holdings.c.balance).label("balance"))
        .where(holdings.c.vintage <= compliance_year)
        .group_by(holdings.c.credit_code)
        .subquery("usable")
    )
    restricted = (
        select(surrender_only_holdings.c.credit_code, surrender_only_holdings.c.balance)
        .where(surrender_only_holdings.c.vintage == compliance_year)
        .subquery("restricted")
    )
    code = roster.c.credit_code
    held = func.coalesce(usable.c.balance, 0) + func.coalesce(restricted.c.balance, 0)
    query = (
        select(
            code,
            entities.c.name,
            held.label("held"),
            obligations.c.obligation,
            obligations.c.surrendered,
            reported_emissions.c.total_emissions,
            reported_emissions.c.version,
        )
        .join(entities, entities.c.credit_code == code)
        .outerjoin(
            obligations,
            and_(
                obligations.c.credit_code == code,
                obligations.c.compliance_year == roster.c.compliance_year,
            ),
        )
        .outerjoin(
            reported_emissions,
            and_(
                reported_emissions.c.credit_code == code,
                reported_emissions.c.compliance_year == roster.c.compliance_year,
            ),
        )
        .outerjoin(usable, usable.c.credit_code == code)
        .outerjoin(restricted, restricted.c.credit_code == code)
        .where(roster.c.compliance_year == compliance_year)
        .where(entities.c.district == district)
        .order_by(code)
    )
    return list(await conn.execute(query))


# --- deadlines: the entities bound before the registry watched them ---------------------------


def _not_enrolled(obligation: str, compliance_year: int) -> Any:
    status = obligation_tables.status
    return ~exists().where(
        status.c.credit_code == roster.c.credit_code,
        status.c.compliance_year == compliance_year,
        status.c.obligation == obligation,
    )


async def unenrolled_roster(
    conn: AsyncConnection, *, compliance_year: int, obligation: str
) -> list[Any]:
    """The entities on the year's roster with no status row for `obligation` (rostered before
    the registry watched its deadlines), in one query: `credit_code`, `name`, `district`, and
    their year's `obligation`, `surrendered` and `completed_at` (None until determined)."""
    code = roster.c.credit_code
    query = (
        select(
            code,
            entities.c.name,
            entities.c.district,
            obligations.c.obligation,
            obligations.c.surrendered,
            obligations.c.completed_at,
        )
        .join(entities, entities.c.credit_code == code)
        .outerjoin(
            obligations,
            and_(
                obligations.c.credit_code == code,
                obligations.c.compliance_year == roster.c.compliance_year,
            ),
        )
        .where(roster.c.compliance_year == compliance_year)
        .where(_not_enrolled(obligation, compliance_year))
        .order_by(code)
    )
    return list(await conn.execute(query))


async def unenrolled_new_entrants(
    conn: AsyncConnection, *, compliance_year: int, obligation: str
) -> list[Any]:
    """The new entrants on the year's roster with no status row for `obligation`, in one
    query, except those that had both accounts before they were rostered (never bound to open
    them): `credit_code`, `name`, `district`, the registry account's `opened_at` and the trading
    account's `linked_at` (None while it is not there), and when it was rostered
    (`registered_at`)."""
    code, rostered = roster.c.credit_code, roster.c.registered_at
    opened, linked = accounts.c.opened_at, trading_accounts.c.linked_at
    bound = or_(opened.is_(None), linked.is_(None), opened >= rostered, linked >= rostered)
    query = (
        select(code, entities.c.name, entities.c.district, opened, linked, rostered)
        .join(entities, entities.c.credit_code == code)
        .outerjoin(accounts, accounts.c.credit_code == code)
        .outerjoin(trading_accounts, trading_accounts.c.credit_code == code)
        .where(roster.c.compliance_year == compliance_year)
        .where(roster.c.new_entrant.is_(True))
        .where(bound)
        .where(_not_enrolled(obligation, compliance_year))
        .order_by(code)
    )
    return list(await conn.execute(query))
