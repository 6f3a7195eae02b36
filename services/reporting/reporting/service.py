"""The reporting service: the direct reporting system of the notice (annual emissions reports,
computed from a versioned factor table)."""

from __future__ import annotations

from pathlib import Path

from carbon_platform.context import ServiceDefinition
from reporting import api, store
from reporting.handlers import HANDLERS

SERVICE = ServiceDefinition(
    name="reporting",
    port=8001,
    title="carbon reporting (direct reporting system)",
    metadata=store.metadata,
    inbox=store.inbox,
    outbox=store.outbox,
    migrations_dir=Path(__file__).resolve().parent.parent / "migrations",
    routers=[api.router],
    handlers=HANDLERS,
)
