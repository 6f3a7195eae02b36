"""What an outside subscriber does with the platform's topics, knowing only contracts/: read
the records, check the CloudEvents headers and the payload against the committed schema its
`ce_dataschema` names."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from cloudevents.v1.kafka import KafkaMessage, from_binary
from jsonschema import Draft202012Validator, FormatChecker

from carbon_contracts.catalogue import catalogue
from tests.support import REPO, Platform, Record, read_topic, wait_until


@cache
def _schemas_by_id() -> dict[str, dict[str, Any]]:
    """What an outside subscriber has: the committed schema files, found by their $id."""
    schemas = {}
    for path in (REPO / "contracts" / "events").glob("*/v*.schema.json"):
        schema = json.loads(path.read_text())
        schemas[schema["$id"]] = schema
    return schemas


def check_as_outside_subscriber(record: Record, event: str) -> dict[str, Any]:
    """Valid CloudEvents binary-mode headers, from the topic's one writer (a service, or on an
    inbound topic the external system), and a payload valid against its ce_dataschema."""
    cloud_event = from_binary(
        KafkaMessage(headers=record.headers, key=record.key, value=record.value or b"")
    )
    attributes = cloud_event.get_attributes()
    assert attributes["specversion"] == "1.0"
    assert attributes["type"] == f"cn.sh.carbon.{event}.v1"
    topic = catalogue().topic_for_event(event)
    writer = "external" if topic.is_inbound else "carbon"
    assert attributes["source"] == f"/{writer}/{topic.owner}"
    assert attributes["datacontenttype"] == "application/json"
    assert attributes["subject"] == (record.key or b"").decode()
    schema = _schemas_by_id()[attributes["dataschema"]]
    payload = cloud_event.get_data()
    assert isinstance(payload, dict)
    errors = sorted(
        Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(payload), key=str
    )
    assert not errors, errors
    # The key names the payload field it is (topics.yaml): credit_code, policy or instrument.
    assert payload[topic.key] == attributes["subject"]
    return dict(payload)


def events_of(platform: Platform, event: str, key: str) -> list[dict[str, Any]]:
    """The events of one entity (or, keyed by the policy cycle, of the whole cycle), of one
    type: a topic may carry several (e.g. surrender.deadline), told apart by ce_type."""
    ce_type = f"cn.sh.carbon.{event}.v1".encode()
    return [
        check_as_outside_subscriber(record, event)
        for record in read_topic(platform.bootstrap, catalogue().topic_for_event(event).name)
        if record.key == key.encode() and record.headers.get("ce_type") == ce_type
    ]


def await_event(platform: Platform, event: str, credit_code: str) -> dict[str, Any]:
    found = wait_until(
        lambda: events_of(platform, event, credit_code), timeout=30, what=f"{event} on its topic"
    )
    assert len(found) == 1, found
    return found[0]
