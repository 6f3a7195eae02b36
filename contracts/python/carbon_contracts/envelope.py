"""CloudEvents 1.0 binary-mode envelope conventions on Kafka (the CloudEvents Kafka binding)."""

from __future__ import annotations

CE_SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
# Where the versioned schemas are published; the path mirrors contracts/events/ in the repository.
SCHEMA_BASE = "https://contracts.carbon-ets.example/events"
TYPE_PREFIX = "cn.sh.carbon."


def event_type_name(event: str, major: int) -> str:
    """`report.submitted`, 1 -> `cn.sh.carbon.report.submitted.v1` (the ce_type header)."""
    return f"{TYPE_PREFIX}{event}.v{major}"


def parse_event_type(ce_type: str) -> tuple[str, int]:
    """Inverse of event_type_name; raises ValueError on anything else."""
    if not ce_type.startswith(TYPE_PREFIX):
        raise ValueError(f"ce_type {ce_type!r} is not a carbon event type")
    name, _, version = ce_type[len(TYPE_PREFIX) :].rpartition(".v")
    if not name or not version.isdigit():
        raise ValueError(f"ce_type {ce_type!r} has no major version suffix")
    return name, int(version)


def dataschema_uri(event: str, major: int) -> str:
    """The ce_dataschema header value, equal to the `$id` of the committed schema file."""
    return f"{SCHEMA_BASE}/{event}/v{major}.schema.json"
