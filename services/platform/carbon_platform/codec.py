"""CloudEvents 1.0 binary mode on Kafka: payload models <-> (key, value, headers).

Producers validate what they send (the closed pydantic models); consumers are tolerant readers
of fields added later in the same major version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar
from uuid import uuid4

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from carbon_contracts.catalogue import catalogue
from carbon_contracts.envelope import CE_SPECVERSION, CONTENT_TYPE, dataschema_uri, event_type_name
from carbon_contracts.events import Payload
from carbon_contracts.subscriber import REQUIRED_HEADERS as REQUIRED_HEADERS  # its name here too
from carbon_contracts.subscriber import InvalidEvent, from_record

P = TypeVar("P", bound=Payload)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class RawMessage:
    """A Kafka record as consumed, before any decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None


@dataclass(frozen=True)
class Outgoing:
    """A record to publish, as stored in the outbox."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    event_id: str
    event_type: str


@dataclass(frozen=True)
class Event(Generic[P]):
    """A decoded event: the CloudEvents attributes and the validated payload."""

    id: str
    type: str
    source: str
    time: datetime
    subject: str | None
    correlation_id: str
    payload: P
    # The W3C trace context of the span that published it: its `ce_traceparent`, or the plain
    # `traceparent` header an outside producer's tracing writes.
    traceparent: str | None = None


PoisonMessage = InvalidEvent
"""The bytes cannot be an event of ours; the message goes to the dead-letter topic under its
`error_class`."""


def encode(
    payload: Payload,
    *,
    source: str,
    time: datetime,
    caused_by: Event[Payload] | None = None,
    event_id: str | None = None,
    correlation_id: str | None = None,
    traceparent: str | None = None,
) -> Outgoing:
    """The record of an event. Its correlation id is its cause's, else the request's
    (`correlation_id`), else its own id; `traceparent` is the span that caused it."""
    if time.tzinfo is None:
        raise ValueError("ce_time must carry a UTC offset")
    event = payload.EVENT
    event_id = event_id or str(uuid4())
    headers: dict[str, str] = {
        "ce_specversion": CE_SPECVERSION,
        "ce_id": event_id,
        "ce_source": source,
        "ce_type": event_type_name(event, payload.VERSION),
        "ce_time": time.isoformat(),
        "ce_subject": payload.subject,
        "ce_dataschema": dataschema_uri(event, payload.VERSION),
        "content-type": CONTENT_TYPE,
        # Every event of one chain carries the correlation id of the request that started it.
        "ce_correlationid": caused_by.correlation_id if caused_by else correlation_id or event_id,
    }
    if caused_by is not None:
        headers["ce_causationid"] = caused_by.id
    if traceparent is not None:
        headers["ce_traceparent"] = traceparent
    return Outgoing(
        topic=catalogue().topic_for_event(event).name,
        key=payload.subject.encode(),
        value=payload.model_dump_json().encode(),
        headers=[(name, value.encode()) for name, value in headers.items()],
        event_id=event_id,
        event_type=event,
    )


def decode(raw: RawMessage) -> Event[Payload]:
    """The event a consumed record carries, checked as integrators check it with
    `carbon_contracts.from_record` (on its topic, so from that topic's writer only)."""
    attributes, payload = from_record(raw.headers, raw.key, raw.value, topic=raw.topic)
    return Event(
        id=attributes.id,
        type=attributes.event,
        source=attributes.source,
        time=attributes.time,
        subject=attributes.subject,
        correlation_id=attributes.correlation_id,
        payload=payload,
        traceparent=attributes.traceparent or raw.header("traceparent"),
    )


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """A record's size as the producer counts it against max_request_size."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))
