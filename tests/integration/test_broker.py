"""The embedded broker and topic provisioning from the catalogue, on a real Tansu."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from carbon_contracts.catalogue import catalogue
from carbon_platform.broker import create_topics, start_tansu, stop_process
from tests.support import embedded_broker, free_port, produce, read_topic

pytestmark = pytest.mark.integration


async def described(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [topic.name for topic in catalogue().topics]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


def test_topics_are_created_with_the_catalogue_partitions_once(tmp_path: Path) -> None:
    with embedded_broker(tmp_path) as bootstrap:  # creates them the first time
        assert asyncio.run(described(bootstrap)) == {
            t.name: t.partitions for t in catalogue().topics
        }
        assert asyncio.run(create_topics(bootstrap, catalogue())) == []  # idempotent


def test_a_topic_tansu_made_up_is_replaced_with_the_catalogue_one(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    process = start_tansu(port, tmp_path / "broker.log")
    try:
        # A producer asking for a topic before it exists: Tansu creates it, with 4 partitions.
        produce(bootstrap, "report.submitted", [(b"k", b"early", [])])
        assert asyncio.run(described(bootstrap))["report.submitted"] == 4

        created = asyncio.run(create_topics(bootstrap, catalogue(), replace_misshapen=True))

        assert "report.submitted" in created
        assert asyncio.run(described(bootstrap)) == {
            t.name: t.partitions for t in catalogue().topics
        }
        assert read_topic(bootstrap, "report.submitted") == []  # what it held went with it
    finally:
        stop_process(process)


def test_the_broker_refuses_a_port_already_taken(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(RuntimeError, match="already taken"):
            start_tansu(port, tmp_path / "broker.log")


def test_a_started_broker_stops(tmp_path: Path) -> None:
    process = start_tansu(free_port(), tmp_path / "broker.log")
    stop_process(process)
    assert process.returncode is not None
