"""The verification service: verification and re-verification organised by the Bureau (cases,
assignment by tender lot, site visits, verified emissions recomputed, the final figure, the
year's close)."""

from __future__ import annotations

from pathlib import Path

from carbon_platform.context import ServiceDefinition
from verification import api, commands, store

SERVICE = ServiceDefinition(
    name="verification",
    port=8002,
    title="carbon verification",
    metadata=store.metadata,
    tables=store.messaging,
    migrations_dir=Path(__file__).resolve().parent.parent / "migrations",
    routers=[api.router],
    handlers=commands.HANDLERS,
)
