"""Notifier tables: where each entity is supervised, and the notifications recorded."""

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


def _supervise(insert: Callable[[Table], Any]) -> Any:
    statement = insert(supervision)
    return statement.on_conflict_do_update(
        index_elements=["credit_code"], set_={"district": statement.excluded.district}
    )


# Built once: executing a prepared statement with parameters costs a third of building one.
_SUPERVISE = Upsert(_supervise)
_DISTRICT = select(supervision.c.district).where(supervision.c.credit_code == bindparam("code"))
_NOTIFY = notifications.insert()


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
) -> None:
    if items:
        await conn.execute(
            _NOTIFY,
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


async def list_for(
    conn: AsyncConnection, *, recipient_type: str | None, recipient_id: str | None, limit: int
) -> list[Any]:
    query = select(notifications).order_by(notifications.c.id.desc()).limit(limit)
    if recipient_type:
        query = query.where(notifications.c.recipient_type == recipient_type)
    if recipient_id:
        query = query.where(notifications.c.recipient_id == recipient_id)
    return list(await conn.execute(query))
