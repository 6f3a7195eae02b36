"""A service's dead-letter topic: list its letters, and replay them through the service's own
consumer, so each letter goes through the same inbox again (idempotent) and no other service's
topic is written (single writer per topic)."""

from __future__ import annotations

from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, Depends

from carbon_contracts.catalogue import catalogue
from carbon_platform.auth import Principal, require
from carbon_platform.codec import RawMessage
from carbon_platform.consumer import EventConsumer

CONTEXT_PREFIX = "dlq_"
Operator = Annotated[Principal, Depends(require("regulator"))]


async def read_dead_letters(bootstrap: str, service: str) -> list[RawMessage]:
    """Every letter now on `<service>.dlq`, read from the beginning without a consumer group."""
    topic = catalogue().dead_letter_topic(service)
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    letters: list[RawMessage] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        for partition in partitions:
            while await consumer.position(partition) < ends[partition]:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                letters.extend(
                    RawMessage(m.topic, m.partition, m.offset, m.key, m.value, list(m.headers))
                    for m in batch.get(partition, [])
                    if m.offset < ends[partition]
                )
    finally:
        await consumer.stop()
    return letters


def original(letter: RawMessage) -> RawMessage | None:
    """The record as it was first consumed, from the letter's context headers."""
    topic = letter.header(f"{CONTEXT_PREFIX}original_topic")
    partition = letter.header(f"{CONTEXT_PREFIX}original_partition")
    offset = letter.header(f"{CONTEXT_PREFIX}original_offset")
    if topic is None or partition is None or offset is None:
        return None
    return RawMessage(
        topic=topic,
        partition=int(partition),
        offset=int(offset),
        key=letter.key,
        value=letter.value,
        headers=[(k, v) for k, v in letter.headers if not k.startswith(CONTEXT_PREFIX)],
    )


def _describe(letter: RawMessage) -> dict[str, Any]:
    return {
        "dlq_offset": letter.offset,
        "original_topic": letter.header(f"{CONTEXT_PREFIX}original_topic"),
        "original_partition": letter.header(f"{CONTEXT_PREFIX}original_partition"),
        "original_offset": letter.header(f"{CONTEXT_PREFIX}original_offset"),
        "error_class": letter.header(f"{CONTEXT_PREFIX}error_class"),
        "error_message": letter.header(f"{CONTEXT_PREFIX}error_message"),
        "failed_at": letter.header(f"{CONTEXT_PREFIX}failed_at"),
        "ce_id": letter.header("ce_id"),
        "ce_type": letter.header("ce_type"),
    }


def dead_letter_router(*, bootstrap: str, service: str, consumer: EventConsumer) -> APIRouter:
    router = APIRouter(prefix="/dead-letters", tags=["operations"])

    @router.get("")
    async def list_dead_letters(_: Operator) -> list[dict[str, Any]]:
        """The letters on this service's dead-letter topic, with why each was set aside."""
        return [_describe(letter) for letter in await read_dead_letters(bootstrap, service)]

    @router.post("/replay")
    async def replay(_: Operator) -> list[dict[str, Any]]:
        """Run every letter through the consumer again, after the cause is fixed. A letter
        already applied comes back `duplicate`; one still poisonous is not lettered twice."""
        results = []
        for letter in await read_dead_letters(bootstrap, service):
            record = original(letter)
            outcome = await consumer.handle(record) if record else "not_a_dead_letter"
            results.append({**_describe(letter), "outcome": outcome})
        return results

    return router
