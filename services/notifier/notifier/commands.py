"""The notifier's event handler: one function over a unit of work that records who must be
told of an event. No HTTP, no Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from carbon_contracts.catalogue import catalogue
from carbon_contracts.events import (
    DeadlinePassed,
    EntityRegistered,
    EventPayload,
    ObligationEvent,
)
from carbon_platform.codec import Event
from carbon_platform.context import Handler, UnitOfWork
from notifier import store
from notifier.domain.alerts import Alert, alert_notice
from notifier.domain.messages import district_notice, notifications_for


async def notify(uow: UnitOfWork, event: Event[Any]) -> None:
    """Tell the entity, the district bureau supervising it and, where it concerns the Bureau,
    the Bureau what happened. A district notice of an event handled before the entity's
    entity.registered waits for it; an obligation event names its district itself."""
    payload = event.payload
    if isinstance(payload, DeadlinePassed):
        # Cycle-wide, about no one entity: the Bureau and the districts with entities overdue.
        await store.record(
            uow.conn,
            items=notifications_for(payload, district=None, policy=uow.policy),
            credit_code=None,
            event_id=event.id,
            event_type=event.type,
            at=uow.now,
        )
        return
    if not isinstance(payload, EventPayload):
        # Any other cycle-wide event (verification.closed, auction.announced, auction.cleared)
        # is told to no one.
        return
    code = payload.credit_code
    told: list[str] = []
    district: str | None
    if isinstance(payload, EntityRegistered):
        district = payload.district
        # Under the lock, a notice kept by a transaction still open now is committed before we
        # take the waiting notices.
        await store.lock_supervision(uow.conn, credit_code=code)
        await store.set_district(uow.conn, credit_code=code, district=payload.district)
        told += await store.tell_district_what_waited(
            uow.conn, credit_code=code, district=payload.district
        )
    elif isinstance(payload, ObligationEvent):
        # Its producer names the supervising district: nothing to look up, nothing to keep.
        district = payload.district
    else:
        district = await _district_or_keep(uow, event, payload)
    told += await store.record(
        uow.conn,
        items=notifications_for(payload, district=district, policy=uow.policy),
        credit_code=code,
        event_id=event.id,
        event_type=event.type,
        at=uow.now,
    )


async def _district_or_keep(
    uow: UnitOfWork, event: Event[Any], payload: EventPayload
) -> str | None:
    """The entity's district if supervision knows it; if not, the district notice (if any) is
    kept until entity.registered names it."""
    code = payload.credit_code
    district = await store.district_of(uow.conn, credit_code=code)
    if district is None and (notice := district_notice(payload, policy=uow.policy)):
        await store.lock_supervision(uow.conn, credit_code=code)
        # Read again under the lock: an entity.registered still open at the first read has
        # committed by now, and then the district is told at once.
        district = await store.district_of(uow.conn, credit_code=code)
        if district is None:
            subject, message = notice
            await store.keep_for_district(
                uow.conn,
                credit_code=code,
                event_id=event.id,
                event_type=event.type,
                subject=subject,
                message=message,
                at=uow.now,
            )
    return district


async def receive_alerts(uow: UnitOfWork, alerts: Sequence[Alert]) -> int:
    """Tell the Bureau of each alert Alertmanager sends, firing or resolved, through the usual
    deliveries (its webhook and e-mail subscriptions). A resend records nothing new (the notice's
    event id is derived from the alert's fingerprint, start and status). Returns how many
    notices are new."""
    told: list[str] = []
    for alert in alerts:
        told += await store.record(
            uow.conn,
            items=[alert_notice(alert, timezone=uow.policy.timezone)],
            credit_code=None,
            event_id=alert.event_id,
            event_type=alert.event_type,
            at=uow.now,
        )
    return len(told)


# Not the inbound topics: what an external system claims is told once the registry acts on it.
HANDLERS: dict[str, dict[str, Handler]] = {
    topic.name: {event_type: notify for event_type in topic.event_types}
    for topic in catalogue().domain_topics()
    if not topic.is_inbound
}
