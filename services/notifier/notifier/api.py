"""Notifier HTTP API: each recipient (an entity, a district bureau, the Bureau) reads its own
notifications, subscribes webhooks and e-mail addresses to them, and sees (and replays) their
deliveries. The Bureau also reads and manages any other recipient's."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import uuid4

from fastapi import APIRouter, Query

from carbon_contracts.errors import Conflict, Forbidden, Invalid, NotFound
from carbon_platform.access import DELIVERY, NOTIFICATION, OPERATIONS, AccessPolicy, Owner, allowed
from carbon_platform.auth import Principal
from carbon_platform.context import Context
from carbon_platform.http import refusals
from notifier import commands, store
from notifier.domain.messages import BUREAU
from notifier.schemas import (
    AlertmanagerNotification,
    AlertsReceived,
    CreatedSubscription,
    DeliveryAttemptView,
    DeliveryView,
    NotificationView,
    Recipient,
    Subscribe,
    SubscriptionView,
)

router = APIRouter(tags=["notifier"])


@router.get("/notifications", responses=refusals(403), response_model=list[NotificationView])
async def list_notifications(
    context: Context,
    principal: Annotated[Principal, allowed(NOTIFICATION, "read")],
    recipient_type: Recipient | None = None,
    recipient_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    event_type: Annotated[str | None, Query(max_length=128)] = None,
) -> list[NotificationView]:
    """Newest first. An entity sees its own notifications, a district its own; the Bureau may
    filter any (its own: recipient_type=bureau). `event_type` keeps the notices of one event
    type (e.g. surrender.overdue)."""
    own_type, own_id = _own(principal, NOTIFICATION, "read")
    if own_type:
        recipient_type, recipient_id = own_type, own_id
    elif recipient_id and not recipient_type:
        raise Invalid("invalid_request", "recipient_id needs recipient_type")
    async with context.reader.connect() as conn:
        rows = await store.list_for(
            conn,
            recipient_type=recipient_type,
            recipient_id=recipient_id,
            limit=limit,
            event_type=event_type,
        )
    return [NotificationView.model_validate(row, from_attributes=True) for row in rows]


def _own(
    principal: Principal, policy: AccessPolicy, action: str
) -> tuple[Recipient | None, str | None]:
    """The recipient a caller's listing is forced to: itself, or (the Bureau) None, None for
    any."""
    scope = policy.scope(principal, action)
    if scope.credit_code:
        return "entity", scope.credit_code
    if scope.district:
        return "district", scope.district
    return None, None


def _owner(recipient_type: str, recipient_id: str) -> Owner:
    """Whom a subscription or delivery belongs to. The Bureau's own belong to no entity or
    district, so only the Bureau's relation reaches them (a district named "bureau" does not)."""
    if recipient_type == "entity":
        return Owner(credit_code=recipient_id)
    if recipient_type == "district":
        return Owner(district=recipient_id)
    return Owner()


def _bureau_recipient(
    recipient_type: Recipient | None, recipient_id: str | None
) -> tuple[Recipient, str]:
    """Whom the Bureau subscribes for: itself unless it names an entity or a district (both
    type and id)."""
    if recipient_type in (None, "bureau"):
        if recipient_id not in (None, BUREAU):
            raise Invalid(
                "invalid_request",
                f"the Bureau's recipient_id is {BUREAU}; to subscribe for an entity or a "
                "district, name its recipient_type too",
            )
        return "bureau", BUREAU
    if not recipient_id:
        raise Invalid("invalid_request", f"recipient_type {recipient_type} needs recipient_id")
    return recipient_type, recipient_id


def _subscription(row: Any) -> SubscriptionView:
    return SubscriptionView.model_validate(row, from_attributes=True)


@router.post(
    "/subscriptions",
    status_code=201,
    responses=refusals(403),
    response_model=CreatedSubscription,
)
async def subscribe(
    body: Subscribe,
    context: Context,
    principal: Annotated[Principal, allowed(DELIVERY, "subscribe")],
) -> CreatedSubscription:
    """A recipient subscribes a webhook or an e-mail address to its notifications: an entity or
    a district for itself, the Bureau for itself (recipient bureau) or for the entity or district
    it names. A webhook's signing secret is in this answer only."""
    recipient_type, recipient_id = _own(principal, DELIVERY, "subscribe")
    if recipient_type is None:
        recipient_type, recipient_id = _bureau_recipient(body.recipient_type, body.recipient_id)
    elif (body.recipient_type, body.recipient_id) not in (
        (None, None),
        (recipient_type, recipient_id),
    ):
        raise Forbidden("forbidden", "a recipient subscribes only for itself")
    assert recipient_id is not None
    DELIVERY.check(principal, "subscribe", _owner(recipient_type, recipient_id))
    secret = secrets.token_hex(32) if body.channel == "webhook" else None
    subscription_id = str(uuid4())
    async with context.transaction() as uow:
        await store.add_subscription(
            uow.conn,
            subscription_id=subscription_id,
            recipient_type=recipient_type,
            recipient_id=recipient_id,
            channel=body.channel,
            url=getattr(body, "url", None),
            address=getattr(body, "address", None),
            secret=secret,
            at=uow.now,
        )
        row = await store.get_subscription(uow.conn, subscription_id=subscription_id)
    return CreatedSubscription(**_subscription(row).model_dump(), secret=secret)


@router.get("/subscriptions", responses=refusals(403), response_model=list[SubscriptionView])
async def list_subscriptions(
    context: Context,
    principal: Annotated[Principal, allowed(DELIVERY, "read")],
    recipient_type: Recipient | None = None,
    recipient_id: str | None = None,
) -> list[SubscriptionView]:
    """A recipient's active subscriptions (the Bureau may filter any); never their secrets."""
    own_type, own_id = _own(principal, DELIVERY, "read")
    if own_type:
        recipient_type, recipient_id = own_type, own_id
    async with context.reader.connect() as conn:
        rows = await store.list_subscriptions(
            conn, recipient_type=recipient_type, recipient_id=recipient_id
        )
    return [_subscription(row) for row in rows]


@router.delete(
    "/subscriptions/{subscription_id}",
    responses=refusals(403, 404),
    response_model=SubscriptionView,
)
async def unsubscribe(
    subscription_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(DELIVERY, "subscribe")],
) -> SubscriptionView:
    """Stop a subscription; its deliveries still waiting are cancelled. Answers what was
    deleted."""
    async with context.transaction() as uow:
        row = await store.get_subscription(uow.conn, subscription_id=subscription_id)
        if row is None:
            raise NotFound("subscription_not_found", f"no subscription {subscription_id}")
        DELIVERY.check(principal, "subscribe", _owner(row.recipient_type, row.recipient_id))
        await store.delete_subscription(uow.conn, subscription_id=subscription_id, at=uow.now)
    return _subscription(row)


@router.get("/deliveries", responses=refusals(403), response_model=list[DeliveryView])
async def list_deliveries(
    context: Context,
    principal: Annotated[Principal, allowed(DELIVERY, "read")],
    status: Literal["pending", "delivered", "failed", "cancelled"] | None = None,
    recipient_type: Recipient | None = None,
    recipient_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[DeliveryView]:
    """Newest first: a recipient's own deliveries, the Bureau's pick of any."""
    own_type, own_id = _own(principal, DELIVERY, "read")
    if own_type:
        recipient_type, recipient_id = own_type, own_id
    async with context.reader.connect() as conn:
        rows = await store.list_deliveries(
            conn,
            status=status,
            recipient_type=recipient_type,
            recipient_id=recipient_id,
            limit=limit,
        )
    return [DeliveryView.model_validate(row, from_attributes=True) for row in rows]


@router.get(
    "/deliveries/{delivery_id}/attempts",
    responses=refusals(403, 404),
    response_model=list[DeliveryAttemptView],
)
async def delivery_attempts(
    delivery_id: int,
    context: Context,
    principal: Annotated[Principal, allowed(DELIVERY, "read")],
) -> list[DeliveryAttemptView]:
    """Every attempt at a delivery, oldest first, replays included."""
    async with context.reader.connect() as conn:
        row = await store.get_delivery(conn, delivery_id=delivery_id)
        if row is None:
            raise NotFound("delivery_not_found", f"no delivery {delivery_id}")
        DELIVERY.check(principal, "read", _owner(row.recipient_type, row.recipient_id))
        attempts = await store.attempts_of(conn, delivery_id=delivery_id)
    return [DeliveryAttemptView.model_validate(a, from_attributes=True) for a in attempts]


@router.post(
    "/deliveries/{delivery_id}/replay",
    responses=refusals(403, 404, 409),
    response_model=DeliveryView,
)
async def replay_delivery(
    delivery_id: int,
    context: Context,
    principal: Annotated[Principal, allowed(DELIVERY, "replay")],
) -> DeliveryView:
    """A failed delivery is tried again from its first attempt, now; its log keeps the
    attempts that failed."""
    async with context.transaction() as uow:
        row = await store.get_delivery(uow.conn, delivery_id=delivery_id)
        if row is None:
            raise NotFound("delivery_not_found", f"no delivery {delivery_id}")
        DELIVERY.check(principal, "replay", _owner(row.recipient_type, row.recipient_id))
        if row.status != "failed":
            raise Conflict("delivery_not_failed", f"delivery {delivery_id} is {row.status}")
        if await store.get_subscription(uow.conn, subscription_id=row.subscription_id) is None:
            raise Conflict("subscription_deleted", "the delivery's subscription was deleted")
        # Retries run on real time, not the domain clock.
        await store.replay(uow.conn, delivery_id=delivery_id, now=datetime.now(UTC))
        replayed = await store.get_delivery(uow.conn, delivery_id=delivery_id)
    return DeliveryView.model_validate(replayed, from_attributes=True)


@router.post("/alerts", responses=refusals(403), response_model=AlertsReceived)
async def receive_alerts(
    body: AlertmanagerNotification,
    context: Context,
    _: Annotated[Principal, allowed(OPERATIONS, "operate")],
) -> AlertsReceived:
    """Alertmanager's webhook (payload version 4): each alert, firing or resolved, becomes a
    notice to the Bureau and is delivered to its subscriptions. Alertmanager resends; an alert
    already told in the same state records nothing again."""
    alerts = [alert.alert() for alert in body.alerts]
    recorded = await context.execute(commands.receive_alerts, alerts)
    return AlertsReceived(received=len(alerts), recorded=recorded)
