"""Trace context across the platform, read from the records alone: every event of an entity's
cycle carries the trace and the correlation id of the request or event that caused it (on a
platform of its own: the thin path's module closes the year, after which no cycle runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from carbon_contracts.catalogue import catalogue
from carbon_contracts.envelope import parse_event_type
from registry.domain.credit_code import make_credit_code
from tests.support import (
    CYCLE_TOPICS,
    Database,
    Platform,
    compliance_cycle,
    read_topic,
    running_platform,
    wait_until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("tracing"), Database.for_test()) as platform:
        yield platform


def test_the_records_of_a_cycle_carry_one_trace_and_one_correlation_per_request(
    platform: Platform,
) -> None:
    code = make_credit_code(8_800_001)

    async def cycle() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await compliance_cycle(client, platform.urls.__getitem__, code)

    assert asyncio.run(cycle())["status"] == "compliant"

    def event_name(record: Any) -> str:
        return parse_event_type(record.headers["ce_type"].decode())[0]

    def records() -> dict[str, Any]:
        found = {
            r.headers["ce_id"].decode(): r
            for topic in catalogue().domain_topics()
            for r in read_topic(platform.bootstrap, topic.name)
            if r.key == code.encode()
        }
        types = {event_name(r) for r in found.values()}
        return found if set(CYCLE_TOPICS) <= types else {}

    found = wait_until(records, timeout=60, what=f"every event of {code}'s cycle")

    def trace_id(record: Any) -> str:
        version, trace, span, flags = record.headers["ce_traceparent"].decode().split("-")
        assert (version, len(trace), len(span), len(flags)) == ("00", 32, 16, 2)
        return str(trace)

    # Every record carries the trace of the request or the handling that caused it; an event
    # caused by another shares its trace and its correlation id, across services.
    caused = [r for r in found.values() if "ce_causationid" in r.headers]
    across = 0
    for record in caused:
        cause = found.get(record.headers["ce_causationid"].decode())
        if cause is None:  # caused by an event of another entity (none in this cycle)
            continue
        assert trace_id(record) == trace_id(cause), record.topic
        assert record.headers["ce_correlationid"] == cause.headers["ce_correlationid"]
        across += record.headers["ce_source"] != cause.headers["ce_source"]
    assert across, "no event of the cycle was caused by another service's event"

    # The surrender request's two events: one trace, one correlation id.
    by_type = {event_name(r): r for r in found.values()}
    surrender, preallocation = by_type["surrender.completed"], by_type["preallocation.issued"]
    assert trace_id(surrender) == trace_id(preallocation)
    assert surrender.headers["ce_correlationid"] == preallocation.headers["ce_correlationid"]
    assert "ce_causationid" not in surrender.headers  # the request, not an event, started it
