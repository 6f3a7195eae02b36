"""CloudEvents 1.0 binary mode on Kafka: payload models <-> (key, value, headers).

Producers validate what they send (the closed pydantic models); consumers are tolerant readers
of fields added later in the same major version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID, uuid4

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import ValidationError

from carbon_contracts.catalogue import catalogue
from carbon_contracts.envelope import (
    CE_SPECVERSION,
    CONTENT_TYPE,
    dataschema_uri,
    event_type_name,
    parse_event_type,
)
from carbon_contracts.events import Payload, model_for

P = TypeVar("P", bound=Payload)

Headers = list[tuple[str, bytes]]
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type")


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


class PoisonMessage(Exception):
    """The bytes cannot be an event of ours; the message goes to the dead-letter topic."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


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
    missing = [name for name in REQUIRED_HEADERS if raw.header(name) is None]
    if missing:
        raise PoisonMessage("missing_header", f"missing CloudEvents headers: {', '.join(missing)}")
    if raw.header("ce_specversion") != CE_SPECVERSION:
        raise PoisonMessage(
            "unsupported_specversion", f"ce_specversion {raw.header('ce_specversion')}"
        )
    content_type = raw.header("content-type") or ""
    if content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
        raise PoisonMessage("unsupported_content_type", f"content-type {content_type!r}")
    ce_type = raw.header("ce_type") or ""
    try:
        name, major = parse_event_type(ce_type)
        model = model_for(name, major)
    except (ValueError, KeyError) as exc:
        raise PoisonMessage("unknown_type", f"unknown event type {ce_type!r}") from exc
    _check_provenance(raw, name)
    if raw.value is None:
        raise PoisonMessage("schema_violation", "empty payload")
    try:
        # Tolerant reader: fields added later in the same major version are ignored, nested too.
        payload = model.model_validate_json(raw.value, extra="ignore")
        time = datetime.fromisoformat(raw.header("ce_time") or "")
        event_id = str(UUID(raw.header("ce_id")))
        if time.tzinfo is None:
            raise ValueError("ce_time has no UTC offset")
    except ValidationError as exc:
        raise PoisonMessage("schema_violation", _summarise(exc)) from exc
    except ValueError as exc:
        raise PoisonMessage("bad_header", str(exc)) from exc
    if raw.key is not None and raw.key.decode(errors="replace") != payload.subject:
        raise PoisonMessage("key_mismatch", "Kafka key differs from the payload's subject")
    return Event(
        id=event_id,
        type=name,
        source=raw.header("ce_source") or "",
        time=time,
        subject=raw.header("ce_subject"),
        correlation_id=raw.header("ce_correlationid") or event_id,
        payload=payload,
    )


def _check_provenance(raw: RawMessage, event: str) -> None:
    """An event is trusted only on its own topic and from that topic's single writer."""
    try:
        topic = catalogue().topic(raw.topic)
    except KeyError as exc:
        raise PoisonMessage(
            "unknown_topic", f"topic {raw.topic!r} is not in the catalogue"
        ) from exc
    if event not in topic.event_types:
        raise PoisonMessage(
            "type_not_of_topic",
            f"{event} is not carried by {raw.topic} (it carries {', '.join(topic.event_types)})",
        )
    source, expected = raw.header("ce_source"), topic.source
    if source != expected:
        raise PoisonMessage(
            "foreign_source", f"ce_source {source!r} on {raw.topic}; only {expected} writes it"
        )


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """A record's size as the producer counts it against max_request_size."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def _summarise(exc: ValidationError) -> str:
    return json.dumps(
        [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)],
        ensure_ascii=False,
        default=str,
    )[:1000]
