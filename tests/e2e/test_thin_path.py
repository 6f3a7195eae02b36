"""The whole platform as a user drives it: `carbon up`, a cycle from the monitoring plan to
pre-allocation over HTTP, bad input, metrics, and an outside subscriber that knows only
contracts/. (The README's walk runs on a platform of its own: tests/e2e/test_readme_walk.py.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from carbon_contracts.events import OBLIGATIONS
from registry.domain.credit_code import make_credit_code
from tests.e2e.subscriber import await_event, events_of
from tests.support import (
    PORTS,
    REPO,
    Database,
    Platform,
    prometheus_query,
    running_platform,
    running_prometheus,
    token,
    wait_until,
)

pytestmark = pytest.mark.e2e
SERVICES = tuple(PORTS)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("platform"), Database.for_test()) as platform:
        yield platform
    assert platform.process.returncode == 0, platform.output.read_text()
    assert b"stopped." in platform.output.read_bytes()


def test_the_walk_from_the_monitoring_plan_to_preallocation(platform: Platform) -> None:
    """Plan, report, paper copy, verification by lot with recomputation, re-verification by the
    second agency, the final figure, the year closed, the allocation previewed then approved,
    an inbound CCER proof, a surrender of allowances and offsets, pre-allocation: a valid event
    on its topic at every step, as an outside subscriber checks it."""
    urls, code = platform.urls, make_credit_code(2024)
    regulator = token("regulator")
    entity = token("entity", credit_code=code)
    verifier, reverifier = (token("verifier", agency=a) for a in ("sh-verify-01", "sh-verify-03"))
    client = httpx.Client(timeout=10)

    def post(service: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
        reply = client.post(f"{urls[service]}{path}", headers=headers, json=body)
        assert reply.status_code in (200, 201), reply.text
        return reply.json()

    def once_known(service: str, path: str, headers: dict[str, str], body: Any) -> Any:
        """A command that needs an event to have reached its service: retried until it has."""

        def attempt() -> httpx.Response | None:
            reply = client.post(f"{urls[service]}{path}", headers=headers, json=body)
            return reply if reply.status_code not in (404, 409) else None

        reply = wait_until(attempt, timeout=30, what=f"{service} to know {code}")
        assert reply.status_code in (200, 201), reply.text
        return reply.json()

    post(
        "registry",
        "/entities",
        regulator,
        {
            "credit_code": code,
            "name": "上海示例化工有限公司",
            "district": "pudong",
            "sector": "chemicals",
            "compliance_year": 2024,
            "new_entrant": True,
        },
    )
    post("registry", f"/entities/{code}/account", entity)
    await_event(platform, "entity.registered", code)
    opened = await_event(platform, "account.opened", code)
    assert (opened["account_id"], opened["on_time"]) == (f"SHEA-{code}", False)

    sources = [
        {"source": "heat", "monitoring": "invoice", "factor": "default"},
        {
            "source": "process",
            "material": "limestone",
            "monitoring": "lab_measurement",
            "factor": "measured",
        },
    ]
    plan = once_known(
        "reporting",
        "/monitoring-plans",
        entity,
        {"plan_year": 2025, "sources": sources, "outputs": [{"product": "lime", "unit": "t"}]},
    )
    assert (plan["version"], plan["status"]) == (1, "submitted")
    post("reporting", f"/monitoring-plans/{plan['plan_id']}/approve", regulator)
    submitted_plan = await_event(platform, "monitoring_plan.submitted", code)
    assert (submitted_plan["plan_year"], submitted_plan["sources"][1]["material"]) == (
        2025,
        "limestone",
    )
    assert await_event(platform, "monitoring_plan.approved", code)["version"] == 1

    reported_lines = [
        {"source": "electricity", "activity": "2450.8"},
        {"source": "heat", "activity": "48000"},
        {"source": "fuel", "fuel": "natural_gas", "activity": "512.36"},
        {"source": "process", "material": "limestone", "activity": "1200"},  # 528.000 t
    ]
    report = post(
        "reporting",
        "/reports",
        entity,
        {
            "compliance_year": 2024,
            "lines": reported_lines,
            "outputs": [{"product": "lime", "unit": "t", "quantity": "670"}],
        },
    )
    assert report["total_emissions"] == "24779.551"
    submitted = await_event(platform, "report.submitted", code)
    assert (submitted["total_emissions"], submitted["version"]) == ("24779.551", 1)
    assert submitted["process_lines"][0]["emissions"] == "528.000"
    paper = {"received_on": "2025-03-26", "delivery": "courier"}
    post("reporting", f"/reports/{report['report_id']}/paper-copy", regulator, paper)
    accepted = post("reporting", f"/reports/{report['report_id']}/accept", regulator)
    assert (accepted["status"], accepted["complete"]) == ("accepted", True)
    assert await_event(platform, "report.paper_copy_received", code)["delivery"] == "courier"
    assert await_event(platform, "report.accepted", code)["total_emissions"] == "24779.551"

    case = wait_until(
        lambda: client.get(f"{urls['verification']}/cases", headers=entity).json(),
        timeout=30,
        what="the verification case",
    )[0]
    path = f"/cases/{case['case_id']}"
    refused = client.post(
        f"{urls['verification']}{path}/assign",
        headers=regulator,
        json={"agency_id": "sh-verify-02"},
    )
    assert refused.status_code == 409, refused.text  # sh-verify-02 did not win chemicals' lot
    once_known("verification", path + "/assign", regulator, {"agency_id": "sh-verify-01"})
    assert await_event(platform, "verification.assigned", code)["lot_id"] == "lot-2024-01"
    post("verification", path + "/contact", entity, {"name": "王工", "phone": "021-5555-0100"})
    visit = {"visited_on": "2025-04-22", "findings": "heat invoices total 48500 GJ"}
    post("verification", path + "/site-visit", verifier, visit)
    verified_lines = [dict(line) for line in reported_lines]
    verified_lines[1]["activity"] = "48500"  # +30.000 t
    post("verification", path + "/approve", verifier, {"lines": verified_lines})
    approved = await_event(platform, "verification.approved", code)
    assert (approved["reported_emissions"], approved["verified_emissions"]) == (
        "24779.551",
        "24809.551",
    )
    # Not final: re-verification can still change it, so the registry has allocated nothing.
    assert events_of(platform, "allocation.issued", code) == []

    post("verification", path + "/select", regulator, {"reason": "heat differs"})
    await_event(platform, "reverification.selected", code)
    post("verification", "/lots/lot-2024-r1/assign", regulator)
    second = {"visited_on": "2025-05-12", "findings": "500 GJ billed twice"}
    post("verification", path + "/site-visit", reverifier, second)
    final_case = post("verification", path + "/approve", reverifier, {"lines": reported_lines})
    assert final_case["status"] == "final"
    completed = await_event(platform, "reverification.completed", code)
    assert (completed["agency_id"], completed["verified_emissions"]) == (
        "sh-verify-03",
        "24779.551",
    )
    finalised = await_event(platform, "verification.finalised", code)
    assert (finalised["basis"], finalised["verified_emissions"]) == (
        "reverification",
        "24779.551",
    )
    assert finalised["outputs"] == [{"product": "lime", "unit": "t", "quantity": "670"}]
    # The final figure is the obligation; the year's allocation waits for verification to close.
    assert events_of(platform, "allocation.issued", code) == []

    post("verification", "/years/2024/close", regulator)
    assert await_event(platform, "verification.closed", "shanghai-2024")["cases"] == 1

    def previewed() -> Any:
        reply = client.get(f"{urls['registry']}/entities/{code}/allocations/2024", headers=entity)
        return reply.status_code == 200 and reply.json()

    preview = wait_until(previewed, timeout=30, what="the registry's allocation preview")
    # Chemicals: historical emissions, one base year known, 24779.551 x 0.98 = 24284.15998.
    assert (preview["status"], preview["method"], preview["final_allocation"]) == (
        "previewed",
        "historical_emissions",
        24284,
    )
    assert events_of(platform, "allocation.issued", code) == []  # not before the Bureau approves
    batch = post("registry", "/allocations/2024/approve", regulator, {"credit_codes": [code]})
    assert (batch["entities"], batch["issued"], batch["waiting_for_account"]) == (1, 1, 0)
    allocation = await_event(platform, "allocation.issued", code)
    assert (
        allocation["final_allocation"],
        allocation["preallocated"],
        allocation["allowances"],
    ) == (
        24284,
        0,
        24284,
    )
    assert allocation["parameters"] == {"base_2024": "24779.551", "decline": "0.98"}

    # 24284 held against an obligation of 24780: the national CCER registry cancels 496 CCERs
    # for the entity (its stand-in publishes on the inbound topic as that system would).
    standin = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "carbon"),
            "external",
            "ccer-cancel",
            *("--credit-code", code, "--quantity", "496", "--proof-id", "CCER-E2E-0001"),
            *("--cancelled-on", "2025-06-12", "--bootstrap", platform.bootstrap),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert standin.returncode == 0, standin.stderr
    assert await_event(platform, "ccer.cancelled", code)["quantity"] == 496
    wait_until(
        lambda: client.get(f"{urls['registry']}/entities/{code}/offsets", headers=entity).json(),
        timeout=30,
        what="the registry to hold the CCER proof",
    )
    surrender = {
        "compliance_year": 2024,
        "allowances": 24284,
        "offsets": [{"type": "CCER", "proof_id": "CCER-E2E-0001"}],
    }
    receipt = post("registry", f"/entities/{code}/surrenders", entity, surrender)
    assert (receipt["status"], receipt["offsets_surrendered"]) == ("compliant", 496)
    completed_surrender = await_event(platform, "surrender.completed", code)
    assert (
        completed_surrender["obligation"],
        completed_surrender["allowances_surrendered"],
        completed_surrender["offsets_surrendered"],
        completed_surrender["offsets_by_type"],
    ) == (24780, 24284, 496, {"CCER": 496})
    preallocation = await_event(platform, "preallocation.issued", code)
    # 80% of 24779.551 = 19823.6408, half up: 19824.
    assert (preallocation["compliance_year"], preallocation["allowances"]) == (2025, 19824)

    status = client.get(f"{urls['registry']}/entities/{code}", headers=entity).json()
    assert status["holdings"] == [
        {"vintage": 2024, "allowances": 0},
        {"vintage": 2025, "allowances": 19824},
    ]
    assert status["compliance"][0]["status"] == "compliant"

    # The notifier told the entity of every step, and its district of four.
    told = {
        "entity.registered",
        "account.opened",
        "monitoring_plan.submitted",
        "monitoring_plan.approved",
        "report.submitted",
        "report.paper_copy_received",
        "report.accepted",
        "verification.assigned",
        "verification.approved",
        "reverification.selected",
        "reverification.completed",
        "verification.finalised",
        "allocation.issued",
        "surrender.completed",
        "preallocation.issued",
    }
    # By the real clock every deadline of the 2024 cycle has passed: the entity was overdue for
    # each obligation from its registration, and each one it then met was done late.
    late = {f"{obligation}.overdue" for obligation in OBLIGATIONS} | {
        f"{obligation}.done_late" for obligation in ("monitoring_plan", "report", "surrender")
    }

    def everything() -> list[dict[str, Any]]:
        n = client.get(f"{urls['notifier']}/notifications", headers=entity).json()
        steps = [note for note in n if note["event_type"] in told]
        deadlines = {note["event_type"] for note in n if note["event_type"] not in told}
        # verification.assigned twice: both rounds
        return steps if len(steps) == len(told) + 1 and late <= deadlines else []

    notes = wait_until(everything, timeout=30, what="a notification of every step for the entity")
    assert {n["event_type"] for n in notes} == told
    district = client.get(
        f"{urls['notifier']}/notifications", headers=token("district", district="pudong")
    ).json()
    # Opened after 2025-03-31 by the real clock, the new entrant's account is late: its district
    # hears of that too, even when the notifier handled account.opened before entity.registered
    # told it the district (the notice waited for it, and was told in the same transaction as
    # the entity's entity.registered notice, which the entity has by now).
    told_district = [
        n["event_type"] for n in district if n["credit_code"] == code and n["event_type"] in told
    ]
    assert sorted(told_district) == [
        "account.opened",
        "entity.registered",
        "report.submitted",
        "surrender.completed",
    ], told_district


def test_bad_input_gets_a_reason_and_changes_nothing(platform: Platform) -> None:
    urls, code = platform.urls, make_credit_code(31)
    regulator, client = token("regulator"), httpx.Client(timeout=10)
    registration = {
        "credit_code": code,
        "name": "Unchanged Ltd",
        "district": "minhang",
        "sector": "steel",
        "compliance_year": 2024,
    }

    bad_code = client.post(
        f"{urls['registry']}/entities",
        headers=regulator,
        json={**registration, "credit_code": code[:-1] + ("0" if code[-1] != "0" else "1")},
    )
    assert bad_code.status_code == 422
    assert bad_code.json()["error"]["code"] == "invalid_credit_code"
    assert "check character" in bad_code.json()["error"]["message"]

    unknown = client.post(
        f"{urls['registry']}/entities/{code}/account", headers=token("entity", credit_code=code)
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_entity"

    no_token = client.post(f"{urls['registry']}/entities", json=registration)
    assert no_token.status_code == 401
    wrong_role = client.post(
        f"{urls['registry']}/entities", headers=token("entity", credit_code=code), json=registration
    )
    assert wrong_role.status_code == 403
    forged = client.post(
        f"{urls['registry']}/entities",
        headers={"Authorization": "Bearer not-a-token"},
        json=registration,
    )
    assert forged.status_code == 401

    unregistered_report = client.post(
        f"{urls['reporting']}/reports",
        headers=token("entity", credit_code=code),
        json={"compliance_year": 2024, "lines": [{"source": "heat", "activity": "1"}]},
    )
    assert unregistered_report.status_code == 404
    float_activity = client.post(
        f"{urls['reporting']}/reports",
        headers=token("entity", credit_code=code),
        json={"compliance_year": 2024, "lines": [{"source": "heat", "activity": 1.5}]},
    )
    assert float_activity.status_code == 422

    # Nothing of the refused requests reached a topic.
    assert events_of(platform, "entity.registered", code) == []
    assert events_of(platform, "account.opened", code) == []
    assert events_of(platform, "report.submitted", code) == []


def test_every_service_reports_metrics_and_readiness(platform: Platform) -> None:
    for name, url in platform.urls.items():
        assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
        ready = httpx.get(f"{url}/health/ready", timeout=5)
        assert ready.status_code == 200, (name, ready.text)
        assert ready.json()["checks"] == {
            "database": True,
            "broker": True,
            "worker": True,
            "handlers": True,
            "outbox": True,
        }
        body = httpx.get(f"{url}/metrics", timeout=5).text
        for metric in (
            "carbon_events_consumed_total",
            "carbon_event_handle_seconds",
            "carbon_outbox_pending",
            "carbon_outbox_oldest_age_seconds",
            "carbon_http_requests_total",
            "carbon_http_request_duration_seconds",
            "carbon_worker_ready 1.0",
        ):
            assert metric in body, (name, metric)


def test_a_real_prometheus_scrapes_every_service_with_the_deployed_config(
    platform: Platform, tmp_path: Path
) -> None:
    """deploy/prometheus as shipped, pointed at this platform: targets up, metrics queryable,
    and every alert rule evaluates without error against the real series."""
    registered = httpx.post(
        f"{platform.urls['registry']}/entities",
        headers=token("regulator"),
        json={
            "credit_code": make_credit_code(77),
            "name": "Scraped Ltd",
            "district": "pudong",
            "sector": "chemicals",
            "compliance_year": 2024,
        },
        timeout=10,
    )
    assert registered.status_code == 201, registered.text
    with running_prometheus(tmp_path, platform.urls, scrape_interval="1s") as api:
        up = wait_until(
            lambda: len(found := prometheus_query(api, "up == 1")) == len(SERVICES) and found,
            timeout=60,
            what="all four targets up in Prometheus",
        )
        assert {series["metric"]["job"] for series in up} == set(SERVICES)
        published = wait_until(
            lambda: prometheus_query(api, "sum by (job) (carbon_events_published_total)"),
            timeout=30,
            what="published events in Prometheus",
        )
        assert "registry" in {series["metric"]["job"] for series in published}
        assert prometheus_query(api, "carbon_worker_ready == 1")
        assert prometheus_query(api, "carbon_broker_up == 1")
        assert prometheus_query(api, "carbon_outbox_pending")

        def rules_evaluated() -> list[dict[str, Any]]:
            groups = httpx.get(f"{api}/rules", timeout=2).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return (
                rules
                if rules
                and all(rule.get("lastEvaluation", "0001").startswith("20") for rule in rules)
                else []
            )

        rules = wait_until(rules_evaluated, timeout=30, what="alert rules evaluated")
        assert [rule["name"] for rule in rules if rule["health"] != "ok"] == []
