"""What a service set aside, for its operators: its dead-letter topic (list the letters, and
replay them through the service's own consumer, so each goes through the same inbox again and no
other service's topic is written) and its parked outbox rows (events no broker would take)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from carbon_contracts.catalogue import catalogue
from carbon_platform.access import OPERATIONS
from carbon_platform.auth import Principal, require
from carbon_platform.broker import read_to_end
from carbon_platform.codec import RawMessage
from carbon_platform.consumer import DLQ_PREFIX, EventConsumer
from carbon_platform.context import ServiceContext
from carbon_platform.http import refusals
from carbon_platform.kafka import client_options
from carbon_platform.settings import Settings

Operator = Annotated[Principal, Depends(require(*OPERATIONS.roles("operate")))]


class DeadLetter(BaseModel):
    dlq_offset: int
    original_topic: str | None
    original_partition: str | None
    original_offset: str | None
    error_class: str | None
    error_message: str | None
    failed_at: str | None
    ce_id: str | None
    ce_type: str | None
    reference: bool = False
    original_size: int | None = None


class Replayed(DeadLetter):
    outcome: str


async def read_records(
    settings: Settings, topic: str, partitions: list[int], start: int | None = None
) -> list[RawMessage]:
    """Records of a topic's partitions, from `start` (else the beginning) up to now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=catalogue().max_message_bytes,
        **client_options(settings),
    )
    await consumer.start()
    try:
        found = await read_to_end(
            consumer, [TopicPartition(topic, p) for p in partitions], start=start
        )
    finally:
        await consumer.stop()
    return [
        RawMessage(m.topic, m.partition, m.offset, m.key, m.value, list(m.headers)) for m in found
    ]


async def read_dead_letters(settings: Settings, service: str) -> list[RawMessage]:
    """Every letter now on `<service>.dlq`, from the beginning."""
    topic = catalogue().dead_letter_topic(service)
    return await read_records(settings, topic.name, list(range(topic.partitions)))


async def original(settings: Settings, letter: RawMessage) -> RawMessage | None:
    """The record as it was first consumed: from the letter itself, or, for a reference letter
    (the record was too large to copy), from its original topic and position."""
    topic = letter.header(f"{DLQ_PREFIX}original_topic")
    partition = letter.header(f"{DLQ_PREFIX}original_partition")
    offset = letter.header(f"{DLQ_PREFIX}original_offset")
    if topic is None or partition is None or offset is None:
        return None
    if letter.header(f"{DLQ_PREFIX}reference") == "true":
        found = await read_records(settings, topic, [int(partition)], start=int(offset))
        return next((r for r in found if r.offset == int(offset)), None)
    return RawMessage(
        topic=topic,
        partition=int(partition),
        offset=int(offset),
        key=letter.key,
        value=letter.value,
        headers=[(k, v) for k, v in letter.headers if not k.startswith(DLQ_PREFIX)],
    )


def _describe(letter: RawMessage) -> DeadLetter:
    size = letter.header(f"{DLQ_PREFIX}original_size")
    return DeadLetter(
        dlq_offset=letter.offset,
        original_topic=letter.header(f"{DLQ_PREFIX}original_topic"),
        original_partition=letter.header(f"{DLQ_PREFIX}original_partition"),
        original_offset=letter.header(f"{DLQ_PREFIX}original_offset"),
        error_class=letter.header(f"{DLQ_PREFIX}error_class"),
        error_message=letter.header(f"{DLQ_PREFIX}error_message"),
        failed_at=letter.header(f"{DLQ_PREFIX}failed_at"),
        ce_id=letter.header("ce_id"),
        ce_type=letter.header("ce_type"),
        reference=letter.header(f"{DLQ_PREFIX}reference") == "true",
        original_size=int(size) if size and size.isdigit() else None,
    )


def dead_letter_router(*, settings: Settings, service: str, consumer: EventConsumer) -> APIRouter:
    router = APIRouter(prefix="/dead-letters", tags=["operations"], responses=refusals(403))

    @router.get("")
    async def list_dead_letters(_: Operator) -> list[DeadLetter]:
        """The letters on this service's dead-letter topic, with why each was set aside."""
        return [_describe(letter) for letter in await read_dead_letters(settings, service)]

    @router.post("/replay")
    async def replay(_: Operator) -> list[Replayed]:
        """Run every letter through the consumer again, after the cause is fixed. A letter
        already applied comes back `duplicate`; one still poisonous is not lettered twice; a
        reference letter is replayed from its original topic, if the record is still there."""
        results = []
        for letter in await read_dead_letters(settings, service):
            record = await original(settings, letter)
            if record is None:
                outcome = "not_a_dead_letter" if not _describe(letter).reference else "gone"
            else:
                outcome = await consumer.handle(record)
            results.append(Replayed(**_describe(letter).model_dump(), outcome=outcome))
        return results

    return router


class ParkedEvent(BaseModel):
    id: int = Field(description="the outbox row")
    event_id: str
    event_type: str
    topic: str
    value_bytes: int
    reason: str | None
    created_at: datetime
    parked_at: datetime


def parked_router(context: ServiceContext) -> APIRouter:
    router = APIRouter(prefix="/outbox", tags=["operations"], responses=refusals(403))

    @router.get("/parked")
    async def parked(_: Operator) -> list[ParkedEvent]:
        """Events this service committed but no broker would take (larger than their topic
        allows): set aside so they block nothing, kept in the outbox for the record."""
        outbox = context.outbox
        async with context.reader.connect() as conn:
            rows = await conn.execute(
                select(
                    outbox.c.id,
                    outbox.c.event_id,
                    outbox.c.event_type,
                    outbox.c.topic,
                    func.length(outbox.c.value).label("value_bytes"),
                    outbox.c.park_reason.label("reason"),
                    outbox.c.created_at,
                    outbox.c.parked_at,
                )
                .where(outbox.c.parked_at.is_not(None))
                .order_by(outbox.c.id)
            )
            return [ParkedEvent.model_validate(row, from_attributes=True) for row in rows]

    return router
