"""The consumer against a real database (no broker needed: what it publishes goes to the
outbox): bugs are retried then dead-lettered with their traceback, transient failures are
retried until they pass, a rejection leaves nothing behind, and in a batch every record keeps
its own outcome (poison, forged, mistyped and oversized records go to the dead-letter topic)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text

from carbon_contracts.errors import Conflict
from carbon_contracts.events import EntityRegistered
from carbon_contracts.policy import default_policy_path, load_policy
from carbon_platform.clock import Clock
from carbon_platform.codec import Event, RawMessage, encode
from carbon_platform.consumer import EventConsumer
from carbon_platform.context import ServiceContext, UnitOfWork
from carbon_platform.db import make_engine
from carbon_platform.logs import JsonFormatter
from registry.domain.credit_code import make_credit_code
from reporting import store
from reporting.service import SERVICE
from tests.support import migrated_schema

pytestmark = pytest.mark.integration


@pytest.fixture
async def context(tmp_path: Path) -> AsyncIterator[ServiceContext]:
    """The reporting service's real schema and context, with a fast retry policy."""
    async with migrated_schema(SERVICE, tmp_path, transient_backoff_max_s=0.05) as settings:
        engine = make_engine(settings)
        yield ServiceContext(
            name="reporting",
            settings=settings,
            engine=engine,
            inbox=store.messaging.inbox,
            outbox=store.messaging.outbox,
            clock=Clock(),
            policy=load_policy(default_policy_path()),
        )
        await engine.dispose()


def registered(seed: int) -> RawMessage:
    payload = EntityRegistered(
        credit_code=make_credit_code(seed),
        compliance_year=2024,
        name="Test Ltd",
        district="pudong",
        sector="chemicals",
        new_entrant=False,
        registered_at=datetime.now(UTC),
    )
    out = encode(payload, source="/carbon/registry", time=datetime.now(UTC))
    return RawMessage("entity.registered", 0, seed, out.key, out.value, out.headers)


async def rows(context: ServiceContext, sql: str) -> list[Any]:
    async with context.engine.connect() as conn:
        return list(await conn.execute(text(sql)))


async def test_a_bug_is_retried_then_dead_lettered_with_its_traceback(
    context: ServiceContext, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def broken(tx: UnitOfWork, event: Event[Any]) -> None:
        nonlocal calls
        calls += 1
        await store.add_to_roster(
            tx.conn,
            credit_code=event.payload.credit_code,
            compliance_year=2024,
            name="half-done",
            district="x",
        )
        raise RuntimeError("handler bug")

    consumer = EventConsumer(context, {"entity.registered": broken})
    raw = registered(1)

    assert await consumer.handle(raw) == "dead_lettered"
    assert calls == context.settings.bug_retry_attempts
    assert await rows(context, "SELECT * FROM roster") == []  # nothing half-applied
    async with context.engine.connect() as conn:
        letter = (await conn.execute(select(context.outbox))).one()
    headers = dict((name, value) for name, value in json.loads(letter.headers))
    assert letter.topic == "reporting.dlq"
    assert letter.value == raw.value
    assert letter.key == raw.key
    assert "dlq_error_class" in headers and "ce_id" in headers
    assert (await rows(context, "SELECT outcome FROM inbox"))[0][0] == "dead_lettered"
    # Its log line says where it was and why, in fields of the JSON line, not only in words.
    [warning] = [r for r in caplog.records if r.getMessage().startswith("dead-lettered")]
    line = json.loads(JsonFormatter("reporting").format(warning))
    assert (line["topic"], line["partition"], line["offset"]) == (raw.topic, 0, raw.offset)
    assert line["error_class"] == "bug.RuntimeError"
    assert "handler bug" in line["reason"]
    # The same record delivered again (a crash before the offset commit) is not lettered twice.
    assert await consumer.handle(raw) == "duplicate"
    assert len(await rows(context, "SELECT * FROM outbox")) == 1


async def test_a_transient_failure_is_retried_until_it_passes(context: ServiceContext) -> None:
    failures = 3

    async def flaky(tx: UnitOfWork, event: Event[Any]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise sa_exc.OperationalError("SELECT 1", {}, ConnectionError("database went away"))
        await store.add_to_roster(
            tx.conn,
            credit_code=event.payload.credit_code,
            compliance_year=2024,
            name="ok",
            district="pudong",
        )

    consumer = EventConsumer(context, {"entity.registered": flaky})
    assert await consumer.handle(registered(2)) == "processed"
    assert failures == 0
    assert len(await rows(context, "SELECT * FROM roster")) == 1
    assert await rows(context, "SELECT * FROM outbox") == []  # never dead-lettered
    assert consumer.transient_failure is False


async def test_a_handler_cancelled_mid_retry_no_longer_reports_a_failure(
    context: ServiceContext,
) -> None:
    # A rebalance cancels a handler that is waiting to retry: the record goes to the partition's
    # next owner, and this instance's readiness must not stay failed until some later record.
    failing = asyncio.Event()

    async def down(tx: UnitOfWork, event: Event[Any]) -> None:
        failing.set()
        raise sa_exc.OperationalError("SELECT 1", {}, ConnectionError("database went away"))

    consumer = EventConsumer(context, {"entity.registered": down})
    handling = asyncio.ensure_future(consumer.handle(registered(3)))
    await failing.wait()
    for _ in range(500):  # into the backoff, once the failed transaction has rolled back
        if consumer.transient_failure:
            break
        await asyncio.sleep(0.01)
    assert consumer.transient_failure is True
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling
    assert consumer.transient_failure is False
    assert await rows(context, "SELECT * FROM inbox") == []  # nothing recorded: it comes back


async def test_a_rejection_is_recorded_and_leaves_no_effect(context: ServiceContext) -> None:
    async def refuses(tx: UnitOfWork, event: Event[Any]) -> None:
        await store.add_to_roster(
            tx.conn,
            credit_code=event.payload.credit_code,
            compliance_year=2024,
            name="half-done",
            district="x",
        )
        tx.record(event.payload)
        raise Conflict("nope", "refused by the rules")

    consumer = EventConsumer(context, {"entity.registered": refuses})
    assert await consumer.handle(registered(3)) == "rejected"
    assert await rows(context, "SELECT * FROM roster") == []
    assert await rows(context, "SELECT * FROM outbox") == []
    assert [r[0] for r in await rows(context, "SELECT outcome FROM inbox")] == ["rejected"]


def on_topic(raw: RawMessage, topic: str, offset: int) -> RawMessage:
    return RawMessage(topic, 0, offset, raw.key, raw.value, raw.headers)


def with_header(raw: RawMessage, name: str, value: bytes, offset: int) -> RawMessage:
    headers = [(k, v) for k, v in raw.headers if k != name] + [(name, value)]
    return RawMessage(raw.topic, 0, offset, raw.key, raw.value, headers)


async def letters(context: ServiceContext) -> list[dict[str, Any]]:
    """The outbox rows as dead letters: their headers by name, `_value` and `_topic`."""
    async with context.engine.connect() as conn:
        rows = (await conn.execute(select(context.outbox).order_by(context.outbox.c.id))).all()
    return [
        {
            **{name: base64.b64decode(value).decode() for name, value in json.loads(row.headers)},
            "_value": row.value,
            "_topic": row.topic,
        }
        for row in rows
    ]


async def test_a_batch_commits_once_and_every_record_keeps_its_own_outcome(
    context: ServiceContext,
) -> None:
    async def roster_entry(uow: UnitOfWork, event: Event[Any]) -> None:
        await store.add_to_roster(
            uow.conn,
            credit_code=event.payload.credit_code,
            compliance_year=2024,
            name="ok",
            district="pudong",
        )

    consumer = EventConsumer(context, {"entity.registered": roster_entry})
    first, second = registered(10), registered(11)
    huge = RawMessage("entity.registered", 0, 16, first.key, b"x" * (2 * 1024 * 1024), [])
    batch = [
        first,
        RawMessage("entity.registered", 0, 12, first.key, b"\xff not json", first.headers),
        RawMessage("entity.registered", 0, 13, first.key, first.value, first.headers),  # again
        on_topic(registered(20), "report.submitted", 14),  # a registration on another topic
        with_header(registered(21), "ce_source", b"/carbon/reporting", 15),  # not its writer
        huge,
        second,
    ]

    outcomes = await consumer.handle_batch(batch)

    assert outcomes == [
        "processed",
        "dead_lettered",
        "duplicate",
        "dead_lettered",
        "dead_lettered",
        "dead_lettered",
        "processed",
    ]
    roster = await rows(context, "SELECT credit_code FROM roster")
    assert sorted(code for (code,) in roster) == sorted(
        [make_credit_code(10), make_credit_code(11)]
    )
    dead = await letters(context)
    assert [letter["dlq_error_class"] for letter in dead] == [
        "schema_violation",
        "type_not_of_topic",
        "foreign_source",
        "oversized",
    ]
    assert {letter["_topic"] for letter in dead} == {"reporting.dlq"}
    # Too large to copy: a reference to the record instead, with the start of its value.
    reference = dead[-1]
    assert reference["dlq_reference"] == "true"
    assert int(reference["dlq_original_size"]) > 2 * 1024 * 1024
    assert (reference["dlq_original_topic"], reference["dlq_original_offset"]) == (
        "entity.registered",
        "16",
    )
    assert reference["_value"] == b"x" * 1024
    # The same batch delivered again applies nothing and letters nothing twice.
    assert set(await consumer.handle_batch(batch)) == {"duplicate"}
    assert len(await letters(context)) == 4


async def test_a_rejected_event_in_a_batch_undoes_only_itself(context: ServiceContext) -> None:
    refused_code = make_credit_code(31)

    async def refuses_one(uow: UnitOfWork, event: Event[Any]) -> None:
        await store.add_to_roster(
            uow.conn,
            credit_code=event.payload.credit_code,
            compliance_year=2024,
            name="written before the refusal",
            district="pudong",
        )
        uow.record(event.payload)
        if event.payload.credit_code == refused_code:
            raise Conflict("nope", "refused by the rules")

    consumer = EventConsumer(context, {"entity.registered": refuses_one})
    outcomes = await consumer.handle_batch([registered(30), registered(31), registered(32)])

    assert outcomes == ["processed", "rejected", "processed"]
    roster = {code for (code,) in await rows(context, "SELECT credit_code FROM roster")}
    assert roster == {make_credit_code(30), make_credit_code(32)}
    published = [row.topic for row in await rows(context, "SELECT topic FROM outbox")]
    assert published == ["entity.registered", "entity.registered"]  # not the refused one's
    inbox = dict(await rows(context, "SELECT outcome, count(*) FROM inbox GROUP BY outcome"))
    assert inbox == {"processed": 2, "rejected": 1}
