"""Consuming records: decode -> inbox -> handler -> outbox, a poll batch in one transaction.

Each record of a batch keeps its own outcome: a duplicate is skipped (insert-first inbox), a
rejection undoes only that event's work, poison and oversized records are dead-lettered, and all
of it commits once. Should anything else go wrong (a bug in a handler, the database gone), the
batch rolls back whole and its records are taken one at a time: transient failures retry in place
with capped backoff, a bug is retried a few times and then dead-lettered with its traceback.

Never raises into Faust (an exception escaping an agent makes Faust ack and skip the message).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from sqlalchemy import exc as sa_exc
from sqlalchemy import update

from carbon_contracts.catalogue import catalogue
from carbon_contracts.envelope import parse_event_type
from carbon_contracts.errors import Rejection
from carbon_contracts.events import model_for
from carbon_platform import metrics, tracing
from carbon_platform.codec import Event, Outgoing, PoisonMessage, RawMessage, decode, record_size
from carbon_platform.context import Handler, ServiceContext, UnitOfWork
from carbon_platform.inbox import record_first_deliveries
from carbon_platform.outbox import add_to_outbox

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # includes SQLite "database is locked" and lost PostgreSQL links
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # connection pool exhausted
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)
DLQ_PREFIX = "dlq_"
LETTER_ID = "dlq_letter_id"
# Room a letter needs beyond the original record: the dlq_* headers and their values.
_LETTER_OVERHEAD = 8 * 1024
# What a reference letter keeps of a record too large to dead-letter whole.
_PREFIX_BYTES = 1024
_HEADER_BYTES = 16 * 1024


class _NeedsIsolation(Exception):
    """A handler rejected its event in a pass without savepoints: take the batch again."""


class _GaveUp(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error_class = f"bug.{type(error).__name__}"
        self.detail = "".join(traceback.format_exception(error))[-2000:]


def is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, TRANSIENT_ERRORS)


@dataclass
class _Work:
    """One record of a batch on its way to an outcome."""

    raw: RawMessage
    event: Event[Any] | None = None
    handler: Handler | None = None
    letter: tuple[str, str] | None = None  # (error class, message) to dead-letter it with
    outcome: str = ""
    unit: UnitOfWork | None = None
    rejection: Rejection | None = field(default=None, repr=False)

    @property
    def inbox_id(self) -> str:
        # A letter is keyed by position, not event id: a replay after a fix must not look like a
        # duplicate of the letter.
        if self.event is not None and self.letter is None:
            return self.event.id
        return f"{self.raw.topic}/{self.raw.partition}/{self.raw.offset}"


class EventConsumer:
    def __init__(self, context: ServiceContext, handlers: Mapping[str, Handler]) -> None:
        self._context = context
        self._handlers = handlers
        self._dlq = catalogue().dead_letter_topic(context.name)
        self.transient_failure = False

    @property
    def consumer_name(self) -> str:
        return self._context.name

    async def handle(self, raw: RawMessage) -> str:
        """Take one record to its outcome; returns the outcome label."""
        return (await self.handle_batch([raw]))[0]

    async def handle_batch(self, raws: Sequence[RawMessage]) -> list[str]:
        """Take a poll batch to its outcomes, in one transaction when all goes well. Never
        raises, except when cancelled: then nothing of the batch has been committed."""
        started = time.perf_counter()
        metrics.CONSUMED_BATCH_SIZE.observe(len(raws))
        works = [self._triage(raw) for raw in raws]
        try:
            try:
                await self._apply(works, isolated=False)
            except _NeedsIsolation:  # taken again, each event in a savepoint of its own
                works = [self._triage(raw) for raw in raws]
                await self._apply(works, isolated=True)
            self.transient_failure = False
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if len(raws) == 1:  # that was this record's first attempt
                works = [await self._until_done(raws[0], failed=error)]
            else:
                log.warning("batch of %d rolled back (%r); one record at a time", len(raws), error)
                works = [await self._until_done(raw) for raw in raws]
        elapsed = time.perf_counter() - started
        for work in works:
            metrics.EVENT_HANDLE_SECONDS.labels(work.raw.topic).observe(elapsed / len(works))
            metrics.EVENTS_CONSUMED.labels(work.raw.topic, _type_label(work), work.outcome).inc()
            if work.outcome == "dead_lettered" and work.letter:
                metrics.DEAD_LETTERS.labels(work.raw.topic, work.letter[0]).inc()
        return [work.outcome for work in works]

    def _triage(self, raw: RawMessage) -> _Work:
        """What a record is, before any database work: oversized, poison, ours or not."""
        limit = self._limit(raw.topic)
        size = record_size(raw.key, raw.value, raw.headers)
        if size > limit:
            return _Work(raw, letter=("oversized", f"{size} bytes, over the {limit} allowed"))
        try:
            event = decode(raw)
        except PoisonMessage as poison:
            return _Work(raw, letter=(poison.error_class, str(poison)))
        handler = self._handlers.get(event.type)
        if handler is None:
            return _Work(raw, event=event, outcome="ignored")
        return _Work(raw, event=event, handler=handler)

    async def _until_done(self, raw: RawMessage, failed: Exception | None = None) -> _Work:
        """One record alone: transient failures retry for as long as they last; a bug a few
        times, then the record is dead-lettered with its traceback."""
        attempts = self._context.settings.bug_retry_attempts
        try:
            return await self._retrying(raw, bug_attempts=attempts, failed=failed)
        except _GaveUp as bug:
            letter = _Work(raw, letter=(bug.error_class, bug.detail))
        # Dead-lettering meets only transient failures or a platform bug; either way it is
        # retried for as long as it takes (the partition waits) rather than losing the record.
        return await self._retrying(raw, bug_attempts=None, work=letter)

    async def _retrying(
        self,
        raw: RawMessage,
        *,
        bug_attempts: int | None,
        work: _Work | None = None,
        failed: Exception | None = None,
    ) -> _Work:
        """Attempts until one succeeds; `failed` is the error of an attempt already made."""
        bugs = 0
        backoff = 0.05
        error = failed
        while True:
            if error is None:
                try:
                    (done,) = await self._apply([work or self._triage(raw)], isolated=True)
                    self.transient_failure = False
                    return done
                except asyncio.CancelledError:
                    raise
                except Exception as failure:
                    error = failure
            fields = _log_fields(raw, None)
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
            error = None
            try:
                await asyncio.sleep(backoff)
            except asyncio.CancelledError:
                # Revoked mid-retry: the record comes back to whoever owns the partition next,
                # so this instance is no longer failing on it.
                self.transient_failure = False
                raise
            backoff = min(backoff * 2, self._context.settings.transient_backoff_max_s)

    async def _apply(self, works: list[_Work], *, isolated: bool) -> list[_Work]:
        """One transaction: inbox rows first (a duplicate inserts none), each event's handler,
        then the outbox rows of everything the batch caused. Rejections are rare, so a first
        pass runs the handlers as they are; a rejection then rolls the pass back, and the
        `isolated` pass runs each handler in a savepoint, which a rejection rolls back alone."""
        context = self._context
        todo = [work for work in works if not work.outcome]
        if not todo:
            return works
        units: list[UnitOfWork] = []
        async with context.engine.begin() as conn:
            now = context.clock.now()
            first = await record_first_deliveries(
                conn,
                context.inbox,
                consumer=self.consumer_name,
                deliveries=[
                    (work.inbox_id, self._inbox_type(work), work.raw, self._inbox_outcome(work))
                    for work in todo
                ],
                at=now,
            )
            letters: list[Outgoing] = []
            rejected: list[str] = []
            for work in todo:
                if work.inbox_id not in first:
                    work.outcome = "duplicate"  # delivered before, or twice in this batch
                    continue
                first.discard(work.inbox_id)
                if work.letter is not None:
                    letters.append(self._letter(work, now.isoformat()))
                    work.outcome = "dead_lettered"
                    continue
                assert work.event is not None and work.handler is not None
                work.unit = context.unit_of_work(conn, now=now, caused_by=work.event)
                try:
                    with _handling(work.raw, work.event):
                        if isolated:
                            async with conn.begin_nested():
                                await work.handler(work.unit, work.event)
                        else:
                            await work.handler(work.unit, work.event)
                except Rejection as rejection:
                    if not isolated:
                        raise _NeedsIsolation from rejection
                    work.unit.discard()
                    work.rejection = rejection
                    work.outcome = "rejected"
                    rejected.append(work.inbox_id)
                    continue
                units.append(work.unit)
                work.outcome = "processed"
            if rejected:
                inbox = context.inbox
                await conn.execute(
                    update(inbox)
                    .where(inbox.c.consumer == self.consumer_name)
                    .where(inbox.c.event_id.in_(rejected))
                    .values(outcome="rejected")
                )
            outgoing = [event for unit in units for event in unit.events]
            await add_to_outbox(conn, context.outbox, [*outgoing, *letters], at=now)
        context.committed(units)
        if letters and context.relay is not None:
            context.relay.wake()
        self._log(todo)
        return works

    def _limit(self, topic: str) -> int:
        try:
            return catalogue().topic(topic).max_message_bytes
        except KeyError:
            return catalogue().max_message_bytes

    @staticmethod
    def _inbox_type(work: _Work) -> str:
        if work.event is not None and work.letter is None:
            return work.event.type
        return (work.raw.header("ce_type") or "unknown")[:128]

    @staticmethod
    def _inbox_outcome(work: _Work) -> str:
        return "dead_lettered" if work.letter is not None else "processed"

    def _letter(self, work: _Work, failed_at: str) -> Outgoing:
        """The dead letter of a record: the original key, bytes and headers plus the dlq_*
        context, or, when that would not fit the dead-letter topic, a reference to the record
        (its position, size, headers within reason and the first bytes of its value)."""
        raw = work.raw
        error_class, message = work.letter or ("unknown", "")
        context_headers = {
            "dlq_original_topic": raw.topic,
            "dlq_original_partition": str(raw.partition),
            "dlq_original_offset": str(raw.offset),
            "dlq_error_class": error_class,
            "dlq_error_message": message[:4000],
            "dlq_consumer": self.consumer_name,
            "dlq_failed_at": failed_at,
        }
        value, headers = raw.value or b"", list(raw.headers)
        size = record_size(raw.key, raw.value, raw.headers)
        if size + _LETTER_OVERHEAD > self._dlq.max_message_bytes:
            value = value[:_PREFIX_BYTES]
            headers = _within(headers, _HEADER_BYTES)
            context_headers |= {"dlq_reference": "true", "dlq_original_size": str(size)}
        # The letter's own id: its ce_id header is the original record's, if it had one.
        letter_id = str(uuid4())
        context_headers[LETTER_ID] = letter_id
        return Outgoing(
            topic=self._dlq.name,
            key=raw.key if raw.key is None or len(raw.key) <= _PREFIX_BYTES else None,
            value=value,
            headers=[*headers, *((k, v.encode()) for k, v in context_headers.items())],
            event_id=letter_id,
            event_type="dead_letter",
        )

    @staticmethod
    def _log(works: Sequence[_Work]) -> None:
        for work in works:
            fields = _log_fields(work.raw, work.event)
            if work.outcome == "rejected" and work.rejection is not None:
                log.info(
                    "event rejected: %s (%s)",
                    work.rejection.message,
                    work.rejection.code,
                    extra=fields,
                )
            elif work.outcome == "dead_lettered" and work.letter is not None:
                # A bug's letter carries its traceback: its last line says what went wrong.
                lines = work.letter[1].strip().splitlines() or [""]
                error_class, reason = work.letter[0], lines[-1][:300]
                log.warning(
                    "dead-lettered %s/%s/%s: %s %s",
                    work.raw.topic,
                    work.raw.partition,
                    work.raw.offset,
                    error_class,
                    reason,
                    extra={**fields, "error_class": error_class, "reason": reason},
                )
            else:
                log.debug("event %s", work.outcome, extra=fields)


def _within(headers: list[tuple[str, bytes]], budget: int) -> list[tuple[str, bytes]]:
    """The original headers that fit the budget, in order; the others are left out."""
    kept: list[tuple[str, bytes]] = []
    for name, value in headers:
        budget -= len(name) + len(value)
        if budget < 0 or name.startswith(DLQ_PREFIX):
            continue
        kept.append((name, value))
    return kept


def _handling(raw: RawMessage, event: Event[Any]) -> AbstractContextManager[Any]:
    """The span of one event's handler, continuing the trace of whoever published it."""
    return tracing.consuming(
        raw.topic, raw.partition, raw.offset, event.traceparent, event.correlation_id
    )


def _log_fields(raw: RawMessage, event: Event[Any] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"topic": raw.topic, "partition": raw.partition, "offset": raw.offset}
    if event is not None:
        fields.update(
            event_id=event.id,
            event_type=event.type,
            entity_id=event.payload.subject,
            correlation_id=event.correlation_id,
        )
    return fields


def _type_label(work: _Work) -> str:
    """The event name for metrics; never a raw header value (label values must stay bounded)."""
    if work.event is not None:
        return work.event.type
    try:
        name, major = parse_event_type(work.raw.header("ce_type") or "")
        model_for(name, major)
    except (ValueError, KeyError):
        return "unknown"
    return name
