"""Operations alerts (from Prometheus, through Alertmanager) as notices to the Bureau, which runs
the platform: what fired or resolved, how bad it is and the runbook that says what to do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

from notifier.domain.messages import BUREAU, Notification

AlertStatus = Literal["firing", "resolved"]

# Fixed forever: an alert's notice id is derived from it, so a resend maps to the same id.
_ALERT_IDS = UUID("0d6f3c52-7a0e-4f8e-9c4b-3b1f6a2e9d17")
_SUBJECT_MAX = 200  # notifications.subject


@dataclass(frozen=True)
class Alert:
    """One alert of an Alertmanager notification, as the notifier keeps it."""

    name: str
    status: AlertStatus
    fingerprint: str
    starts_at: datetime
    ends_at: datetime | None = None
    severity: str | None = None
    summary: str | None = None
    runbook_url: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def event_type(self) -> str:
        return f"alert.{self.status}"

    @property
    def event_id(self) -> str:
        """The same for every resend of this alert in this state: Alertmanager repeats a
        notification (every repeat_interval, and after a failed send), and the notifier records
        it once. A new firing of the same alert has a new startsAt, hence a new notice."""
        when = self.starts_at.astimezone(UTC).isoformat()
        return str(uuid5(_ALERT_IDS, f"{self.fingerprint}/{when}/{self.status}"))


def alert_notice(alert: Alert, *, timezone: str) -> Notification:
    """The Bureau's notice of one alert: the subject says what and how bad, the message what it
    means (the rule's summary), since when, where to read what to do, and the labels."""
    zone = ZoneInfo(timezone)
    state = "FIRING" if alert.status == "firing" else "RESOLVED"
    severity = f" {alert.severity}" if alert.severity else ""
    subject = f"[{state}{severity}] {alert.name}"
    if alert.summary:
        subject = f"{subject}: {alert.summary}"
    if len(subject) > _SUBJECT_MAX:
        subject = subject[: _SUBJECT_MAX - 1] + "…"
    lines = [f"Alert {alert.name} is {alert.status} (severity {alert.severity or 'none'})."]
    if alert.summary:
        lines.append(alert.summary)
    lines.append(f"Since: {alert.starts_at.astimezone(zone).strftime('%Y-%m-%d %H:%M:%S %Z')}")
    if alert.status == "resolved" and alert.ends_at:
        lines.append(f"Resolved: {alert.ends_at.astimezone(zone).strftime('%Y-%m-%d %H:%M:%S %Z')}")
    lines.append(f"Runbook: {alert.runbook_url or '(none given)'}")
    others = {k: v for k, v in sorted(alert.labels.items()) if k not in ("alertname", "severity")}
    if others:
        lines.append("Labels: " + ", ".join(f"{k}={v}" for k, v in others.items()))
    return Notification("bureau", BUREAU, subject, "\n".join(lines))
