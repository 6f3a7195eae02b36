"""The notifier's event handler: one function over a unit of work that records who must be
told of an event. No HTTP, no Kafka."""

from __future__ import annotations

from typing import Any

from carbon_contracts.catalogue import catalogue
from carbon_contracts.events import EntityRegistered, EventPayload
from carbon_platform import metrics
from carbon_platform.codec import Event
from carbon_platform.context import Handler, UnitOfWork
from notifier import store
from notifier.domain.messages import notifications_for


async def notify(uow: UnitOfWork, event: Event[Any]) -> None:
    """Tell the entity, and the district bureau supervising it, what happened."""
    payload = event.payload
    if not isinstance(payload, EventPayload):
        # A cycle-wide event (verification.closed, auction.announced, auction.cleared) concerns
        # no one entity, and only entities and districts are told anything.
        return
    if isinstance(payload, EntityRegistered):
        await store.set_district(
            uow.conn, credit_code=payload.credit_code, district=payload.district
        )
    district = await store.district_of(uow.conn, credit_code=payload.credit_code)
    items = notifications_for(payload, district=district, policy=uow.policy)
    await store.record(
        uow.conn,
        items=items,
        credit_code=payload.credit_code,
        event_id=event.id,
        event_type=event.type,
        at=uow.now,
    )
    for item in items:
        uow.on_commit(metrics.NOTIFICATIONS.labels(item.recipient_type).inc)


# Not the inbound topics: what an external system claims is told once the registry acts on it.
HANDLERS: dict[str, dict[str, Handler]] = {
    topic.name: {event_type: notify for event_type in topic.event_types}
    for topic in catalogue().domain_topics()
    if not topic.is_inbound
}
