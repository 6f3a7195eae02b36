"""The platform as operators run it: records nobody expected, a service that dies, a broker
that vanishes. Under `carbon up`, over HTTP and topics; nothing lost, nothing applied twice."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from carbon_contracts.catalogue import catalogue
from carbon_platform.codec import encode
from registry.domain.credit_code import make_credit_code
from tests.support import (
    CYCLE_TOPICS,
    Database,
    Platform,
    broker_pid,
    compliance_cycle,
    example,
    produce,
    read_topic,
    running_platform,
    service_pids,
    token,
    wait_until,
)

pytestmark = pytest.mark.e2e
CONSUMED_BY = {
    "reporting": {"entity.registered", "verification.returned"},
    "verification": {"entity.registered", "report.submitted", "emissions.determined"},
    "registry": {
        "verification.finalised",
        "verification.closed",
        "report.submitted",
        "ccer.cancelled",
        "shcercir1.cancelled",
        "trading_account.opened",
        "exchange_transfer.settled",
        "market_day.closed",
        "auction_payment.confirmed",
    },
    "notifier": {topic.name for topic in catalogue().domain_topics() if not topic.is_inbound},
}


DATABASE = Database.for_test()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("resilience"), DATABASE) as up:
        yield up


def cycles(platform: Platform, seeds: range) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    compliance_cycle(client, platform.urls.__getitem__, make_credit_code(seed))
                    for seed in seeds
                )
            )

    return asyncio.run(run())


def not_ready(platform: Platform) -> dict[str, Any]:
    """The failing readiness checks of each service that answers 503."""
    answers = {
        name: httpx.get(f"{url}/health/ready", timeout=5) for name, url in platform.urls.items()
    }
    return {
        name: reply.json()["checks"] for name, reply in answers.items() if reply.status_code != 200
    }


def assert_ready_again(platform: Platform, timeout: float = 60) -> None:
    """Every service answers ready within `timeout` (a rebalance or a relay retry after a
    broker loss takes a few seconds; a check that stays failing is the defect)."""
    failing: dict[str, Any] = {}

    def ready() -> bool:
        failing.clear()
        failing.update(not_ready(platform))
        return not failing

    try:
        wait_until(ready, timeout=timeout, what="every service to be ready")
    except AssertionError as late:
        raise AssertionError(f"{late}; still failing: {failing}") from None


def dead_letters(platform: Platform, service: str) -> list[dict[str, Any]]:
    reply = httpx.get(
        f"{platform.urls[service]}/dead-letters", headers=token("regulator"), timeout=30
    )
    assert reply.status_code == 200, reply.text
    letters: list[dict[str, Any]] = reply.json()
    return letters


def test_a_5mb_record_on_every_topic_stops_nothing(platform: Platform) -> None:
    # A real-looking event whose value is 5 MB, written by an outsider onto every domain topic.
    code = make_credit_code(4_400_000)
    huge = b'{"padding": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    for topic in catalogue().domain_topics():
        model_event = topic.event_types[0]
        template = encode(example(model_event), source=topic.source, time=datetime.now(UTC))
        produce(
            platform.bootstrap,
            topic.name,
            [(code.encode(), huge, template.headers)],
        )

    # Every service sets them aside as references and goes on: a whole cycle still works.
    (receipt,) = cycles(platform, range(4_400_001, 4_400_002))
    assert receipt["status"] == "compliant"
    assert_ready_again(platform)

    def oversized(service: str, topics: set[str]) -> list[dict[str, Any]]:
        found = [
            letter
            for letter in dead_letters(platform, service)
            if letter["error_class"] == "oversized"
        ]
        return found if len(found) >= len(topics) else []

    for service, topics in CONSUMED_BY.items():
        letters = wait_until(
            functools.partial(oversized, service, topics),
            timeout=60,
            what=f"{service}'s letters for the oversized records",
        )
        assert {letter["original_topic"] for letter in letters} == topics, service
        assert all(letter["reference"] for letter in letters), service
        assert all(letter["original_size"] > 5 * 1024 * 1024 for letter in letters), service
        parked = httpx.get(
            f"{platform.urls[service]}/outbox/parked", headers=token("regulator"), timeout=10
        ).json()
        assert parked == [], (service, parked)


def test_a_killed_service_comes_back_by_itself(platform: Platform) -> None:
    (pid,) = service_pids(platform.var_dir, "registry")
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: b"registry is back" in platform.output.read_bytes(),
        timeout=90,
        what="carbon up to restart the registry",
    )
    output = platform.output.read_text()
    assert "registry exited with code -9; restarting it in 0.5s" in output
    assert platform.process.poll() is None  # the stack did not stop
    (receipt,) = cycles(platform, range(4_500_000, 4_500_001))
    assert receipt["status"] == "compliant"


@pytest.mark.timeout(900)  # two waves of cycles, one of them through the broker's loss
def test_a_broker_killed_mid_run_loses_no_event(platform: Platform) -> None:
    seeds = range(4_600_000, 4_600_040)
    before = cycles(platform, seeds[:20])
    assert {receipt["status"] for receipt in before} == {"compliant"}

    # In the middle of a second wave, the broker vanishes with everything it held.
    async def second_wave_with_a_broker_loss() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=90) as client:
            wave = [
                asyncio.ensure_future(
                    compliance_cycle(client, platform.urls.__getitem__, make_credit_code(seed))
                )
                for seed in seeds[20:]
            ]
            await asyncio.sleep(0.2)  # the wave's first commands are on their way
            os.kill(broker_pid(platform.bootstrap), signal.SIGKILL)
            return await asyncio.gather(*wave)

    after = asyncio.run(second_wave_with_a_broker_loss())
    assert {receipt["status"] for receipt in after} == {"compliant"}
    wait_until(
        lambda: b"broker exited with code -9" in platform.output.read_bytes(),
        timeout=30,
        what="carbon up to see the broker go",
    )

    # Every event of the 40 entities is on the new broker, and the history published before
    # the crash (the first 20) is there in the order it was first published. Delivery is at
    # least once: a send cut off by the crash may land twice, and one in flight as the broker
    # came back may stand before the history as well as after it (a subscriber dedupes on
    # ce_id). Every consumer had every event (the notifier told each entity of its 9, once).
    codes = {make_credit_code(seed).encode() for seed in seeds}
    history = {make_credit_code(seed).encode() for seed in seeds[:20]}

    def ours_on(topic: str) -> list[Any]:
        found = [r for r in read_topic(platform.bootstrap, topic) if r.key in codes]
        return found if len({r.headers["ce_id"] for r in found}) == len(codes) else []

    for name in CYCLE_TOPICS:
        topic = catalogue().topic(name)
        records = wait_until(
            functools.partial(ours_on, topic.name),
            timeout=90,
            what=f"the 40 entities' {topic.name} events on the new broker",
        )
        before = _first_copies([r for r in records if r.key in history])
        assert len(before) == len(history), topic.name
        assert _in_outbox_order(platform, topic.owner, topic.name, before), topic.name

    def told(code: str) -> list[dict[str, Any]]:
        notes: list[dict[str, Any]] = httpx.get(
            f"{platform.urls['notifier']}/notifications",
            headers=token("entity", credit_code=code),
            timeout=10,
        ).json()
        # Its cycle's steps (by the real clock it is also overdue for every deadline).
        steps = [note for note in notes if note["event_type"] in CYCLE_TOPICS]
        return steps if len(steps) == len(CYCLE_TOPICS) else []

    for seed in seeds:
        code = make_credit_code(seed)
        try:
            notes = wait_until(
                functools.partial(told, code),
                timeout=180,  # the notifier reads every topic again from the start
                what=f"the notifier to have told {code} of its {len(CYCLE_TOPICS)} events",
            )
        except AssertionError as missing:
            raise AssertionError(f"{missing}\n{_what_the_notifier_saw(platform, code)}") from None
        assert len({note["event_id"] for note in notes}) == len(CYCLE_TOPICS)
    assert_ready_again(platform)


def _what_the_notifier_saw(platform: Platform, code: str) -> str:
    """Where each of the entity's events stands on the broker and in the notifier's inbox."""
    lines = []
    for name in CYCLE_TOPICS:
        topic = catalogue().topic(name).name
        on_broker = [
            (r.partition, r.offset, r.headers["ce_id"].decode())
            for r in read_topic(platform.bootstrap, topic)
            if r.key == code.encode()
        ]
        inbox = DATABASE.query(
            platform.var_dir,
            "notifier",
            'SELECT event_id, partition, "offset", outcome FROM inbox WHERE topic = :topic',
            topic=topic,
        )
        ids = {event_id for _, _, event_id in on_broker}
        handled = [tuple(row) for row in inbox if str(row[0]) in ids]
        lines.append(f"{name}: on the broker {on_broker}; in the inbox {handled}")
    return "\n".join(lines)


def _first_copies(records: list[Any]) -> list[Any]:
    """Each event once: where it first stands on its partition."""
    seen: set[bytes] = set()
    first = []
    for record in records:
        if record.headers["ce_id"] not in seen:
            seen.add(record.headers["ce_id"])
            first.append(record)
    return first


def _in_outbox_order(platform: Platform, service: str, topic: str, records: list[Any]) -> bool:
    """Whether each partition holds these events in the order the service's outbox has them."""
    rows = DATABASE.query(
        platform.var_dir,
        service,
        "SELECT event_id FROM outbox WHERE topic = :topic ORDER BY id",
        topic=topic,
    )
    order = {event_id: index for index, (event_id,) in enumerate(rows)}
    for partition in {r.partition for r in records}:
        ids = [r.headers["ce_id"].decode() for r in records if r.partition == partition]
        if [order[i] for i in ids] != sorted(order[i] for i in ids):
            return False
    return True


def test_every_line_a_service_writes_is_json(platform: Platform) -> None:
    # After the starts, kills and restarts above: JSON log lines only, not even the terminal codes
    # of a progress spinner before the first one.
    for service in platform.urls:
        lines = (platform.var_dir / "log" / f"{service}.log").read_text().splitlines()
        assert lines, service
        for line in lines:
            record = json.loads(line)
            assert {"time", "level", "service", "message"} <= record.keys(), line
