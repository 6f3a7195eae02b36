"""Reporting learns the roster from the registry's events."""

from __future__ import annotations

from typing import Any

from carbon_contracts.events import EntityRegistered
from carbon_platform.codec import Event
from carbon_platform.context import ServiceContext, Transaction
from reporting import store


async def on_entity_registered(
    event: Event[Any], tx: Transaction, _context: ServiceContext
) -> None:
    registered: EntityRegistered = event.payload
    await store.add_to_roster(
        tx.conn,
        credit_code=registered.credit_code,
        compliance_year=registered.compliance_year,
        name=registered.name,
        district=registered.district,
    )


HANDLERS = {"entity.registered": {"entity.registered": on_entity_registered}}
