"""The registry against the real broker and a real database, under a policy whose allocation
falls short of the obligation (as for most real entities, who then buy on the exchange): the
final figure, verification closing, the Bureau's approval, then the allowances."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
import yaml

from carbon_contracts.events import VerificationClosed, VerificationFinalised
from carbon_contracts.policy import default_policy_path
from carbon_platform.codec import encode
from registry.domain.credit_code import make_credit_code
from tests.support import (
    ServiceProcess,
    produce,
    read_topic,
    running_service,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration
REGULATOR = token("regulator")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, ServiceProcess]]:
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["allocation"]["sectors"]["chemicals"]["decline"] = "0.90"
    policy_file = tmp_path / "short-allocation.yaml"
    policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
    with running_service("registry", tmp_path, {"CARBON_POLICY_FILE": str(policy_file)}) as running:
        yield running


def register(service: ServiceProcess, code: str) -> None:
    reply = httpx.post(
        f"{service.url}/entities",
        headers=REGULATOR,
        json={
            "credit_code": code,
            "name": "Short Ltd",
            "district": "jinshan",
            "sector": "chemicals",
            "compliance_year": 2024,
        },
        timeout=5,
    )
    assert reply.status_code == 201, reply.text
    entity = token("entity", credit_code=code)
    assert httpx.post(f"{service.url}/entities/{code}/account", headers=entity).status_code == 201


def finalise(bootstrap: str, code: str, verified: str) -> None:
    payload = VerificationFinalised(
        credit_code=code,
        compliance_year=2024,
        case_id=uuid4(),
        report_id=uuid4(),
        basis="verification",
        verified_emissions=Decimal(verified),
        finalised_at=datetime.now(UTC),
    )
    event = encode(payload, source="/carbon/verification", time=datetime.now(UTC))
    produce(bootstrap, "verification.finalised", [(event.key, event.value, event.headers)])


def close_and_approve(bootstrap: str, service: ServiceProcess, *codes: str) -> None:
    """Verification closes for 2024; once the registry has previewed `codes`, the Bureau
    approves every preview."""
    payload = VerificationClosed(
        policy="shanghai-2024",
        compliance_year=2024,
        cases=len(codes),
        total_verified_emissions=Decimal("0.000"),
        closed_at=datetime.now(UTC),
    )
    event = encode(payload, source="/carbon/verification", time=datetime.now(UTC))
    produce(bootstrap, "verification.closed", [(event.key, event.value, event.headers)])

    def previewed() -> bool:
        reply = httpx.get(f"{service.url}/allocations/2024", headers=REGULATOR, timeout=5)
        reply.raise_for_status()
        listed = {line["credit_code"] for line in reply.json()["allocations"]}
        return listed == set(codes)

    wait_until(previewed, timeout=30, what="allocation previews")
    approved = httpx.post(
        f"{service.url}/allocations/2024/approve", headers=REGULATOR, json={}, timeout=10
    )
    assert approved.status_code == 200, approved.text


def status(service: ServiceProcess, code: str) -> dict[str, object]:
    reply = httpx.get(
        f"{service.url}/entities/{code}", headers=token("entity", credit_code=code), timeout=5
    )
    reply.raise_for_status()
    result: dict[str, object] = reply.json()
    return result


def surrender(service: ServiceProcess, code: str, allowances: int) -> httpx.Response:
    return httpx.post(
        f"{service.url}/entities/{code}/surrenders",
        headers=token("entity", credit_code=code),
        json={"compliance_year": 2024, "allowances": allowances},
        timeout=5,
    )


def test_allocation_from_verified_emissions_and_surrender_beyond_holdings(
    registry: tuple[str, ServiceProcess],
) -> None:
    bootstrap, service = registry
    code = make_credit_code(501)
    register(service, code)
    finalise(bootstrap, code, "1000.500")  # obligation 1001 (half up); allocation 900 (0.90)
    close_and_approve(bootstrap, service, code)

    issued = wait_until(
        lambda: read_topic(bootstrap, "allocation.issued"), timeout=30, what="allocation.issued"
    )
    allocation = json.loads(issued[0].value or b"")
    assert (allocation["final_allocation"], allocation["allowances"]) == (900, 900)
    assert allocation["parameters"] == {"base_2024": "1000.5", "decline": "0.9"}
    compliance = status(service, code)["compliance"]
    assert isinstance(compliance, list)
    allocation_issued_at = compliance[0]["allocation"]["issued_at"]
    assert datetime.fromisoformat(allocation_issued_at) == datetime.fromisoformat(
        allocation["issued_at"]
    )
    assert status(service, code)["holdings"] == [{"vintage": 2024, "allowances": 900}]

    short = surrender(service, code, 1001)
    assert short.status_code == 409
    assert short.json()["error"]["code"] == "insufficient_holdings"
    assert status(service, code)["holdings"] == [{"vintage": 2024, "allowances": 900}]

    partial = surrender(service, code, 900)
    assert partial.status_code == 201, partial.text
    assert (partial.json()["status"], partial.json()["remaining"]) == ("open", 101)
    assert status(service, code)["compliance"] == [
        {
            "compliance_year": 2024,
            "verified_emissions": "1000.500",
            "obligation": 1001,
            "surrendered": 900,
            "offsets_surrendered": 0,
            "remaining": 101,
            "status": "open",
            "completed_at": None,
            "on_time": None,
            "allocation": {
                "status": "issued",
                "final_allocation": 900,
                "preallocated": 0,
                "topped_up": 900,
                "clawed_back": 0,
                "owed": 0,
                "issued_at": allocation_issued_at,
            },
        }
    ]
    assert service.scalar("SELECT count(*) FROM journal WHERE kind = 'surrender'") == 1
    assert read_topic(bootstrap, "surrender.completed") == []  # not complete: nothing published


def test_an_approval_for_an_entity_not_on_the_roster_is_rejected_not_applied(
    registry: tuple[str, ServiceProcess],
) -> None:
    bootstrap, service = registry
    stranger, known = make_credit_code(502), make_credit_code(503)
    register(service, known)
    finalise(bootstrap, stranger, "10.000")
    finalise(bootstrap, known, "10.000")
    close_and_approve(bootstrap, service, known)

    wait_until(lambda: read_topic(bootstrap, "allocation.issued"), timeout=30, what="allocation")
    assert [r.key for r in read_topic(bootstrap, "allocation.issued")] == [known.encode()]
    assert service.metric("carbon_events_consumed_total", outcome="rejected") == 1
    assert service.scalar("SELECT count(*) FROM inbox WHERE outcome = 'rejected'") == 1
    assert service.scalar("SELECT count(*) FROM obligations") == 1
