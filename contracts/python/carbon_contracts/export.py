"""Generate the language-neutral contract files from the pydantic models.

    python -m carbon_contracts.export          # (re)write contracts/events/*/v*.schema.json
                                               # and contracts/asyncapi.yaml
    python -m carbon_contracts.export --check  # exit 1 and name the files that differ

The models in `events.py` are the source of truth; the generated files are committed so that
subscribers in any language can read them without Python, and CI checks they never drift.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from carbon_contracts.catalogue import Catalogue, Topic, catalogue
from carbon_contracts.envelope import CE_SPECVERSION, CONTENT_TYPE, dataschema_uri, event_type_name
from carbon_contracts.events import EVENT_MODELS, Payload
from carbon_contracts.types import CREDIT_CODE_PATTERN, IDENTIFIER_PATTERN, INSTRUMENT_PATTERN

# contracts/ in the repository; generating only makes sense from a checkout, not an installed wheel.
CONTRACTS_DIR = Path(__file__).resolve().parents[2]
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
# RFC 3339 with a mandatory offset. `format` is only an annotation in 2020-12, so most validators
# would let a naive timestamp through; the pattern makes "aware datetimes only" enforceable in
# every language. It matches what pydantic emits for an aware datetime.
DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"  # date
    r"[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"  # time
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"  # the offset that makes it aware
)
UUID_PATTERN = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"


# --- JSON Schemas -------------------------------------------------------------------------------


def schema_path(event: str, major: int) -> str:
    """Path of an event's schema relative to contracts/; mirrors `dataschema_uri`."""
    return f"events/{event}/v{major}.schema.json"


def event_schema(model: type[Payload]) -> dict[str, Any]:
    """The JSON Schema 2020-12 of one event payload, closed everywhere.

    Validation mode: it describes what a consumer must accept, so fields with a default are
    optional, which is exactly the "add optional fields only" evolution rule. The payloads that
    `model_dump(mode="json")` produces validate against it (tests/contract checks the examples).
    """
    generated = model.model_json_schema(mode="validation")
    _check_closed(generated, model.__name__)
    _constrain_date_times(generated)
    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": dataschema_uri(model.EVENT, model.VERSION),
    }
    # A fixed, reader-friendly key order; pydantic's own order is alphabetical at the top.
    for key in ("title", "description", "type", "properties", "required", "additionalProperties"):
        if key in generated:
            schema[key] = generated.pop(key)
    return schema | generated


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object inside a (generated) schema, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from _objects(item)


def _check_closed(schema: dict[str, Any], where: str) -> None:
    # Fail rather than patch: adding additionalProperties here would make the schema stricter
    # than the model. A nested model without extra="forbid" must be fixed in events.py.
    # A map is closed when its keys are constrained (propertyNames) and so are its values.
    for node in _objects(schema):
        is_map = "propertyNames" in node and isinstance(node.get("additionalProperties"), dict)
        if (
            node.get("type") == "object"
            and node.get("additionalProperties") is not False
            and not is_map
        ):
            raise ValueError(
                f"{where}: object {node.get('title', '?')} is not closed (extra=forbid)"
            )


def _constrain_date_times(schema: dict[str, Any]) -> None:
    for node in _objects(schema):
        if node.get("type") == "string" and node.get("format") == "date-time":
            node.setdefault("pattern", DATE_TIME_PATTERN)


# --- AsyncAPI -----------------------------------------------------------------------------------


def _camel(*words: str) -> str:
    parts = [part for word in words for part in re.split(r"[._-]", word) if part]
    return parts[0] + "".join(part.capitalize() for part in parts[1:])


def message_id(event: str, major: int) -> str:
    return f"{event}.v{major}"


def _message_ids(topic: Topic) -> list[str]:
    return [message_id(event, EVENT_MODELS[event].VERSION) for event in topic.event_types]


def _key_schema(key: str) -> dict[str, Any]:
    """The Kafka key (and `ce_subject`) of a topic: an entity's credit code, a policy cycle or an
    instrument."""
    if key == "instrument":
        return {
            "type": "string",
            "pattern": INSTRUMENT_PATTERN,
            "description": "the instrument (UTF-8), e.g. SHEA",
        }
    if key == "policy":
        return {
            "type": "string",
            "pattern": IDENTIFIER_PATTERN,
            "description": "the compliance policy cycle (UTF-8), e.g. shanghai-2024",
        }
    return {
        "type": "string",
        "pattern": CREDIT_CODE_PATTERN,
        "description": "the covered entity's credit code (UTF-8)",
    }


def _headers(event: str, major: int, source: str, key: str) -> dict[str, Any]:
    """The CloudEvents binary-mode headers (Kafka binding: every attribute is `ce_<name>`)."""
    return {
        "type": "object",
        "required": [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "ce_subject",
            "ce_dataschema",
            "content-type",
            "ce_correlationid",
        ],
        "properties": {
            "ce_specversion": {"type": "string", "const": CE_SPECVERSION},
            "ce_id": {
                "type": "string",
                "pattern": UUID_PATTERN,
                "description": "event id (UUID); consumers deduplicate on it",
            },
            "ce_source": {"type": "string", "const": source},
            "ce_type": {
                "type": "string",
                "const": event_type_name(event, major),
                "description": "filter on this; it names the payload schema and major version",
            },
            "ce_time": {"type": "string", "pattern": DATE_TIME_PATTERN},
            "ce_subject": {
                **_key_schema(key),
                "description": f"{_key_schema(key)['description'][4:]}, equal to the Kafka key",
            },
            "ce_dataschema": {"type": "string", "const": dataschema_uri(event, major)},
            "content-type": {"type": "string", "const": CONTENT_TYPE},
            "ce_correlationid": {
                "type": "string",
                "description": "id of the event or request that started this chain",
            },
            "ce_causationid": {
                "type": "string",
                "description": "ce_id of the event that caused this one; absent on a first event",
            },
            "ce_traceparent": {
                "type": "string",
                "description": "W3C trace context (CloudEvents distributed tracing extension)",
            },
        },
    }


def _message(event: str, model: type[Payload], source: str, key: str) -> dict[str, Any]:
    major = model.VERSION
    return {
        "name": event_type_name(event, major),
        "title": model.__name__,
        "summary": (model.__doc__ or "").strip().splitlines()[0],
        "contentType": CONTENT_TYPE,
        "headers": _headers(event, major, source, key),
        "payload": {"$ref": f"./{schema_path(event, major)}"},
        "correlationId": {"location": "$message.header#/ce_correlationid"},
        "bindings": {
            "kafka": {
                "key": _key_schema(key),
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "externalDocs": {"url": dataschema_uri(event, major)},
    }


def _channel(topic: Topic, replicas: int) -> dict[str, Any]:
    if topic.is_dead_letter:
        description = (
            f"Dead letters of the {topic.owner} service: the original key, value and headers of a "
            "message it could not process, plus dlq_* context headers (original topic, partition, "
            "offset, error class and message, time, the letter's own id). A message too large to "
            "copy is referred to instead (dlq_reference: true, dlq_original_size, the first 1024 "
            "bytes of its value, its headers up to 16 KiB). Kept 30 days for replay; not a domain "
            "feed."
        )
    else:
        writer = (
            f"Inbound: written only by {topic.owner}, an external system outside the platform "
            "(authenticated as its own principal, which may write nothing else); the registry "
            "reads it and refuses what does not check out. "
            if topic.is_inbound
            else f"Written only by the {topic.owner} service. "
        )
        description = (
            writer
            + "Key: "
            + (
                "the policy cycle (one event per cycle). "
                if topic.key == "policy"
                else "the instrument, so each instrument's days are ordered. "
                if topic.key == "instrument"
                else "the covered entity's credit code, so all events of one entity are ordered "
                "within one partition. "
            )
            + f"Carries {', '.join(topic.event_types)}."
        )
    channel: dict[str, Any] = {
        "address": topic.name,
        "title": topic.name,
        "description": description,
        "x-owner": topic.owner,
        "x-inbound": topic.is_inbound,
        "messages": {
            name: {"$ref": f"#/components/messages/{name}"} for name in _message_ids(topic)
        },
        "bindings": {
            "kafka": {
                "topic": topic.name,
                "partitions": topic.partitions,
                "replicas": replicas,
                "topicConfiguration": {
                    "retention.ms": topic.retention_ms,
                    "max.message.bytes": topic.max_message_bytes,
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    if not channel["messages"]:
        del channel["messages"]
    return channel


def _operation(topic: Topic) -> dict[str, Any]:
    return {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{topic.name}"},
        "summary": (
            f"Subscribe to {topic.name} (published by the external system {topic.owner})."
            if topic.is_inbound
            else f"Subscribe to {topic.name} (published by {topic.owner})."
        ),
        "messages": [
            {"$ref": f"#/channels/{topic.name}/messages/{name}"} for name in _message_ids(topic)
        ],
    }


def asyncapi_document(cat: Catalogue | None = None) -> dict[str, Any]:
    """The AsyncAPI 3 document for subscribers, from the catalogue and the models."""
    cat = cat or catalogue()
    messages: dict[str, Any] = {}
    for topic in cat.domain_topics():
        for event in topic.event_types:
            model = EVENT_MODELS[event]
            messages[message_id(event, model.VERSION)] = _message(
                event, model, topic.source, topic.key
            )
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Carbon ETS platform events",
            "version": "1.6.0",
            "description": (
                "Events of the Shanghai carbon emissions trading compliance cycle. Envelope: "
                "CloudEvents 1.0 in binary mode (CloudEvents Kafka protocol binding): the "
                "attributes travel as ce_* headers and the Kafka value is the JSON payload "
                "(content-type application/json). The Kafka key of every domain topic is the "
                "covered entity's unified social credit code (UTF-8), except verification.closed "
                "(the policy cycle). Subscribers filter on "
                "ce_type and read payloads tolerantly: fields may be added within a major version."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "embedded broker started by `make run`",
            },
            "production": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "placeholder: the operator publishes the real bootstrap address",
            },
        },
        "channels": {topic.name: _channel(topic, cat.replication_factor) for topic in cat.topics},
        "operations": {
            _camel("receive", topic.name): _operation(topic) for topic in cat.domain_topics()
        },
        "components": {"messages": messages},
    }


# --- Files --------------------------------------------------------------------------------------


def render_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def render_yaml(document: dict[str, Any]) -> str:
    header = "# Generated by `python -m carbon_contracts.export` from topics.yaml and the models.\n"
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return header + body


def generated_files(cat: Catalogue | None = None) -> dict[str, str]:
    """Every generated file: path relative to contracts/ -> its exact text."""
    files = {
        schema_path(event, model.VERSION): render_json(event_schema(model))
        for event, model in EVENT_MODELS.items()
    }
    files["asyncapi.yaml"] = render_yaml(asyncapi_document(cat))
    return files


def stale_files(root: Path = CONTRACTS_DIR) -> dict[str, str]:
    """Generated files whose committed text differs from what the models produce now."""
    return {
        relative: text
        for relative, text in generated_files().items()
        if not (root / relative).exists() or (root / relative).read_text(encoding="utf-8") != text
    }


def write_files(root: Path = CONTRACTS_DIR) -> list[str]:
    """Write the stale files only, so an unchanged contract keeps its file times."""
    stale = stale_files(root)
    for relative, text in stale.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(stale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carbon_contracts.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a diff")
    args = parser.parse_args(argv)
    if not (CONTRACTS_DIR / "topics.yaml").exists():
        parser.error(f"{CONTRACTS_DIR} is not the repository's contracts/ directory")
    if args.check:
        stale = stale_files()
        for relative in stale:
            print(f"out of date: contracts/{relative}", file=sys.stderr)
        if stale:
            print("run `python -m carbon_contracts.export` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for relative in write_files():
        print(f"wrote contracts/{relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
