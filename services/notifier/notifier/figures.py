"""The notifier's figures, from its database: notifications recorded per recipient type
(carbon_platform.figures: the gauges and GET /figures)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.policy import Policy
from carbon_platform import metrics
from carbon_platform.figures import Figures
from notifier.store import notifications

RECIPIENT_TYPES = ("entity", "district", "bureau")


class NotifierFigures(BaseModel):
    notifications: dict[str, int]  # by recipient type (entity, district, bureau)


async def compute(conn: AsyncConnection, policy: Policy) -> NotifierFigures:
    counts = dict.fromkeys(RECIPIENT_TYPES, 0)
    rows = await conn.execute(
        select(notifications.c.recipient_type, func.count()).group_by(
            notifications.c.recipient_type
        )
    )
    counts |= {recipient_type: count for recipient_type, count in rows}
    return NotifierFigures(notifications=counts)


def show(figures: NotifierFigures) -> None:
    for recipient_type, count in figures.notifications.items():
        metrics.NOTIFICATIONS.labels(recipient_type).set(count)


FIGURES = Figures(NotifierFigures, compute, show)
