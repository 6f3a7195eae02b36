"""Insert-first inbox: the event's effect and its inbox row commit in one transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.codec import RawMessage
from carbon_platform.db import upsert


async def record_first_delivery(
    conn: AsyncConnection,
    inbox: Table,
    *,
    consumer: str,
    event_id: str,
    event_type: str,
    raw: RawMessage,
    outcome: str,
    at: datetime,
) -> bool:
    """Insert the inbox row; False when this consumer has already taken the event."""
    statement = (
        upsert(conn, inbox)
        .values(
            consumer=consumer,
            event_id=event_id,
            event_type=event_type,
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            outcome=outcome,
            received_at=at,
        )
        .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
    )
    result = await conn.execute(statement)
    return result.rowcount == 1
