"""Strict input over HTTP, in process: whole numbers, flags and decimals exactly as the schemas
say (never coerced), and request bodies bounded per route."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from uuid import uuid4

import httpx
import pytest

from carbon_contracts.events import (
    EntityRegistered,
)
from registry import allocation
from registry import commands as registry_commands
from registry import store as registry_store
from registry.domain.credit_code import make_credit_code
from registry.schemas import OpenAccount, OpeningBalancesUpload, Registration
from registry.service import SERVICE as REGISTRY
from reporting import store as reporting_store
from tests.unit.support import Harness, report_submitted, verification_finalised
from verification import commands as verification_commands
from verification.domain.case import case_id_for
from verification.schemas import AssignCase, RecordSiteVisit

CODE = make_credit_code(1)
AGENCY = "sh-verify-01"
MiB = 1024 * 1024
JSON = {"content-type": "application/json"}


def invalid(response: httpx.Response) -> bool:
    return response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


# --- whole numbers: POST /entities/{code}/surrenders ------------------------------------------


@pytest.fixture
async def obliged(registry: Harness) -> AsyncIterator[Harness]:
    """CODE registered, account open, 100.000 t verified: obligation and holdings 100."""
    await registry.run(
        registry_commands.register_entity,
        Registration(
            credit_code=CODE, name="A", district="pudong", sector="power", compliance_year=2024
        ),
    )
    await registry.run(registry_commands.open_account, OpenAccount(credit_code=CODE))
    await registry.handle(verification_finalised(CODE, "100.000"))
    await registry.run(
        allocation.import_opening_balances,
        OpeningBalancesUpload(
            text=f"credit_code,compliance_year,held\n{CODE},2024,100\n", imported_by="bureau"
        ),
    )
    yield registry


async def surrender(obliged: Harness, body: str) -> httpx.Response:
    """The entity's surrender request with this exact JSON text."""
    async with obliged.client() as client:
        return await client.post(
            f"/entities/{CODE}/surrenders",
            content=body.encode(),
            headers={**obliged.token("entity", credit_code=CODE), **JSON},
        )


@pytest.mark.parametrize("allowances", ["true", "1.0", '"1"', "1e3", "-1", "null", "1.5"])
async def test_surrender_allowances_must_be_a_whole_json_integer(
    obliged: Harness, allowances: str
) -> None:
    body = f'{{"compliance_year": 2024, "allowances": {allowances}}}'
    response = await surrender(obliged, body)
    assert invalid(response), response.text
    assert response.json()["error"]["details"][0]["loc"] == ["body", "allowances"]
    assert await obliged.read(registry_store.get_holdings, credit_code=CODE) == {2024: 100}


async def test_a_surrender_of_nothing_is_refused(obliged: Harness) -> None:
    # 0 allowances is a valid count when offsets are named; with none, nothing is surrendered.
    response = await surrender(obliged, '{"compliance_year": 2024, "allowances": 0}')
    assert invalid(response), response.text
    assert "at least one allowance or one offset" in response.json()["error"]["message"]
    assert await obliged.read(registry_store.get_holdings, credit_code=CODE) == {2024: 100}


@pytest.mark.parametrize("year", ['"2024"', "2024.0", "true"])
async def test_surrender_year_must_be_a_json_integer(obliged: Harness, year: str) -> None:
    body = f'{{"compliance_year": {year}, "allowances": 1}}'
    response = await surrender(obliged, body)
    assert invalid(response), response.text


async def test_a_json_integer_is_accepted(obliged: Harness) -> None:
    response = await surrender(obliged, '{"compliance_year": 2024, "allowances": 40}')
    assert response.status_code == 201, response.text
    assert (response.json()["surrendered_now"], response.json()["remaining"]) == (40, 60)


# --- decimals and dates: verification ---------------------------------------------------------


async def assigned_case(verification: Harness, *, visited: bool = False) -> str:
    """CODE's case with the agency of its lot (chemicals in pudong: lot-2024-01), its site
    visit recorded if asked."""
    await verification.handle(
        EntityRegistered(
            credit_code=CODE,
            compliance_year=2024,
            name="A",
            district="pudong",
            sector="chemicals",
            new_entrant=False,
            registered_at=datetime(2025, 1, 10, tzinfo=UTC),
        )
    )
    report_id = uuid4()
    await verification.handle(report_submitted(CODE, report_id))
    case_id = str(case_id_for(report_id))
    await verification.run(
        verification_commands.assign_case,
        AssignCase(case_id=case_id, agency_id=AGENCY, by="bureau"),
    )
    if visited:
        await verification.run(
            verification_commands.record_site_visit,
            RecordSiteVisit(
                case_id=case_id,
                agency_id=AGENCY,
                visited_on=date(2025, 4, 10),
                findings="meters agree",
                by="verifier",
            ),
        )
    return case_id


async def post_case(verification: Harness, case_id: str, action: str, body: str) -> httpx.Response:
    """A request with this exact JSON text, as the case's agency (or, for contact, its entity)."""
    caller = (
        verification.token("entity", credit_code=CODE)
        if action == "contact"
        else verification.token("verifier", agency=AGENCY)
    )
    async with verification.client() as client:
        return await client.post(
            f"/cases/{case_id}/{action}", content=body.encode(), headers={**caller, **JSON}
        )


async def case_view(verification: Harness, case_id: str) -> dict[str, object]:
    async with verification.client() as client:
        response = await client.get(f"/cases/{case_id}", headers=verification.token("regulator"))
    view: dict[str, object] = response.json()
    return view


@pytest.mark.parametrize(
    "activity", ["1000", "1000.5", "true", "null", '"1e3"', '"-1"', '"1.0000000001"', '"1,000"']
)
async def test_verified_activity_must_be_a_decimal_string(
    verification: Harness, activity: str
) -> None:
    case_id = await assigned_case(verification, visited=True)
    body = f'{{"lines": [{{"source": "heat", "activity": {activity}}}]}}'
    response = await post_case(verification, case_id, "approve", body)
    assert invalid(response), response.text
    assert response.json()["error"]["details"][0]["loc"][:3] == ["body", "lines", 0]
    assert (await case_view(verification, case_id))["status"] == "assigned"


@pytest.mark.parametrize(
    "body",
    [
        '{"lines": []}',
        '{"lines": [{"source": "heat", "activity": "1000", "emissions": "60.000"}]}',
        '{"lines": [{"source": "steam", "activity": "1000"}]}',
        '{"verified_emissions": "60.000"}',  # the figure is computed, never typed
        json.dumps({"lines": [{"source": "heat", "activity": "1"}] * 501}),
    ],
)
async def test_verified_lines_are_closed_and_bounded(verification: Harness, body: str) -> None:
    case_id = await assigned_case(verification, visited=True)
    response = await post_case(verification, case_id, "approve", body)
    assert invalid(response), response.text
    assert (await case_view(verification, case_id))["verified_emissions"] is None


async def test_verified_lines_as_decimal_strings_are_recomputed(verification: Harness) -> None:
    case_id = await assigned_case(verification, visited=True)
    body = '{"lines": [{"source": "heat", "activity": "1000"}]}'
    response = await post_case(verification, case_id, "approve", body)
    assert response.status_code == 200, response.text
    assert response.json()["verified_emissions"] == "60.000"


@pytest.mark.parametrize(
    "visited_on",
    ['"2025-4-10"', '"2025-04-10T10:00:00+08:00"', "20250410", '"10/04/2025"', '"2025-02-30"'],
)
async def test_a_site_visit_date_is_written_yyyy_mm_dd(
    verification: Harness, visited_on: str
) -> None:
    case_id = await assigned_case(verification)
    body = f'{{"visited_on": {visited_on}, "findings": "meters agree"}}'
    response = await post_case(verification, case_id, "site-visit", body)
    assert invalid(response), response.text
    assert (await case_view(verification, case_id))["verification_visit"] is None


@pytest.mark.parametrize("phone", ['"call me"', "2155550101", '"+"', '""'])
async def test_a_contact_phone_must_look_like_one(verification: Harness, phone: str) -> None:
    case_id = await assigned_case(verification)
    body = f'{{"name": "Li", "phone": {phone}}}'
    response = await post_case(verification, case_id, "contact", body)
    assert invalid(response), response.text
    assert (await case_view(verification, case_id))["contact"] is None


# --- flags and closed bodies: POST /entities --------------------------------------------------


def registration(**changes: object) -> dict[str, object]:
    return {
        "credit_code": CODE,
        "name": "A",
        "district": "pudong",
        "sector": "power",
        "compliance_year": 2024,
        **changes,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"new_entrant": "true"},
        {"new_entrant": 1},
        {"new_entrant": None},
        {"compliance_year": "2024"},
        {"district": "Pudong New Area"},
        {"colour": "green"},  # closed body: an unknown field is refused
    ],
    ids=[
        "flag as string",
        "flag as 1",
        "flag null",
        "year as string",
        "district not an identifier",  # refused before the policy's code list is looked at
        "extra",
    ],
)
async def test_registration_is_strict(registry: Harness, changes: dict[str, object]) -> None:
    async with registry.client() as client:
        response = await client.post(
            "/entities", json=registration(**changes), headers=registry.token("regulator")
        )
    assert invalid(response), response.text
    assert await registry.read(registry_store.get_entity, credit_code=CODE) is None


async def test_a_registration_with_a_json_flag_is_accepted(registry: Harness) -> None:
    async with registry.client() as client:
        response = await client.post(
            "/entities", json=registration(new_entrant=True), headers=registry.token("regulator")
        )
    assert response.status_code == 201, response.text
    assert response.json()["new_entrant"] is True


async def test_an_invalid_credit_code_is_422_with_its_reason(registry: Harness) -> None:
    async with registry.client() as client:
        response = await client.post(
            "/entities",
            json=registration(credit_code="91310115MA1K4C8N0X"),
            headers=registry.token("regulator"),
        )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_credit_code"
    assert "expected 'W'" in response.json()["error"]["message"]


async def test_a_body_that_is_not_json_is_422(registry: Harness) -> None:
    async with registry.client() as client:
        response = await client.post(
            "/entities",
            content=b"{not json",
            headers={**registry.token("regulator"), **JSON},
        )
    assert invalid(response), response.text


# --- body limits ------------------------------------------------------------------------------


def oversized_report() -> bytes:
    """A well-formed report just over 1 MiB."""
    line = {"source": "heat", "activity": "1"}
    body = json.dumps({"compliance_year": 2024, "lines": [line] * 40_000}).encode()
    assert len(body) > MiB
    return body


async def rostered(reporting: Harness) -> None:
    await reporting.handle(
        EntityRegistered(
            credit_code=CODE,
            compliance_year=2024,
            name="A",
            district="pudong",
            sector="power",
            new_entrant=False,
            registered_at=datetime(2025, 1, 10, tzinfo=UTC),
        )
    )


async def test_a_report_over_one_mib_is_413_by_its_content_length(reporting: Harness) -> None:
    await rostered(reporting)
    body = oversized_report()
    async with reporting.client() as client:
        response = await client.post(
            "/reports",
            content=body,
            headers={**reporting.token("entity", credit_code=CODE), **JSON},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert await reporting.read(reporting_store.list_reports, credit_code=None) == []


async def test_a_report_over_one_mib_is_413_without_a_content_length(
    reporting: Harness,
) -> None:
    await rostered(reporting)
    body = oversized_report()
    seen: list[httpx.Request] = []

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    async with reporting.client() as client:
        client.event_hooks["request"].append(lambda request: _seen(seen, request))
        response = await client.post(
            "/reports",
            content=chunks(),
            headers={**reporting.token("entity", credit_code=CODE), **JSON},
        )
    assert "content-length" not in seen[0].headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert await reporting.read(reporting_store.list_reports, credit_code=None) == []


async def _seen(seen: list[httpx.Request], request: httpx.Request) -> None:
    seen.append(request)


async def test_a_report_under_the_limit_is_taken(reporting: Harness) -> None:
    await rostered(reporting)
    body = {"compliance_year": 2024, "lines": [{"source": "heat", "activity": "1"}] * 500}
    async with reporting.client() as client:
        response = await client.post(
            "/reports", json=body, headers=reporting.token("entity", credit_code=CODE)
        )
    assert response.status_code == 201, response.text
    assert response.json()["total_emissions"] == "30.000"


def roster_csv(size: int) -> bytes:
    header = "credit_code,name,district,sector,compliance_year\n"
    rows, total, seed = [header], len(header), 100
    while total < size:
        row = f"{make_credit_code(seed)},{'Company ' + 'x' * 180},pudong,power,2024\n"
        rows.append(row)
        total += len(row)
        seed += 1
    return "".join(rows).encode()


async def test_the_roster_upload_takes_a_csv_of_two_mib(registry: Harness) -> None:
    body = roster_csv(2 * MiB)
    async with registry.client() as client:
        response = await client.post(
            "/roster/imports",
            content=body,
            headers={**registry.token("regulator"), "content-type": "text/csv; charset=utf-8"},
        )
    assert response.status_code == 202, response.text
    assert response.json()["rows"] == body.count(b"\n") - 1


def test_the_bureaus_csv_uploads_have_their_own_limit_of_64_mib() -> None:
    assert REGISTRY.body_limits == {"/roster/imports": 64 * MiB, "/opening-balances": 64 * MiB}


async def test_a_roster_upload_over_64_mib_is_413(registry: Harness) -> None:
    chunk = b"x" * MiB

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(65):
            yield chunk

    async with registry.client() as client:
        response = await client.post(
            "/roster/imports",
            content=chunks(),
            headers={**registry.token("regulator"), "content-type": "text/csv"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
async def test_the_roster_upload_refuses_anything_but_csv(
    registry: Harness, content_type: str | None
) -> None:
    headers = registry.token("regulator")
    if content_type:
        headers["content-type"] = content_type
    async with registry.client() as client:
        response = await client.post("/roster/imports", content=roster_csv(100), headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_the_roster_upload_refuses_a_file_that_is_not_utf8(registry: Harness) -> None:
    body = b"credit_code,name,district,sector,compliance_year\n" + "上海".encode("gbk")
    async with registry.client() as client:
        response = await client.post(
            "/roster/imports",
            content=body,
            headers={**registry.token("regulator"), "content-type": "text/csv"},
        )
    assert response.status_code == 422
    assert "not UTF-8" in response.json()["error"]["message"]
