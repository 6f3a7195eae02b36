"""Transactional outbox and its relay (Debezium outbox / eventuate-tram pattern).

State changes and the events they produce commit together; the relay publishes committed rows in
id order, marks them published, and wakes at once after a commit instead of waiting for a poll.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime

from aiokafka import AIOKafkaProducer
from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from carbon_platform import metrics
from carbon_platform.clock import Clock
from carbon_platform.codec import Headers, Outgoing

log = logging.getLogger(__name__)


async def add_to_outbox(
    conn: AsyncConnection, outbox: Table, events: Sequence[Outgoing], *, at: datetime
) -> None:
    if not events:
        return
    await conn.execute(
        outbox.insert(),
        [
            {
                "event_id": event.event_id,
                "event_type": event.event_type,
                "topic": event.topic,
                "key": event.key,
                "value": event.value,
                "headers": _dump_headers(event.headers),
                "created_at": at,
            }
            for event in events
        ],
    )


def _dump_headers(headers: Headers) -> str:
    return json.dumps([[name, base64.b64encode(value).decode()] for name, value in headers])


def _load_headers(text: str) -> Headers:
    return [(name, base64.b64decode(value)) for name, value in json.loads(text)]


class OutboxRelay:
    """Publishes pending outbox rows. One relay per service process."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        outbox: Table,
        producer: AIOKafkaProducer,
        clock: Clock,
        batch_size: int = 200,
        idle_poll_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._producer = producer
        self._clock = clock
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._wakeup = asyncio.Event()
        self.healthy = False
        self.oldest_pending_age = 0.0

    def wake(self) -> None:
        """Called after a commit that added outbox rows."""
        self._wakeup.set()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                published = await self.publish_pending()
                self.healthy = True
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.RELAY_ERRORS.inc()
                self.healthy = False
                log.exception("outbox relay failed; retrying in %.1fs", backoff)
                with contextlib.suppress(Exception):  # the backlog grows while the broker is away
                    await self._update_gauges()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if published < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._idle_poll_s)
                self._wakeup.clear()

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows in order; returns how many were published."""
        outbox = self._outbox
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self._batch_size)
                )
            ).all()
        if not rows:
            await self._update_gauges()
            return 0
        # aiokafka keeps one batch in flight per partition, so per-key order is kept.
        sends = [
            await self._producer.send(
                row.topic, value=row.value, key=row.key, headers=_load_headers(row.headers)
            )
            for row in rows
        ]
        await asyncio.gather(*sends)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id.in_([row.id for row in rows]))
                .values(published_at=self._clock.now())
            )
        for row in rows:
            metrics.EVENTS_PUBLISHED.labels(row.topic, row.event_type).inc()
        await self._update_gauges()
        return len(rows)

    async def _update_gauges(self) -> None:
        outbox = self._outbox
        async with self._engine.connect() as conn:
            pending, oldest = (
                await conn.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.published_at.is_(None)
                    )
                )
            ).one()
        self.oldest_pending_age = (
            0.0 if oldest is None else max(0.0, (self._clock.now() - oldest).total_seconds())
        )
        metrics.OUTBOX_PENDING.set(pending)
        metrics.OUTBOX_OLDEST_AGE.set(self.oldest_pending_age)
