"""Delivery of notifications to subscribed webhooks and e-mail addresses: subscriptions over the
API, deliveries queued with the notices, signed requests to a real local HTTP server, retries,
the attempt log, replay, and mail to a real SMTP server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from carbon_platform import metrics
from carbon_platform.auth import Role
from notifier import store
from notifier.delivery import Deliverer, DeliverySettings, sign
from notifier.figures import FIGURES
from registry.domain.credit_code import make_credit_code
from tests.support import example
from tests.unit.support import Harness, consumed, entity_registered

CODE = make_credit_code(1)
OTHER = make_credit_code(2)
SETTINGS = DeliverySettings(
    delivery_timeout_s=1.0,
    delivery_backoff_base_s=30,
    delivery_backoff_max_s=3600,
    delivery_max_attempts=3,
)


class Endpoint:
    """A webhook receiver on a free local port: answers each request with the next status of
    `statuses` (the last one from then on), or never answers if `hang`; keeps what it got."""

    def __init__(self, *statuses: int, hang: bool = False) -> None:
        self.statuses = list(statuses)
        self.hang = hang
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> Endpoint:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._closing.set()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()  # the request line
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((headers, body))
        if self.hang:
            await self._closing.wait()
        else:
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            head = f"HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            writer.write(head.encode())
            await writer.drain()
        writer.close()


class Now:
    """Real time, moved on by the test to make a retry due without waiting for it."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.current


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def subscribe(notifier: Harness, body: dict[str, Any], **token: str) -> dict[str, Any]:
    role: Role = "regulator" if not token else ("entity" if "credit_code" in token else "district")
    async with notifier.client() as client:
        answer = await client.post(
            "/subscriptions", json=body, headers=notifier.token(role, **token)
        )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def notifications_gauge(notifier: Harness, recipient_type: str) -> float:
    """carbon_notifications{recipient_type} as the service sets it, from its database."""
    await FIGURES.refresh_gauges(notifier.context)
    value: float = metrics.NOTIFICATIONS.labels(recipient_type)._value.get()
    return value


async def deliveries(notifier: Harness, **filters: Any) -> list[Any]:
    arguments = {"status": None, "recipient_type": None, "recipient_id": None} | filters
    return await notifier.read(store.list_deliveries, limit=1000, **arguments)


async def test_a_webhook_request_is_signed_with_the_secret_shown_once(
    notifier: Harness, http: httpx.AsyncClient
) -> None:
    async with Endpoint(200) as endpoint:
        created = await subscribe(
            notifier, {"channel": "webhook", "url": endpoint.url}, credit_code=CODE
        )
        await notifier.handle(entity_registered(CODE, district="pudong"))
        deliverer = Deliverer(notifier.context, settings=SETTINGS, http=http)
        assert await deliverer.deliver_due() == 1

    secret = created["secret"]
    assert len(secret) == 64
    [(headers, body)] = endpoint.requests
    timestamp = headers["x-carbon-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(headers["x-carbon-signature"], f"sha256={expected.hexdigest()}")
    assert headers["x-carbon-signature"] == sign(secret, int(timestamp), body)
    assert abs(int(timestamp) - time.time()) < 60
    [delivery] = await deliveries(notifier)
    assert headers["x-carbon-delivery"] == str(delivery.id)
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["delivery_id"] == delivery.id
    assert (document["recipient_type"], document["recipient_id"]) == ("entity", CODE)
    assert document["credit_code"] == CODE
    assert document["event_type"] == "entity.registered"
    assert document["subject"] and document["message"] and document["event_id"]
    assert datetime.fromisoformat(document["created_at"]) == notifier.clock.now()
    assert delivery.status == "delivered" and delivery.attempts == 1
    # The secret is never shown again.
    async with notifier.client() as client:
        listed = await client.get(
            "/subscriptions", headers=notifier.token("entity", credit_code=CODE)
        )
    assert [row["id"] for row in listed.json()] == [created["id"]]
    assert "secret" not in listed.json()[0]


async def test_recipients_subscribe_for_themselves(notifier: Harness) -> None:
    entity = notifier.token("entity", credit_code=CODE)
    district = notifier.token("district", district="pudong")
    bureau = notifier.token("regulator")
    async with notifier.client() as client:
        own = await client.post(
            "/subscriptions",
            json={"channel": "email", "address": "ehs@example.com"},
            headers=entity,
        )
        assert own.status_code == 201
        assert (own.json()["recipient_type"], own.json()["recipient_id"]) == ("entity", CODE)
        assert own.json()["secret"] is None  # e-mail is not signed
        for_another = await client.post(
            "/subscriptions",
            json={
                "channel": "email",
                "address": "x@example.com",
                "recipient_type": "entity",
                "recipient_id": OTHER,
            },
            headers=entity,
        )
        assert for_another.status_code == 403
        districts = await client.post(
            "/subscriptions",
            json={"channel": "webhook", "url": "https://pd.example/hook"},
            headers=district,
        )
        assert (districts.json()["recipient_type"], districts.json()["recipient_id"]) == (
            "district",
            "pudong",
        )
        # The Bureau subscribes for itself unless it names another recipient.
        unnamed = await client.post(
            "/subscriptions", json={"channel": "email", "address": "a@example.com"}, headers=bureau
        )
        assert unnamed.status_code == 201
        assert (unnamed.json()["recipient_type"], unnamed.json()["recipient_id"]) == (
            "bureau",
            "bureau",
        )
        for_other = await client.post(
            "/subscriptions",
            json={
                "channel": "email",
                "address": "b@example.com",
                "recipient_type": "entity",
                "recipient_id": OTHER,
            },
            headers=bureau,
        )
        assert for_other.status_code == 201
        assert (
            await client.post(
                "/subscriptions",
                json={"channel": "email", "address": "c@example.com"},
                headers=notifier.token("verifier", agency="sh-verify-01"),
            )
        ).status_code == 403

        mine = await client.get("/subscriptions", headers=entity)
        assert [row["id"] for row in mine.json()] == [own.json()["id"]]
        everyone = await client.get("/subscriptions", headers=bureau)
        assert len(everyone.json()) == 4

        # Only its recipient (or the Bureau) deletes a subscription.
        other_entity = notifier.token("entity", credit_code=OTHER)
        path = f"/subscriptions/{own.json()['id']}"
        assert (await client.delete(path, headers=other_entity)).status_code == 403
        assert (await client.delete(path, headers=entity)).status_code == 200
        assert (await client.delete(path, headers=entity)).status_code == 404
        assert (await client.get("/subscriptions", headers=entity)).json() == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"channel": "webhook", "url": "ftp://example.com/hook"}, "url"),
        ({"channel": "webhook", "url": "https://"}, "url"),
        ({"channel": "webhook", "url": "https://example.com/" + "a" * 2048}, "url"),
        ({"channel": "webhook", "url": "https://exa mple.com/"}, "url"),
        ({"channel": "webhook"}, "url"),
        ({"channel": "email", "address": "not-an-address"}, "address"),
        ({"channel": "email", "address": "a@b"}, "address"),
        ({"channel": "sms", "number": "123"}, "channel"),
    ],
)
async def test_a_subscription_is_validated(
    notifier: Harness, body: dict[str, Any], where: str
) -> None:
    async with notifier.client() as client:
        answer = await client.post(
            "/subscriptions", json=body, headers=notifier.token("entity", credit_code=CODE)
        )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert where in json.dumps(error["details"])
    assert (
        await notifier.read(store.list_subscriptions, recipient_type=None, recipient_id=None) == []
    )


async def test_a_delivery_is_queued_per_subscription_of_each_recipient_told(
    notifier: Harness,
) -> None:
    webhook = await subscribe(
        notifier, {"channel": "webhook", "url": "https://a.example/hook"}, credit_code=CODE
    )
    email = await subscribe(
        notifier, {"channel": "email", "address": "a@example.com"}, credit_code=CODE
    )
    district = await subscribe(
        notifier, {"channel": "email", "address": "pd@example.com"}, district="pudong"
    )
    await subscribe(notifier, {"channel": "email", "address": "b@example.com"}, credit_code=OTHER)
    await subscribe(notifier, {"channel": "email", "address": "x@example.com"}, district="xuhui")
    gone = await subscribe(
        notifier, {"channel": "email", "address": "gone@example.com"}, credit_code=CODE
    )
    async with notifier.client() as client:
        await client.delete(f"/subscriptions/{gone['id']}", headers=notifier.token("regulator"))

    registered = consumed(entity_registered(CODE, district="pudong"))
    await notifier.handle(registered)
    await notifier.handle(registered)  # again: no new notice, so no new delivery

    rows = await deliveries(notifier)
    notices = await notifier.read(store.list_for, recipient_type=None, recipient_id=None, limit=10)
    notice_of = {(row.recipient_type, row.recipient_id): row.id for row in notices}
    assert sorted((row.subscription_id, row.notification_id) for row in rows) == sorted(
        [
            (webhook["id"], notice_of["entity", CODE]),
            (email["id"], notice_of["entity", CODE]),
            (district["id"], notice_of["district", "pudong"]),
        ]
    )
    assert {(row.status, row.attempts) for row in rows} == {("pending", 0)}
    assert {row.channel for row in rows if row.subscription_id == webhook["id"]} == {"webhook"}


async def test_the_bureaus_subscriptions_get_its_deadline_notices(
    notifier: Harness, http: httpx.AsyncClient
) -> None:
    bureau = notifier.token("regulator")
    district = notifier.token("district", district="pudong")
    told_before = await notifications_gauge(notifier, "bureau")
    async with Endpoint(200) as endpoint:
        async with notifier.client() as client:
            created = await client.post(
                "/subscriptions", json={"channel": "webhook", "url": endpoint.url}, headers=bureau
            )
            mail = await client.post(
                "/subscriptions",
                json={
                    "channel": "email",
                    "address": "bureau@example.com",
                    "recipient_type": "bureau",
                    "recipient_id": "bureau",
                },
                headers=bureau,
            )
        hook = created.json()
        assert (hook["recipient_type"], hook["recipient_id"]) == ("bureau", "bureau")
        assert (mail.json()["recipient_type"], mail.json()["recipient_id"]) == ("bureau", "bureau")
        escalated = consumed(example("surrender.case_escalated"))
        passed = consumed(example("surrender.deadline_passed"))
        await notifier.handle(escalated)
        await notifier.handle(passed)
        await notifier.handle(passed)  # again: no new notice, so no new delivery

        queued = await deliveries(notifier, recipient_type="bureau")
        assert sorted((row.subscription_id, row.channel) for row in queued) == sorted(
            [(hook["id"], "webhook")] * 2 + [(mail.json()["id"], "email")] * 2
        )
        assert {row.status for row in queued} == {"pending"}
        # Only the Bureau's subscriptions: the district's own notices queue nothing for it.
        assert {row.recipient_id for row in queued} == {"bureau"}
        assert await deliveries(notifier, recipient_type="district") == []

        # No SMTP server here: the e-mail subscription goes, and its deliveries with it.
        async with notifier.client() as client:
            path = f"/subscriptions/{mail.json()['id']}"
            assert (await client.delete(path, headers=bureau)).status_code == 200
        deliverer = Deliverer(notifier.context, settings=SETTINGS, http=http)
        assert await deliverer.deliver_due() == 2

    secret = hook["secret"]
    documents = []
    for headers, body in endpoint.requests:
        assert headers["x-carbon-signature"] == sign(
            secret, int(headers["x-carbon-timestamp"]), body
        )
        documents.append(json.loads(body))
    assert sorted((d["event_type"], d["credit_code"]) for d in documents) == [
        ("surrender.case_escalated", "91310115MA1K4C8N0W"),
        ("surrender.deadline_passed", None),  # about the whole cycle, no one entity
    ]
    assert {(d["recipient_type"], d["recipient_id"]) for d in documents} == {("bureau", "bureau")}
    assert await notifications_gauge(notifier, "bureau") == told_before + 2

    async with notifier.client() as client:
        own = await client.get("/notifications?recipient_type=bureau", headers=bureau)
        assert sorted(row["event_type"] for row in own.json()) == [
            "surrender.case_escalated",
            "surrender.deadline_passed",
        ]
        # A district sees neither the Bureau's notices nor its subscriptions and deliveries.
        theirs = await client.get("/notifications?recipient_type=bureau", headers=district)
        assert {row["recipient_type"] for row in theirs.json()} == {"district"}
        assert (await client.get("/subscriptions", headers=district)).json() == []
        assert (await client.get("/deliveries", headers=district)).json() == []
        delivered = await deliveries(notifier, recipient_type="bureau", status="delivered")
        assert {row.subscription_id for row in delivered} == {hook["id"]}
        attempts = f"/deliveries/{delivered[0].id}/attempts"
        assert (await client.get(attempts, headers=district)).status_code == 403
        assert (await client.get(attempts, headers=bureau)).status_code == 200
        named_bureau = notifier.token("district", district="bureau")
        path = f"/subscriptions/{hook['id']}"
        assert (await client.delete(path, headers=named_bureau)).status_code == 403
        assert (await client.delete(path, headers=bureau)).status_code == 200


async def test_only_the_bureau_subscribes_for_the_bureau(notifier: Harness) -> None:
    bureau_recipient = {"recipient_type": "bureau", "recipient_id": "bureau"}
    async with notifier.client() as client:
        for token in (
            notifier.token("entity", credit_code=CODE),
            notifier.token("district", district="pudong"),
            notifier.token("district", district="bureau"),
        ):
            answer = await client.post(
                "/subscriptions",
                json={"channel": "email", "address": "a@example.com", **bureau_recipient},
                headers=token,
            )
            assert answer.status_code == 403
        for body in (
            {"recipient_type": "bureau", "recipient_id": "pudong"},
            {"recipient_id": "pudong"},
            {"recipient_type": "district"},
        ):
            answer = await client.post(
                "/subscriptions",
                json={"channel": "email", "address": "a@example.com", **body},
                headers=notifier.token("regulator"),
            )
            assert answer.status_code == 422
            assert answer.json()["error"]["code"] == "invalid_request"
    assert (
        await notifier.read(store.list_subscriptions, recipient_type=None, recipient_id=None) == []
    )


async def test_a_failing_endpoint_is_retried_with_backoff_and_each_attempt_logged(
    notifier: Harness, http: httpx.AsyncClient
) -> None:
    now = Now()
    delivered_before = metrics.NOTIFICATION_DELIVERIES.labels("webhook", "delivered")._value.get()
    async with Endpoint(500, 503, 200) as endpoint:
        await subscribe(notifier, {"channel": "webhook", "url": endpoint.url}, credit_code=CODE)
        await notifier.handle(entity_registered(CODE))
        deliverer = Deliverer(notifier.context, settings=SETTINGS, http=http, now=now)

        assert await deliverer.deliver_due() == 1
        [delivery] = await deliveries(notifier)
        assert (delivery.status, delivery.attempts) == ("pending", 1)
        assert delivery.next_attempt_at == now() + timedelta(seconds=30)
        assert await deliverer.deliver_due() == 0  # not due yet

        now.current += timedelta(seconds=30)
        assert await deliverer.deliver_due() == 1
        [delivery] = await deliveries(notifier)
        assert (delivery.status, delivery.attempts) == ("pending", 2)
        assert delivery.next_attempt_at == now() + timedelta(seconds=60)  # doubled

        now.current += timedelta(seconds=60)
        assert await deliverer.deliver_due() == 1

    [delivery] = await deliveries(notifier)
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert delivery.delivered_at == now()
    assert len(endpoint.requests) == 3
    log = await notifier.read(store.attempts_of, delivery_id=delivery.id)
    assert [(row.attempt, row.outcome, row.http_status) for row in log] == [
        (1, "failed", 500),
        (2, "failed", 503),
        (3, "delivered", 200),
    ]
    assert all(row.duration_ms >= 0 for row in log)
    assert metrics.NOTIFICATION_DELIVERIES.labels("webhook", "delivered")._value.get() == (
        delivered_before + 1
    )
    async with notifier.client() as client:
        answer = await client.get(
            f"/deliveries/{delivery.id}/attempts",
            headers=notifier.token("entity", credit_code=CODE),
        )
        assert [row["http_status"] for row in answer.json()] == [500, 503, 200]
        refused = await client.get(
            f"/deliveries/{delivery.id}/attempts",
            headers=notifier.token("entity", credit_code=OTHER),
        )
        assert refused.status_code == 403


async def test_a_hanging_endpoint_does_not_delay_a_healthy_one(
    notifier: Harness, http: httpx.AsyncClient
) -> None:
    async with Endpoint(hang=True) as hanging, Endpoint(200) as healthy:
        await subscribe(notifier, {"channel": "webhook", "url": hanging.url}, credit_code=CODE)
        await subscribe(notifier, {"channel": "webhook", "url": healthy.url}, credit_code=CODE)
        await notifier.handle(entity_registered(CODE))
        deliverer = Deliverer(notifier.context, settings=SETTINGS, http=http)
        started = time.monotonic()
        assert await deliverer.start_due() == 2
        while not await deliveries(notifier, status="delivered"):
            assert time.monotonic() - started < SETTINGS.delivery_timeout_s / 2
            await asyncio.sleep(0.01)
        assert len(hanging.requests) == 1  # still waiting for its answer
        [waiting] = await deliveries(notifier, status="pending")
        assert waiting.attempts == 0
        await deliverer.drain()

    [timed_out] = await deliveries(notifier, status="pending")
    assert timed_out.attempts == 1
    [attempt] = await notifier.read(store.attempts_of, delivery_id=timed_out.id)
    assert attempt.outcome == "failed" and attempt.http_status is None
    assert "timed out" in (attempt.error or "")
    assert attempt.duration_ms >= 900


async def test_a_delivery_out_of_attempts_fails_and_a_replay_delivers_it(
    notifier: Harness, http: httpx.AsyncClient
) -> None:
    now = Now()
    settings = SETTINGS.model_copy(update={"delivery_max_attempts": 2})
    entity = notifier.token("entity", credit_code=CODE)
    async with Endpoint(500, 500, 200) as endpoint:
        await subscribe(notifier, {"channel": "webhook", "url": endpoint.url}, credit_code=CODE)
        await notifier.handle(entity_registered(CODE))
        deliverer = Deliverer(notifier.context, settings=settings, http=http, now=now)
        await deliverer.deliver_due()
        now.current += timedelta(seconds=30)
        await deliverer.deliver_due()
        now.current += timedelta(days=1)
        assert await deliverer.deliver_due() == 0  # failed: never tried again by itself

        async with notifier.client() as client:
            failed = (await client.get("/deliveries?status=failed", headers=entity)).json()
            assert [(row["status"], row["attempts"]) for row in failed] == [("failed", 2)]
            path = f"/deliveries/{failed[0]['id']}/replay"
            others = notifier.token("entity", credit_code=OTHER)
            assert (await client.get("/deliveries?status=failed", headers=others)).json() == []
            assert (await client.post(path, headers=others)).status_code == 403
            bureau = (
                await client.get("/deliveries?status=failed", headers=notifier.token("regulator"))
            ).json()
            assert [row["id"] for row in bureau] == [failed[0]["id"]]

            replayed = await client.post(path, headers=entity)
            assert replayed.status_code == 200
            assert (replayed.json()["status"], replayed.json()["attempts"]) == ("pending", 0)
            again = await client.post(path, headers=entity)
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "delivery_not_failed"

        assert await deliverer.deliver_due() == 1

    [delivery] = await deliveries(notifier)
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    log = await notifier.read(store.attempts_of, delivery_id=delivery.id)
    assert [(row.attempt, row.outcome) for row in log] == [
        (1, "failed"),
        (2, "failed"),
        (1, "delivered"),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Mailbox:
    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


async def test_an_email_subscription_gets_the_notice_by_smtp(
    notifier: Harness, http: httpx.AsyncClient
) -> None:
    mailbox = Mailbox()
    port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        settings = SETTINGS.model_copy(
            update={"smtp_port": port, "smtp_from": "notifier@carbon.example"}
        )
        await subscribe(
            notifier, {"channel": "email", "address": "ehs@example.com"}, credit_code=CODE
        )
        await notifier.handle(entity_registered(CODE))
        deliverer = Deliverer(notifier.context, settings=settings, http=http)
        assert await deliverer.deliver_due() == 1
    finally:
        smtp.stop()

    [notice] = await notifier.read(
        store.list_for, recipient_type="entity", recipient_id=CODE, limit=1
    )
    [(recipients, content)] = mailbox.received
    assert recipients == ["ehs@example.com"]
    mail = message_from_bytes(content, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == notice.subject
    assert mail["From"] == "notifier@carbon.example"
    assert mail.get_content().strip() == notice.message.strip()
    [delivery] = await deliveries(notifier)
    assert (delivery.channel, delivery.status) == ("email", "delivered")


async def test_an_unreachable_smtp_server_is_a_failed_attempt(
    notifier: Harness, http: httpx.AsyncClient
) -> None:
    settings = SETTINGS.model_copy(update={"smtp_port": free_port()})  # nothing listens there
    await subscribe(notifier, {"channel": "email", "address": "ehs@example.com"}, credit_code=CODE)
    await notifier.handle(entity_registered(CODE))
    await Deliverer(notifier.context, settings=settings, http=http).deliver_due()

    [delivery] = await deliveries(notifier)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    [attempt] = await notifier.read(store.attempts_of, delivery_id=delivery.id)
    assert attempt.outcome == "failed" and "ConnectionRefused" in (attempt.error or "")
