"""The reporting service against the real embedded broker and a real database: the monitoring
plan and the report through their lifecycle as `python -m reporting` runs them, each step seen
on its topic by a subscriber that knows only contracts/, and a verifier's return consumed from
verification's topic. Also the upgrade of a report stored before the lifecycle existed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from alembic import command
from alembic.config import Config
from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from carbon_contracts.events import EntityRegistered, Payload, VerificationReturned
from carbon_contracts.resources import contract_path
from carbon_platform.codec import encode
from carbon_platform.migrations import migrate
from registry.domain.credit_code import make_credit_code
from reporting.service import SERVICE
from tests.support import (
    Database,
    Record,
    ServiceProcess,
    produce,
    read_topic,
    running_service,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration
CODE = make_credit_code(7)
BUREAU = token("regulator")
ENTITY = token("entity", credit_code=CODE)
CLOCK_START = "2025-01-10T09:00:00+08:00"
"""Before the plan deadline: the service's clock starts here and runs on."""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, ServiceProcess]]:
    with running_service("reporting", tmp_path, {"CARBON_CLOCK_START": CLOCK_START}) as running:
        yield running


def publish(bootstrap: str, payload: Payload, owner: str) -> None:
    """An event of another service, as its owner publishes it."""
    event = encode(payload, source=f"/carbon/{owner}", time=datetime.now(UTC))
    produce(bootstrap, payload.EVENT, [(event.key, event.value, event.headers)])


def as_a_subscriber(record: Record, event: str) -> dict[str, Any]:
    """CloudEvents headers of the event type and a payload valid against its published
    schema: all an outside subscriber has."""
    headers = {name: value.decode() for name, value in record.headers.items()}
    assert headers["ce_type"] == f"cn.sh.carbon.{event}.v1"
    assert headers["ce_source"] == "/carbon/reporting"
    assert headers["ce_subject"] == (record.key or b"").decode() == CODE
    schema = json.loads(contract_path(f"events/{event}/v1.schema.json").read_text())
    assert headers["ce_dataschema"] == schema["$id"]
    payload: dict[str, Any] = record.json()
    errors = sorted(
        Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(payload), key=str
    )
    assert not errors, errors
    return payload


def seen(bootstrap: str, event: str, count: int = 1) -> list[dict[str, Any]]:
    """The entity's events of one type once `count` of them are on their topic."""

    def events() -> list[dict[str, Any]]:
        found = [
            as_a_subscriber(record, event)
            for record in read_topic(bootstrap, event)
            if record.key == CODE.encode()
        ]
        return found if len(found) >= count else []

    found: list[dict[str, Any]] = wait_until(events, timeout=30, what=f"{event} on its topic")
    return found


def call(method: str, url: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
    return httpx.request(method, url, headers=headers, json=body, timeout=10)


def test_plan_and_report_through_their_lifecycle_on_the_broker(
    stack: tuple[str, ServiceProcess],
) -> None:
    bootstrap, service = stack
    publish(
        bootstrap,
        EntityRegistered(
            credit_code=CODE,
            compliance_year=2024,
            name="上海示例化工有限公司",
            district="pudong",
            sector="chemicals",
            new_entrant=True,
            registered_at=datetime.now(UTC),
        ),
        "registry",
    )
    plan_body = {
        "plan_year": 2025,
        "sources": [{"source": "heat", "monitoring": "invoice", "factor": "default"}],
    }

    def submit_plan() -> httpx.Response | None:
        reply = call("POST", f"{service.url}/monitoring-plans", ENTITY, plan_body)
        return None if reply.status_code == 404 else reply  # the roster lags a moment

    plan = wait_until(submit_plan, timeout=30, what="reporting to know the entity")
    assert plan.status_code == 201, plan.text
    assert plan.json()["late"] is False
    plan_id = plan.json()["plan_id"]
    approved = call(
        "POST", f"{service.url}/monitoring-plans/{plan_id}/approve", BUREAU, {"version": 1}
    )
    assert approved.status_code == 200, approved.text

    report = call(
        "POST",
        f"{service.url}/reports",
        ENTITY,
        {
            "compliance_year": 2024,
            "lines": [
                {"source": "heat", "activity": "48000"},
                {"source": "process", "material": "limestone", "activity": "9000"},
            ],
            "outputs": [{"product": "ethylene_glycol", "unit": "t", "quantity": "182000"}],
        },
    )
    assert report.status_code == 201, report.text
    report_id = report.json()["report_id"]
    path = f"{service.url}/reports/{report_id}"
    copy = call(
        "POST", f"{path}/paper-copy", BUREAU, {"received_on": "2025-01-10", "delivery": "post"}
    )
    assert copy.status_code == 200, copy.text
    accepted = call("POST", f"{path}/accept", BUREAU, {"version": 1})
    assert accepted.status_code == 200, accepted.text

    [submitted_plan] = seen(bootstrap, "monitoring_plan.submitted")
    assert (submitted_plan["plan_id"], submitted_plan["late"]) == (plan_id, False)
    assert seen(bootstrap, "monitoring_plan.approved")[0]["version"] == 1
    [submitted] = seen(bootstrap, "report.submitted")
    assert submitted["total_emissions"] == "6840.000"  # 2880.000 heat + 3960.000 limestone
    assert submitted["process_lines"][0]["material"] == "limestone"
    assert (submitted["version"], submitted["late"]) == (1, False)
    assert seen(bootstrap, "report.paper_copy_received")[0]["received_on"] == "2025-01-10"
    assert seen(bootstrap, "report.accepted")[0]["total_emissions"] == "6840.000"

    # The verifier returns it through verification; the entity corrects it.
    publish(
        bootstrap,
        VerificationReturned(
            credit_code=CODE,
            compliance_year=2024,
            case_id=uuid4(),
            report_id=UUID(report_id),
            report_version=1,
            agency_id="sh-verify-01",
            reason="limestone purchases unsupported",
            returned_at=datetime.now(UTC),
        ),
        "verification",
    )
    [returned] = seen(bootstrap, "report.returned")
    assert (returned["returned_by"], returned["version"]) == ("verifier", 1)
    assert call("GET", path, ENTITY).json()["status"] == "returned"
    corrected = call(
        "POST",
        f"{path}/versions",
        ENTITY,
        {"lines": [{"source": "heat", "activity": "48000"}], "reason": "limestone was resold"},
    )
    assert corrected.status_code == 201, corrected.text
    second = seen(bootstrap, "report.submitted", 2)[1]
    assert (second["version"], second["correction_reason"]) == (2, "limestone was resold")
    assert second["total_emissions"] == "2880.000"
    assert service.metric("carbon_events_consumed_total", outcome="processed") == 2


def test_a_report_stored_before_the_lifecycle_is_upgraded(tmp_path: Path) -> None:
    """Migration 0003 turns a 0001 report into a submitted report whose version 1 holds it."""
    database = Database.for_test()
    schema = f"{database.schema_prefix}reporting"
    url = database.url or f"sqlite+aiosqlite:///{tmp_path / 'reporting.db'}"
    config = Config()
    config.set_main_option("script_location", str(SERVICE.migrations_dir))
    config.attributes |= {"url": url, "schema": schema}
    command.upgrade(config, "0002")
    lines = [
        {
            "source": "heat",
            "fuel": None,
            "activity": "1000",
            "unit": "GJ",
            "factor": "0.06",
            "emissions": "60.000",
        }
    ]

    async def run(*statements: str) -> list[Any]:
        connect_args = {"server_settings": {"search_path": schema}} if database.url else {}
        engine = create_async_engine(url, connect_args=connect_args)
        try:
            async with engine.begin() as conn:
                results = [await conn.execute(text(statement)) for statement in statements]
                return [list(result) if result.returns_rows else None for result in results]
        finally:
            await engine.dispose()

    submitted_at = "2025-03-20 08:45:12+00:00"
    try:
        asyncio.run(
            run(
                "INSERT INTO roster (credit_code, compliance_year, name, district)"
                f" VALUES ('{CODE}', 2024, 'Example', 'pudong')",
                "INSERT INTO reports (report_id, credit_code, compliance_year, factor_table, lines,"
                " total_emissions, submitted_by, submitted_at) VALUES"
                f" ('5f0c2a8e-7d1b-4c39-9e6a-2b8f41d7c305', '{CODE}', 2024,"
                f" 'shanghai-default-2024.1', '{json.dumps(lines)}', 60000, 'entity-x',"
                f" '{submitted_at}')",
            )
        )
        migrate(url=url, schema=schema, migrations_dir=SERVICE.migrations_dir)
        [reports, versions, roster, trail] = asyncio.run(
            run(
                "SELECT status, version, late, created_by FROM reports",
                "SELECT version, factor_table, lines, process_lines, outputs, total_emissions,"
                " submitted_by FROM report_versions",
                "SELECT filing, sector FROM roster",
                "SELECT kind, action, to_status, actor FROM transitions",
            )
        )
    finally:
        database.drop(["reporting"])
    assert [tuple(row) for row in reports] == [("submitted", 1, None, "entity-x")]
    assert [tuple(row) for row in versions] == [
        (1, "shanghai-default-2024.1", json.dumps(lines), "[]", "[]", 60000, "entity-x")
    ]
    assert [tuple(row) for row in roster] == [("report", None)]
    assert [tuple(row) for row in trail] == [("report", "submitted", "submitted", "entity-x")]
