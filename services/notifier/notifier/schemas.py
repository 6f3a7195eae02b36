"""The typed views the notifier's API answers with."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
