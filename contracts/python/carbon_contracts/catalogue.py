"""The topic catalogue (`contracts/topics.yaml`) as typed objects."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from carbon_contracts.resources import contract_path

ServiceName = Literal["reporting", "verification", "registry", "notifier"]
ExternalSystem = Literal["exchange", "carbon-inclusion", "ccer-registry"]
"""Systems outside the platform that write its inbound topics: the exchange's trading system,
the carbon inclusion platform (SHCERCIR1) and the national CCER registry."""
EXTERNAL_SYSTEMS: tuple[str, ...] = get_args(ExternalSystem)


class Topic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    owner: ServiceName | ExternalSystem
    key: str
    partitions: int = Field(ge=1)
    retention_ms: int
    max_message_bytes: int = Field(
        ge=1024, description="largest record the topic takes (Kafka max.message.bytes)"
    )
    event_types: list[str]

    @property
    def is_dead_letter(self) -> bool:
        return self.name.endswith(".dlq")

    @property
    def is_inbound(self) -> bool:
        """Written by an external system, not by a service of the platform."""
        return self.owner in EXTERNAL_SYSTEMS

    @property
    def source(self) -> str:
        """The `ce_source` of every event on the topic: its single writer."""
        return f"/external/{self.owner}" if self.is_inbound else f"/carbon/{self.owner}"


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    defaults: dict[str, int]
    topics: list[Topic]

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        """A topic without its own `max_message_bytes` takes the catalogue's default."""
        if isinstance(data, dict) and "max_message_bytes" in data.get("defaults", {}):
            limit = data["defaults"]["max_message_bytes"]
            data = {
                **data,
                "topics": [{"max_message_bytes": limit, **topic} for topic in data["topics"]],
            }
        return data

    @property
    def replication_factor(self) -> int:
        return self.defaults.get("replication_factor", 1)

    def topic(self, name: str) -> Topic:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(f"topic {name!r} is not in the catalogue")

    def topic_for_event(self, event: str) -> Topic:
        for topic in self.topics:
            if event in topic.event_types:
                return topic
        raise KeyError(f"no topic carries event type {event!r}")

    @property
    def max_message_bytes(self) -> int:
        """The largest record any topic takes: producers and consumers are sized for it."""
        return max(topic.max_message_bytes for topic in self.topics)

    def owned_by(self, service: str) -> list[Topic]:
        return [topic for topic in self.topics if topic.owner == service]

    def domain_topics(self) -> list[Topic]:
        return [topic for topic in self.topics if not topic.is_dead_letter]

    def dead_letter_topic(self, service: str) -> Topic:
        return self.topic(f"{service}.dlq")


def load_catalogue(path: Path | None = None) -> Catalogue:
    return Catalogue.model_validate(
        yaml.safe_load((path or contract_path("topics.yaml")).read_text())
    )


@cache
def catalogue() -> Catalogue:
    """The catalogue shipped with these contracts."""
    return load_catalogue()
