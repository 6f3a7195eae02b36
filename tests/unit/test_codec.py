"""CloudEvents 1.0 binary mode on Kafka: encode/decode of every v1 event and the poison classes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest

from carbon_contracts.catalogue import catalogue
from carbon_contracts.events import (
    EVENT_MODELS,
    CyclePayload,
    EventPayload,
    MarketDayClosed,
    Payload,
    ReportSubmitted,
    VerificationApproved,
    VerificationAssigned,
)
from carbon_contracts.resources import contract_path
from carbon_platform.codec import (
    REQUIRED_HEADERS,
    Event,
    Outgoing,
    PoisonMessage,
    RawMessage,
    decode,
    encode,
)
from tests.support import EXAMPLE_FILES, example, load_example

TIME = datetime(2025, 3, 20, 16, 45, 12, tzinfo=timezone(timedelta(hours=8)))


def owner_of(event: str) -> str:
    """The ce_source of an event's only producer: the owner of the topic that carries it."""
    return catalogue().topic_for_event(event).source


OTHER_CODE = "91310000631696382C"


EXAMPLES = [pytest.param(load_example(path), id=path.parent.parent.name) for path in EXAMPLE_FILES]


def headers_of(outgoing: Outgoing) -> dict[str, str]:
    return {name: value.decode() for name, value in outgoing.headers}


class _Keep:
    """Marker: keep the encoded key or value."""


KEEP = _Keep()


def raw_from(
    outgoing: Outgoing,
    *,
    key: bytes | _Keep | None = KEEP,
    value: bytes | _Keep | None = KEEP,
    set_headers: dict[str, str] | None = None,
    drop_headers: tuple[str, ...] = (),
) -> RawMessage:
    """The record a consumer would read back, optionally tampered with."""
    headers = [(name, data) for name, data in outgoing.headers if name not in drop_headers]
    for name, text in (set_headers or {}).items():
        headers = [(n, d) for n, d in headers if n != name] + [(name, text.encode())]
    return RawMessage(
        topic=outgoing.topic,
        partition=0,
        offset=42,
        key=outgoing.key if isinstance(key, _Keep) else key,
        value=outgoing.value if isinstance(value, _Keep) else value,
        headers=headers,
    )


def poison(raw: RawMessage) -> PoisonMessage:
    with pytest.raises(PoisonMessage) as caught:
        decode(raw)
    return caught.value


def report_outgoing() -> Outgoing:
    return encode(example("report.submitted"), source=owner_of("report.submitted"), time=TIME)


def report_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(report_outgoing().value)
    return body


# --- encode ----------------------------------------------------------------------------------


def test_every_event_type_has_an_example() -> None:
    assert {p.parent.parent.name for p in EXAMPLE_FILES} == set(EVENT_MODELS)


@pytest.mark.parametrize("payload", EXAMPLES)
def test_encode_routes_to_the_catalogue_topic(payload: EventPayload) -> None:
    outgoing = encode(payload, source=owner_of(payload.EVENT), time=TIME)
    assert outgoing.topic == catalogue().topic_for_event(payload.EVENT).name
    assert outgoing.event_type == payload.EVENT


@pytest.mark.parametrize("payload", EXAMPLES)
def test_encode_keys_the_record_by_the_subject(payload: Payload) -> None:
    outgoing = encode(payload, source=owner_of(payload.EVENT), time=TIME)
    assert outgoing.key == payload.subject.encode()
    if isinstance(payload, EventPayload):
        assert payload.subject == payload.credit_code
    elif isinstance(payload, MarketDayClosed):
        assert payload.subject == payload.instrument
    else:
        assert isinstance(payload, CyclePayload)
        assert payload.subject == payload.policy


@pytest.mark.parametrize("payload", EXAMPLES)
def test_encode_sets_the_cloudevents_binary_mode_headers(payload: EventPayload) -> None:
    outgoing = encode(payload, source="/carbon/registry", time=TIME)
    names = [name for name, _ in outgoing.headers]
    assert len(names) == len(set(names)), "no header appears twice"
    headers = headers_of(outgoing)
    assert headers["ce_specversion"] == "1.0"
    assert str(UUID(headers["ce_id"])) == headers["ce_id"] == outgoing.event_id
    assert headers["ce_source"] == "/carbon/registry"
    assert headers["ce_type"] == f"cn.sh.carbon.{payload.EVENT}.v1"
    assert datetime.fromisoformat(headers["ce_time"]) == TIME
    assert headers["ce_subject"] == payload.subject
    assert headers["ce_dataschema"] == (
        f"https://contracts.carbon-ets.example/events/{payload.EVENT}/v1.schema.json"
    )
    assert headers["content-type"] == "application/json"
    assert "ce_causationid" not in headers


@pytest.mark.parametrize("payload", EXAMPLES)
def test_dataschema_header_is_the_id_of_the_committed_schema(payload: EventPayload) -> None:
    schema_file = contract_path("events") / payload.EVENT / "v1.schema.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    outgoing = encode(payload, source=owner_of(payload.EVENT), time=TIME)
    assert headers_of(outgoing)["ce_dataschema"] == schema["$id"]


@pytest.mark.parametrize("payload", EXAMPLES)
def test_encode_body_is_the_payload_json(payload: EventPayload) -> None:
    outgoing = encode(payload, source=owner_of(payload.EVENT), time=TIME)
    body = json.loads(outgoing.value)
    assert body == json.loads(payload.model_dump_json())
    assert type(payload).model_validate_json(outgoing.value) == payload


def test_encode_gives_each_event_a_fresh_id() -> None:
    payload = example("report.submitted")
    ids = {encode(payload, source=owner_of(payload.EVENT), time=TIME).event_id for _ in range(20)}
    assert len(ids) == 20


def test_encode_uses_a_given_event_id() -> None:
    event_id = "0b7f3c5e-2d4a-4f8b-9c1d-6e5a4b3c2d1e"
    outgoing = encode(
        example("account.opened"), source=owner_of("account.opened"), time=TIME, event_id=event_id
    )
    assert outgoing.event_id == event_id
    assert headers_of(outgoing)["ce_id"] == event_id


@pytest.mark.parametrize("payload", EXAMPLES)
def test_without_a_cause_the_correlation_id_is_the_events_own_id(payload: EventPayload) -> None:
    outgoing = encode(payload, source=owner_of(payload.EVENT), time=TIME)
    headers = headers_of(outgoing)
    assert headers["ce_correlationid"] == headers["ce_id"] == outgoing.event_id
    assert "ce_causationid" not in headers


def test_a_caused_event_carries_the_causes_correlation_and_id() -> None:
    submitted = decode(raw_from(report_outgoing()))
    assigned = encode(
        example("verification.assigned"),
        source="/carbon/verification",
        time=TIME,
        caused_by=submitted,
    )
    headers = headers_of(assigned)
    assert headers["ce_correlationid"] == submitted.correlation_id == submitted.id
    assert headers["ce_causationid"] == submitted.id
    assert headers["ce_id"] != submitted.id


def test_the_correlation_id_follows_a_whole_chain() -> None:
    submitted = decode(raw_from(report_outgoing()))
    assigned_out = encode(
        example("verification.assigned"),
        source=owner_of("verification.assigned"),
        time=TIME,
        caused_by=submitted,
    )
    assigned = decode(raw_from(assigned_out))
    approved_out = encode(
        example("verification.approved"),
        source=owner_of("verification.approved"),
        time=TIME,
        caused_by=assigned,
    )
    approved = decode(raw_from(approved_out))
    assert approved.correlation_id == assigned.correlation_id == submitted.id
    assert headers_of(approved_out)["ce_causationid"] == assigned.id
    assert isinstance(approved.payload, VerificationApproved)
    assert isinstance(assigned.payload, VerificationAssigned)


# --- decode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", EXAMPLES)
def test_decode_of_encode_round_trips(payload: Payload) -> None:
    outgoing = encode(payload, source=owner_of(payload.EVENT), time=TIME)
    event: Event[Payload] = decode(raw_from(outgoing))
    assert event.payload == payload
    assert type(event.payload) is type(payload)
    assert event.id == outgoing.event_id
    assert event.type == payload.EVENT
    assert event.source == owner_of(payload.EVENT)
    assert event.time == TIME
    assert event.time.utcoffset() == timedelta(hours=8)
    assert event.subject == payload.subject
    assert event.correlation_id == outgoing.event_id


def test_decode_takes_the_trace_context_from_ce_traceparent_or_a_plain_traceparent() -> None:
    ours = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    outside = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = encode(
        example("report.submitted"),
        source=owner_of("report.submitted"),
        time=TIME,
        traceparent=ours,
    )
    assert headers_of(traced)["ce_traceparent"] == ours
    assert decode(raw_from(traced)).traceparent == ours
    # An outside producer's tracing writes the W3C header as it is; ours wins when both are set.
    plain = raw_from(report_outgoing(), set_headers={"traceparent": outside})
    assert decode(plain).traceparent == outside
    both = raw_from(traced, set_headers={"traceparent": outside})
    assert decode(both).traceparent == ours
    assert decode(raw_from(report_outgoing())).traceparent is None


def test_decode_keeps_exact_decimals() -> None:
    event = decode(raw_from(report_outgoing()))
    assert isinstance(event.payload, ReportSubmitted)
    assert str(event.payload.total_emissions) == "24251.551"
    assert [str(line.emissions) for line in event.payload.lines] == [
        "10293.360",
        "2880.000",
        "11078.191",
    ]


def test_decode_accepts_a_content_type_with_parameters() -> None:
    raw = raw_from(
        report_outgoing(), set_headers={"content-type": "application/json; charset=utf-8"}
    )
    assert decode(raw).payload == example("report.submitted")


def test_decode_reads_the_correlation_id_header() -> None:
    raw = raw_from(
        report_outgoing(), set_headers={"ce_correlationid": "a3d3a5c8-8f0e-4d55-9e55-1f8d0c7b3a21"}
    )
    assert decode(raw).correlation_id == "a3d3a5c8-8f0e-4d55-9e55-1f8d0c7b3a21"


# --- poison messages -------------------------------------------------------------------------


@pytest.mark.parametrize("header", REQUIRED_HEADERS)
def test_a_missing_required_header_is_poison(header: str) -> None:
    error = poison(raw_from(report_outgoing(), drop_headers=(header,)))
    assert error.error_class == "missing_header"
    assert header in str(error)


def test_the_required_headers_are_the_cloudevents_core() -> None:
    assert set(REQUIRED_HEADERS) == {
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "content-type",
    }


@pytest.mark.parametrize("version", ["0.3", "2.0", ""])
def test_another_specversion_is_poison(version: str) -> None:
    error = poison(raw_from(report_outgoing(), set_headers={"ce_specversion": version}))
    assert error.error_class == "unsupported_specversion"


@pytest.mark.parametrize(
    "content_type", ["application/avro", "text/plain", "application/cloudevents+json"]
)
def test_another_content_type_is_poison(content_type: str) -> None:
    error = poison(raw_from(report_outgoing(), set_headers={"content-type": content_type}))
    assert error.error_class == "unsupported_content_type"


@pytest.mark.parametrize(
    "ce_type",
    [
        "cn.sh.carbon.trade.executed.v1",  # unknown name
        "cn.sh.carbon.report.submitted.v2",  # known name, unknown major version
        "cn.sh.carbon.report.submitted",  # no version suffix
        "com.example.report.submitted.v1",  # not our prefix
    ],
)
def test_an_unknown_type_is_poison(ce_type: str) -> None:
    error = poison(raw_from(report_outgoing(), set_headers={"ce_type": ce_type}))
    assert error.error_class == "unknown_type"
    assert ce_type in str(error)


def test_bad_json_is_a_schema_violation() -> None:
    error = poison(raw_from(report_outgoing(), value=b'{"credit_code": "9131'))
    assert error.error_class == "schema_violation"


def test_an_empty_value_is_a_schema_violation() -> None:
    assert poison(raw_from(report_outgoing(), value=None)).error_class == "schema_violation"
    assert poison(raw_from(report_outgoing(), value=b"")).error_class == "schema_violation"


def test_a_missing_field_is_a_schema_violation() -> None:
    body = report_body()
    del body["total_emissions"]
    error = poison(raw_from(report_outgoing(), value=json.dumps(body).encode()))
    assert error.error_class == "schema_violation"
    assert "total_emissions" in str(error)


def test_float_emissions_are_a_schema_violation() -> None:
    body = report_body()
    body["total_emissions"] = 24251.551
    error = poison(raw_from(report_outgoing(), value=json.dumps(body).encode()))
    assert error.error_class == "schema_violation"
    assert "total_emissions" in str(error)


def test_float_emissions_inside_a_line_are_a_schema_violation() -> None:
    body = report_body()
    body["lines"][0]["emissions"] = 10293.36
    error = poison(raw_from(report_outgoing(), value=json.dumps(body).encode()))
    assert error.error_class == "schema_violation"


def test_a_payload_of_another_type_is_a_schema_violation() -> None:
    raw = raw_from(
        report_outgoing(),
        set_headers={
            "ce_type": "cn.sh.carbon.allocation.issued.v1",
            "ce_source": "/carbon/registry",
        },
    )
    raw = RawMessage("allocation.issued", 0, 1, raw.key, raw.value, raw.headers)
    assert poison(raw).error_class == "schema_violation"


@pytest.mark.parametrize(
    "topic", [t.name for t in catalogue().topics if "entity.registered" not in t.event_types]
)
def test_a_valid_event_on_another_topic_is_poison(topic: str) -> None:
    # A real registration, but on a topic that does not carry registrations: not to be trusted.
    outgoing = encode(example("entity.registered"), source="/carbon/registry", time=TIME)
    raw = RawMessage(topic, 0, 1, outgoing.key, outgoing.value, outgoing.headers)
    error = poison(raw)
    assert error.error_class == "type_not_of_topic"
    assert topic in str(error)


@pytest.mark.parametrize("source", ["/carbon/reporting", "/carbon/registry-2", "/exchange", ""])
def test_an_event_from_anyone_but_its_topics_owner_is_poison(source: str) -> None:
    approved = example("verification.approved")
    raw = raw_from(
        encode(approved, source=owner_of(approved.EVENT), time=TIME),
        set_headers={"ce_source": source},
    )
    error = poison(raw)
    assert error.error_class == "foreign_source"
    assert "/carbon/verification" in str(error)


def test_a_topic_outside_the_catalogue_is_poison() -> None:
    raw = raw_from(report_outgoing())
    raw = RawMessage("report.submitted.v9", 0, 1, raw.key, raw.value, raw.headers)
    assert poison(raw).error_class == "unknown_topic"


@pytest.mark.parametrize("amount", [24251, True, 2.4251551e4])
def test_emissions_as_a_json_number_are_a_schema_violation(amount: object) -> None:
    body = report_body()
    body["total_emissions"] = amount
    error = poison(raw_from(report_outgoing(), value=json.dumps(body).encode()))
    assert error.error_class == "schema_violation"


@pytest.mark.parametrize("year", ["2024", 2024.0, True])
def test_a_whole_number_in_another_form_is_a_schema_violation(year: object) -> None:
    body = report_body()
    body["compliance_year"] = year
    error = poison(raw_from(report_outgoing(), value=json.dumps(body).encode()))
    assert error.error_class == "schema_violation"
    assert "compliance_year" in str(error)


def test_a_ce_id_that_is_not_a_uuid_is_a_bad_header() -> None:
    error = poison(raw_from(report_outgoing(), set_headers={"ce_id": "report-42"}))
    assert error.error_class == "bad_header"


def test_a_ce_time_that_is_not_a_timestamp_is_a_bad_header() -> None:
    error = poison(raw_from(report_outgoing(), set_headers={"ce_time": "yesterday"}))
    assert error.error_class == "bad_header"


def test_a_key_other_than_the_credit_code_is_poison() -> None:
    error = poison(raw_from(report_outgoing(), key=OTHER_CODE.encode()))
    assert error.error_class == "key_mismatch"


def test_poison_keeps_the_original_cause() -> None:
    error = poison(raw_from(report_outgoing(), value=b"not json"))
    assert error.__cause__ is not None


# --- tolerant reader -------------------------------------------------------------------------


def test_unknown_fields_added_later_are_ignored_at_top_level_and_in_lines() -> None:
    body = report_body()
    body["plant_count"] = 3
    body["lines"][0]["meter_id"] = "E-0042"
    body["lines"][2]["uncertainty"] = {"percent": "2.5"}
    event = decode(raw_from(report_outgoing(), value=json.dumps(body).encode()))
    assert event.payload == example("report.submitted")
    assert "plant_count" not in event.payload.model_dump()


def test_the_models_stay_closed_for_producers() -> None:
    body = report_body()
    body["plant_count"] = 3
    with pytest.raises(ValueError):
        ReportSubmitted.model_validate(body)


def test_decoded_event_time_is_aware() -> None:
    outgoing = encode(
        example("account.opened"), source=owner_of("account.opened"), time=datetime.now(UTC)
    )
    assert decode(raw_from(outgoing)).time.tzinfo is not None
