"""The notifier's district notices under reordering and concurrency, on the real database: an
event handled before its entity's entity.registered, replays of both, and (on PostgreSQL, where
two notifier transactions can run at once) the event racing entity.registered in two open
transactions. The district is told exactly once, and nothing is left waiting."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from carbon_platform.context import UnitOfWork
from carbon_platform.db import make_engine
from notifier import commands, store
from notifier.service import SERVICE
from registry.domain.credit_code import make_credit_code
from tests.support import migrated_schema
from tests.unit.support import IN_THE_CYCLE, POLICY, consumed, entity_registered, report_submitted

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The notifier's migrated schema."""
    async with migrated_schema(SERVICE, tmp_path) as settings:
        engine = make_engine(settings)
        yield engine
        await engine.dispose()


def unit(conn: AsyncConnection) -> UnitOfWork:
    return UnitOfWork(conn=conn, now=IN_THE_CYCLE, policy=POLICY, source="/carbon/notifier")


async def district_notices(engine: AsyncEngine, code: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(store.notifications.c.event_type)
            .where(store.notifications.c.credit_code == code)
            .where(store.notifications.c.recipient_type == "district")
        )
        return sorted(row.event_type for row in rows)


async def waiting(engine: AsyncEngine, code: str) -> list[Any]:
    async with engine.connect() as conn:
        table = store.pending_district_notices
        return list(await conn.execute(select(table).where(table.c.credit_code == code)))


async def test_replays_in_any_order_tell_the_district_once(engine: AsyncEngine) -> None:
    code = make_credit_code(4101)
    report = consumed(report_submitted(code, uuid4()))
    registered = consumed(entity_registered(code, district="pudong"))
    for event in (report, report, registered, registered, report):
        async with engine.begin() as conn:
            await commands.notify(unit(conn), event)
    assert await district_notices(engine, code) == ["entity.registered", "report.submitted"]
    assert await waiting(engine, code) == []


@pytest.mark.skipif(
    not os.environ.get("CARBON_TEST_DATABASE_URL"),
    reason="two notifier transactions at once need PostgreSQL (SQLite serialises writers)",
)
@pytest.mark.parametrize("first", ["event", "entity.registered"])
async def test_an_event_racing_entity_registered_loses_no_district_notice(
    engine: AsyncEngine, first: str
) -> None:
    code = make_credit_code(4102 if first == "event" else 4103)
    report = consumed(report_submitted(code, uuid4()))
    registered = consumed(entity_registered(code, district="minhang"))
    one, other = (report, registered) if first == "event" else (registered, report)
    async with engine.connect() as conn_a, engine.connect() as conn_b:
        await conn_a.begin()
        await conn_b.begin()
        await commands.notify(unit(conn_a), one)  # not committed yet
        second = asyncio.create_task(commands.notify(unit(conn_b), other))
        await asyncio.sleep(0.5)
        assert not second.done(), "the second transaction waits for the first's entity lock"
        await conn_a.commit()
        await second
        await conn_b.commit()
    assert await district_notices(engine, code) == ["entity.registered", "report.submitted"]
    assert await waiting(engine, code) == []
