"""The verification service: verification organised by the Bureau (cases, agency assignment,
approval of verified emissions)."""

from __future__ import annotations

from pathlib import Path

from carbon_platform.context import ServiceDefinition
from verification import api, store
from verification.handlers import HANDLERS

SERVICE = ServiceDefinition(
    name="verification",
    port=8002,
    title="carbon verification",
    metadata=store.metadata,
    inbox=store.inbox,
    outbox=store.outbox,
    migrations_dir=Path(__file__).resolve().parent.parent / "migrations",
    routers=[api.router],
    handlers=HANDLERS,
)
