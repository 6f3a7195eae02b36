"""The typed views the notifier's API answers with."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from notifier.domain.alerts import Alert

Recipient = Literal["entity", "district", "bureau"]
"""Who is told: an entity (by credit code), a district bureau (by district code) or the Bureau
(recipient_id "bureau")."""


class NotificationView(BaseModel):
    model_config = ConfigDict(frozen=True)

    recipient_type: Recipient
    recipient_id: str
    credit_code: str | None = Field(
        description="the entity the event is about; null for a cycle-wide event"
    )
    event_type: str
    event_id: str
    subject: str
    message: str
    created_at: datetime


MAX_URL_LENGTH = 2048
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


class _Subscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # An entity or a district subscribes for itself, and so does the Bureau unless it names
    # another recipient.
    recipient_type: Recipient | None = None
    recipient_id: str | None = Field(default=None, min_length=1, max_length=64)


class WebhookSubscription(_Subscribe):
    channel: Literal["webhook"]
    url: str = Field(max_length=MAX_URL_LENGTH, description="http or https URL to POST to")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http or https URL with a host")
        if any(character.isspace() for character in value):
            raise ValueError("must not contain whitespace")
        return value


class EmailSubscription(_Subscribe):
    channel: Literal["email"]
    address: str = Field(max_length=254)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _EMAIL.match(value):
            raise ValueError("must be an e-mail address (name@domain)")
        return value


Subscribe = Annotated[WebhookSubscription | EmailSubscription, Field(discriminator="channel")]


class SubscriptionView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    recipient_type: Recipient
    recipient_id: str
    channel: Literal["webhook", "email"]
    url: str | None
    address: str | None
    created_at: datetime


class CreatedSubscription(SubscriptionView):
    secret: str | None = Field(
        description="the webhook's signing secret: shown in this answer only, never again"
    )


class DeliveryView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    notification_id: int
    subscription_id: str
    recipient_type: Recipient
    recipient_id: str
    channel: Literal["webhook", "email"]
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None


class DeliveryAttemptView(BaseModel):
    model_config = ConfigDict(frozen=True)

    attempt: int
    at: datetime
    outcome: Literal["delivered", "failed"]
    http_status: int | None
    error: str | None
    duration_ms: int


# --- alerts from Alertmanager (webhook_config, payload version 4) ------------------------------


class _Alertmanager(BaseModel):
    # A tolerant reader: fields a later Alertmanager adds are ignored.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AlertmanagerAlert(_Alertmanager):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    # Alertmanager sends "0001-01-01T00:00:00Z" while an alert has no end yet.
    ends_at: AwareDatetime | None = Field(default=None, alias="endsAt")
    fingerprint: str = Field(min_length=1, max_length=64)

    @field_validator("labels")
    @classmethod
    def _named(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("alertname"):
            raise ValueError("must contain alertname")
        return value

    def alert(self) -> Alert:
        return Alert(
            name=self.labels["alertname"],
            status=self.status,
            fingerprint=self.fingerprint,
            starts_at=self.starts_at,
            ends_at=self.ends_at if self.ends_at and self.ends_at.year > 1 else None,
            severity=self.labels.get("severity"),
            summary=self.annotations.get("summary"),
            runbook_url=self.annotations.get("runbook_url"),
            labels=self.labels,
        )


class AlertmanagerNotification(_Alertmanager):
    """What Alertmanager's webhook_config POSTs: one group of alerts."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_key: str = Field(default="", alias="groupKey")
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=1000)


class AlertsReceived(BaseModel):
    model_config = ConfigDict(frozen=True)

    received: int = Field(description="alerts in the notification")
    recorded: int = Field(
        description="notices to the Bureau recorded now; an alert already told (a resend) adds none"
    )
