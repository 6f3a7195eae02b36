"""The notifier consumes every public topic and records who must be told."""

from __future__ import annotations

from typing import Any

from carbon_contracts.catalogue import catalogue
from carbon_contracts.events import EntityRegistered
from carbon_platform import metrics
from carbon_platform.codec import Event
from carbon_platform.context import Handler, ServiceContext, Transaction
from notifier import store
from notifier.domain.messages import notifications_for


async def notify(event: Event[Any], tx: Transaction, context: ServiceContext) -> None:
    payload = event.payload
    if isinstance(payload, EntityRegistered):
        await store.set_district(
            tx.conn, credit_code=payload.credit_code, district=payload.district
        )
    district = await store.district_of(tx.conn, credit_code=payload.credit_code)
    items = notifications_for(payload, district=district, policy=context.policy)
    await store.record(
        tx.conn,
        items=items,
        credit_code=payload.credit_code,
        event_id=event.id,
        event_type=event.type,
        at=tx.now,
    )
    for item in items:
        tx.after_commit.append(metrics.NOTIFICATIONS.labels(item.recipient_type).inc)


HANDLERS: dict[str, dict[str, Handler]] = {
    topic.name: {event_type: notify for event_type in topic.event_types}
    for topic in catalogue().domain_topics()
}
