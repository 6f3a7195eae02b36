"""Consuming one record: decode -> inbox -> handler -> outbox, in one transaction.

Never raises into Faust (an exception escaping an agent makes Faust ack and skip the message).
Poison goes to the dead-letter topic at once; transient failures retry in place with capped
backoff; a bug is retried a few times, then dead-lettered with full context.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import uuid4

from sqlalchemy import exc as sa_exc
from sqlalchemy import update

from carbon_contracts.envelope import parse_event_type
from carbon_contracts.events import model_for
from carbon_platform import metrics
from carbon_platform.codec import Event, Outgoing, PoisonMessage, RawMessage, decode
from carbon_platform.context import Handler, ServiceContext
from carbon_platform.errors import Rejection
from carbon_platform.inbox import record_first_delivery

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # includes SQLite "database is locked" and lost PostgreSQL links
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # connection pool exhausted
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)


class _GaveUp(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error_class = f"bug.{type(error).__name__}"
        self.detail = "".join(traceback.format_exception(error))[-2000:]


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
        """Take one record to its outcome; returns the outcome label. Never raises, except
        when cancelled: the record is not acknowledged until it has an outcome."""
        started = time.perf_counter()
        try:
            outcome = await self._handle(raw)
        finally:
            metrics.EVENT_HANDLE_SECONDS.labels(raw.topic).observe(time.perf_counter() - started)
        metrics.EVENTS_CONSUMED.labels(raw.topic, _type_label(raw), outcome).inc()
        return outcome

    async def _handle(self, raw: RawMessage) -> str:
        try:
            event = decode(raw)
        except PoisonMessage as poison:
            error_class, message = poison.error_class, str(poison)
            return await self._retrying(
                lambda: self._dead_letter(raw, error_class, message), raw, None, bug_attempts=None
            )
        handler = self._handlers.get(event.type)
        if handler is None:
            return "ignored"
        return await self._until_done(lambda: self._apply(event, raw, handler), raw, event)

    async def _until_done(
        self, attempt: Callable[[], Awaitable[str]], raw: RawMessage, event: Event[Any] | None
    ) -> str:
        """A bug is retried a few times, then the record is dead-lettered with its traceback."""
        try:
            return await self._retrying(
                attempt, raw, event, bug_attempts=self._context.settings.bug_retry_attempts
            )
        except _GaveUp as bug:
            error_class, detail = bug.error_class, bug.detail
        # Dead-lettering meets only transient failures or a platform bug; either way it is
        # retried for as long as it takes (the partition waits) rather than losing the record.
        return await self._retrying(
            lambda: self._dead_letter(raw, error_class, detail), raw, event, bug_attempts=None
        )

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[str]],
        raw: RawMessage,
        event: Event[Any] | None,
        bug_attempts: int | None,
    ) -> str:
        """Transient failures retry in place with capped backoff, as long as they last."""
        bugs = 0
        backoff = 0.05
        while True:
            try:
                outcome = await attempt()
                self.transient_failure = False
                return outcome
            except asyncio.CancelledError:
                raise
            except Exception as error:
                fields = _log_fields(raw, event)
                if is_transient(error):
                    self.transient_failure = True
                    log.warning(
                        "transient failure; retrying in %.2fs: %s", backoff, error, extra=fields
                    )
                else:
                    bugs += 1
                    log.error("attempt %d failed", bugs, exc_info=error, extra=fields)
                    if bug_attempts is not None and bugs >= bug_attempts:
                        raise _GaveUp(error) from error
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._context.settings.transient_backoff_max_s)

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


def _log_fields(raw: RawMessage, event: Event[Any] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"topic": raw.topic, "partition": raw.partition, "offset": raw.offset}
    if event is not None:
        fields.update(event_id=event.id, event_type=event.type, entity_id=event.payload.credit_code)
    return fields


def _type_label(raw: RawMessage) -> str:
    """The event name for metrics; never a raw header value (label values must stay bounded)."""
    try:
        name, major = parse_event_type(raw.header("ce_type") or "")
        model_for(name, major)
    except (ValueError, KeyError):
        return "unknown"
    return name
