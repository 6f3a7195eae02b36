"""Insert-first inbox: the event's effect and its inbox row commit in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.codec import RawMessage
from carbon_platform.db import Upsert

Delivery = tuple[str, str, RawMessage, str]
"""(inbox id, event type, the record, outcome)."""


async def record_first_deliveries(
    conn: AsyncConnection,
    inbox: Table,
    *,
    consumer: str,
    deliveries: Sequence[Delivery],
    at: datetime,
) -> set[str]:
    """Insert the inbox rows in one statement; returns the ids that were not there yet (a
    delivery seen before, by this or another instance, inserts nothing)."""
    if not deliveries:
        return set()
    inserted = await conn.execute(
        _first_deliveries(inbox).on(conn),
        [
            {
                "consumer": consumer,
                "event_id": inbox_id,
                "event_type": event_type,
                "topic": raw.topic,
                "partition": raw.partition,
                "offset": raw.offset,
                "outcome": outcome,
                "received_at": at,
            }
            for inbox_id, event_type, raw, outcome in deliveries
        ],
    )
    return {row.event_id for row in inserted}


@cache
def _first_deliveries(inbox: Table) -> Upsert:
    return Upsert(
        lambda insert: (
            insert(inbox)
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
            .returning(inbox.c.event_id)
        )
    )
