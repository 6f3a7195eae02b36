"""The registry service: the allowance registry of the notice (roster, accounts, allocation,
offsets, surrender, pre-allocation, transfers with the exchange, paid auctions)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from carbon_platform.context import ServiceContext, ServiceDefinition
from carbon_platform.obligations import Watched
from registry import allocation, api, auction, commands, deadlines, ledger, store
from registry.figures import FIGURES

ROWS_PER_TRANSACTION = 500
WATCHED = Watched(store.obligation_tables, deadlines.OWNED, backfill=deadlines.backfill)
"""The registry's deadlines (accounts_opening, surrender): reminders, overdue entities,
escalated cases, on time (the watch task) and on view (its routes)."""


async def register_roster_uploads(context: ServiceContext) -> None:
    """Registers the pending rows of roster uploads, a chunk per transaction, on whichever
    instance gets to them first."""
    while True:
        if not await context.execute(commands.register_pending_rows, ROWS_PER_TRANSACTION):
            await asyncio.sleep(0.5)


SERVICE = ServiceDefinition(
    name="registry",
    port=8003,
    title="carbon registry (allowance registry)",
    metadata=store.metadata,
    tables=store.messaging,
    migrations_dir=Path(__file__).resolve().parent.parent / "migrations",
    routers=[
        api.router,
        allocation.router,
        ledger.router,
        auction.router,
        deadlines.router,
        WATCHED.router(),
        FIGURES.router(),
    ],
    handlers=commands.HANDLERS
    | allocation.HANDLERS
    | ledger.HANDLERS
    | auction.HANDLERS
    | deadlines.HANDLERS,
    body_limits={
        "/roster/imports": api.ROSTER_UPLOAD_BYTES,
        "/opening-balances": api.ROSTER_UPLOAD_BYTES,
    },
    background=[
        register_roster_uploads,
        ledger.reconcile_periodically,
        auction.close_auctions_on_time,
        WATCHED.watch,
        FIGURES.keep_gauges,
    ],
)
