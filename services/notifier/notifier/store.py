"""Notifier tables: where each entity is supervised, the notifications recorded (for entities,
districts and the Bureau), the district notices waiting for an entity's district to be known,
and the delivery of notifications to the webhooks and e-mail addresses recipients subscribe."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_platform.db import Upsert
from carbon_platform.tables import UtcDateTime, messaging_tables
from notifier.domain.messages import Notification

metadata = MetaData()
messaging = messaging_tables(metadata)

# Projection of entity.registered: the district bureau supervising each entity.
supervision = Table(
    "supervision",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("district", String(64), nullable=False),
)

# recipient_type: entity (recipient_id its credit code), district (its code) or bureau ("bureau").
# credit_code: the entity the event is about; NULL for a cycle-wide event (deadline_passed).
notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient_type", String(16), nullable=False),
    Column("recipient_id", String(64), nullable=False),
    Column("credit_code", String(18), nullable=True),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("recipient_type", "recipient_id", "event_id", name="uq_notifications_once"),
)

# District notices of events handled before the entity's entity.registered (the topics are
# consumed independently): told once the district is known. The texts never name the district.
pending_district_notices = Table(
    "pending_district_notices",
    metadata,
    Column("credit_code", String(18), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
)

# Where a recipient wants its notifications sent besides the in-platform list. A webhook's
# secret signs every request to it; it is shown once, when the subscription is created.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("recipient_type", String(16), nullable=False),
    Column("recipient_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("url", String(2048), nullable=True),
    Column("address", String(254), nullable=True),
    Column("secret", String(64), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("deleted_at", UtcDateTime(), nullable=True),
    Index("ix_subscriptions_recipient", "recipient_type", "recipient_id"),
)

# One notification to one subscription: written with the notification (an outbox of sorts), sent
# by the deliver_pending task. A row being sent has next_attempt_at pushed past the send's
# timeout (its claim), so another instance takes it only if this one died mid-send.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("notification_id", Integer, nullable=False),
    Column("subscription_id", String(36), nullable=False),
    Column("recipient_type", String(16), nullable=False),
    Column("recipient_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("delivered_at", UtcDateTime(), nullable=True),
    UniqueConstraint("notification_id", "subscription_id", name="uq_deliveries_once"),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
)

# Every attempt at a delivery, kept when a failed delivery is replayed.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error", String(500), nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_delivery_attempts_delivery", "delivery_id"),
)


def _supervise(insert: Callable[[Table], Any]) -> Any:
    statement = insert(supervision)
    return statement.on_conflict_do_update(
        index_elements=["credit_code"], set_={"district": statement.excluded.district}
    )


def _notify(insert: Callable[[Table], Any]) -> Any:
    # A notice already recorded for the recipient and event stays the only one: an event handled
    # again, or a waiting notice told after all, adds nothing.
    return (
        insert(notifications)
        .on_conflict_do_nothing(index_elements=["recipient_type", "recipient_id", "event_id"])
        .returning(notifications.c.id, notifications.c.recipient_type, notifications.c.recipient_id)
    )


def _keep(insert: Callable[[Table], Any]) -> Any:
    return insert(pending_district_notices).on_conflict_do_nothing(
        index_elements=["credit_code", "event_id"]
    )


# Built once: executing a prepared statement with parameters costs a third of building one.
_SUPERVISE = Upsert(_supervise)
_DISTRICT = select(supervision.c.district).where(supervision.c.credit_code == bindparam("code"))
_NOTIFY = Upsert(_notify)
_KEEP = Upsert(_keep)
_TAKE_WAITING = (
    pending_district_notices.delete()
    .where(pending_district_notices.c.credit_code == bindparam("code"))
    .returning(pending_district_notices)
)
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")


async def lock_supervision(conn: AsyncConnection, *, credit_code: str) -> None:
    """Hold the entity's supervision until the transaction ends, so that learning its district
    and keeping a notice for the district cannot interleave: otherwise each transaction could
    miss the other's uncommitted row and the notice would wait forever. PostgreSQL only;
    SQLite serialises writers."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK, {"key": f"notifier.supervision/{credit_code}"})


async def set_district(conn: AsyncConnection, *, credit_code: str, district: str) -> None:
    await conn.execute(_SUPERVISE.on(conn), {"credit_code": credit_code, "district": district})


async def district_of(conn: AsyncConnection, *, credit_code: str) -> str | None:
    return await conn.scalar(_DISTRICT, {"code": credit_code})


async def record(
    conn: AsyncConnection,
    *,
    items: list[Notification],
    credit_code: str | None,
    event_id: str,
    event_type: str,
    at: datetime,
) -> list[str]:
    """Record the notices; returns the recipient type of each one new (not recorded before).
    `credit_code` is None for a cycle-wide event, about no one entity."""
    return await _insert(
        conn,
        [
            {
                "recipient_type": item.recipient_type,
                "recipient_id": item.recipient_id,
                "credit_code": credit_code,
                "event_id": event_id,
                "event_type": event_type,
                "subject": item.subject,
                "message": item.message,
                "created_at": at,
            }
            for item in items
        ],
    )


async def keep_for_district(
    conn: AsyncConnection,
    *,
    credit_code: str,
    event_id: str,
    event_type: str,
    subject: str,
    message: str,
    at: datetime,
) -> None:
    """Keep a district notice until the entity's district is known."""
    await conn.execute(
        _KEEP.on(conn),
        {
            "credit_code": credit_code,
            "event_id": event_id,
            "event_type": event_type,
            "subject": subject,
            "message": message,
            "received_at": at,
        },
    )


async def tell_district_what_waited(
    conn: AsyncConnection, *, credit_code: str, district: str
) -> list[str]:
    """Record the notices kept for the entity's district, dated when their events were received,
    and forget them; returns the recipient type of each one new."""
    waiting = sorted(
        await conn.execute(_TAKE_WAITING, {"code": credit_code}), key=lambda row: row.received_at
    )
    return await _insert(
        conn,
        [
            {
                "recipient_type": "district",
                "recipient_id": district,
                "credit_code": credit_code,
                "event_id": row.event_id,
                "event_type": row.event_type,
                "subject": row.subject,
                "message": row.message,
                "created_at": row.received_at,
            }
            for row in waiting
        ],
    )


async def _insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[str]:
    """Insert the notices and, in the same transaction, one pending delivery of each new one to
    every active subscription of its recipient; returns the recipient type of each one new."""
    if not rows:
        return []
    inserted = list(await conn.execute(_NOTIFY.on(conn), rows))
    await _queue_deliveries(conn, inserted)
    return [row.recipient_type for row in inserted]


async def _queue_deliveries(conn: AsyncConnection, inserted: Sequence[Any]) -> None:
    if not inserted:
        return
    recipients = {(row.recipient_type, row.recipient_id) for row in inserted}
    active = list(
        await conn.execute(
            select(subscriptions).where(
                subscriptions.c.deleted_at.is_(None),
                tuple_(subscriptions.c.recipient_type, subscriptions.c.recipient_id).in_(
                    recipients
                ),
            )
        )
    )
    if not active:
        return
    # Retries run on real time, not the domain clock (which a test or a replay may set anywhere).
    due = datetime.now(UTC)
    await conn.execute(
        deliveries.insert(),
        [
            {
                "notification_id": row.id,
                "subscription_id": subscription.id,
                "recipient_type": row.recipient_type,
                "recipient_id": row.recipient_id,
                "channel": subscription.channel,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": due,
                "created_at": due,
            }
            for row in inserted
            for subscription in active
            if (subscription.recipient_type, subscription.recipient_id)
            == (row.recipient_type, row.recipient_id)
        ],
    )


async def list_for(
    conn: AsyncConnection,
    *,
    recipient_type: str | None,
    recipient_id: str | None,
    limit: int,
    event_type: str | None = None,
) -> list[Any]:
    query = select(notifications).order_by(notifications.c.id.desc()).limit(limit)
    for column, value in (
        (notifications.c.recipient_type, recipient_type),
        (notifications.c.recipient_id, recipient_id),
        (notifications.c.event_type, event_type),
    ):
        if value:
            query = query.where(column == value)
    return list(await conn.execute(query))


# --- subscriptions and deliveries -------------------------------------------------------------


async def add_subscription(
    conn: AsyncConnection,
    *,
    subscription_id: str,
    recipient_type: str,
    recipient_id: str,
    channel: str,
    url: str | None,
    address: str | None,
    secret: str | None,
    at: datetime,
) -> None:
    await conn.execute(
        subscriptions.insert(),
        {
            "id": subscription_id,
            "recipient_type": recipient_type,
            "recipient_id": recipient_id,
            "channel": channel,
            "url": url,
            "address": address,
            "secret": secret,
            "created_at": at,
        },
    )


async def get_subscription(conn: AsyncConnection, *, subscription_id: str) -> Any | None:
    """An active subscription (a deleted one is gone for its recipient)."""
    return (
        await conn.execute(
            select(subscriptions).where(
                subscriptions.c.id == subscription_id, subscriptions.c.deleted_at.is_(None)
            )
        )
    ).first()


async def list_subscriptions(
    conn: AsyncConnection, *, recipient_type: str | None, recipient_id: str | None
) -> list[Any]:
    query = (
        select(subscriptions)
        .where(subscriptions.c.deleted_at.is_(None))
        .order_by(subscriptions.c.created_at, subscriptions.c.id)
    )
    if recipient_type:
        query = query.where(subscriptions.c.recipient_type == recipient_type)
    if recipient_id:
        query = query.where(subscriptions.c.recipient_id == recipient_id)
    return list(await conn.execute(query))


async def delete_subscription(conn: AsyncConnection, *, subscription_id: str, at: datetime) -> None:
    """Stop the subscription: nothing more is queued for it, and what waits is cancelled (a
    failed delivery stays failed, for the record)."""
    await conn.execute(
        subscriptions.update()
        .where(subscriptions.c.id == subscription_id, subscriptions.c.deleted_at.is_(None))
        .values(deleted_at=at)
    )
    await conn.execute(
        deliveries.update()
        .where(deliveries.c.subscription_id == subscription_id, deliveries.c.status == "pending")
        .values(status="cancelled")
    )


async def claim_due(
    conn: AsyncConnection, *, now: datetime, until: datetime, limit: int
) -> list[Any]:
    """Take up to `limit` pending deliveries due by `now` and hold them until `until` (past the
    send's timeout); returns what sending needs. On PostgreSQL rows another instance is claiming
    are skipped, not waited for; SQLite serialises writers."""
    due = (
        select(deliveries.c.id)
        .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now)
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await conn.execute(due)).scalars())
    if not ids:
        return []
    await conn.execute(
        deliveries.update().where(deliveries.c.id.in_(ids)).values(next_attempt_at=until)
    )
    query = (
        select(
            deliveries.c.id,
            deliveries.c.attempts,
            deliveries.c.channel,
            subscriptions.c.url,
            subscriptions.c.address,
            subscriptions.c.secret,
            notifications.c.recipient_type,
            notifications.c.recipient_id,
            notifications.c.credit_code,
            notifications.c.event_type,
            notifications.c.event_id,
            notifications.c.subject,
            notifications.c.message,
            notifications.c.created_at,
        )
        .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
        .join(notifications, notifications.c.id == deliveries.c.notification_id)
        .where(deliveries.c.id.in_(ids))
        .order_by(deliveries.c.id)
    )
    return list(await conn.execute(query))


async def record_attempt(
    conn: AsyncConnection,
    *,
    delivery_id: int,
    attempt: int,
    at: datetime,
    outcome: str,
    http_status: int | None,
    error: str | None,
    duration_ms: int,
    status: str,
    next_attempt_at: datetime,
) -> None:
    """Log one attempt and move the delivery on: delivered, pending again, or failed. A delivery
    cancelled meanwhile (its subscription deleted) stays cancelled."""
    await conn.execute(
        delivery_attempts.insert(),
        {
            "delivery_id": delivery_id,
            "attempt": attempt,
            "at": at,
            "outcome": outcome,
            "http_status": http_status,
            "error": error[:500] if error else None,
            "duration_ms": duration_ms,
        },
    )
    await conn.execute(
        deliveries.update()
        .where(deliveries.c.id == delivery_id, deliveries.c.status == "pending")
        .values(
            status=status,
            attempts=attempt,
            next_attempt_at=next_attempt_at,
            delivered_at=at if status == "delivered" else None,
        )
    )


async def get_delivery(conn: AsyncConnection, *, delivery_id: int) -> Any | None:
    return (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))).first()


async def list_deliveries(
    conn: AsyncConnection,
    *,
    status: str | None,
    recipient_type: str | None,
    recipient_id: str | None,
    limit: int,
) -> list[Any]:
    query = select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
    if status:
        query = query.where(deliveries.c.status == status)
    if recipient_type:
        query = query.where(deliveries.c.recipient_type == recipient_type)
    if recipient_id:
        query = query.where(deliveries.c.recipient_id == recipient_id)
    return list(await conn.execute(query))


async def attempts_of(conn: AsyncConnection, *, delivery_id: int) -> list[Any]:
    return list(
        await conn.execute(
            select(delivery_attempts)
            .where(delivery_attempts.c.delivery_id == delivery_id)
            .order_by(delivery_attempts.c.id)
        )
    )


async def replay(conn: AsyncConnection, *, delivery_id: int, now: datetime) -> bool:
    """A failed delivery is tried again from its first attempt; False if it is not failed."""
    result = await conn.execute(
        deliveries.update()
        .where(deliveries.c.id == delivery_id, deliveries.c.status == "failed")
        .values(status="pending", attempts=0, next_attempt_at=now)
    )
    return bool(result.rowcount)
