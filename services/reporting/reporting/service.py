"""The reporting service: the direct reporting system of the notice (annual emissions reports)."""

from __future__ import annotations

from pathlib import Path

from carbon_platform.context import ServiceDefinition
from reporting import api, commands, store

SERVICE = ServiceDefinition(
    name="reporting",
    port=8001,
    title="carbon reporting (direct reporting system)",
    metadata=store.metadata,
    tables=store.messaging,
    migrations_dir=Path(__file__).resolve().parent.parent / "migrations",
    routers=[api.router],
    handlers=commands.HANDLERS,
)
