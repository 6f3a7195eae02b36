"""The outbox relay against the real embedded broker and a real database: one relay of several
publishes (the lease), a row no broker would take is parked without holding up the rows behind
it, and history a broker lost is published again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from carbon_contracts.catalogue import catalogue
from carbon_contracts.events import EntityRegistered
from carbon_platform import metrics
from carbon_platform.broker import create_topics
from carbon_platform.clock import Clock
from carbon_platform.codec import Outgoing, encode
from carbon_platform.db import make_engine
from carbon_platform.outbox import REFUSALS_BEFORE_REPAIR, OutboxRelay, add_to_outbox
from carbon_platform.runtime import BrokerProbe
from carbon_platform.settings import Settings
from registry.domain.credit_code import make_credit_code
from registry.service import SERVICE
from tests.support import Broker, migrated_schema, read_topic

pytestmark = pytest.mark.integration


def registration(seed: int) -> Outgoing:
    return encode(
        EntityRegistered(
            credit_code=make_credit_code(seed),
            compliance_year=2024,
            name="Relay Ltd",
            district="pudong",
            sector="chemicals",
            new_entrant=False,
            registered_at=datetime.now(UTC),
        ),
        source="/carbon/registry",
        time=datetime.now(UTC),
    )


class Relays:
    """Relays of one service (the registry) on one database and one broker."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.engine = make_engine(settings)
        self.probe = BrokerProbe(settings)
        self.producers: list[AIOKafkaProducer] = []

    async def relay(self, instance: str) -> OutboxRelay:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker.bootstrap,
            enable_idempotence=False,
            acks="all",
            max_request_size=catalogue().max_message_bytes,
        )
        await producer.start()
        self.producers.append(producer)
        owned = catalogue().owned_by("registry")
        relay = OutboxRelay(
            engine=self.engine,
            outbox=SERVICE.tables.outbox,
            lease=SERVICE.tables.outbox_lease,
            clock=Clock(),
            instance=instance,
            topics={topic.name: topic for topic in owned},
            record_at=self.probe.record_at,
            ensure_topics=lambda replace: create_topics(
                self.broker.bootstrap, catalogue(), only=owned, replace=replace
            ),
        )
        relay.producer = producer
        return relay

    async def commit(self, *events: Outgoing) -> None:
        async with self.engine.begin() as conn:
            await add_to_outbox(conn, SERVICE.tables.outbox, events, at=datetime.now(UTC))

    async def outbox(self) -> list[tuple[str, bool, str | None]]:
        outbox = SERVICE.tables.outbox
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(outbox).order_by(outbox.c.id))
            return [(r.event_id, r.published_at is not None, r.park_reason) for r in rows]

    async def close(self) -> None:
        for producer in self.producers:
            await producer.stop()
        await self.probe.stop()
        await self.engine.dispose()


@pytest.fixture
async def relays(tmp_path: Path) -> AsyncIterator[Relays]:
    broker = await asyncio.to_thread(Broker(tmp_path).start)
    try:
        async with migrated_schema(SERVICE, tmp_path, kafka_bootstrap=broker.bootstrap) as settings:
            running = Relays(settings, broker)
            try:
                yield running
            finally:
                await running.close()
    finally:
        await asyncio.to_thread(broker.stop)


async def test_only_the_lease_holder_publishes_and_another_takes_over(relays: Relays) -> None:
    first, second = await relays.relay("registry-1"), await relays.relay("registry-2")
    await relays.commit(*(registration(n) for n in range(5)))

    assert await first._step() is False  # took the lease, published the five
    assert await second._step() is False  # found the lease taken: stood by
    assert (first.leader, second.leader) == (True, False)
    await relays.commit(*(registration(n) for n in range(5, 8)))
    assert await second._step() is False
    assert [published for _, published, _ in await relays.outbox()] == [True] * 5 + [False] * 3

    await first._release()  # a clean stop hands the lease on at once
    await second._step()
    assert second.leader
    assert [published for _, published, _ in await relays.outbox()] == [True] * 8
    on_topic = await asyncio.to_thread(read_topic, relays.broker.bootstrap, "entity.registered")
    assert sorted(r.headers["ce_id"].decode() for r in on_topic) == sorted(
        event_id for event_id, _, _ in await relays.outbox()
    )


async def test_a_row_too_large_is_parked_and_the_rows_behind_it_go_on(relays: Relays) -> None:
    relay = await relays.relay("registry-1")
    before, after = registration(1), registration(2)
    huge = Outgoing(
        topic="entity.registered",
        key=before.key,
        value=b"x" * (catalogue().max_message_bytes + 1),
        headers=before.headers,
        event_id="00000000-0000-4000-8000-000000000001",
        event_type="entity.registered",
    )
    await relays.commit(before, huge, after)

    await relay._step()

    rows = await relays.outbox()
    assert [(event_id, published) for event_id, published, _ in rows] == [
        (before.event_id, True),
        (huge.event_id, False),
        (after.event_id, True),
    ]
    reason = rows[1][2]
    assert reason is not None and "max.message.bytes" in reason
    assert metrics.OUTBOX_PARKED._value.get() == 1
    on_topic = await asyncio.to_thread(read_topic, relays.broker.bootstrap, "entity.registered")
    assert [r.headers["ce_id"].decode() for r in on_topic] == [before.event_id, after.event_id]
    assert relay.oldest_pending_age == 0  # a parked row does not stall the outbox


async def test_history_lost_with_the_broker_is_published_again_in_order(relays: Relays) -> None:
    relay = await relays.relay("registry-1")
    history = [registration(n) for n in range(3)]
    await relays.commit(*history)
    await relay._step()  # publishes the three
    assert await relay._restore_lost_history() is False  # in place: they anchor the next check

    # The broker vanishes and an empty one takes its place; a send that was waiting for it goes
    # through without an error (the producer reconnects), so the last event sent is on it.
    await asyncio.to_thread(relays.broker.kill)
    await asyncio.to_thread(relays.broker.start)
    late = registration(9)
    await relays.commit(late)
    assert await relay.publish(await relay._pending()) == 1

    assert await relay._restore_lost_history() is True  # the anchor is gone
    await relay._step()

    on_topic = await asyncio.to_thread(read_topic, relays.broker.bootstrap, "entity.registered")
    ids = [r.headers["ce_id"].decode() for r in on_topic]
    assert set(ids) == {event.event_id for event in [*history, late]}
    for partition in {r.partition for r in on_topic}:
        in_partition = [r.headers["ce_id"].decode() for r in on_topic if r.partition == partition]
        again = [i for i in in_partition if i in {e.event_id for e in history}]
        assert again == [e.event_id for e in history if e.event_id in again]  # original order
    assert metrics.OUTBOX_REPUBLISHED_TOTAL.labels("entity.registered")._value.get() >= 3


async def test_a_partition_a_new_broker_spoilt_is_created_again(relays: Relays) -> None:
    # Tansu takes a send to a topic it does not have yet (here, from a producer that knew the
    # topic from the broker before), and once the topic is created refuses every later send to
    # that partition.
    relay = await relays.relay("registry-1")
    history = [registration(n) for n in range(3)]
    await relays.commit(*history)
    await relay._step()
    straggler = AIOKafkaProducer(bootstrap_servers=relays.broker.bootstrap)
    await straggler.start()
    await straggler.partitions_for("entity.registered")

    await asyncio.to_thread(relays.broker.kill)
    await asyncio.to_thread(relays.broker.start, topics=False)
    stray = registration(0)  # the key of history[0]: its partition
    try:
        await straggler.send_and_wait(
            "entity.registered", stray.value, key=stray.key, headers=list(stray.headers)
        )
    finally:
        await straggler.stop()
    await create_topics(relays.broker.bootstrap, catalogue())
    late = registration(0)
    await relays.commit(late)

    failures = []
    for _ in range(5):  # a send fails on the spoilt partition, which is then created again
        try:
            await relay._step()
        except Exception as error:
            failures.append(error)
            continue
        if all(published for _, published, _ in await relays.outbox()):
            break

    assert [type(error).__name__ for error in failures] == ["UnknownError"]
    on_topic = await asyncio.to_thread(read_topic, relays.broker.bootstrap, "entity.registered")
    ids = [r.headers["ce_id"].decode() for r in on_topic]
    assert sorted(ids) == sorted(event.event_id for event in [*history, late])  # no stray


async def test_after_our_own_send_reached_a_missing_topic_every_event_gets_through(
    relays: Relays,
) -> None:
    # As above, but the send that reached the missing topic was the relay's own, so the
    # partition holds our record where the relay looks. A CI run saw a relay then keep such a
    # topic and fail for 44 s; since, a partition that holds ours and refuses
    # REFUSALS_BEFORE_REPAIR sends in a row is created again too. Here Tansu refuses once.
    relay = await relays.relay("registry-1")
    history = [registration(n) for n in range(3)]
    await relays.commit(*history)
    await relay._step()

    await asyncio.to_thread(relays.broker.kill)
    await asyncio.to_thread(relays.broker.start, topics=False)
    first = registration(0)  # the key of history[0]: its partition
    await relays.commit(first)
    await relay._step()  # its producer knows the topic from before: the send lands anyway
    await create_topics(relays.broker.bootstrap, catalogue())
    late = registration(0)
    await relays.commit(late)

    failures: list[Exception] = []
    for _ in range(2 * REFUSALS_BEFORE_REPAIR):
        try:
            await relay._step()
        except Exception as error:
            failures.append(error)
            continue
        if all(published for _, published, _ in await relays.outbox()):
            break

    assert all(published for _, published, _ in await relays.outbox())
    assert 0 < len(failures) <= REFUSALS_BEFORE_REPAIR
    assert {type(error).__name__ for error in failures} == {"UnknownError"}
    on_topic = await asyncio.to_thread(read_topic, relays.broker.bootstrap, "entity.registered")
    ids = {r.headers["ce_id"].decode() for r in on_topic}
    assert {event.event_id for event in [first, late]} <= ids
