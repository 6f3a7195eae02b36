"""Replaying a service's dead-letter topic into the topics its letters came from."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from carbon_contracts.catalogue import catalogue

CONTEXT_PREFIX = "dlq_"


async def replay_dead_letters(
    bootstrap: str, service: str, *, dry_run: bool = False
) -> list[tuple[str, str, str]]:
    """Re-publish every letter of `<service>.dlq` to its original topic without the dlq_*
    context headers; returns (original topic, error class, ce_id) per letter."""
    topic = catalogue().dead_letter_topic(service)
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await consumer.start()
    await producer.start()
    replayed: list[tuple[str, str, str]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        for partition in partitions:
            while await consumer.position(partition) < ends[partition]:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                for message in batch.get(partition, []):
                    if message.offset >= ends[partition]:
                        break
                    headers = dict(message.headers)
                    original = headers[f"{CONTEXT_PREFIX}original_topic"].decode()
                    if not dry_run:
                        await producer.send_and_wait(
                            original,
                            value=message.value,
                            key=message.key,
                            headers=[
                                (name, value)
                                for name, value in message.headers
                                if not name.startswith(CONTEXT_PREFIX)
                            ],
                        )
                    replayed.append(
                        (
                            original,
                            headers.get(f"{CONTEXT_PREFIX}error_class", b"").decode(),
                            headers.get("ce_id", b"(no ce_id)").decode(),
                        )
                    )
    finally:
        await consumer.stop()
        await producer.stop()
    return replayed
