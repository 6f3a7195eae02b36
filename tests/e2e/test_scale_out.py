"""Two instances of every service on one database and one broker (`carbon up --instances 2`):
a burst of commands spread over both publishes every event exactly once, each consumer applies
it once, and an instance joining or leaving the group is no outage for the other."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.domain.credit_code import make_credit_code
from tests.support import (
    CYCLE_TOPICS,
    Database,
    Platform,
    ServiceProcess,
    compliance_cycle,
    cycle_notices,
    read_topic,
    running_platform,
    wait_until,
)

pytestmark = pytest.mark.e2e
ENTITIES = 114  # CYCLE_COMMANDS (10) each: 1,140 commands
SEED = 3_100_000


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    yield Database.for_test()


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory, database: Database) -> Iterator[Platform]:
    var_dir = tmp_path_factory.mktemp("twins")
    with running_platform(var_dir, database, instances=2) as platform:
        yield platform


def test_a_burst_over_two_instances_publishes_every_event_once(twins: Platform) -> None:
    codes = [make_credit_code(SEED + n) for n in range(ENTITIES)]
    turn = itertools.count()

    def url(service: str) -> str:  # every call to the next instance, round robin
        return twins.instances[service][next(turn) % 2]

    async def burst() -> list[dict[str, object]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            gate = asyncio.Semaphore(16)

            async def one(code: str) -> dict[str, object]:
                async with gate:
                    return await compliance_cycle(client, url, code)

            return await asyncio.gather(*(one(code) for code in codes))

    receipts = asyncio.run(burst())
    assert {receipt["status"] for receipt in receipts} == {"compliant"}

    # Every consumer has had everything: the notifier tells each entity of its 8 events.
    wait_until(
        lambda: cycle_notices(twins.urls["notifier"], set(codes)) == ENTITIES * len(CYCLE_TOPICS),
        timeout=180,
        what="the notifier to have everything",
        every=1,
    )

    ours = {code.encode() for code in codes}
    for topic in CYCLE_TOPICS:
        records = [r for r in read_topic(twins.bootstrap, topic) if r.key in ours]
        copies = Counter(r.headers["ce_id"] for r in records)
        assert [ce_id for ce_id, n in copies.items() if n > 1] == [], topic
        assert len(copies) == ENTITIES, topic

    # One relay per service publishes; the other instance stands by.
    for service, urls in twins.instances.items():
        leaders = [metric(url, "carbon_relay_leader") for url in urls]
        assert sorted(leaders) == [0.0, 1.0], (service, leaders)


def metric(url: str, name: str) -> float:
    """A metric's value at a service instance, its samples summed."""
    body = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(f"{name} ") or line.startswith(f"{name}{{")
    )


def test_an_instance_joining_and_leaving_is_no_outage_for_the_others(
    twins: Platform, database: Database, tmp_path: Path
) -> None:
    watched = twins.instances["registry"]
    answers: list[int] = []
    done = threading.Event()

    def watch() -> None:
        with httpx.Client(timeout=5) as client:
            while not done.is_set():
                for url in watched:
                    answers.append(client.get(f"{url}/health/ready").status_code)
                done.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    third = ServiceProcess(
        "registry", twins.bootstrap, twins.var_dir, database, instance="registry-3"
    )
    try:
        third.start()  # joins the group: every member's partitions are reassigned
        third.stop()  # leaves it: reassigned again
        after = len(answers)
        # The group settles again after a rebalance timeout: keep watching past it.
        wait_until(lambda: len(answers) > after + 40, timeout=60, what="readiness samples")
    finally:
        done.set()
        watcher.join()
        third.stop()
    assert set(answers) == {200}, Counter(answers)
