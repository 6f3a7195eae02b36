"""Reading the platform's Kafka records: CloudEvents 1.0 in binary mode (the `ce_*` headers,
the JSON payload as value) checked and turned into the typed payload model of their `ce_type`.

The platform's own consumers decode with `from_record` too, so an integrator reads an event
exactly as the services do. Every refusal is an `InvalidEvent` whose `error_class` says why in
one word (the platform dead-letters such a record under that class).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from carbon_contracts.catalogue import catalogue
from carbon_contracts.envelope import (
    CE_SPECVERSION,
    CONTENT_TYPE,
    dataschema_uri,
    event_type_name,
    parse_event_type,
)
from carbon_contracts.errors import where_invalid
from carbon_contracts.events import EVENT_MODELS, Payload, model_for
from carbon_contracts.resources import contract_path

REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type")

HeaderValue = bytes | str | None
Headers = Iterable[tuple[str, HeaderValue]] | Mapping[str, HeaderValue]
"""Kafka headers as a client gives them: aiokafka's `record.headers` (name, bytes) pairs, or a
mapping."""


class InvalidEvent(ValueError):
    """The record (or payload) is not a valid event of these contracts; `error_class` is one of
    missing_header, unsupported_specversion, unsupported_content_type, unknown_type,
    unknown_topic, type_not_of_topic, foreign_source, schema_violation, bad_header,
    key_mismatch, unknown_dataschema."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


@dataclass(frozen=True)
class CloudEvent:
    """The CloudEvents attributes of a record, from its `ce_*` headers."""

    id: str
    type: str  # the ce_type as sent, e.g. cn.sh.carbon.report.submitted.v1
    event: str  # what the type names: report.submitted
    major: int  # and its major version: 1
    source: str
    time: datetime
    subject: str | None
    dataschema: str | None
    correlation_id: str  # the request that started the chain; a first event's own id
    causation_id: str | None  # the event that caused this one
    traceparent: str | None
    specversion: str = CE_SPECVERSION


def attributes_of(headers: Headers) -> dict[str, str]:
    """Headers as text by name (the first of a repeated name): enough to filter on `ce_type`
    before decoding anything."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    attributes: dict[str, str] = {}
    for name, value in pairs:
        if name not in attributes and value is not None:
            text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
            attributes[name] = text
    return attributes


def from_record(
    headers: Headers,
    key: bytes | str | None,
    value: bytes | str | None,
    *,
    topic: str | None = None,
) -> tuple[CloudEvent, Payload]:
    """A Kafka record as its CloudEvent attributes and typed payload (the model of its
    `ce_type`, e.g. `ReportSubmitted`). The payload is read tolerantly: fields added later in
    the same major version are ignored, nested ones too. Given the record's `topic`, the event
    must also be one that topic carries, from the topic's single writer (`ce_source`): pass it
    to trust only the owner. Raises InvalidEvent."""
    attributes = attributes_of(headers)
    missing = [name for name in REQUIRED_HEADERS if name not in attributes]
    if missing:
        raise InvalidEvent("missing_header", f"missing CloudEvents headers: {', '.join(missing)}")
    if attributes["ce_specversion"] != CE_SPECVERSION:
        raise InvalidEvent(
            "unsupported_specversion", f"ce_specversion {attributes['ce_specversion']}"
        )
    content_type = attributes["content-type"]
    if content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
        raise InvalidEvent("unsupported_content_type", f"content-type {content_type!r}")
    ce_type = attributes["ce_type"]
    try:
        name, major = parse_event_type(ce_type)
        model = model_for(name, major)
    except (ValueError, KeyError) as exc:
        raise InvalidEvent("unknown_type", f"unknown event type {ce_type!r}") from exc
    if topic is not None:
        _check_provenance(topic, name, attributes["ce_source"])
    if value is None:
        raise InvalidEvent("schema_violation", "empty payload")
    try:
        payload = model.model_validate_json(value, extra="ignore")
        time = datetime.fromisoformat(attributes["ce_time"])
        event_id = str(UUID(attributes["ce_id"]))
        if time.tzinfo is None:
            raise ValueError("ce_time has no UTC offset")
    except ValidationError as exc:
        raise InvalidEvent("schema_violation", _summarise(exc)) from exc
    except ValueError as exc:
        raise InvalidEvent("bad_header", str(exc)) from exc
    if key is not None and _text(key) != payload.subject:
        raise InvalidEvent("key_mismatch", "Kafka key differs from the payload's subject")
    event = CloudEvent(
        id=event_id,
        type=ce_type,
        event=name,
        major=major,
        source=attributes["ce_source"],
        time=time,
        subject=attributes.get("ce_subject"),
        dataschema=attributes.get("ce_dataschema"),
        correlation_id=attributes.get("ce_correlationid") or event_id,
        causation_id=attributes.get("ce_causationid"),
        traceparent=attributes.get("ce_traceparent"),
    )
    return event, payload


def schema_for(dataschema: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) a `ce_dataschema` names, as shipped with these contracts."""
    event, major = _named_by(dataschema)
    schema: dict[str, Any] = json.loads(
        contract_path(f"events/{event}/v{major}.schema.json").read_text(encoding="utf-8")
    )
    return schema


def validate(payload: bytes | str | Mapping[str, Any], dataschema: str) -> Payload:
    """A payload checked as a producer must send it, against the closed schema `dataschema`
    names (the model the schema is generated from, so no unknown field either). Returns the
    typed model; raises InvalidEvent (`unknown_dataschema`, `schema_violation`) saying where."""
    event, major = _named_by(dataschema)
    text = json.dumps(payload) if isinstance(payload, Mapping) else payload
    try:
        return model_for(event, major).model_validate_json(text)
    except ValidationError as exc:
        problems = where_invalid(exc.errors(include_url=False), whole="payload")
        raise InvalidEvent(
            "schema_violation", f"not a valid {event_type_name(event, major)}: {problems}"
        ) from exc


@cache
def _schemas() -> dict[str, tuple[str, int]]:
    """Every ce_dataschema of these contracts: (event, major) by URI."""
    return {
        dataschema_uri(name, model.VERSION): (name, model.VERSION)
        for name, model in EVENT_MODELS.items()
    }


def _named_by(dataschema: str) -> tuple[str, int]:
    try:
        return _schemas()[dataschema]
    except KeyError:
        raise InvalidEvent(
            "unknown_dataschema",
            f"{dataschema!r} is no schema of carbon-contracts {_version()}: a newer event "
            "type (upgrade the package) or not one of the platform's",
        ) from None


def _version() -> str:
    try:
        return version("carbon-contracts")
    except PackageNotFoundError:  # imported from a source tree
        return "(source)"


def _check_provenance(topic_name: str, event: str, source: str) -> None:
    """An event is trusted only on its own topic and from that topic's single writer."""
    try:
        topic = catalogue().topic(topic_name)
    except KeyError as exc:
        raise InvalidEvent(
            "unknown_topic", f"topic {topic_name!r} is not in the catalogue"
        ) from exc
    if event not in topic.event_types:
        raise InvalidEvent(
            "type_not_of_topic",
            f"{event} is not carried by {topic_name} (it carries {', '.join(topic.event_types)})",
        )
    if source != topic.source:
        raise InvalidEvent(
            "foreign_source", f"ce_source {source!r} on {topic_name}; only {topic.source} writes it"
        )


def _text(key: bytes | str) -> str:
    return key.decode(errors="replace") if isinstance(key, bytes) else key


def _summarise(exc: ValidationError) -> str:
    return json.dumps(
        [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)],
        ensure_ascii=False,
        default=str,
    )[:1000]
