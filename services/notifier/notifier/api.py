"""Notifier HTTP API: each recipient reads its own notifications."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from carbon_contracts.errors import Invalid
from carbon_platform.access import NOTIFICATION, allowed
from carbon_platform.auth import Principal
from carbon_platform.context import Context
from carbon_platform.http import refusals
from notifier import store
from notifier.schemas import NotificationView

router = APIRouter(tags=["notifier"])


@router.get("/notifications", responses=refusals(403), response_model=list[NotificationView])
async def list_notifications(
    context: Context,
    principal: Annotated[Principal, allowed(NOTIFICATION, "read")],
    recipient_type: Literal["entity", "district"] | None = None,
    recipient_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[NotificationView]:
    """Newest first. An entity sees its own notifications, a district its own; the Bureau may
    filter any."""
    scope = NOTIFICATION.scope(principal, "read")
    if scope.credit_code:
        recipient_type, recipient_id = "entity", scope.credit_code
    elif scope.district:
        recipient_type, recipient_id = "district", scope.district
    elif recipient_id and not recipient_type:
        raise Invalid("invalid_request", "recipient_id needs recipient_type")
    async with context.reader.connect() as conn:
        rows = await store.list_for(
            conn, recipient_type=recipient_type, recipient_id=recipient_id, limit=limit
        )
    return [NotificationView.model_validate(row, from_attributes=True) for row in rows]
