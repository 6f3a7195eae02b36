"""Trace context and correlation ids: a request's events carry its trace (the caller's, when it
sends a `traceparent`) and one correlation id; a handler's events continue the consumed
record's trace; log lines carry the ids."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from carbon_platform import tracing
from carbon_platform.logs import JsonFormatter
from registry.domain.credit_code import make_credit_code
from tests.unit.support import Harness

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True, scope="module")
def spans() -> None:
    tracing.configure_tracing("test", "unit", "none")


def registration(seed: int) -> dict[str, object]:
    return {
        "credit_code": make_credit_code(seed),
        "name": "Traced Ltd",
        "district": "pudong",
        "sector": "chemicals",
        "compliance_year": 2024,
    }


async def test_a_request_s_events_continue_the_caller_s_trace_and_correlation(
    registry: Harness,
) -> None:
    headers = {**registry.token("regulator"), "traceparent": CALLER, "X-Correlation-ID": "batch-7"}
    async with registry.client() as client:
        reply = await client.post("/entities", headers=headers, json=registration(1))
    assert reply.status_code == 201, reply.text
    assert reply.headers["x-correlation-id"] == "batch-7"
    (event,) = await registry.outbox()
    version, trace, span, _ = event.headers["ce_traceparent"].split("-")
    assert (version, trace) == ("00", TRACE)
    assert span != "00f067aa0ba902b7"  # the server's own span, a child of the caller's
    assert event.headers["ce_correlationid"] == "batch-7"


async def test_a_request_without_ids_gets_its_own_and_a_bad_correlation_id_is_replaced(
    registry: Harness,
) -> None:
    async with registry.client() as client:
        plain = await client.post(
            "/entities", headers=registry.token("regulator"), json=registration(2)
        )
        odd = await client.post(
            "/entities",
            headers={**registry.token("regulator"), "X-Correlation-ID": "a b\nforged: 1"},
            json=registration(3),
        )
    first, second = await registry.outbox()
    assert first.headers["ce_correlationid"] == plain.headers["x-correlation-id"]
    assert second.headers["ce_correlationid"] == odd.headers["x-correlation-id"]
    assert uuid.UUID(odd.headers["x-correlation-id"])  # a fresh one, not the caller's
    assert (
        first.headers["ce_traceparent"].split("-")[1]
        != second.headers["ce_traceparent"].split("-")[1]
    )


def test_handling_a_record_continues_its_trace_and_takes_its_correlation_id() -> None:
    with tracing.consuming("report.submitted", 0, 7, CALLER, "request-1"):
        inside = tracing.traceparent()
        ids = tracing.ids()
    assert inside is not None and inside.split("-")[1] == TRACE
    assert ids["trace_id"] == TRACE and ids["correlation_id"] == "request-1"
    assert tracing.correlation_id() is None  # nothing leaks past the handling
    with tracing.consuming("report.submitted", 0, 8, "not-a-traceparent", "request-2"):
        fresh = tracing.traceparent()
    assert fresh is not None and fresh.split("-")[1] != TRACE  # a new trace


def test_a_log_line_carries_the_trace_span_and_correlation_ids() -> None:
    record = logging.LogRecord("carbon", logging.INFO, __file__, 1, "handled", None, None)
    with tracing.consuming("report.submitted", 0, 7, CALLER, "request-1"):
        line = json.loads(JsonFormatter("registry").format(record))
    assert line["trace_id"] == TRACE
    assert len(line["span_id"]) == 16
    assert line["correlation_id"] == "request-1"
    outside = json.loads(JsonFormatter("registry").format(record))
    assert not {"trace_id", "span_id", "correlation_id"} & set(outside)
