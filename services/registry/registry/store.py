"""Registry tables and keyword-only repository functions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.db import upsert
from carbon_platform.errors import Conflict
from carbon_platform.tables import ScaledDecimal, UtcDateTime, messaging_tables

metadata = MetaData()
inbox, outbox = messaging_tables(metadata)

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


async def get_entity(conn: AsyncConnection, *, credit_code: str) -> Any:
    return (
        await conn.execute(select(entities).where(entities.c.credit_code == credit_code))
    ).first()


async def is_rostered(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> bool:
    row = await conn.execute(
        select(roster.c.credit_code)
        .where(roster.c.credit_code == credit_code)
        .where(roster.c.compliance_year == compliance_year)
    )
    return row.first() is not None


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
    values = {"name": name, "district": district, "sector": sector}
    await conn.execute(
        upsert(conn, entities)
        .values(credit_code=credit_code, registered_at=at, **values)
        .on_conflict_do_update(index_elements=["credit_code"], set_=values)
    )
    await conn.execute(
        roster.insert().values(
            credit_code=credit_code,
            compliance_year=compliance_year,
            new_entrant=new_entrant,
            registered_at=at,
        )
    )


async def get_account(conn: AsyncConnection, *, credit_code: str) -> Any:
    return (
        await conn.execute(select(accounts).where(accounts.c.credit_code == credit_code))
    ).first()


async def open_account(
    conn: AsyncConnection, *, account_id: str, credit_code: str, at: datetime
) -> None:
    await conn.execute(
        accounts.insert().values(account_id=account_id, credit_code=credit_code, opened_at=at)
    )


async def get_holdings(conn: AsyncConnection, *, credit_code: str) -> dict[int, int]:
    rows = await conn.execute(
        select(holdings.c.vintage, holdings.c.balance)
        .where(holdings.c.credit_code == credit_code)
        .order_by(holdings.c.vintage)
    )
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
            upsert(conn, holdings)
            .values(credit_code=credit_code, vintage=vintage, balance=amount)
            .on_conflict_do_update(
                index_elements=["credit_code", "vintage"],
                set_={"balance": holdings.c.balance + amount},
            )
        )
    else:
        debited = await conn.execute(
            update(holdings)
            .where(holdings.c.credit_code == credit_code)
            .where(holdings.c.vintage == vintage)
            .where(holdings.c.balance >= -amount)
            .values(balance=holdings.c.balance + amount)
        )
        if debited.rowcount != 1:
            raise Conflict(
                "insufficient_holdings", f"vintage {vintage} holds fewer than {-amount} allowances"
            )
    await conn.execute(
        journal.insert().values(
            credit_code=credit_code,
            vintage=vintage,
            kind=kind,
            amount=amount,
            reference=reference,
            at=at,
        )
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
        allocations.insert().values(
            credit_code=credit_code,
            compliance_year=compliance_year,
            kind=kind,
            method=method,
            basis_emissions=basis_emissions,
            allowances=allowances,
            issued_at=at,
        )
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
    return (
        await conn.execute(
            select(allocations)
            .where(allocations.c.credit_code == credit_code)
            .where(allocations.c.compliance_year == compliance_year)
            .where(allocations.c.kind == kind)
        )
    ).first()


async def get_obligation(conn: AsyncConnection, *, credit_code: str, compliance_year: int) -> Any:
    return (
        await conn.execute(
            select(obligations)
            .where(obligations.c.credit_code == credit_code)
            .where(obligations.c.compliance_year == compliance_year)
        )
    ).first()


async def list_obligations(conn: AsyncConnection, *, credit_code: str) -> list[Any]:
    rows = await conn.execute(
        select(obligations)
        .where(obligations.c.credit_code == credit_code)
        .order_by(obligations.c.compliance_year)
    )
    return list(rows)


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
        obligations.insert().values(
            credit_code=credit_code,
            compliance_year=compliance_year,
            case_id=case_id,
            verified_emissions=verified_emissions,
            obligation=obligation,
            surrendered=0,
        )
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
        update(obligations)
        .where(obligations.c.credit_code == credit_code)
        .where(obligations.c.compliance_year == compliance_year)
        .values(
            surrendered=obligations.c.surrendered + amount,
            completed_at=completed_at,
            on_time=on_time,
        )
    )
