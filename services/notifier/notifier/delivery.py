"""Delivery of notifications to the webhooks and e-mail addresses recipients subscribe: signed
webhook requests, SMTP mail, retries with exponential backoff and a log of every attempt.

Operational settings (not policy): `CARBON_*` environment variables, read by DeliverySettings.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from carbon_platform import metrics
from carbon_platform.context import ServiceContext
from notifier import store

log = logging.getLogger(__name__)


class DeliverySettings(BaseSettings):
    """How the notifier sends: its SMTP relay, timeouts and retry schedule."""

    model_config = SettingsConfigDict(env_prefix="CARBON_", extra="ignore")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "notifier@carbon-ets.invalid"
    # One webhook request or SMTP conversation; a hanging endpoint is given up after this.
    delivery_timeout_s: float = Field(default=5.0, gt=0)
    # Attempt n (from 1) failing waits base * 2**(n-1), at most max, before the next attempt.
    delivery_backoff_base_s: float = Field(default=30.0, gt=0)
    delivery_backoff_max_s: float = Field(default=3600.0, gt=0)
    # After this many failed attempts the delivery is failed (replayable by hand).
    delivery_max_attempts: int = Field(default=8, ge=1)
    # Deliveries claimed at once, and at most this many sends in flight per instance.
    delivery_batch: int = Field(default=20, ge=1)
    delivery_max_in_flight: int = Field(default=50, ge=1)
    # How often an idle instance looks for due deliveries.
    delivery_poll_s: float = Field(default=1.0, gt=0)


SIGNATURE_HEADER = "X-Carbon-Signature"
TIMESTAMP_HEADER = "X-Carbon-Timestamp"
DELIVERY_HEADER = "X-Carbon-Delivery"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the timestamp is signed with the
    body, so a captured request cannot be replayed later under a fresh timestamp."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def backoff(settings: DeliverySettings, attempt: int) -> timedelta:
    """The wait after failed attempt `attempt` (from 1)."""
    seconds = settings.delivery_backoff_base_s * 2 ** (attempt - 1)
    return timedelta(seconds=min(seconds, settings.delivery_backoff_max_s))


def body_of(row: Any) -> bytes:
    """The webhook's JSON body: the notification and the delivery it travels in."""
    document = {
        "delivery_id": row.id,
        "recipient_type": row.recipient_type,
        "recipient_id": row.recipient_id,
        "credit_code": row.credit_code,
        "event_type": row.event_type,
        "event_id": row.event_id,
        "subject": row.subject,
        "message": row.message,
        "created_at": row.created_at.isoformat(),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    http_status: int | None = None
    error: str | None = None


class Deliverer:
    """Claims due deliveries and sends each on its own, so one slow or failing endpoint never
    holds up another: each send has a timeout and records its outcome as soon as it ends."""

    def __init__(
        self,
        context: ServiceContext,
        *,
        settings: DeliverySettings,
        http: httpx.AsyncClient,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.context = context
        self.settings = settings
        self.http = http
        self.now = now
        self.in_flight: set[asyncio.Task[None]] = set()
        # In-memory SQLite (unit tests) has one connection, which two transactions cannot share.
        self._writing = asyncio.Lock()

    async def start_due(self) -> int:
        """Claim what is due, up to the batch and the free send slots, and start sending it;
        returns how many were claimed."""
        free = self.settings.delivery_max_in_flight - len(self.in_flight)
        room = min(self.settings.delivery_batch, free)
        if room <= 0:
            return 0
        now = self.now()
        # Held past the send's timeout: if this instance dies mid-send, another retries it then.
        until = now + timedelta(seconds=self.settings.delivery_timeout_s * 2 + 5)
        async with self._writing, self.context.engine.begin() as conn:
            claimed = await store.claim_due(conn, now=now, until=until, limit=room)
        for row in claimed:
            task = asyncio.create_task(self._deliver(row))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return len(claimed)

    async def deliver_due(self) -> int:
        """Claim what is due and wait until each claimed delivery's attempt is recorded."""
        claimed = await self.start_due()
        await self.drain()
        return claimed

    async def drain(self) -> None:
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def _deliver(self, row: Any) -> None:
        attempt = row.attempts + 1
        started = time.monotonic()
        send = self._webhook if row.channel == "webhook" else self._email
        try:
            outcome = await asyncio.wait_for(send(row), timeout=self.settings.delivery_timeout_s)
        except TimeoutError:
            outcome = Outcome(False, error=f"timed out after {self.settings.delivery_timeout_s}s")
        except Exception as error:  # the endpoint's failure, never this instance's
            outcome = Outcome(False, error=f"{type(error).__name__}: {error}")
        duration_ms = round((time.monotonic() - started) * 1000)
        at = self.now()
        if outcome.delivered:
            status, next_at, result = "delivered", at, "delivered"
        elif attempt >= self.settings.delivery_max_attempts:
            status, next_at, result = "failed", at, "failed"
        else:
            status, next_at, result = "pending", at + backoff(self.settings, attempt), "retry"
        try:
            async with self._writing, self.context.engine.begin() as conn:
                await store.record_attempt(
                    conn,
                    delivery_id=row.id,
                    attempt=attempt,
                    at=at,
                    outcome="delivered" if outcome.delivered else "failed",
                    http_status=outcome.http_status,
                    error=outcome.error,
                    duration_ms=duration_ms,
                    status=status,
                    next_attempt_at=next_at,
                )
        except Exception as error:  # the database away: the claim lapses and it is sent again
            log.warning("delivery %s: attempt not recorded: %r", row.id, error)
            return
        metrics.NOTIFICATION_DELIVERIES.labels(row.channel, result).inc()

    async def _webhook(self, row: Any) -> Outcome:
        body = body_of(row)
        timestamp = int(time.time())
        response = await self.http.post(
            row.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(row.secret, timestamp, body),
                DELIVERY_HEADER: str(row.id),
            },
            timeout=self.settings.delivery_timeout_s,
        )
        if response.is_success:
            return Outcome(True, http_status=response.status_code)
        return Outcome(False, http_status=response.status_code, error=response.reason_phrase)

    async def _email(self, row: Any) -> Outcome:
        mail = EmailMessage()
        mail["From"] = self.settings.smtp_from
        mail["To"] = row.address
        mail["Subject"] = row.subject
        mail["X-Carbon-Delivery"] = str(row.id)
        mail.set_content(row.message)
        # smtplib blocks; in a thread the loop keeps serving the other sends.
        await asyncio.to_thread(self._send_mail, mail)
        return Outcome(True)

    def _send_mail(self, mail: EmailMessage) -> None:
        settings = self.settings
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.delivery_timeout_s
        ) as smtp:
            smtp.send_message(mail)


async def deliver_pending(context: ServiceContext) -> None:
    """Background task: send due deliveries, on whichever instances get to them (PostgreSQL
    shares them out with SKIP LOCKED)."""
    settings = DeliverySettings()
    async with httpx.AsyncClient(follow_redirects=False) as http:
        deliverer = Deliverer(context, settings=settings, http=http)
        try:
            await _deliver_forever(deliverer, settings)
        finally:
            # Stopping: a send cut short records nothing, and its claim lapses into a retry.
            for task in list(deliverer.in_flight):
                task.cancel()
            await deliverer.drain()


async def _deliver_forever(deliverer: Deliverer, settings: DeliverySettings) -> None:
    while True:
        try:
            claimed = await deliverer.start_due()
        except Exception as error:  # the database away: try again at the next tick
            log.warning("claiming deliveries failed: %r", error)
            claimed = 0
        if claimed == 0:
            if deliverer.in_flight:
                # A finished send frees a slot; new work is looked for at least every poll.
                await asyncio.wait(
                    deliverer.in_flight,
                    timeout=settings.delivery_poll_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            else:
                await asyncio.sleep(settings.delivery_poll_s)
