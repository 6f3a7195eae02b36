"""The topic catalogue: single writer per topic, keys, partitions and dead-letter topics."""

from __future__ import annotations

from typing import get_args

import pytest

from carbon_contracts.catalogue import ServiceName, Topic, catalogue
from carbon_contracts.events import EVENT_MODELS

# The prefix of an event name names its only producer (architecture: single writer per topic).
OWNER_BY_PREFIX = {
    "entity": "registry",
    "account": "registry",
    "allocation": "registry",
    "surrender": "registry",
    "preallocation": "registry",
    "monitoring_plan": "reporting",
    "report": "reporting",
    "emissions": "reporting",
    "verification": "verification",
    "reverification": "verification",
    "allowances": "registry",
    "ccer": "ccer-registry",
    "shcercir1": "carbon-inclusion",
    "trading_account": "exchange",
    "exchange_transfer": "exchange",
    "auction": "registry",
    "market_day": "exchange",
    "auction_payment": "exchange",
    "accounts_opening": "registry",
}
SERVICES = get_args(ServiceName)
DOMAIN_TOPICS = catalogue().domain_topics()


def topic_id(topic: Topic) -> str:
    return topic.name


def test_topic_names_are_unique() -> None:
    names = [topic.name for topic in catalogue().topics]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("topic", DOMAIN_TOPICS, ids=topic_id)
def test_single_writer_by_prefix(topic: Topic) -> None:
    assert topic.owner == OWNER_BY_PREFIX[topic.name.split(".")[0]]
    for event in topic.event_types:
        assert OWNER_BY_PREFIX[event.split(".")[0]] == topic.owner, event


@pytest.mark.parametrize("topic", DOMAIN_TOPICS, ids=topic_id)
def test_domain_topic_is_keyed_by_credit_code_and_partitioned(topic: Topic) -> None:
    assert topic.partitions >= 1
    cycle_wide = {"verification.closed", "auction.announced", "auction.cleared"}
    market = {"market_day.closed"}
    summary = topic.name.endswith(".deadline_passed")
    expected = "policy" if topic.name in cycle_wide or summary else "credit_code"
    assert topic.key == ("instrument" if topic.name in market else expected)
    assert topic.event_types, "a domain topic carries at least one event type"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_a_dead_letter_topic(service: str) -> None:
    dlq = catalogue().dead_letter_topic(service)
    assert dlq.owner == service
    assert dlq.event_types == []
    assert dlq.partitions >= 1


def test_every_model_is_in_the_catalogue_and_back() -> None:
    carried = {event for topic in catalogue().topics for event in topic.event_types}
    assert {model.EVENT for model in EVENT_MODELS.values()} == carried
    for event in EVENT_MODELS:
        # An event type names its topic, except an obligation's events about one entity: they
        # share <obligation>.deadline, so each entity's come in the order they happened.
        obligation, kind = event.split(".")
        shared = kind in {"reminder_due", "overdue", "done_late", "case_escalated"}
        topic = f"{obligation}.deadline" if shared else event
        assert catalogue().topic_for_event(event).name == topic
