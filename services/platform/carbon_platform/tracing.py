"""Trace context and correlation ids across HTTP requests and events.

A request's span (W3C `traceparent` from the caller, or a new trace) becomes the parent of every
event its transaction records: the outbox row carries `ce_traceparent` onto the record, and the
consumer handles each record inside a span that continues it, so the events a handler causes
stay in the same trace. Correlation ids follow the same path: one per request (the caller's
`X-Correlation-ID`, or a new one), inherited by every event it causes, directly or downstream.

Spans are always made (a trace id is needed on the records even when nobody collects spans);
they leave the process only when `CARBON_TRACING_EXPORTER` names an exporter.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Exporter = Literal["none", "console", "otlp"]
CORRELATION_HEADER = "x-correlation-id"
# A caller's correlation id is taken as given only if it is a plain token of sane length.
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PROPAGATOR = TraceContextTextMapPropagator()
_correlation: ContextVar[str | None] = ContextVar("correlation_id", default=None)
_tracer = trace.get_tracer("carbon_platform")


def configure_tracing(service: str, instance: str, exporter: Exporter) -> None:
    """Install the SDK's tracer provider once per process; with `exporter`, spans go there
    (`otlp` reads the standard OTEL_EXPORTER_OTLP_* variables, e.g. the collector's endpoint)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"carbon-{service}", "service.instance.id": instance}
        )
    )
    if exporter == "console":
        # One JSON object per line, like the service's log lines.
        provider.add_span_processor(
            BatchSpanProcessor(ConsoleSpanExporter(out=sys.stdout, formatter=_one_line))
        )
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


def correlation_id() -> str | None:
    """The correlation id of the request or event being handled, if any."""
    return _correlation.get()


def traceparent() -> str | None:
    """The W3C `traceparent` of the current span, for the records it causes."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def ids() -> dict[str, str]:
    """The current trace, span and correlation ids, for a log line."""
    found: dict[str, str] = {}
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        found["trace_id"] = format(span.trace_id, "032x")
        found["span_id"] = format(span.span_id, "016x")
    if (correlation := _correlation.get()) is not None:
        found["correlation_id"] = correlation
    return found


def caller_correlation_id(value: str | None) -> str | None:
    """A caller's correlation id, if it is one we can carry (else the request gets its own)."""
    return value if value is not None and _TOKEN.fullmatch(value) else None


@contextmanager
def serving(
    method: str, headers: Mapping[str, str], correlation: str
) -> Iterator[tuple[Span, str]]:
    """The span of one HTTP request, continuing the caller's trace if it sent a `traceparent`;
    yields the span (named by route once routing has found it) and its correlation id."""
    parent = _PROPAGATOR.extract(headers)
    token = _correlation.set(correlation)
    try:
        with _tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER) as span:
            yield span, correlation
    finally:
        _correlation.reset(token)


@contextmanager
def consuming(
    topic: str, partition: int, offset: int, traceparent: str | None, correlation: str
) -> Iterator[Span]:
    """The span of handling one record: a child of the span that published it, when the record
    carries its `traceparent` (records from outside may not)."""
    parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    token = _correlation.set(correlation)
    try:
        with _tracer.start_as_current_span(
            f"{topic} process",
            context=parent or otel_context.Context(),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.kafka.message.offset": offset,
            },
        ) as span:
            yield span
    finally:
        _correlation.reset(token)
