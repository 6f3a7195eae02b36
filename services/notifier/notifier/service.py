"""The notifier service: notices to entities, their district bureaus and the Bureau (consumes every
public topic), delivered to their webhooks and e-mail addresses too."""

from __future__ import annotations

from pathlib import Path

from carbon_platform.context import ServiceDefinition
from notifier import api, commands, delivery, store
from notifier.figures import FIGURES

SERVICE = ServiceDefinition(
    name="notifier",
    port=8004,
    title="carbon notifier (notices to entities, districts and the Bureau)",
    metadata=store.metadata,
    tables=store.messaging,
    migrations_dir=Path(__file__).resolve().parent.parent / "migrations",
    routers=[api.router, FIGURES.router()],
    handlers=commands.HANDLERS,
    background=[delivery.deliver_pending, FIGURES.keep_gauges],
)
