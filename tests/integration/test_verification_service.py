"""The verification service against the real embedded broker and a real database: consumption
through the inbox, the outbox, dead letters, duplicates and a crash mid-stream; a report through
verification by lot, re-verification and the year's close, with every event a subscriber sees;
a determination; and the migration of cases from before tender lots."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from carbon_contracts.events import EmissionsDetermined, EntityRegistered
from carbon_platform.codec import Outgoing, RawMessage, decode, encode
from carbon_platform.migrations import migrate
from registry.domain.credit_code import make_credit_code
from tests.support import (
    JWT_SECRET,
    Database,
    Record,
    ServiceProcess,
    produce,
    read_topic,
    report_event,
    running_service,
    token,
    wait_until,
)
from verification import store
from verification.service import SERVICE

pytestmark = pytest.mark.integration
REGULATOR = token("regulator")
AGENCY, REVERIFIER = "sh-verify-01", "sh-verify-03"
IN_APRIL = {"CARBON_CLOCK_START": "2025-04-15T10:00:00+08:00"}
"""The service's clock in the verification window of compliance year 2024."""


def send(bootstrap: str, *events: Outgoing) -> None:
    """Each event to its own topic, as its owner publishes it."""
    for event in events:
        produce(bootstrap, event.topic, [(event.key, event.value, event.headers)])


def registered_event(code: str, sector: str = "chemicals", district: str = "pudong") -> Outgoing:
    """The registry's `entity.registered`: chemicals in pudong is lot-2024-01's (sh-verify-01)."""
    payload = EntityRegistered(
        credit_code=code,
        compliance_year=2024,
        name="Example Ltd",
        district=district,
        sector=sector,
        new_entrant=False,
        registered_at=datetime.now(UTC),
    )
    return encode(payload, source="/carbon/registry", time=datetime.now(UTC))


def cases(service: ServiceProcess) -> list[dict[str, object]]:
    reply = httpx.get(f"{service.url}/cases", headers=REGULATOR, timeout=5)
    reply.raise_for_status()
    result: list[dict[str, object]] = reply.json()
    return result


def post(service: ServiceProcess, path: str, headers: dict[str, str], body: Any = None) -> Any:
    reply = httpx.post(f"{service.url}{path}", json=body, headers=headers, timeout=5)
    assert reply.status_code == 200, reply.text
    return reply.json()


def events_on(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The payloads on a topic once it holds `count` records, each decoded as a subscriber
    would (CloudEvents headers, schema, topic, source and key all checked)."""

    def arrived() -> list[Record]:
        found = read_topic(bootstrap, topic)
        return found if len(found) >= count else []

    records = wait_until(arrived, timeout=15, what=f"{count} record(s) on {topic}")
    assert len(records) == count
    return [
        decode(
            RawMessage(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers.items()))
        ).payload
        for r in records
    ]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, ServiceProcess]]:
    with running_service("verification", tmp_path, IN_APRIL) as running:
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
    send(bootstrap, report_event(4), registered_event(make_credit_code(4)))
    case = wait_until(lambda: cases(service), timeout=30, what="the case")[0]

    def assign() -> bool:
        reply = httpx.post(
            f"{service.url}/cases/{case['case_id']}/assign",
            json={"agency_id": AGENCY},
            headers=REGULATOR,
            timeout=5,
        )
        # Until entity.registered has been handled, the case's lot is not known.
        assert reply.status_code == 200 or reply.json()["error"]["code"] == "entity_unknown"
        return reply.status_code == 200

    wait_until(assign, timeout=30, what="the assignment")
    other_agency = httpx.post(
        f"{service.url}/cases/{case['case_id']}/approve",
        json={"lines": [{"source": "heat", "activity": "990"}]},
        headers=token("verifier", agency="sh-verify-02"),
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


def test_a_report_through_verification_and_reverification_to_the_years_close(
    stack: tuple[str, ServiceProcess],
) -> None:
    bootstrap, service = stack
    code = make_credit_code(7)
    send(bootstrap, report_event(7))  # the report comes before its entity's registration
    case_id = wait_until(lambda: cases(service), timeout=30, what="the case")[0]["case_id"]
    send(bootstrap, registered_event(code))
    wait_until(
        lambda: post(service, "/lots/lot-2024-01/assign", REGULATOR)["assigned"],
        timeout=30,
        what="the lot's assignment once the roster has the entity",
    )
    case = f"/cases/{case_id}"
    visit = {"visited_on": "2025-04-14", "findings": "meters and invoices agree"}
    verifier, reverifier = token("verifier", agency=AGENCY), token("verifier", agency=REVERIFIER)
    contact = {"name": "Li Wei", "phone": "021 5555 0101"}
    post(service, f"{case}/contact", token("entity", credit_code=code), contact)
    post(service, f"{case}/site-visit", verifier, visit)
    approved = post(
        service, f"{case}/approve", verifier, {"lines": [{"source": "heat", "activity": "1100"}]}
    )
    assert (approved["verified_emissions"], approved["difference"]) == ("66.000", "6.000")
    selection = post(service, "/years/2024/selection", REGULATOR)
    assert (selection["selected"], selection["finalised"]) == ([case_id], [])
    assert post(service, "/lots/lot-2024-r1/assign", REGULATOR)["assigned"][0]["agency_id"] == (
        REVERIFIER
    )
    post(service, f"{case}/site-visit", reverifier, visit)
    final = post(
        service, f"{case}/approve", reverifier, {"lines": [{"source": "heat", "activity": "1000"}]}
    )
    assert (final["status"], final["final_emissions"], final["verified_emissions"]) == (
        "final",
        "60.000",
        "66.000",
    )
    closed = post(service, "/years/2024/close", REGULATOR)
    assert (closed["cases"], closed["total_verified_emissions"]) == (1, "60.000")

    assigned = events_on(bootstrap, "verification.assigned", 2)
    assert [(e.round, e.lot_id, e.agency_id) for e in assigned] == [
        ("verification", "lot-2024-01", AGENCY),
        ("reverification", "lot-2024-r1", REVERIFIER),
    ]
    [approval] = events_on(bootstrap, "verification.approved", 1)
    assert (approval.verified_emissions, approval.outside_window) == (Decimal("66.000"), False)
    [selected] = events_on(bootstrap, "reverification.selected", 1)
    assert selected.selected_by == "rule" and "by 10.000% (> 5%)" in selected.reason
    [completed] = events_on(bootstrap, "reverification.completed", 1)
    assert (completed.first_verified_emissions, completed.verified_emissions) == (
        Decimal("66.000"),
        Decimal("60.000"),
    )
    [finalised] = events_on(bootstrap, "verification.finalised", 1)
    assert (finalised.basis, finalised.verified_emissions) == ("reverification", Decimal("60.000"))
    [year] = events_on(bootstrap, "verification.closed", 1)
    assert (year.policy, year.cases, year.total_verified_emissions) == (
        "shanghai-2024",
        1,
        Decimal("60.000"),
    )


def test_a_determination_is_final_and_published_once(stack: tuple[str, ServiceProcess]) -> None:
    bootstrap, service = stack
    payload = EmissionsDetermined(
        credit_code=make_credit_code(8),
        compliance_year=2024,
        determination_id=uuid4(),
        factor_table="shanghai-default-2024.1",
        lines=[],
        process_lines=[],
        total_emissions=Decimal("900.000"),
        reason="no report by the deadline",
        determined_at=datetime.now(UTC),
    )
    event = encode(payload, source="/carbon/reporting", time=datetime.now(UTC))
    send(bootstrap, event, event)  # the second is a redelivery: same ce_id

    [finalised] = events_on(bootstrap, "verification.finalised", 1)
    assert (finalised.basis, finalised.report_id, finalised.verified_emissions) == (
        "determination",
        None,
        Decimal("900.000"),
    )
    wait_until(
        lambda: service.metric("carbon_events_consumed_total", outcome="duplicate") == 1,
        timeout=30,
        what="the duplicate to be recognised",
    )
    [case] = cases(service)
    assert (case["status"], case["final_basis"]) == ("final", "determination")
    assert service.scalar("SELECT count(*) FROM outbox") == 1


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


def test_cases_from_before_tender_lots_are_carried_over(tmp_path: Path) -> None:
    """Migration 0003 keeps the cases of 0002, on SQLite and (in CI) PostgreSQL."""
    database = Database.for_test()
    schema = f"{database.schema_prefix}verification"
    url = database.url or f"sqlite+aiosqlite:///{tmp_path / 'verification.db'}"
    config = Config()
    config.set_main_option("script_location", str(SERVICE.migrations_dir))
    config.attributes.update(url=url, schema=schema)
    command.upgrade(config, "0002")
    code = make_credit_code(9)
    rows = [
        ("opened", None, None, None, None),
        ("assigned", "agency-a", None, "2025-04-02T00:00:00+00:00", None),
        ("approved", "agency-a", 59000, "2025-04-02T00:00:00+00:00", "2025-04-03T00:00:00+00:00"),
    ]
    ids = {status: (str(uuid4()), str(uuid4())) for status, *_ in rows}

    async def run(*statements: tuple[str, dict[str, Any]]) -> list[Any]:
        connect_args = {"server_settings": {"search_path": schema}} if database.url else {}
        engine = create_async_engine(url, connect_args=connect_args)
        try:
            async with engine.begin() as conn:
                for sql, params in statements:
                    await conn.execute(text(sql), params)
                if statements:  # the legacy cases, at 0002
                    return []
                return [store.to_case(row) for row in await store.list_cases(conn)]
        finally:
            await engine.dispose()

    try:
        asyncio.run(
            run(
                *(
                    (
                        "INSERT INTO cases (case_id, report_id, credit_code, compliance_year,"
                        " reported_emissions, status, agency_id, verified_emissions, opened_at,"
                        " assigned_at, approved_at, approved_by) VALUES (:case_id, :report_id,"
                        " :code, 2024, 60000, :status, :agency, :verified, :opened, :assigned,"
                        " :approved, :by)",
                        {
                            "case_id": ids[status][0],
                            "report_id": ids[status][1],
                            "code": code,
                            "status": status,
                            "agency": agency,
                            "verified": verified,
                            "opened": datetime(2025, 4, 1, tzinfo=UTC),
                            "assigned": datetime.fromisoformat(assigned) if assigned else None,
                            "approved": datetime.fromisoformat(approved) if approved else None,
                            "by": "verifier-a" if approved else None,
                        },
                    )
                    for status, agency, verified, assigned, approved in rows
                )
            )
        )
        migrate(url=url, schema=schema, migrations_dir=SERVICE.migrations_dir)
        carried = {case.status: case for case in asyncio.run(run())}
    finally:
        database.drop(["verification"])

    assert set(carried) == {"opened", "assigned", "approved"}
    for status, case in carried.items():
        assert (str(case.case_id), str(case.report_id)) == ids[status]
        assert (case.round, case.report_version, case.reported_emissions) == (
            "verification",
            1,
            Decimal("60.000"),
        )
    assert (carried["assigned"].agency_id, carried["assigned"].first_agency_id) == (
        "agency-a",
        None,
    )
    approved = carried["approved"]
    assert (approved.verified_emissions, approved.first_agency_id) == (
        Decimal("59.000"),
        "agency-a",
    )
    # Approved before site visits and the window were recorded: the Bureau decides on it as on
    # any approved case.
    assert approved.finalise(at=datetime.now(UTC)).case.final_emissions == Decimal("59.000")
