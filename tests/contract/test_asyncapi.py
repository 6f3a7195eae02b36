"""contracts/asyncapi.yaml is generated, and agrees with the catalogue and the schemas."""

from __future__ import annotations

import json
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from carbon_contracts import export
from carbon_contracts.catalogue import ExternalSystem, ServiceName, catalogue
from carbon_contracts.envelope import dataschema_uri, event_type_name
from carbon_contracts.events import EVENT_MODELS
from carbon_contracts.types import CREDIT_CODE_PATTERN, IDENTIFIER_PATTERN, INSTRUMENT_PATTERN

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
ASYNCAPI = CONTRACTS / "asyncapi.yaml"
DOC: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
EVENTS = sorted(EVENT_MODELS)


def message_of(event: str) -> dict[str, Any]:
    messages: dict[str, dict[str, Any]] = DOC["components"]["messages"]
    return messages[f"{event}.v{EVENT_MODELS[event].VERSION}"]


def pointer(ref: str) -> Any:
    node: Any = DOC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in refs(item)]
    return []


def test_committed_document_equals_generated() -> None:
    expected = export.generated_files()["asyncapi.yaml"]
    committed = ASYNCAPI.read_text(encoding="utf-8")
    assert committed == expected, "run `python -m carbon_contracts.export`"
    assert export.asyncapi_document() == DOC


def test_asyncapi_version_is_3_and_its_info_the_contracts_version() -> None:
    assert DOC["asyncapi"] == "3.0.0"
    assert DOC["info"]["version"] == version("carbon-contracts")


def test_every_catalogue_topic_has_a_channel_and_vice_versa() -> None:
    topics = {topic.name: topic for topic in catalogue().topics}
    assert set(DOC["channels"]) == set(topics)
    for name, channel in DOC["channels"].items():
        kafka = channel["bindings"]["kafka"]
        assert channel["address"] == kafka["topic"] == name
        assert kafka["partitions"] == topics[name].partitions
        assert kafka["replicas"] == catalogue().replication_factor
        assert kafka["topicConfiguration"]["retention.ms"] == topics[name].retention_ms


def test_every_topic_owner_is_a_service_or_a_named_external_system() -> None:
    services = set(get_args(ServiceName))
    assert services == {"reporting", "verification", "registry", "notifier"}
    externals = set(get_args(ExternalSystem))
    assert externals == {"exchange", "carbon-inclusion", "ccer-registry"}
    for name, channel in DOC["channels"].items():
        assert channel["x-owner"] == catalogue().topic(name).owner
        assert channel["x-inbound"] is (channel["x-owner"] in externals), name
        assert channel["x-owner"] in services | externals
        if channel["x-inbound"]:
            assert "external system" in channel["description"], name


@pytest.mark.parametrize("event", EVENTS)
def test_message_references_its_schema_file(event: str) -> None:
    major = EVENT_MODELS[event].VERSION
    message = message_of(event)
    ref = message["payload"]["$ref"]
    assert ref == f"./events/{event}/v{major}.schema.json"
    schema = json.loads((CONTRACTS / ref).read_text(encoding="utf-8"))
    assert schema["$id"] == dataschema_uri(event, major)


@pytest.mark.parametrize("event", EVENTS)
def test_message_headers_pin_type_schema_and_key(event: str) -> None:
    major = EVENT_MODELS[event].VERSION
    message = message_of(event)
    headers = message["headers"]["properties"]
    assert headers["ce_type"]["const"] == message["name"] == event_type_name(event, major)
    assert headers["ce_dataschema"]["const"] == dataschema_uri(event, major)
    topic = catalogue().topic_for_event(event)
    expected = f"/external/{topic.owner}" if topic.is_inbound else f"/carbon/{topic.owner}"
    assert headers["ce_source"]["const"] == expected
    key = catalogue().topic_for_event(event).key
    pattern = {"policy": IDENTIFIER_PATTERN, "instrument": INSTRUMENT_PATTERN}.get(
        key, CREDIT_CODE_PATTERN
    )
    assert message["bindings"]["kafka"]["key"]["pattern"] == pattern
    assert headers["ce_subject"]["pattern"] == pattern


def test_every_event_type_is_carried_by_exactly_one_topic() -> None:
    in_catalogue = Counter(event for topic in catalogue().topics for event in topic.event_types)
    assert in_catalogue == Counter(list(EVENT_MODELS))
    in_channels = Counter(
        ref for channel in DOC["channels"].values() for ref in refs(channel.get("messages", {}))
    )
    assert in_channels == Counter(
        f"#/components/messages/{event}.v{model.VERSION}" for event, model in EVENT_MODELS.items()
    )


def test_one_receive_operation_per_domain_topic() -> None:
    operations = DOC["operations"].values()
    assert all(operation["action"] == "receive" for operation in operations)
    received = sorted(operation["channel"]["$ref"] for operation in operations)
    assert received == sorted(f"#/channels/{t.name}" for t in catalogue().domain_topics())


def test_every_internal_ref_resolves() -> None:
    for ref in refs(DOC):
        if ref.startswith("#/"):
            assert pointer(ref) is not None, ref
        else:
            assert (CONTRACTS / ref).is_file(), ref
