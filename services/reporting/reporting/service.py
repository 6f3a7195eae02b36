"""The reporting service: the direct reporting system of the notice (annual emissions reports)."""

from __future__ import annotations

from pathlib import Path

from carbon_platform.context import ServiceDefinition
from carbon_platform.obligations import Watched
from reporting import api, commands, store
from reporting.figures import FIGURES

# The deadlines reporting owns, watched per rostered entity (commands.py enrols and completes;
# its backfill enrols, at each start, the entities rostered before the deadlines were watched).
WATCHED = Watched(
    store.obligation_tables, ("monitoring_plan", "report"), backfill=commands.backfill
)

SERVICE = ServiceDefinition(
    name="reporting",
    port=8001,
    title="carbon reporting (direct reporting system)",
    metadata=store.metadata,
    tables=store.messaging,
    migrations_dir=Path(__file__).resolve().parent.parent / "migrations",
    routers=[api.router, WATCHED.router(), FIGURES.router()],
    handlers=commands.HANDLERS,
    background=[WATCHED.watch, FIGURES.keep_gauges],
)
