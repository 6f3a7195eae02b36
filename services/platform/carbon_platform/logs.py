"""Logging: JSON lines carrying event id, type, topic, partition, offset and entity id, and the
trace, span and correlation ids of the request or event being handled."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime

from carbon_platform import metrics, tracing

_NOISY = ("aiokafka", "faust", "mode", "uvicorn.access")
_EVENT_FIELDS = (
    "event_id",
    "event_type",
    "topic",
    "partition",
    "offset",
    "entity_id",
    "error_class",  # a dead letter's class (poison, oversized, bug...)
    "reason",  # and what was wrong, in words
    "method",  # an HTTP request: its method, route template, status and time taken
    "route",
    "status",
    "duration_ms",
    "correlation_id",  # the request that started what this line is about
)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # The trace, span and correlation of the request or event being handled, if any.
        entry.update(tracing.ids())
        for name in _EVENT_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RateLimit(logging.Filter):
    """Lets the same warning or error (same logger, same message template) through a few times
    a window, then holds it back and says how many were held once the window is over: an outage
    gives a few lines a minute, not one per retry per partition."""

    def __init__(self, *, burst: int = 5, window_s: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._seen: dict[tuple[str, object], list[float]] = {}  # key -> [window start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.window_s:
            held = 0 if seen is None else int(seen[1]) - self.burst
            self._seen[key] = [now, 1]
            if len(self._seen) > 1000:  # forget quiet keys; templates are few
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
            if held > 0:
                record.msg = f"{record.msg} (and {held} more like it in the last minute)"
            return True
        seen[1] += 1
        if seen[1] <= self.burst:
            return True
        metrics.LOG_LINES_SUPPRESSED.inc()
        return False


def configure_logging(service: str, *, level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RateLimit())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Faust and aiokafka are chatty at INFO about every rebalance step;
    # CARBON_LOG_ALL=1 shows them when debugging the stream runtime.
    for noisy in () if os.environ.get("CARBON_LOG_ALL") else _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
