"""carbon_contracts.subscriber: what an integrator reads a record with, and its clear refusals.
(The platform's codec decodes with it too: tests/unit/test_codec.py covers every poison class.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from carbon_contracts import (
    InvalidEvent,
    attributes_of,
    dataschema_uri,
    event_type_name,
    from_record,
    schema_for,
    validate,
)
from carbon_contracts.events import EVENT_MODELS, ReportSubmitted
from tests.support import example


def the_report() -> ReportSubmitted:
    report = example("report.submitted")
    assert isinstance(report, ReportSubmitted)
    return report


REPORT = the_report()
EVENT_ID = "5b0a3a57-8b0e-4f5e-9d3e-0c6f2f1e9a11"
DATASCHEMA = dataschema_uri("report.submitted", 1)


def headers(**changed: str | None) -> list[tuple[str, bytes]]:
    """The headers the reporting service sends with REPORT; a None value drops that header."""
    sent = {
        "ce_specversion": "1.0",
        "ce_id": EVENT_ID,
        "ce_source": "/carbon/reporting",
        "ce_type": event_type_name("report.submitted", 1),
        "ce_time": "2025-03-20T16:45:12+08:00",
        "ce_subject": REPORT.credit_code,
        "ce_dataschema": DATASCHEMA,
        "content-type": "application/json",
        "ce_correlationid": "0c1d2e3f-0000-4000-8000-000000000001",
        **changed,
    }
    return [(name, value.encode()) for name, value in sent.items() if value is not None]


def body(**changed: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(REPORT.model_dump_json())
    return {**payload, **changed}


def refusal(*args: Any, **kwargs: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        from_record(*args, **kwargs)
    return caught.value


KEY = REPORT.credit_code.encode()
VALUE = REPORT.model_dump_json().encode()


def test_a_record_becomes_its_cloudevent_and_typed_model() -> None:
    event, payload = from_record(headers(), KEY, VALUE, topic="report.submitted")
    assert payload == REPORT and isinstance(payload, ReportSubmitted)
    assert (event.id, event.type, event.event, event.major) == (
        EVENT_ID,
        "cn.sh.carbon.report.submitted.v1",
        "report.submitted",
        1,
    )
    assert (event.source, event.subject, event.dataschema) == (
        "/carbon/reporting",
        REPORT.credit_code,
        DATASCHEMA,
    )
    assert event.time.utcoffset() is not None and event.causation_id is None
    assert event.correlation_id == "0c1d2e3f-0000-4000-8000-000000000001"


def test_headers_and_key_may_be_text_and_a_mapping() -> None:
    mapping = {name: value.decode() for name, value in headers()}
    event, payload = from_record(mapping, REPORT.credit_code, VALUE.decode())
    assert payload == REPORT and event.id == EVENT_ID


def test_attributes_of_reads_the_first_of_a_repeated_header() -> None:
    repeated = [*headers(), ("ce_type", b"cn.sh.carbon.other.v1")]
    assert attributes_of(repeated)["ce_type"] == "cn.sh.carbon.report.submitted.v1"


def test_fields_added_later_are_skipped_by_the_reader() -> None:
    value = json.dumps(body(plant_count=3)).encode()
    assert from_record(headers(), KEY, value)[1] == REPORT


@pytest.mark.parametrize("ce_type", ["cn.sh.carbon.report.submitted.v2", "com.example.thing.v1"])
def test_a_type_these_contracts_do_not_know_is_refused(ce_type: str) -> None:
    error = refusal(headers(ce_type=ce_type), KEY, VALUE)
    assert error.error_class == "unknown_type"
    assert ce_type in str(error)


def test_a_type_the_topic_does_not_carry_is_refused() -> None:
    error = refusal(headers(), KEY, VALUE, topic="report.accepted")
    assert error.error_class == "type_not_of_topic"
    assert "report.submitted is not carried by report.accepted" in str(error)


def test_a_source_other_than_the_topics_owner_is_refused() -> None:
    error = refusal(headers(ce_source="/carbon/registry"), KEY, VALUE, topic="report.submitted")
    assert error.error_class == "foreign_source"
    assert "only /carbon/reporting writes it" in str(error)


@pytest.mark.parametrize("missing", ["ce_id", "ce_type", "content-type"])
def test_a_missing_header_is_named(missing: str) -> None:
    error = refusal(headers(**{missing: None}), KEY, VALUE)
    assert error.error_class == "missing_header"
    assert str(error) == f"missing CloudEvents headers: {missing}"


def test_a_payload_against_its_schema_is_refused_saying_where() -> None:
    value = json.dumps(body(total_emissions=24251.551)).encode()  # a JSON number
    error = refusal(headers(), KEY, value)
    assert error.error_class == "schema_violation"
    assert "total_emissions" in str(error)


def test_a_key_other_than_the_subject_is_refused() -> None:
    error = refusal(headers(), b"91310000631696382C", VALUE)
    assert error.error_class == "key_mismatch"


@pytest.mark.parametrize("event", sorted(EVENT_MODELS))
def test_schema_for_finds_every_schema_by_its_dataschema(event: str) -> None:
    uri = dataschema_uri(event, EVENT_MODELS[event].VERSION)
    assert schema_for(uri)["$id"] == uri


@pytest.mark.parametrize(
    "uri",
    [
        dataschema_uri("report.submitted", 2),
        dataschema_uri("no.such_event", 1),
        "https://example.com/events/report.submitted/v1.schema.json",
        "",
    ],
)
def test_an_unknown_dataschema_is_refused(uri: str) -> None:
    for lookup in (lambda: schema_for(uri), lambda: validate(body(), uri)):
        with pytest.raises(InvalidEvent) as caught:
            lookup()
        assert caught.value.error_class == "unknown_dataschema"
        assert repr(uri) in str(caught.value)


def test_validate_returns_the_typed_model_of_a_valid_payload() -> None:
    assert validate(body(), DATASCHEMA) == REPORT
    assert validate(json.dumps(body()), DATASCHEMA) == REPORT
    assert validate(VALUE, DATASCHEMA) == REPORT


@pytest.mark.parametrize(
    ("changed", "where"),
    [
        ({"total_emissions": 24251.551}, "total_emissions"),
        ({"compliance_year": "2024"}, "compliance_year"),
        ({"plant_count": 3}, "plant_count"),  # the schema is closed for producers
    ],
)
def test_validate_refuses_what_the_schema_refuses_saying_where(
    changed: dict[str, Any], where: str
) -> None:
    payload = body(**changed)
    schema = Draft202012Validator(schema_for(DATASCHEMA), format_checker=FormatChecker())
    assert not schema.is_valid(payload)
    with pytest.raises(InvalidEvent) as caught:
        validate(payload, DATASCHEMA)
    assert caught.value.error_class == "schema_violation"
    message = str(caught.value)
    assert message.startswith("not a valid cn.sh.carbon.report.submitted.v1: ")
    assert f"{where}: " in message


def test_validate_names_a_problem_of_the_whole_payload() -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate(b"not json", DATASCHEMA)
    assert "payload: Invalid JSON" in str(caught.value)
