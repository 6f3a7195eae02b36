"""Consumer lag measured from a real embedded broker: committed offsets against end offsets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import generate_latest
from pydantic import SecretStr

from carbon_contracts.catalogue import catalogue
from carbon_platform.lag import LagWatch, PartitionLag, lag_of
from carbon_platform.settings import Settings
from tests.support import JWT_SECRET, Broker, embedded_broker, metric, wait_until

pytestmark = pytest.mark.integration

PREFIX = "lag-test"
NOTIFIER = f"{PREFIX}-notifier"
VERIFICATION = f"{PREFIX}-verification"


def settings(bootstrap: str) -> Settings:
    """This instance is a verification one: it subscribes to entity.registered."""
    return Settings(
        service="verification",
        kafka_bootstrap=bootstrap,
        group_prefix=PREFIX,
        jwt_secret=SecretStr(JWT_SECRET),
    )


async def send(bootstrap: str, counts: dict[TopicPartition, int]) -> None:
    """Records one at a time, so the embedded broker's end offsets count every one of them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for tp, count in counts.items():
            for n in range(count):
                await producer.send_and_wait(tp.topic, b"%d" % n, partition=tp.partition)
    finally:
        await producer.stop()


async def consume_and_commit(bootstrap: str, group: str, counts: dict[TopicPartition, int]) -> None:
    """The group reads these partitions up to `count` records each and commits where it got."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(counts))
        for tp in counts:
            await consumer.seek_to_beginning(tp)
        read = dict.fromkeys(counts, 0)
        while any(read[tp] < count for tp, count in counts.items()):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                read[tp] += len(records)
        await consumer.commit({tp: read[tp] for tp in counts})
    finally:
        await consumer.stop()


def by_partition(figures: list[PartitionLag], group: str, topic: str) -> dict[int, int]:
    return {f.partition: f.lag for f in figures if f.group == group and f.topic == topic}


async def measured(watch: LagWatch) -> list[PartitionLag]:
    try:
        return await watch.measure()
    finally:
        await watch.stop()


def test_lag_is_what_was_produced_after_the_groups_commit(tmp_path: Path) -> None:
    report = [TopicPartition("report.submitted", p) for p in (0, 1)]
    registered = TopicPartition("entity.registered", 2)
    with embedded_broker(tmp_path) as bootstrap:
        asyncio.run(send(bootstrap, {report[0]: 5, report[1]: 3, registered: 2}))
        asyncio.run(consume_and_commit(bootstrap, NOTIFIER, {report[0]: 5, report[1]: 3}))
        asyncio.run(send(bootstrap, {report[0]: 4, report[1]: 2}))

        watch = LagWatch(settings(bootstrap), own_topics=["entity.registered"])
        figures = asyncio.run(measured(watch))

    partitions = catalogue().topic("report.submitted").partitions
    # Committed after 5 and 3 records, 4 and 2 more since; the other partitions hold nothing.
    assert by_partition(figures, NOTIFIER, "report.submitted") == {
        0: 4,
        1: 2,
        **{p: 0 for p in range(2, partitions)},
    }
    # The notifier's group never committed on entity.registered, and this instance is not a
    # notifier: that topic is not known to be the notifier's.
    assert by_partition(figures, NOTIFIER, "entity.registered") == {}
    # This instance's own group subscribes to entity.registered and never committed: it has every
    # record there to read, from the log start.
    assert by_partition(figures, VERIFICATION, "entity.registered") == {
        p: 2 if p == registered.partition else 0
        for p in range(catalogue().topic("entity.registered").partitions)
    }
    # Groups that neither committed nor are this instance's own report nothing.
    assert {f.group for f in figures} == {NOTIFIER, VERIFICATION}


def test_the_gauge_shows_the_lag_and_drops_it_when_the_broker_is_gone(tmp_path: Path) -> None:
    tp = TopicPartition("report.submitted", 3)
    broker = Broker(tmp_path).start()
    try:
        asyncio.run(send(broker.bootstrap, {tp: 1}))
        asyncio.run(consume_and_commit(broker.bootstrap, NOTIFIER, {tp: 1}))
        asyncio.run(send(broker.bootstrap, {tp: 6}))
        watch = LagWatch(settings(broker.bootstrap))

        async def watched_until_dropped() -> None:
            task = asyncio.create_task(watch.run())
            try:
                await poll(lambda: lag_shown(NOTIFIER, "report.submitted", "3") == 6)
                broker.kill()
                # Stale figures must not stay: the instance drops them, logged once.
                await poll(lambda: lag_series(NOTIFIER) == 0, within=60)
            finally:
                task.cancel()
                await watch.stop()

        asyncio.run(watched_until_dropped())
    finally:
        broker.stop()


async def poll(check: Callable[[], bool], *, within: float = 30) -> None:
    """wait_until beside a coroutine: polls in a thread, so the watch runs on meanwhile."""
    await asyncio.to_thread(wait_until, check, timeout=within, what="the lag gauge")


def lag_shown(group: str, topic: str, partition: str) -> float:
    return metric(
        generate_latest().decode(),
        "carbon_consumer_lag",
        group=group,
        topic=topic,
        partition=partition,
    )


def lag_series(group: str) -> int:
    return sum(
        1
        for line in generate_latest().decode().splitlines()
        if line.startswith("carbon_consumer_lag{") and f'group="{group}"' in line
    )


def test_a_group_resumes_from_the_log_start_when_its_offset_is_gone() -> None:
    assert lag_of(None, earliest=0, end=7) == 7  # never committed
    assert lag_of(-1, earliest=2, end=7) == 5  # never committed, records before 2 deleted
    assert lag_of(1, earliest=4, end=7) == 3  # committed below what the log still holds
    assert lag_of(9, earliest=0, end=8) == 0  # the embedded broker's end trails a batch
