"""Consuming one record: decode -> inbox -> handler -> outbox, in one transaction.

Never raises into Faust (an exception escaping an agent makes Faust ack and skip the message).
Poison goes to the dead-letter topic at once; transient failures retry in place with capped
backoff; a bug is retried a few times, then dead-lettered with full context.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Mapping
from typing import Any
from uuid import uuid4

from sqlalchemy import exc as sa_exc
from sqlalchemy import update

from carbon_platform import metrics
from carbon_platform.codec import Event, Outgoing, PoisonMessage, RawMessage, decode
from carbon_platform.context import Handler, ServiceContext
from carbon_platform.errors import Rejection
from carbon_platform.inbox import record_first_delivery

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, TRANSIENT_ERRORS)


class EventConsumer:
    def __init__(self, context: ServiceContext, handlers: Mapping[str, Handler]) -> None:
        self._context = context
        self._handlers = handlers
        self.transient_failure = False

    @property
    def consumer_name(self) -> str:
        return self._context.name

    async def handle(self, raw: RawMessage) -> str:
        """Take one record to its outcome; returns the outcome label."""
        started = time.perf_counter()
        event_type = raw.header("ce_type") or "unknown"
        try:
            outcome = await self._handle(raw)
        finally:
            metrics.EVENT_HANDLE_SECONDS.labels(raw.topic).observe(time.perf_counter() - started)
        metrics.EVENTS_CONSUMED.labels(raw.topic, event_type, outcome).inc()
        return outcome

    async def _handle(self, raw: RawMessage) -> str:
        try:
            event = decode(raw)
        except PoisonMessage as poison:
            return await self._dead_letter(raw, poison.error_class, str(poison))
        handler = self._handlers.get(event.type)
        if handler is None:
            return "ignored"
        attempts = 0
        backoff = 0.05
        while True:
            try:
                outcome = await self._apply(event, raw, handler)
                self.transient_failure = False
                return outcome
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_transient(error):
                    self.transient_failure = True
                    log.warning(
                        "transient failure handling %s; retrying in %.2fs: %s",
                        event.id,
                        backoff,
                        error,
                        extra=_log_fields(raw, event),
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._context.settings.transient_backoff_max_s)
                    continue
                attempts += 1
                if attempts < self._context.settings.bug_retry_attempts:
                    await asyncio.sleep(0.05 * attempts)
                    continue
                log.error(
                    "handler failed %d times; dead-lettering",
                    attempts,
                    exc_info=error,
                    extra=_log_fields(raw, event),
                )
                detail = "".join(traceback.format_exception(error))[-2000:]
                return await self._dead_letter(raw, f"bug.{type(error).__name__}", detail)

    async def _apply(self, event: Event[Any], raw: RawMessage, handler: Handler) -> str:
        context = self._context
        async with context.transaction(caused_by=event) as tx:
            first = await record_first_delivery(
                tx.conn,
                context.inbox,
                consumer=self.consumer_name,
                event_id=event.id,
                event_type=event.type,
                raw=raw,
                outcome="processed",
                at=tx.now,
            )
            if not first:
                return "duplicate"
            try:
                # A savepoint, so a rejection leaves nothing of the handler's half-done work.
                async with tx.conn.begin_nested():
                    await handler(event, tx, context)
            except Rejection as rejection:
                tx.pending.clear()
                tx.after_commit.clear()
                await tx.conn.execute(
                    update(context.inbox)
                    .where(context.inbox.c.consumer == self.consumer_name)
                    .where(context.inbox.c.event_id == event.id)
                    .values(outcome="rejected")
                )
                log.info(
                    "event rejected: %s (%s)",
                    rejection.message,
                    rejection.code,
                    extra=_log_fields(raw, event),
                )
                return "rejected"
        log.info("event processed", extra=_log_fields(raw, event))
        return "processed"

    async def _dead_letter(self, raw: RawMessage, error_class: str, message: str) -> str:
        context = self._context
        dlq_topic = f"{context.name}.dlq"
        async with context.transaction() as tx:
            # Keyed by position, not event id: a replay after a fix must not look like a duplicate.
            first = await record_first_delivery(
                tx.conn,
                context.inbox,
                consumer=self.consumer_name,
                event_id=f"{raw.topic}/{raw.partition}/{raw.offset}",
                event_type=raw.header("ce_type") or "unknown",
                raw=raw,
                outcome="dead_lettered",
                at=tx.now,
            )
            if not first:
                return "duplicate"
            context_headers = {
                "dlq_original_topic": raw.topic,
                "dlq_original_partition": str(raw.partition),
                "dlq_original_offset": str(raw.offset),
                "dlq_error_class": error_class,
                "dlq_error_message": message[:4000],
                "dlq_consumer": self.consumer_name,
                "dlq_failed_at": tx.now.isoformat(),
            }
            tx.pending.append(
                Outgoing(
                    topic=dlq_topic,
                    key=raw.key,
                    value=raw.value or b"",
                    headers=[*raw.headers, *((k, v.encode()) for k, v in context_headers.items())],
                    event_id=str(uuid4()),
                    event_type="dead_letter",
                )
            )
        metrics.DEAD_LETTERS.labels(raw.topic, error_class).inc()
        log.warning(
            "dead-lettered %s/%s/%s: %s %s",
            raw.topic,
            raw.partition,
            raw.offset,
            error_class,
            message[:300],
        )
        return "dead_lettered"


def _log_fields(raw: RawMessage, event: Event[Any]) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "event_type": event.type,
        "topic": raw.topic,
        "partition": raw.partition,
        "offset": raw.offset,
        "entity_id": event.payload.credit_code,
    }
