"""Notifier tables: where each entity is supervised, the notifications recorded, and the district
notices waiting for an entity's district to be known."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.db import Upsert
from carbon_platform.tables import UtcDateTime, messaging_tables
from notifier.domain.messages import Notification

metadata = MetaData()
messaging = messaging_tables(metadata)

# Projection of entity.registered: the district bureau supervising each entity.
supervision = Table(
    "supervision",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("district", String(64), nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient_type", String(16), nullable=False),
    Column("recipient_id", String(64), nullable=False),
    Column("credit_code", String(18), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("recipient_type", "recipient_id", "event_id", name="uq_notifications_once"),
)

# District notices of events handled before the entity's entity.registered (the topics are
# consumed independently): told once the district is known. The texts never name the district.
pending_district_notices = Table(
    "pending_district_notices",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
)


def _supervise(insert: Callable[[Table], Any]) -> Any:
    statement = insert(supervision)
    return statement.on_conflict_do_update(
        index_elements=["credit_code"], set_={"district": statement.excluded.district}
    )


def _notify(insert: Callable[[Table], Any]) -> Any:
    # A notice already recorded for the recipient and event stays the only one: an event handled
    # again, or a waiting notice told after all, adds nothing.
    return (
        insert(notifications)
        .on_conflict_do_nothing(index_elements=["recipient_type", "recipient_id", "event_id"])
        .returning(notifications.c.recipient_type)
    )


def _keep(insert: Callable[[Table], Any]) -> Any:
    return insert(pending_district_notices).on_conflict_do_nothing(
        index_elements=["credit_code", "event_id"]
    )


# Built once: executing a prepared statement with parameters costs a third of building one.
_SUPERVISE = Upsert(_supervise)
_DISTRICT = select(supervision.c.district).where(supervision.c.credit_code == bindparam("code"))
_NOTIFY = Upsert(_notify)
_KEEP = Upsert(_keep)
_TAKE_WAITING = (
    pending_district_notices.delete()
    .where(pending_district_notices.c.credit_code == bindparam("code"))
    .returning(pending_district_notices)
)
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")


async def lock_supervision(conn: AsyncConnection, *, credit_code: str) -> None:
    """Hold the entity's supervision until the transaction ends, so that learning its district
    and keeping a notice for the district cannot interleave: otherwise each transaction could
    miss the other's uncommitted row and the notice would wait forever. PostgreSQL only;
    SQLite serialises writers."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK, {"key": f"notifier.supervision/{credit_code}"})


async def set_district(conn: AsyncConnection, *, credit_code: str, district: str) -> None:
    await conn.execute(_SUPERVISE.on(conn), {"credit_code": credit_code, "district": district})


async def district_of(conn: AsyncConnection, *, credit_code: str) -> str | None:
    return await conn.scalar(_DISTRICT, {"code": credit_code})


async def record(
    conn: AsyncConnection,
    *,
    items: list[Notification],
    credit_code: str,
    event_id: str,
    event_type: str,
    at: datetime,
) -> list[str]:
    """Record the notices; returns the recipient type of each one new (not recorded before)."""
    return await _insert(
        conn,
        [
            {
                "recipient_type": item.recipient_type,
                "recipient_id": item.recipient_id,
                "credit_code": credit_code,
                "event_id": event_id,
                "event_type": event_type,
                "subject": item.subject,
                "message": item.message,
                "created_at": at,
            }
            for item in items
        ],
    )


async def keep_for_district(
    conn: AsyncConnection,
    *,
    credit_code: str,
    event_id: str,
    event_type: str,
    subject: str,
    message: str,
    at: datetime,
) -> None:
    """Keep a district notice until the entity's district is known."""
    await conn.execute(
        _KEEP.on(conn),
        {
            "credit_code": credit_code,
            "event_id": event_id,
            "event_type": event_type,
            "subject": subject,
            "message": message,
            "received_at": at,
        },
    )


async def tell_district_what_waited(
    conn: AsyncConnection, *, credit_code: str, district: str
) -> list[str]:
    """Record the notices kept for the entity's district, dated when their events were received,
    and forget them; returns the recipient type of each one new."""
    waiting = sorted(
        await conn.execute(_TAKE_WAITING, {"code": credit_code}), key=lambda row: row.received_at
    )
    return await _insert(
        conn,
        [
            {
                "recipient_type": "district",
                "recipient_id": district,
                "credit_code": credit_code,
                "event_id": row.event_id,
                "event_type": row.event_type,
                "subject": row.subject,
                "message": row.message,
                "created_at": row.received_at,
            }
            for row in waiting
        ],
    )


async def _insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    return list((await conn.execute(_NOTIFY.on(conn), rows)).scalars())


async def list_for(
    conn: AsyncConnection, *, recipient_type: str | None, recipient_id: str | None, limit: int
) -> list[Any]:
    query = select(notifications).order_by(notifications.c.id.desc()).limit(limit)
    if recipient_type:
        query = query.where(notifications.c.recipient_type == recipient_type)
    if recipient_id:
        query = query.where(notifications.c.recipient_id == recipient_id)
    return list(await conn.execute(query))
