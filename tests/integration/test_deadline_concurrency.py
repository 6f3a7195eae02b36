"""The deadline watcher on several instances at once, on the real database (PostgreSQL when
CARBON_TEST_DATABASE_URL is set, else an SQLite file): each instance runs the same checks at the
same instant, yet every reminder, every overdue mark, the deadline's summary and every
escalation happen once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from carbon_contracts.policy import default_policy_path, load_policy
from carbon_platform.context import ServiceContext
from carbon_platform.db import make_engine
from registry import deadlines, store
from registry.domain.credit_code import make_credit_code
from registry.service import SERVICE, WATCHED
from tests.support import migrated_schema
from tests.unit.support import DEADLINE, SHANGHAI, SetClock

pytestmark = pytest.mark.integration

ENTITIES = 40
INSTANCES = 3
CODES = [make_credit_code(960_000 + n) for n in range(ENTITIES)]


@pytest.fixture
async def instances(tmp_path: Path) -> AsyncIterator[list[ServiceContext]]:
    """The registry's migrated schema and three instances on it, each with its own engine (its
    own connections) and one clock the test moves."""
    async with migrated_schema(SERVICE, tmp_path) as settings:
        clock = SetClock(datetime(2025, 6, 20, 10, 0, tzinfo=SHANGHAI))
        engines = [make_engine(settings) for _ in range(INSTANCES)]
        policy = load_policy(default_policy_path())
        yield [
            ServiceContext(
                name="registry",
                settings=settings,
                engine=engine,
                inbox=store.messaging.inbox,
                outbox=store.messaging.outbox,
                clock=clock,
                policy=policy,
            )
            for engine in engines
        ]
        for engine in engines:
            await engine.dispose()


async def enrolled(context: ServiceContext) -> None:
    async with context.transaction() as uow:
        for code in CODES:
            await store.register(
                uow.conn, credit_code=code, name="Race Ltd", district="pudong",
                sector="chemicals", compliance_year=2024, new_entrant=False, at=uow.now,
            )  # fmt: skip
            await deadlines.enroll(
                uow, credit_code=code, name="Race Ltd", district="pudong", new_entrant=False
            )


async def published(context: ServiceContext) -> Counter[tuple[str, str]]:
    outbox = store.messaging.outbox
    async with context.engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.event_type, outbox.c.key))).all()
    return Counter((row.event_type, (row.key or b"").decode()) for row in rows)


async def all_at_once(contexts: list[ServiceContext], now: datetime) -> None:
    contexts[0].clock.current = now  # type: ignore[attr-defined]  # one SetClock for all
    await asyncio.gather(*(WATCHED.check(context) for context in contexts))


async def test_every_reminder_overdue_summary_and_escalation_happens_once(
    instances: list[ServiceContext],
) -> None:
    await enrolled(instances[0])

    await all_at_once(instances, DEADLINE - timedelta(hours=2))
    await all_at_once(instances, DEADLINE)
    await all_at_once(instances, DEADLINE)  # again, as the next tick would
    sla = instances[0].policy.supervision.case_sla
    await all_at_once(instances, DEADLINE + sla)

    events = await published(instances[0])
    for code in CODES:
        # One reminder: the one due when the instances first looked (15:00, 2 hours before).
        assert events[("surrender.reminder_due", code)] == 1, code
        assert events[("surrender.overdue", code)] == 1, code
        assert events[("surrender.case_escalated", code)] == 1, code
    assert events[("surrender.deadline_passed", "shanghai-2024")] == 1
    async with instances[0].engine.connect() as conn:
        sent = (await conn.execute(select(store.obligation_tables.reminders))).all()
        overdue = (await conn.execute(select(store.obligation_tables.overdue_at_pass))).all()
    assert Counter(row.seconds_before for row in sent) == {7200: ENTITIES}
    assert sorted(row.credit_code for row in overdue) == sorted(CODES)
