"""Notifier HTTP API: each recipient reads its own notifications."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from carbon_platform.auth import Principal, require
from carbon_platform.context import ServiceContext, service_context
from notifier import store

router = APIRouter(tags=["notifier"])
Context = Annotated[ServiceContext, Depends(service_context)]


@router.get("/notifications")
async def list_notifications(
    context: Context,
    principal: Annotated[Principal, Depends(require("regulator", "entity", "district"))],
    recipient_type: Literal["entity", "district"] | None = None,
    recipient_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Newest first. An entity sees its own notifications, a district its own; the Bureau may
    filter any."""
    if principal.role == "entity":
        recipient_type, recipient_id = "entity", principal.credit_code
    elif principal.role == "district":
        recipient_type, recipient_id = "district", principal.district
    elif recipient_id and not recipient_type:
        raise HTTPException(422, "recipient_id needs recipient_type")
    async with context.engine.connect() as conn:
        rows = await store.list_for(
            conn, recipient_type=recipient_type, recipient_id=recipient_id, limit=limit
        )
    return [
        {
            "recipient_type": row.recipient_type,
            "recipient_id": row.recipient_id,
            "credit_code": row.credit_code,
            "event_type": row.event_type,
            "event_id": row.event_id,
            "subject": row.subject,
            "message": row.message,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]
