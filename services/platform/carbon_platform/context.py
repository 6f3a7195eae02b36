"""What a service's commands and event handlers work with: a unit of work per database
transaction, and the service context that opens them (database, clock, policy, outbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, Depends, Request
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from carbon_contracts.events import Payload
from carbon_contracts.policy import Policy
from carbon_platform import tracing
from carbon_platform.clock import Clock
from carbon_platform.codec import Event, Outgoing, encode
from carbon_platform.db import read_only
from carbon_platform.outbox import add_to_outbox
from carbon_platform.settings import Settings
from carbon_platform.tables import MessagingTables

C = TypeVar("C")
R = TypeVar("R")


class Waker(Protocol):
    def wake(self) -> None: ...


@dataclass
class UnitOfWork:
    """One database transaction: the state a command or event handler reads and changes, the
    events it causes (committed to the outbox with the change) and what to do once committed."""

    conn: AsyncConnection
    now: datetime
    policy: Policy
    source: str
    caused_by: Event[Any] | None = None
    events: list[Outgoing] = field(default_factory=list)
    committed: list[Callable[[], None]] = field(default_factory=list)

    def record(self, payload: Payload) -> Outgoing:
        """An event this unit of work causes; published only if the transaction commits."""
        outgoing = encode(
            payload,
            source=self.source,
            time=self.now,
            caused_by=self.caused_by,
            correlation_id=tracing.correlation_id(),
            traceparent=tracing.traceparent(),
        )
        self.events.append(outgoing)
        return outgoing

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.committed.append(callback)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Work that a rejection undoes on its own: its changes and the events it recorded."""
        events, committed = len(self.events), len(self.committed)
        try:
            async with self.conn.begin_nested():
                yield
        except BaseException:
            del self.events[events:]
            del self.committed[committed:]
            raise

    def discard(self) -> None:
        """Forget what was recorded: the work was rolled back (a rejected event)."""
        self.events.clear()
        self.committed.clear()


Command = Callable[[UnitOfWork, C], Awaitable[R]]
"""One command of a service: applies the domain rules to one message inside a unit of work."""

Handler = Callable[[UnitOfWork, Event[Any]], Awaitable[None]]
"""Applies one consumed event inside the unit of work that also records it in the inbox."""


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
        self.reader = read_only(engine)  # for queries: never waits for a writer
        self.inbox = inbox
        self.outbox = outbox
        self.clock = clock
        self.policy = policy
        self.relay: Waker | None = None

    @property
    def source(self) -> str:
        return f"/carbon/{self.name}"

    def unit_of_work(
        self, conn: AsyncConnection, *, now: datetime, caused_by: Event[Any] | None = None
    ) -> UnitOfWork:
        """A unit of work on an open transaction (the consumer runs several in one)."""
        return UnitOfWork(
            conn=conn, now=now, policy=self.policy, source=self.source, caused_by=caused_by
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        """State changes and the events they cause commit together (never dual-write)."""
        async with self.engine.begin() as conn:
            uow = self.unit_of_work(conn, now=self.clock.now())
            yield uow
            await add_to_outbox(conn, self.outbox, uow.events, at=uow.now)
        self.committed([uow])

    def committed(self, units: Sequence[UnitOfWork]) -> None:
        """After a commit: wake the relay for the new outbox rows, run the callbacks."""
        if self.relay is not None and any(uow.events for uow in units):
            self.relay.wake()
        for uow in units:
            for callback in uow.committed:
                callback()

    async def execute(self, command: Command[C, R], message: C) -> R:
        """Run one command in its own transaction; a rejection rolls everything back."""
        async with self.transaction() as uow:
            return await command(uow, message)


@dataclass(frozen=True)
class ServiceDefinition:
    """Everything the runtime needs to run one service."""

    name: str
    port: int
    metadata: MetaData
    tables: MessagingTables
    migrations_dir: Path
    routers: Sequence[APIRouter]
    # topic -> {event type -> handler}; the worker subscribes to these topics.
    handlers: Mapping[str, Mapping[str, Handler]]
    title: str = ""
    # Request bodies above the platform's limit are refused with 413, except on these paths.
    body_limits: Mapping[str, int] = field(default_factory=dict)
    # Background tasks the service runs beside its API and worker (e.g. a bulk import).
    background: Sequence[Callable[[ServiceContext], Awaitable[None]]] = ()


async def service_context(request: Request) -> ServiceContext:
    """FastAPI dependency: the running service's context (async: no worker-thread hand-off)."""
    context: ServiceContext = request.app.state.context
    return context


Context = Annotated[ServiceContext, Depends(service_context)]
