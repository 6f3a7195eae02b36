"""Registry tables and keyword-only repository functions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.errors import Conflict
from carbon_platform.db import Upsert
from carbon_platform.tables import ScaledDecimal, UtcDateTime, messaging_tables

metadata = MetaData()
messaging = messaging_tables(metadata)

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
)

holdings = Table(
    "holdings",
    metadata,
    Column("credit_code", ForeignKey("entities.credit_code"), primary_key=True),
    Column("vintage", Integer, primary_key=True),
    Column("balance", Integer, nullable=False),
    CheckConstraint("balance >= 0", name="ck_holdings_balance_non_negative"),
)

# Every movement of allowances; holdings are the running balance of this journal.
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
    CheckConstraint("amount <> 0", name="ck_journal_amount_non_zero"),
    CheckConstraint("kind IN ('allocation', 'preallocation', 'surrender')", name="ck_journal_kind"),
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
    CheckConstraint("obligation >= 0", name="ck_obligations_obligation"),
    CheckConstraint(
        "surrendered >= 0 AND surrendered <= obligation", name="ck_obligations_surrendered"
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


def _entity(insert: Callable[[Table], Any]) -> Any:
    statement = insert(entities)
    return statement.on_conflict_do_update(
        index_elements=["credit_code"],
        set_={name: statement.excluded[name] for name in ("name", "district", "sector")},
    )


def _credit(insert: Callable[[Table], Any]) -> Any:
    statement = insert(holdings)
    return statement.on_conflict_do_update(
        index_elements=["credit_code", "vintage"],
        set_={"balance": holdings.c.balance + statement.excluded.balance},
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
_CREDIT = Upsert(_credit)
_DEBIT = (
    update(holdings)
    .where(holdings.c.credit_code == _CODE)
    .where(holdings.c.vintage == bindparam("vintage_"))
    .where(holdings.c.balance >= bindparam("debit"))  # never below zero
    .values(balance=holdings.c.balance - bindparam("debit"))
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
_SURRENDERED = (
    update(obligations)
    .where(obligations.c.credit_code == _CODE)
    .where(obligations.c.compliance_year == _YEAR)
    .values(surrendered=obligations.c.surrendered + bindparam("amount"))
)


async def get_entity(conn: AsyncConnection, *, credit_code: str) -> Any:
    return (await conn.execute(_ENTITY, {"code": credit_code})).first()


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
    """Credit (amount > 0) or debit (amount < 0) a vintage, journalled in the same transaction.
    A debit never takes a balance below zero (and the check constraint backs that up)."""
    if amount > 0:
        await conn.execute(
            _CREDIT.on(conn), {"credit_code": credit_code, "vintage": vintage, "balance": amount}
        )
    else:
        debited = await conn.execute(
            _DEBIT, {"code": credit_code, "vintage_": vintage, "debit": -amount}
        )
        if debited.rowcount != 1:
            raise Conflict(
                "insufficient_holdings", f"vintage {vintage} holds fewer than {-amount} allowances"
            )
    await conn.execute(
        _JOURNAL,
        {
            "credit_code": credit_code,
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
) -> None:
    await conn.execute(
        _CREATE_OBLIGATION,
        {
            "credit_code": credit_code,
            "compliance_year": compliance_year,
            "case_id": case_id,
            "verified_emissions": verified_emissions,
            "obligation": obligation,
            "surrendered": 0,
        },
    )


async def add_surrendered(
    conn: AsyncConnection,
    *,
    credit_code: str,
    compliance_year: int,
    amount: int,
    completed_at: datetime | None,
    on_time: bool | None,
) -> None:
    await conn.execute(
        _SURRENDERED,
        {
            "code": credit_code,
            "year": compliance_year,
            "amount": amount,
            "completed_at": completed_at,
            "on_time": on_time,
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
