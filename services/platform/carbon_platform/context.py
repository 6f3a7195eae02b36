"""What a service's routes and handlers work with: its database, clock, policy and outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, Request
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from carbon_contracts.events import EventPayload
from carbon_contracts.policy import Policy
from carbon_platform.clock import Clock
from carbon_platform.codec import Event, Outgoing, encode
from carbon_platform.outbox import add_to_outbox
from carbon_platform.settings import Settings


class Waker(Protocol):
    def wake(self) -> None: ...


@dataclass
class Transaction:
    """One database transaction and the events it will publish through the outbox."""

    conn: AsyncConnection
    now: datetime
    _context: ServiceContext
    _caused_by: Event[Any] | None = None
    pending: list[Outgoing] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def publish(self, payload: EventPayload) -> Outgoing:
        outgoing = self._context.encode(payload, at=self.now, caused_by=self._caused_by)
        self.pending.append(outgoing)
        return outgoing


class ServiceContext:
    def __init__(
        self,
        *,
        name: str,
        settings: Settings,
        engine: AsyncEngine,
        inbox: Table,
        outbox: Table,
        clock: Clock,
        policy: Policy,
    ) -> None:
        self.name = name
        self.settings = settings
        self.engine = engine
        self.inbox = inbox
        self.outbox = outbox
        self.clock = clock
        self.policy = policy
        self.relay: Waker | None = None

    @property
    def source(self) -> str:
        return f"/carbon/{self.name}"

    def encode(
        self, payload: EventPayload, *, at: datetime, caused_by: Event[Any] | None = None
    ) -> Outgoing:
        return encode(payload, source=self.source, time=at, caused_by=caused_by)

    @asynccontextmanager
    async def transaction(self, caused_by: Event[Any] | None = None) -> AsyncIterator[Transaction]:
        """State changes and the events they publish commit together (never dual-write)."""
        async with self.engine.begin() as conn:
            tx = Transaction(conn=conn, now=self.clock.now(), _context=self, _caused_by=caused_by)
            yield tx
            await add_to_outbox(conn, self.outbox, tx.pending, at=tx.now)
        if tx.pending and self.relay is not None:
            self.relay.wake()
        for callback in tx.after_commit:
            callback()


Handler = Callable[[Event[Any], Transaction, ServiceContext], Awaitable[None]]
"""Applies one consumed event inside the transaction that also records it in the inbox."""


@dataclass(frozen=True)
class ServiceDefinition:
    """Everything the runtime needs to run one service."""

    name: str
    port: int
    metadata: MetaData
    inbox: Table
    outbox: Table
    migrations_dir: Path
    routers: Sequence[APIRouter]
    # topic -> {event type -> handler}; the worker subscribes to these topics.
    handlers: Mapping[str, Mapping[str, Handler]]
    title: str = ""


def service_context(request: Request) -> ServiceContext:
    """FastAPI dependency: the running service's context."""
    context: ServiceContext = request.app.state.context
    return context
