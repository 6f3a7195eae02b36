"""Inbox and outbox tables, added to each service's own metadata (and its migrations)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no offset) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ScaledDecimal(TypeDecorator[Decimal]):
    """An exact decimal stored as a scaled integer (e.g. tonnes with 3 decimals as kilograms),
    so SQLite, which has no exact decimal type, never rounds it through a float."""

    impl = BigInteger
    cache_ok = True

    def __init__(self, scale: int = 3) -> None:
        super().__init__()
        self.scale = scale

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> int | None:
        if value is None:
            return None
        scaled = value.scaleb(self.scale)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than {self.scale} decimals")
        return int(scaled)

    def process_result_value(self, value: int | None, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value).scaleb(-self.scale).quantize(Decimal(1).scaleb(-self.scale))


def inbox_table(metadata: MetaData) -> Table:
    # Insert-first dedupe (eventuate-tram): the primary key refuses a second delivery.
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(64), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("event_type", String(128), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("outcome", String(32), nullable=False),
        Column("received_at", UtcDateTime(), nullable=False),
    )


def outbox_table(metadata: MetaData) -> Table:
    table = Table(
        "outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("event_type", String(128), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("key", LargeBinary, nullable=True),
        Column("value", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),  # JSON list of [name, base64 value]
        Column("created_at", UtcDateTime(), nullable=False),
        Column("published_at", UtcDateTime(), nullable=True),
        # Where the broker put it: the relay checks the broker still holds what it published.
        Column("partition", Integer, nullable=True),
        Column("offset", BigInteger, nullable=True),
        # A row the broker can never take (too large) is set aside, so it blocks nothing.
        Column("parked_at", UtcDateTime(), nullable=True),
        Column("park_reason", String(500), nullable=True),
    )
    Index("ix_outbox_pending", table.c.published_at, table.c.id)
    Index("ix_outbox_topic", table.c.topic, table.c.id)
    Index("ix_outbox_parked", table.c.parked_at)
    return table


def outbox_lease_table(metadata: MetaData) -> Table:
    # One row: which instance's relay publishes the outbox, and until when (wall clock).
    return Table(
        "outbox_lease",
        metadata,
        Column("name", String(32), primary_key=True),
        Column("holder", String(128), nullable=False),
        Column("expires_at", UtcDateTime(), nullable=False),
    )


@dataclass(frozen=True)
class MessagingTables:
    inbox: Table
    outbox: Table
    outbox_lease: Table


def messaging_tables(metadata: MetaData) -> MessagingTables:
    """The service's inbox, outbox and relay lease, defined on its metadata once."""
    return MessagingTables(
        inbox_table(metadata), outbox_table(metadata), outbox_lease_table(metadata)
    )
