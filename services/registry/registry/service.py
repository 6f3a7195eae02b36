"""The registry service: the allowance registry of the notice (accounts, allocation, surrender,
pre-allocation)."""

from __future__ import annotations

from pathlib import Path

from carbon_platform.context import ServiceDefinition
from registry import api, store
from registry.handlers import HANDLERS

SERVICE = ServiceDefinition(
    name="registry",
    port=8003,
    title="carbon registry (allowance registry)",
    metadata=store.metadata,
    inbox=store.inbox,
    outbox=store.outbox,
    migrations_dir=Path(__file__).resolve().parent.parent / "migrations",
    routers=[api.router],
    handlers=HANDLERS,
)
