"""In-memory harness for the services' commands, event handlers and APIs: a service context on
an in-memory SQLite database with the service's tables, the default policy and a clock the test
sets; no broker, no server process."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.catalogue import catalogue
from carbon_contracts.events import (
    EntityRegistered,
    Payload,
    ReportLine,
    ReportSubmitted,
    VerificationFinalised,
)
from carbon_contracts.policy import default_policy_path, load_policy
from carbon_platform.auth import Role, issue_token
from carbon_platform.clock import Clock
from carbon_platform.codec import Event, Outgoing, RawMessage, decode, encode
from carbon_platform.context import ServiceContext, ServiceDefinition, UnitOfWork
from carbon_platform.db import make_engine
from carbon_platform.http import create_api
from carbon_platform.outbox import add_to_outbox
from carbon_platform.settings import Settings

M = TypeVar("M")
R = TypeVar("R")

JWT_SECRET = "unit-tests-only-" + "k" * 32
POLICY = load_policy(default_policy_path())
SHANGHAI = timezone(timedelta(hours=8))
DEADLINE = POLICY.deadlines.surrender
"""2025-06-30T17:00:00+08:00: a surrender is on time strictly before it."""
IN_THE_CYCLE = datetime(2025, 4, 15, 10, 0, tzinfo=SHANGHAI)
"""Where every test's clock starts: verification season of compliance year 2024."""


def report_submitted(
    code: str,
    report_id: UUID,
    *,
    heat_gj: str = "1000",
    emissions: str = "60.000",
    at: datetime = datetime(2025, 3, 1, tzinfo=UTC),
) -> ReportSubmitted:
    """A 2024 report of one line, purchased heat at the default table's 0.06 tCO2/GJ."""
    return ReportSubmitted(
        credit_code=code,
        compliance_year=2024,
        report_id=report_id,
        factor_table="shanghai-default-2024.1",
        lines=[
            ReportLine(
                source="heat",
                activity=Decimal(heat_gj),
                unit="GJ",
                factor=Decimal("0.06"),
                emissions=Decimal(emissions),
            )
        ],
        total_emissions=Decimal(emissions),
        submitted_at=at,
    )


def entity_registered(
    code: str,
    *,
    district: str = "pudong",
    sector: str = "chemicals",
    name: str = "示例化工",
    year: int = 2024,
    new_entrant: bool = False,
    at: datetime = datetime(2025, 1, 10, tzinfo=UTC),
) -> EntityRegistered:
    """The registry put `code` on the roster of `year`, in `district` and `sector`."""
    return EntityRegistered(
        credit_code=code,
        compliance_year=year,
        name=name,
        district=district,
        sector=sector,
        new_entrant=new_entrant,
        registered_at=at,
    )


def verification_finalised(
    code: str,
    verified: str,
    *,
    year: int = 2024,
    case_id: UUID | None = None,
    at: datetime = datetime(2025, 5, 20, 7, 0, tzinfo=UTC),
) -> VerificationFinalised:
    """An entity's final verified figure for the year: what the registry acts on."""
    return VerificationFinalised(
        credit_code=code,
        compliance_year=year,
        case_id=case_id or uuid4(),
        report_id=uuid4(),
        basis="verification",
        verified_emissions=Decimal(verified),
        finalised_at=at,
    )


class SetClock(Clock):
    """A clock that says what the test last set, and nothing else."""

    def __init__(self, now: datetime) -> None:
        super().__init__()
        self.current = now

    def now(self) -> datetime:
        return self.current


@dataclass(frozen=True)
class Published:
    """An event a command or handler recorded, read back as a subscriber would."""

    topic: str
    key: str
    type: str
    payload: dict[str, Any]
    headers: dict[str, str]
    event: Event[Any]


def published(outgoing: Outgoing) -> Published:
    """Decode a recorded event; decoding checks topic, type, source, schema and key agree."""
    event = decode(
        RawMessage(outgoing.topic, 0, 0, outgoing.key, outgoing.value, list(outgoing.headers))
    )
    return Published(
        topic=outgoing.topic,
        key=(outgoing.key or b"").decode(),
        type=outgoing.event_type,
        payload=json.loads(outgoing.value),
        headers={name: value.decode() for name, value in outgoing.headers},
        event=event,
    )


def consumed(
    payload: Payload, *, time: datetime | None = None, event_id: str | None = None
) -> Event[Any]:
    """An event as a handler receives it: encoded by its topic's owner, then decoded."""
    topic = catalogue().topic_for_event(payload.EVENT)
    outgoing = encode(
        payload,
        source=topic.source,
        time=time or datetime.now(UTC),
        event_id=event_id,
    )
    return decode(
        RawMessage(topic.name, 0, 0, outgoing.key, outgoing.value, list(outgoing.headers))
    )


@dataclass(frozen=True)
class Ran(Generic[R]):
    result: R
    events: list[Published]

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]


@dataclass
class Harness:
    """One service on its in-memory database."""

    definition: ServiceDefinition
    context: ServiceContext
    clock: SetClock

    async def run(self, command: Callable[[UnitOfWork, M], Awaitable[R]], message: M) -> Ran[R]:
        """Run a command in its own transaction; its events are committed to the outbox."""
        async with self.context.transaction() as uow:
            result = await command(uow, message)
            events = list(uow.events)
        return Ran(result, [published(event) for event in events])

    async def handle(self, event: Event[Any] | Payload) -> list[Published]:
        """Apply a consumed event with the handler the service subscribes for its type, in one
        transaction caused by it (as the consumer does); a rejection rolls it all back."""
        if isinstance(event, Payload):
            event = consumed(event)
        topic = catalogue().topic_for_event(event.type).name
        handler = self.definition.handlers[topic][event.type]
        async with self.context.engine.begin() as conn:
            uow = self.context.unit_of_work(conn, now=self.clock.now(), caused_by=event)
            await handler(uow, event)
            await add_to_outbox(conn, self.context.outbox, uow.events, at=uow.now)
        self.context.committed([uow])
        return [published(recorded) for recorded in uow.events]

    async def read(self, query: Callable[..., Awaitable[R]], **arguments: Any) -> R:
        """Call a store function on a connection of its own."""
        async with self.context.engine.connect() as conn:
            return await query(conn, **arguments)

    async def outbox(self) -> list[Published]:
        """Every committed outbox row, in order, decoded."""

        async def rows(conn: AsyncConnection) -> list[Any]:
            table = self.context.outbox
            return list(await conn.execute(select(table).order_by(table.c.id)))

        return [
            published(
                Outgoing(
                    topic=row.topic,
                    key=row.key,
                    value=row.value,
                    headers=[
                        (name, base64.b64decode(value)) for name, value in json.loads(row.headers)
                    ],
                    event_id=row.event_id,
                    event_type=row.event_type,
                )
            )
            for row in await self.read(rows)
        ]

    def token(
        self,
        role: Role,
        *,
        credit_code: str | None = None,
        agency: str | None = None,
        district: str | None = None,
    ) -> dict[str, str]:
        """Authorization header for a caller of this role, signed with the context's settings."""
        token = issue_token(
            self.context.settings,
            role=role,
            subject=f"{role}-{credit_code or agency or district or 'user'}",
            now=datetime.now(UTC),
            credit_code=credit_code,
            agency=agency,
            district=district,
        )
        return {"Authorization": f"Bearer {token}"}

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """The service's API in process, on this event loop."""
        api = create_api(self.definition, self.context)
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@asynccontextmanager
async def harness(
    definition: ServiceDefinition, *, now: datetime = IN_THE_CYCLE
) -> AsyncIterator[Harness]:
    settings = Settings(
        service=definition.name, jwt_secret=JWT_SECRET, database_url="sqlite+aiosqlite://"
    )
    engine = make_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(definition.metadata.create_all)
    clock = SetClock(now)
    context = ServiceContext(
        name=definition.name,
        settings=settings,
        engine=engine,
        inbox=definition.tables.inbox,
        outbox=definition.tables.outbox,
        clock=clock,
        policy=POLICY,
    )
    try:
        yield Harness(definition, context, clock)
    finally:
        await engine.dispose()
