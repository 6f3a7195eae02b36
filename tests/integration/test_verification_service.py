"""The verification service against the real embedded broker and a real database: consumption
through the inbox, the outbox, dead letters, duplicates and a crash mid-stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from carbon_platform.codec import Outgoing
from tests.support import (
    JWT_SECRET,
    ServiceProcess,
    produce,
    read_topic,
    report_event,
    running_service,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration
REGULATOR = token("regulator")


def send(bootstrap: str, *events: Outgoing) -> None:
    produce(bootstrap, "report.submitted", [(e.key, e.value, e.headers) for e in events])


def cases(service: ServiceProcess) -> list[dict[str, object]]:
    reply = httpx.get(f"{service.url}/cases", headers=REGULATOR, timeout=5)
    reply.raise_for_status()
    result: list[dict[str, object]] = reply.json()
    return result


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, ServiceProcess]]:
    with running_service("verification", tmp_path) as running:
        yield running


def test_a_submitted_report_opens_one_case(stack: tuple[str, ServiceProcess]) -> None:
    bootstrap, service = stack
    event = report_event(1)
    send(bootstrap, event)

    opened = wait_until(lambda: cases(service), timeout=30, what="the case")
    assert [c["report_id"] for c in opened] == [json.loads(event.value)["report_id"]]
    assert opened[0]["status"] == "opened"
    assert opened[0]["reported_emissions"] == "60.000"
    assert (
        service.metric(
            "carbon_events_consumed_total", topic="report.submitted", outcome="processed"
        )
        == 1
    )


def test_the_same_event_delivered_twice_changes_state_once(
    stack: tuple[str, ServiceProcess],
) -> None:
    bootstrap, service = stack
    event = report_event(2)
    send(bootstrap, event, event)

    wait_until(
        lambda: service.metric("carbon_events_consumed_total", outcome="duplicate") == 1,
        timeout=30,
        what="the duplicate to be recognised",
    )
    assert len(cases(service)) == 1
    assert service.scalar("SELECT count(*) FROM inbox") == 1


def test_poison_goes_to_the_dead_letter_topic_and_the_next_message_is_processed(
    stack: tuple[str, ServiceProcess],
) -> None:
    bootstrap, service = stack
    good = report_event(3)
    poison_headers = [(name, value) for name, value in good.headers if name != "ce_type"]
    produce(
        bootstrap,
        "report.submitted",
        [
            (good.key, b"\xff not json", poison_headers),  # bad bytes and a missing header
            (good.key, good.value, good.headers),
        ],
    )

    wait_until(lambda: cases(service), timeout=30, what="the good message's case")
    dead = wait_until(lambda: read_topic(bootstrap, "verification.dlq"), timeout=15, what="DLQ")
    assert len(dead) == 1
    letter = dead[0]
    assert letter.value == b"\xff not json"  # the original bytes
    assert letter.key == good.key
    assert letter.headers["ce_id"] == dict(good.headers)["ce_id"]  # original headers kept
    assert letter.headers["dlq_original_topic"] == b"report.submitted"
    assert letter.headers["dlq_error_class"] == b"missing_header"
    assert b"ce_type" in letter.headers["dlq_error_message"]
    assert {"dlq_original_partition", "dlq_original_offset", "dlq_failed_at"} <= set(letter.headers)
    assert service.metric("carbon_dead_letters_total", error_class="missing_header") == 1
    assert len(cases(service)) == 1


def test_a_worker_killed_mid_stream_loses_nothing_and_applies_nothing_twice(
    stack: tuple[str, ServiceProcess],
) -> None:
    bootstrap, service = stack
    events = [report_event(100 + i) for i in range(300)]
    send(bootstrap, *events)
    wait_until(lambda: len(cases(service)) >= 20, timeout=30, what="processing to begin")

    service.kill()  # SIGKILL mid-stream: uncommitted offsets will be delivered again
    service.start()

    expected = {json.loads(e.value)["report_id"] for e in events}
    final = wait_until(
        lambda: (found := cases(service)) and len(found) >= len(expected) and found,
        timeout=120,
        what="all cases after the restart",
    )
    assert sorted(c["report_id"] for c in final) == sorted(expected)
    assert service.scalar("SELECT count(*) FROM cases") == len(expected)
    assert service.scalar("SELECT count(*) FROM inbox") == len(expected)


def test_a_command_commits_its_event_and_a_rejected_one_publishes_nothing(
    stack: tuple[str, ServiceProcess],
) -> None:
    bootstrap, service = stack
    send(bootstrap, report_event(4))
    case = wait_until(lambda: cases(service), timeout=30, what="the case")[0]

    assigned = httpx.post(
        f"{service.url}/cases/{case['case_id']}/assign",
        json={"agency_id": "agency-a"},
        headers=REGULATOR,
        timeout=5,
    )
    assert assigned.status_code == 200, assigned.text
    other_agency = httpx.post(
        f"{service.url}/cases/{case['case_id']}/approve",
        json={"verified_emissions": "59.000"},
        headers=token("verifier", agency="agency-b"),
        timeout=5,
    )
    assert other_agency.status_code == 403
    assert other_agency.json()["error"]["code"] == "other_agency"

    published = wait_until(
        lambda: read_topic(bootstrap, "verification.assigned"), timeout=15, what="the event"
    )
    assert [json.loads(r.value or b"")["case_id"] for r in published] == [case["case_id"]]
    assert read_topic(bootstrap, "verification.approved") == []
    assert service.scalar("SELECT count(*) FROM outbox") == 1
    assert service.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    assert cases(service)[0]["status"] == "assigned"


def test_replaying_dead_letters_applies_each_once(stack: tuple[str, ServiceProcess]) -> None:
    bootstrap, service = stack
    event = report_event(5)
    # A letter as the consumer writes it when a bug (since fixed) made it give up on an event.
    produce(
        bootstrap,
        "verification.dlq",
        [
            (
                event.key,
                event.value,
                [
                    *event.headers,
                    ("dlq_original_topic", b"report.submitted"),
                    ("dlq_original_partition", b"0"),
                    ("dlq_original_offset", b"0"),
                    ("dlq_error_class", b"bug.RuntimeError"),
                ],
            )
        ],
    )

    def replay() -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "carbon_platform.cli",
                "dlq",
                "replay",
                "verification",
                "--url",
                service.url,
            ],
            env={**os.environ, "CARBON_JWT_SECRET": JWT_SECRET},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    ce_id = dict(event.headers)["ce_id"].decode()
    assert f"{ce_id}: processed" in replay()
    assert len(cases(service)) == 1
    assert f"{ce_id}: duplicate" in replay()  # again: the inbox recognises the event
    assert len(cases(service)) == 1
    # Replay went through the consumer itself: nothing was written to another service's topic.
    assert read_topic(bootstrap, "report.submitted") == []
