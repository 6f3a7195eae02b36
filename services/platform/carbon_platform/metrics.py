"""Prometheus metrics of a service process (one prefix, base units, no entity ids as labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "carbon_events_consumed_total",
    "Events taken from a topic, by outcome (processed, duplicate, rejected, dead_lettered)",
    ["topic", "type", "outcome"],
)
EVENT_HANDLE_SECONDS = Histogram(
    "carbon_event_handle_seconds",
    "Time to handle one consumed event, including its database transaction",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMED_BATCH_SIZE = Histogram(
    "carbon_consumed_batch_records",
    "Records a worker took up in one transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
EVENTS_PUBLISHED = Counter(
    "carbon_events_published_total", "Events the outbox relay published", ["topic", "type"]
)
OUTBOX_PENDING = Gauge("carbon_outbox_pending", "Outbox rows committed but not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "carbon_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row"
)
DEAD_LETTERS = Counter(
    "carbon_dead_letters_total", "Messages sent to the dead-letter topic", ["topic", "error_class"]
)
RELAY_ERRORS = Counter("carbon_relay_errors_total", "Failed outbox relay attempts")
RELAY_LEADER = Gauge(
    "carbon_relay_leader", "1 while this instance holds the outbox lease and publishes"
)
OUTBOX_PARKED = Gauge(
    "carbon_outbox_parked", "Outbox rows set aside because no broker would ever take them"
)
OUTBOX_REPUBLISHED_TOTAL = Counter(
    "carbon_outbox_republished_total",
    "Published events sent again because the broker had lost the topic's records",
    ["topic"],
)
BROKER_UP = Gauge(
    "carbon_broker_up", "1 while the broker answered this instance's last probe in time"
)
LOG_LINES_SUPPRESSED = Counter(
    "carbon_log_lines_suppressed_total", "Repeated log lines held back by the rate limit"
)
HTTP_REQUESTS = Counter(
    "carbon_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "carbon_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)
WORKER_READY = Gauge(
    "carbon_worker_ready",
    "1 while this instance's stream worker has started and its broker answers",
)
# Measured from the broker every few seconds (carbon_platform.lag) by every instance of every
# service, for every platform group: aggregate with max, never sum, across instances.
CONSUMER_LAG = Gauge(
    "carbon_consumer_lag",
    "Records of a partition its consumer group has not committed yet: end offset minus committed "
    "offset (minus the log start where the group never committed). The embedded broker reports "
    "an end offset short by all but the first record of the last batch written, so there it can "
    "read up to a producer batch low (deploy/README.md, Consumer lag)",
    ["group", "topic", "partition"],
)

# Compliance figures, computed from the owning service's database every few seconds
# (carbon_platform.figures): every instance of a service reports the same, exact figures, equal
# to its GET /figures (aggregate with max, never sum, across instances).
REPORTS_SUBMITTED = Gauge(
    "carbon_reports_submitted",
    "Emissions reports submitted (not drafts; corrections are versions of the same report)",
    ["compliance_year"],
)
ALLOWANCES_ISSUED = Gauge(
    "carbon_allowances_issued",
    "Allowances credited to accounts by kind (allocation, preallocation), by their year",
    ["kind", "compliance_year"],
)
ALLOWANCES_SURRENDERED = Gauge(
    "carbon_allowances_surrendered",
    "Allowances surrendered for a compliance year's obligations",
    ["compliance_year"],
)
OFFSETS_SURRENDERED = Gauge(
    "carbon_offsets_surrendered",
    "Offsets (CCER, SHCERCIR1) surrendered for a compliance year's obligations",
    ["compliance_year"],
)
NOTIFICATIONS = Gauge(
    "carbon_notifications", "Notifications recorded, by recipient type", ["recipient_type"]
)
NOTIFICATION_DELIVERIES = Counter(
    "carbon_notification_deliveries_total",
    "Attempts at delivering a notification to a webhook or e-mail subscription, by outcome "
    "(delivered; retry: failed, tried again later; failed: failed, no attempts left)",
    ["channel", "outcome"],
)
# Deadline progress, computed from the owning service's database every few seconds: every instance
# of a service reports the same figures (aggregate with max, never sum, across instances).
OBLIGATIONS = Gauge(
    "carbon_obligations",
    "Entities bound by an obligation, by status now (open, overdue, done_on_time, done_late) "
    "and district",
    ["obligation", "district", "status"],
)
CASES_ESCALATED = Gauge(
    "carbon_supervision_cases_escalated",
    "Overdue entities whose case passed its SLA and went to the Bureau, still open",
    ["obligation", "district"],
)
DEADLINE_SECONDS = Gauge(
    "carbon_obligation_deadline_seconds",
    "Seconds from now (the services' clock) to the obligation's deadline; negative once passed",
    ["obligation"],
)
LEDGER_DIFFERENCE = Gauge(
    "carbon_ledger_difference_units",
    "Units (allowances and offsets) by which the registry's holdings differ from the sum of its "
    "journal, absolute values summed over every position, at the last reconciliation; 0 = "
    "balanced",
)

# Known label values start at zero, so rates and increases see the first event.
for _channel in ("webhook", "email"):
    for _outcome in ("delivered", "retry", "failed"):
        NOTIFICATION_DELIVERIES.labels(_channel, _outcome)
