"""A service's compliance figures (reports submitted, allowances issued and surrendered,
notifications), computed from its own database.

One query function feeds both the gauges and the read endpoint `GET /figures`, so the dashboard
and the API say the same. Every instance refreshes the gauges every few seconds, so every instance
of a service reports the same, true figures whatever instance did the work (aggregate with max,
never sum, across instances); a counter in each process could do neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.policy import Policy
from carbon_platform.access import OPERATIONS, allowed
from carbon_platform.auth import Principal
from carbon_platform.context import Context, ServiceContext
from carbon_platform.http import refusals

log = logging.getLogger(__name__)

FIGURES_EVERY_S = 5.0

F = TypeVar("F", bound=BaseModel)


@dataclass(frozen=True)
class Figures(Generic[F]):
    """The figures one service owns: how to compute them and how the gauges show them."""

    model: type[F]
    # Set-based COUNT/SUM queries over the service's tables, in one read; the policy names the
    # labels known in advance (its compliance year), shown as 0 before anything happened.
    compute: Callable[[AsyncConnection, Policy], Awaitable[F]]
    show: Callable[[F], None]  # sets the gauges from one computation

    async def read(self, context: ServiceContext) -> F:
        async with context.reader.connect() as conn:
            return await self.compute(conn, context.policy)

    async def refresh_gauges(self, context: ServiceContext) -> F:
        figures = await self.read(context)
        self.show(figures)
        return figures

    async def keep_gauges(self, context: ServiceContext) -> None:
        """Background task: the gauges equal the database, a few seconds behind at most."""
        while True:
            try:
                await self.refresh_gauges(context)
            except Exception as error:  # the database away: try again at the next tick
                log.warning("figures refresh failed: %r", error)
            await asyncio.sleep(FIGURES_EVERY_S)

    def router(self) -> APIRouter:
        router = APIRouter(tags=["figures"])

        @router.get("/figures", responses=refusals(403), response_model=self.model)
        async def figures(
            context: Context, _: Annotated[Principal, allowed(OPERATIONS, "operate")]
        ) -> BaseModel:
            """The service's compliance figures now, from its database: what its gauges show
            (the dashboard's compliance row), for the Bureau."""
            return await self.read(context)

        return router
