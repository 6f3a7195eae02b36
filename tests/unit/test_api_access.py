"""Who may call which route, in process: each service's API on its in-memory database, driven by
httpx on the test's event loop. The role gate (401, 403) comes before any lookup; an entity
acting for another credit code is refused before the lookup too; resources and listings are
then checked against the caller's entity, district or agency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import httpx
import pytest

from carbon_contracts.events import (
    AccountOpened,
)
from carbon_platform.auth import issue_token
from carbon_platform.settings import Settings
from notifier.service import SERVICE as NOTIFIER
from registry import allocation
from registry import commands as registry_commands
from registry.domain.credit_code import make_credit_code
from registry.schemas import OpenAccount, OpeningBalancesUpload, Registration
from registry.service import SERVICE as REGISTRY
from reporting import commands as reporting_commands
from reporting.schemas import ActivityInput, SubmitReport
from reporting.service import SERVICE as REPORTING
from tests.unit.support import (
    Harness,
    entity_registered,
    harness,
    report_submitted,
    verification_finalised,
)
from verification import commands as verification_commands
from verification.domain.case import case_id_for
from verification.schemas import AssignCase
from verification.service import SERVICE as VERIFICATION

CODE, OTHER = make_credit_code(1), make_credit_code(2)
UNKNOWN = make_credit_code(3)
DISTRICT, OTHER_DISTRICT = "pudong", "minhang"
AGENCY, OTHER_AGENCY = "sh-verify-01", "sh-verify-02"
A_UUID = "5c1c3a0e-8d7e-4f35-9a51-0f3b2b8c9d10"

CALLERS: dict[str, tuple[Any, dict[str, str]]] = {
    "bureau": ("regulator", {}),
    "entity": ("entity", {"credit_code": CODE}),
    "other entity": ("entity", {"credit_code": OTHER}),
    "district": ("district", {"district": DISTRICT}),
    "other district": ("district", {"district": OTHER_DISTRICT}),
    "agency": ("verifier", {"agency": AGENCY}),
    "other agency": ("verifier", {"agency": OTHER_AGENCY}),
}
SERVICES = {
    "registry": REGISTRY,
    "reporting": REPORTING,
    "verification": VERIFICATION,
    "notifier": NOTIFIER,
}
ROLE_OF = {"bureau": "regulator", "entity": "entity", "district": "district", "agency": "verifier"}


def as_(service: Harness, caller: str) -> dict[str, str]:
    role, binding = CALLERS[caller]
    return service.token(role, **binding)


@dataclass(frozen=True)
class Route:
    service: str
    method: str
    path: str
    allowed: frozenset[str]  # roles past the gate
    body: dict[str, Any] | None = None
    csv: str | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


REPORT_BODY = {"compliance_year": 2024, "lines": [{"source": "heat", "activity": "1000"}]}
PLAN_SOURCE = {"source": "heat", "monitoring": "invoice", "factor": "default"}
EVERY_ROLE = frozenset({"regulator", "entity", "district", "verifier"})
BUREAU_ONLY = frozenset({"regulator"})
ROUTES = [
    Route(
        "registry",
        "POST",
        "/entities",
        frozenset({"regulator"}),
        body={
            "credit_code": CODE,
            "name": "Example",
            "district": DISTRICT,
            "sector": "power",
            "compliance_year": 2024,
        },
    ),
    Route("registry", "POST", f"/entities/{CODE}/account", frozenset({"regulator", "entity"})),
    Route(
        "registry",
        "POST",
        f"/entities/{CODE}/surrenders",
        frozenset({"entity"}),
        body={"compliance_year": 2024, "allowances": 1},
    ),
    Route("registry", "GET", f"/entities/{CODE}", frozenset({"regulator", "entity", "district"})),
    Route(
        "registry",
        "POST",
        "/roster/imports",
        frozenset({"regulator"}),
        csv=f"credit_code,name,district,sector,compliance_year\n{CODE},A,pudong,power,2024\n",
    ),
    Route("registry", "GET", f"/roster/imports/{A_UUID}", frozenset({"regulator"})),
    Route("registry", "GET", f"/roster/imports/{A_UUID}/rows", frozenset({"regulator"})),
    Route("registry", "POST", "/allocations/2024/approve", BUREAU_ONLY, body={}),
    Route("registry", "POST", "/allocations/2024/previews", BUREAU_ONLY),
    Route("registry", "GET", "/allocations/2024", frozenset({"regulator", "entity", "district"})),
    Route(
        "registry",
        "GET",
        f"/entities/{CODE}/allocations/2024",
        frozenset({"regulator", "entity", "district"}),
    ),
    Route(
        "registry",
        "POST",
        "/opening-balances",
        BUREAU_ONLY,
        csv=f"credit_code,compliance_year,held\n{CODE},2024,1\n",
    ),
    Route(
        "registry",
        "GET",
        f"/entities/{CODE}/offsets",
        frozenset({"regulator", "entity", "district"}),
    ),
    Route(
        "registry",
        "POST",
        f"/entities/{CODE}/transfers",
        frozenset({"entity"}),
        body={"vintage": 2024, "allowances": 1},
    ),
    Route(
        "registry",
        "GET",
        f"/entities/{CODE}/transfers",
        frozenset({"regulator", "entity", "district"}),
    ),
    Route("registry", "GET", "/ledger/reconciliation", BUREAU_ONLY),
    Route("reporting", "GET", "/figures", BUREAU_ONLY),
    Route("registry", "GET", "/figures", BUREAU_ONLY),
    Route("notifier", "GET", "/figures", BUREAU_ONLY),
    Route("reporting", "POST", "/reports", frozenset({"entity"}), body=REPORT_BODY),
    Route("reporting", "GET", "/reports", frozenset({"regulator", "entity", "district"})),
    Route("reporting", "GET", f"/reports/{A_UUID}", frozenset({"regulator", "entity", "district"})),
    Route(
        "reporting",
        "PUT",
        f"/reports/{A_UUID}/draft",
        frozenset({"entity"}),
        body={"lines": REPORT_BODY["lines"]},
    ),
    Route("reporting", "POST", f"/reports/{A_UUID}/submit", frozenset({"entity"})),
    Route(
        "reporting",
        "POST",
        f"/reports/{A_UUID}/versions",
        frozenset({"entity"}),
        body={"lines": REPORT_BODY["lines"], "reason": "meter misread"},
    ),
    Route(
        "reporting",
        "POST",
        f"/reports/{A_UUID}/return",
        frozenset({"regulator"}),
        body={"version": 1, "reason": "invoices missing"},
    ),
    Route(
        "reporting",
        "POST",
        f"/reports/{A_UUID}/paper-copy",
        frozenset({"regulator"}),
        body={"received_on": "2025-03-20", "delivery": "post"},
    ),
    Route(
        "reporting",
        "POST",
        f"/reports/{A_UUID}/accept",
        frozenset({"regulator"}),
        body={"version": 1},
    ),
    Route(
        "reporting",
        "POST",
        "/determinations",
        frozenset({"regulator"}),
        body={**REPORT_BODY, "credit_code": CODE, "reason": "no report"},
    ),
    Route("reporting", "GET", "/determinations", frozenset({"regulator", "entity", "district"})),
    Route(
        "reporting",
        "GET",
        f"/determinations/{A_UUID}",
        frozenset({"regulator", "entity", "district"}),
    ),
    Route(
        "reporting",
        "POST",
        "/monitoring-plans",
        frozenset({"entity"}),
        body={"plan_year": 2025, "sources": [PLAN_SOURCE]},
    ),
    Route(
        "reporting",
        "POST",
        f"/monitoring-plans/{A_UUID}/versions",
        frozenset({"entity"}),
        body={"sources": [PLAN_SOURCE]},
    ),
    Route(
        "reporting",
        "POST",
        f"/monitoring-plans/{A_UUID}/approve",
        frozenset({"regulator"}),
        body={"version": 1},
    ),
    Route(
        "reporting",
        "POST",
        f"/monitoring-plans/{A_UUID}/return",
        frozenset({"regulator"}),
        body={"version": 1, "reason": "no method for the boilers"},
    ),
    Route("reporting", "GET", "/monitoring-plans", frozenset({"regulator", "entity", "district"})),
    Route(
        "reporting",
        "GET",
        f"/monitoring-plans/{A_UUID}",
        frozenset({"regulator", "entity", "district"}),
    ),
    Route("verification", "GET", "/lots", EVERY_ROLE),
    Route("verification", "GET", "/cases", EVERY_ROLE),
    Route("verification", "GET", f"/cases/{A_UUID}", EVERY_ROLE),
    Route("verification", "POST", "/lots/lot-2024-01/assign", BUREAU_ONLY),
    Route(
        "verification", "POST", f"/cases/{A_UUID}/assign", BUREAU_ONLY, body={"agency_id": AGENCY}
    ),
    Route(
        "verification",
        "POST",
        f"/cases/{A_UUID}/contact",
        frozenset({"entity"}),
        body={"name": "Li Wei", "phone": "021 5555 0101"},
    ),
    Route(
        "verification",
        "POST",
        f"/cases/{A_UUID}/site-visit",
        frozenset({"verifier"}),
        body={"visited_on": "2025-04-10", "findings": "meters agree"},
    ),
    Route(
        "verification",
        "POST",
        f"/cases/{A_UUID}/return",
        frozenset({"verifier"}),
        body={"reason": "heat invoices missing"},
    ),
    Route(
        "verification",
        "POST",
        f"/cases/{A_UUID}/approve",
        frozenset({"verifier"}),
        body={"lines": [{"source": "heat", "activity": "1000"}]},
    ),
    Route("verification", "POST", f"/cases/{A_UUID}/select", BUREAU_ONLY, body={"reason": "x"}),
    Route("verification", "POST", f"/cases/{A_UUID}/finalise", BUREAU_ONLY),
    Route("verification", "POST", "/years/2024/selection", BUREAU_ONLY),
    Route("verification", "POST", "/years/2024/close", BUREAU_ONLY),
    Route("verification", "GET", "/years/2024", BUREAU_ONLY),
    Route("notifier", "GET", "/notifications", frozenset({"regulator", "entity", "district"})),
    Route("notifier", "POST", "/alerts", BUREAU_ONLY, body={"version": "4", "alerts": []}),
]
REFUSED_ROLES = [
    (route, caller)
    for route in ROUTES
    for caller in ("bureau", "entity", "district", "agency")
    if ROLE_OF[caller] not in route.allowed
]


async def call(
    service: Harness, route: Route, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with service.client() as client:
        if route.csv is not None:
            return await client.request(
                route.method,
                route.path,
                content=route.csv.encode(),
                headers={**(headers or {}), "content-type": "text/csv"},
            )
        return await client.request(route.method, route.path, json=route.body, headers=headers)


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# --- the role gate, route by route ------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_no_token_is_401(route: Route) -> None:
    async with harness(SERVICES[route.service]) as service:
        response = await call(service, route)
    assert response.status_code == 401, response.text
    assert error_code(response) == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("route", ROUTES, ids=str)
async def test_a_token_signed_with_another_key_is_401(
    route: Route,
) -> None:
    async with harness(SERVICES[route.service]) as service:
        forged = issue_token(
            Settings(jwt_secret="another-secret-" + "z" * 32),
            role="regulator",
            subject="forger",
            now=datetime.now(UTC),
        )
        response = await call(service, route, {"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert "invalid token" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("route", "caller"), REFUSED_ROLES, ids=[f"{r} as {c}" for r, c in REFUSED_ROLES]
)
async def test_a_role_the_route_does_not_grant_is_403(route: Route, caller: str) -> None:
    async with harness(SERVICES[route.service]) as service:
        response = await call(service, route, as_(service, caller))
    assert response.status_code == 403, response.text
    assert error_code(response) == "forbidden"


async def test_public_routes_need_no_token(reporting: Harness) -> None:
    async with reporting.client() as client:
        factors = await client.get("/factors")
        live = await client.get("/health/live")
    assert factors.status_code == 200
    assert factors.json()["version"] == "shanghai-default-2024.1"
    assert live.json() == {"status": "live"}


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/entities/NOT-A-CODE"), ("POST", "/entities/NOT-A-CODE/account")]
)
async def test_no_token_is_401_even_with_a_malformed_credit_code(
    registry: Harness, method: str, path: str
) -> None:
    async with registry.client() as client:
        response = await client.request(method, path)
    assert response.status_code == 401


# --- registry: one entity's resources ---------------------------------------------------------


async def register(registry: Harness, code: str = CODE, district: str = DISTRICT) -> None:
    await registry.run(
        registry_commands.register_entity,
        Registration(
            credit_code=code,
            name=f"Entity {code[-4:]}",
            district=district,
            sector="power",
            compliance_year=2024,
        ),
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "for_the_bureau"),
    [
        ("GET", f"/entities/{UNKNOWN}", None, 404),
        ("POST", f"/entities/{UNKNOWN}/account", None, 404),
        # Only the entity itself surrenders: the Bureau is stopped at the role gate.
        (
            "POST",
            f"/entities/{UNKNOWN}/surrenders",
            {"compliance_year": 2024, "allowances": 1},
            403,
        ),
    ],
)
async def test_an_entity_acting_for_another_code_is_403_before_any_404(
    registry: Harness,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    for_the_bureau: int,
) -> None:
    async with registry.client() as client:
        other = await client.request(method, path, json=body, headers=as_(registry, "entity"))
        bureau = await client.request(method, path, json=body, headers=as_(registry, "bureau"))
    assert other.status_code == 403, other.text
    assert error_code(other) == "forbidden"
    assert bureau.status_code == for_the_bureau


async def test_an_entity_reads_its_own_status_and_not_anothers(registry: Harness) -> None:
    await register(registry, CODE)
    await register(registry, OTHER)
    async with registry.client() as client:
        own = await client.get(f"/entities/{CODE}", headers=as_(registry, "entity"))
        other = await client.get(f"/entities/{OTHER}", headers=as_(registry, "entity"))
        unknown_own = await client.get(
            f"/entities/{UNKNOWN}", headers=registry.token("entity", credit_code=UNKNOWN)
        )
    assert own.status_code == 200
    assert (own.json()["credit_code"], own.json()["district"]) == (CODE, DISTRICT)
    assert other.status_code == 403
    assert unknown_own.status_code == 404


async def test_a_district_reads_the_entities_it_supervises_only(registry: Harness) -> None:
    await register(registry, CODE, DISTRICT)
    async with registry.client() as client:
        own = await client.get(f"/entities/{CODE}", headers=as_(registry, "district"))
        other = await client.get(f"/entities/{CODE}", headers=as_(registry, "other district"))
        unknown = await client.get(f"/entities/{UNKNOWN}", headers=as_(registry, "district"))
        account = await client.post(f"/entities/{CODE}/account", headers=as_(registry, "district"))
    assert own.status_code == 200
    assert own.json()["district"] == DISTRICT
    assert (other.status_code, error_code(other)) == (403, "forbidden")
    assert unknown.status_code == 404
    assert account.status_code == 403


async def test_the_bureau_or_the_entity_opens_the_account(registry: Harness) -> None:
    await register(registry, CODE)
    await register(registry, OTHER)
    async with registry.client() as client:
        by_entity = await client.post(f"/entities/{CODE}/account", headers=as_(registry, "entity"))
        by_bureau = await client.post(f"/entities/{OTHER}/account", headers=as_(registry, "bureau"))
        by_other = await client.post(f"/entities/{OTHER}/account", headers=as_(registry, "entity"))
    assert by_entity.status_code == 201
    assert by_entity.json()["account_id"] == f"SHEA-{CODE}"
    assert by_bureau.status_code == 201
    assert by_other.status_code == 403


async def test_the_entity_surrenders_for_itself(registry: Harness) -> None:
    await register(registry, CODE)
    await registry.run(registry_commands.open_account, OpenAccount(credit_code=CODE))
    await registry.handle(verification_finalised(CODE, "10.000"))
    await registry.run(
        allocation.import_opening_balances,
        OpeningBalancesUpload(
            text=f"credit_code,compliance_year,held\n{CODE},2024,10\n", imported_by="bureau"
        ),
    )
    body = {"compliance_year": 2024, "allowances": 10}
    async with registry.client() as client:
        by_other = await client.post(
            f"/entities/{CODE}/surrenders", json=body, headers=as_(registry, "other entity")
        )
        by_bureau = await client.post(
            f"/entities/{CODE}/surrenders", json=body, headers=as_(registry, "bureau")
        )
        by_entity = await client.post(
            f"/entities/{CODE}/surrenders", json=body, headers=as_(registry, "entity")
        )
        again = await client.post(
            f"/entities/{CODE}/surrenders", json=body, headers=as_(registry, "entity")
        )
    assert (by_other.status_code, by_bureau.status_code) == (403, 403)
    assert by_entity.status_code == 201, by_entity.text
    assert by_entity.json()["status"] == "compliant"
    assert (again.status_code, error_code(again)) == (409, "already_compliant")


async def test_the_bureau_follows_its_roster_upload(registry: Harness) -> None:
    csv = f"credit_code,name,district,sector,compliance_year\n{CODE},A,pudong,power,2024\n"
    async with registry.client() as client:
        uploaded = await client.post(
            "/roster/imports",
            content=csv.encode(),
            headers={**as_(registry, "bureau"), "content-type": "text/csv"},
        )
        location = uploaded.headers["location"]
        progress = await client.get(location, headers=as_(registry, "bureau"))
        rows = await client.get(f"{location}/rows", headers=as_(registry, "bureau"))
        unknown = await client.get(f"/roster/imports/{A_UUID}", headers=as_(registry, "bureau"))
    assert uploaded.status_code == 202
    assert location == f"/roster/imports/{uploaded.json()['import_id']}"
    assert (progress.status_code, progress.json()["status"]) == (200, "pending")
    assert [(row["line"], row["status"]) for row in rows.json()] == [(2, "pending")]
    assert (unknown.status_code, error_code(unknown)) == (404, "unknown_import")


# --- reporting --------------------------------------------------------------------------------


async def submitted(reporting: Harness, code: str, district: str) -> str:
    await reporting.handle(entity_registered(code, district=district, sector="power"))
    ran = await reporting.run(
        reporting_commands.submit_report,
        SubmitReport(
            credit_code=code,
            compliance_year=2024,
            lines=[ActivityInput(source="heat", activity=Decimal("1000"))],
            submitted_by="test",
        ),
    )
    return str(ran.result.report_id)


async def test_an_entity_submits_for_the_code_of_its_token(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE, district=DISTRICT, sector="power"))
    async with reporting.client() as client:
        own = await client.post("/reports", json=REPORT_BODY, headers=as_(reporting, "entity"))
        unrostered = await client.post(
            "/reports", json=REPORT_BODY, headers=as_(reporting, "other entity")
        )
    assert own.status_code == 201, own.text
    assert (own.json()["credit_code"], own.json()["total_emissions"]) == (CODE, "60.000")
    assert (unrostered.status_code, error_code(unrostered)) == (404, "unknown_entity")


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("bureau", 200),
        ("entity", 200),
        ("other entity", 403),
        ("district", 200),
        ("other district", 403),
        ("agency", 403),
    ],
)
async def test_reading_a_report(reporting: Harness, caller: str, status: int) -> None:
    report_id = await submitted(reporting, CODE, DISTRICT)
    async with reporting.client() as client:
        response = await client.get(f"/reports/{report_id}", headers=as_(reporting, caller))
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["report_id"] == report_id


async def test_an_unknown_report_is_404(reporting: Harness) -> None:
    async with reporting.client() as client:
        response = await client.get(f"/reports/{A_UUID}", headers=as_(reporting, "bureau"))
    assert (response.status_code, error_code(response)) == (404, "unknown_report")


@pytest.mark.parametrize(
    ("caller", "query", "expected"),
    [
        ("bureau", "", {CODE, OTHER}),
        ("bureau", f"?credit_code={OTHER}", {OTHER}),
        ("entity", "", {CODE}),
        ("entity", f"?credit_code={OTHER}", {CODE}),  # a filter cannot widen the scope
        ("district", "", {CODE}),
        ("other district", "", {OTHER}),
        ("district", f"?credit_code={OTHER}", set()),
    ],
)
async def test_report_listings_are_scoped(
    reporting: Harness, caller: str, query: str, expected: set[str]
) -> None:
    await submitted(reporting, CODE, DISTRICT)
    await submitted(reporting, OTHER, OTHER_DISTRICT)
    async with reporting.client() as client:
        response = await client.get(f"/reports{query}", headers=as_(reporting, caller))
    assert response.status_code == 200
    assert {report["credit_code"] for report in response.json()} == expected


# --- verification -----------------------------------------------------------------------------

ROSTER = {CODE: (DISTRICT, "power"), OTHER: (OTHER_DISTRICT, "textiles")}
"""Where verification's roster puts them: CODE in lot-2024-01 (AGENCY), OTHER in lot-2024-02."""
LOT_AGENCY = {CODE: AGENCY, OTHER: OTHER_AGENCY}


async def opened(verification: Harness, code: str, *, assign: bool = False) -> str:
    """A case for a report of `code` (on the roster if ROSTER knows it), assigned to its lot's
    agency if asked."""
    if code in ROSTER:
        district, sector = ROSTER[code]
        await verification.handle(entity_registered(code, district=district, sector=sector))
    report_id = uuid4()
    await verification.handle(report_submitted(code, report_id))
    case_id = str(case_id_for(report_id))
    if assign:
        await verification.run(
            verification_commands.assign_case,
            AssignCase(case_id=case_id, agency_id=LOT_AGENCY[code], by="bureau"),
        )
    return case_id


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("bureau", 200),
        ("entity", 200),
        ("other entity", 403),
        ("agency", 200),
        ("other agency", 403),
        ("district", 200),
        ("other district", 403),
    ],
)
async def test_reading_a_case(verification: Harness, caller: str, status: int) -> None:
    case_id = await opened(verification, CODE, assign=True)
    async with verification.client() as client:
        response = await client.get(f"/cases/{case_id}", headers=as_(verification, caller))
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["history"][0]["action"] == "open"


async def test_no_agency_reads_an_unassigned_case(verification: Harness) -> None:
    case_id = await opened(verification, CODE)
    async with verification.client() as client:
        response = await client.get(f"/cases/{case_id}", headers=as_(verification, "agency"))
        unknown = await client.get(f"/cases/{A_UUID}", headers=as_(verification, "bureau"))
    assert response.status_code == 403
    assert (unknown.status_code, error_code(unknown)) == (404, "unknown_case")


@pytest.mark.parametrize(
    ("caller", "query", "expected"),
    [
        ("bureau", "", {CODE, OTHER, UNKNOWN}),
        ("bureau", f"?credit_code={CODE}", {CODE}),
        ("bureau", f"?district={OTHER_DISTRICT}", {OTHER}),
        ("bureau", "?sector=textiles", {OTHER}),
        ("bureau", "?lot_id=lot-2024-02", {OTHER}),
        ("bureau", f"?agency_id={AGENCY}", {CODE}),
        ("bureau", "?status=opened", {UNKNOWN}),
        ("bureau", "?round=reverification", set()),
        ("bureau", "?compliance_year=2025", set()),
        ("entity", "", {CODE}),
        ("entity", f"?credit_code={OTHER}", {CODE}),  # a filter cannot widen the scope
        ("agency", "", {CODE}),
        ("other agency", "", {OTHER}),
        ("agency", f"?credit_code={OTHER}", set()),
        ("agency", f"?agency_id={OTHER_AGENCY}", set()),  # its cases at work with another
        ("district", "", {CODE}),  # UNKNOWN is on no roster: no district sees it
        ("other district", "", {OTHER}),
        ("district", f"?district={OTHER_DISTRICT}", {CODE}),
    ],
)
async def test_case_listings_are_scoped(
    verification: Harness, caller: str, query: str, expected: set[str]
) -> None:
    await opened(verification, CODE, assign=True)
    await opened(verification, OTHER, assign=True)
    await opened(verification, UNKNOWN)  # not on the roster, not assigned: no agency sees it
    async with verification.client() as client:
        response = await client.get(f"/cases{query}", headers=as_(verification, caller))
    assert response.status_code == 200, response.text
    assert {case["credit_code"] for case in response.json()} == expected


async def test_any_caller_reads_the_lots(verification: Harness) -> None:
    async with verification.client() as client:
        response = await client.get("/lots", headers=as_(verification, "entity"))
    assert response.status_code == 200
    assert [(lot["id"], lot["agency"]) for lot in response.json()["lots"]] == [
        ("lot-2024-01", "sh-verify-01"),
        ("lot-2024-02", "sh-verify-02"),
        ("lot-2024-r1", "sh-verify-03"),
    ]


async def test_each_party_does_its_part_of_a_verification(verification: Harness) -> None:
    case_id = await opened(verification, CODE)
    path = f"/cases/{case_id}"
    visit = {"visited_on": "2025-04-10", "findings": "meters agree"}
    contact = {"name": "Li Wei", "phone": "021 5555 0101"}
    lines = {"lines": [{"source": "heat", "activity": "1000"}]}
    async with verification.client() as client:

        async def post(route: str, caller: str, body: Any = None) -> httpx.Response:
            return await client.post(route, json=body, headers=as_(verification, caller))

        assigned = await post("/lots/lot-2024-01/assign", "bureau")
        by_other_entity = await post(f"{path}/contact", "other entity", contact)
        named = await post(f"{path}/contact", "entity", contact)
        visit_by_other = await post(f"{path}/site-visit", "other agency", visit)
        visited = await post(f"{path}/site-visit", "agency", visit)
        approve_by_other = await post(f"{path}/approve", "other agency", lines)
        approved = await post(f"{path}/approve", "agency", lines)
        finalised = await post(f"{path}/finalise", "bureau")
        year = await client.get("/years/2024", headers=as_(verification, "bureau"))
        closed = await post("/years/2024/close", "bureau")
        unknown = await post(f"/cases/{A_UUID}/assign", "bureau", {"agency_id": AGENCY})
        unknown_lot = await post("/lots/lot-9/assign", "bureau")
    assert assigned.status_code == 200, assigned.text
    assert [case["agency_id"] for case in assigned.json()["assigned"]] == [AGENCY]
    assert (by_other_entity.status_code, error_code(by_other_entity)) == (403, "forbidden")
    assert named.json()["contact"] == contact
    assert (visit_by_other.status_code, error_code(visit_by_other)) == (403, "other_agency")
    assert visited.json()["verification_visit"] == visit
    assert (approve_by_other.status_code, error_code(approve_by_other)) == (403, "other_agency")
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["verified_emissions"]) == (
        "approved",
        "60.000",
    )
    assert (approved.json()["difference"], approved.json()["calculation"]["total"]) == (
        "0.000",
        "60.000",
    )
    assert (finalised.json()["status"], finalised.json()["final_emissions"]) == ("final", "60.000")
    assert year.json()["cases_by_status"]["final"] == 1
    assert (year.json()["rostered"], year.json()["without_case"]) == (1, 0)
    assert closed.status_code == 200, closed.text
    assert closed.json()["total_verified_emissions"] == "60.000"
    assert (unknown.status_code, error_code(unknown)) == (404, "unknown_case")
    assert (unknown_lot.status_code, error_code(unknown_lot)) == (404, "unknown_lot")


# --- notifier ---------------------------------------------------------------------------------


async def notified(notifier: Harness) -> None:
    """CODE in pudong and OTHER in minhang registered, each then opened an account."""
    for code, district in ((CODE, DISTRICT), (OTHER, OTHER_DISTRICT)):
        await notifier.handle(entity_registered(code, district=district, sector="power"))
        await notifier.handle(
            AccountOpened(
                credit_code=code,
                compliance_year=2024,
                account_id=f"SHEA-{code}",
                opened_at=datetime(2025, 2, 1, tzinfo=UTC),
            )
        )


@pytest.mark.parametrize(
    ("caller", "query", "expected"),
    [
        ("entity", "", {("entity", CODE)}),
        ("entity", f"?recipient_type=entity&recipient_id={OTHER}", {("entity", CODE)}),
        ("entity", f"?recipient_type=district&recipient_id={DISTRICT}", {("entity", CODE)}),
        ("other entity", "", {("entity", OTHER)}),
        ("district", "", {("district", DISTRICT)}),
        ("district", f"?recipient_type=entity&recipient_id={CODE}", {("district", DISTRICT)}),
        ("other district", "", {("district", OTHER_DISTRICT)}),
        (
            "bureau",
            "",
            {
                ("entity", CODE),
                ("entity", OTHER),
                ("district", DISTRICT),
                ("district", OTHER_DISTRICT),
            },
        ),
        (
            "bureau",
            "?recipient_type=district",
            {("district", DISTRICT), ("district", OTHER_DISTRICT)},
        ),
        ("bureau", f"?recipient_type=entity&recipient_id={OTHER}", {("entity", OTHER)}),
    ],
)
async def test_notification_listings_are_scoped(
    notifier: Harness, caller: str, query: str, expected: set[tuple[str, str]]
) -> None:
    await notified(notifier)
    async with notifier.client() as client:
        response = await client.get(f"/notifications{query}", headers=as_(notifier, caller))
    assert response.status_code == 200, response.text
    assert {(n["recipient_type"], n["recipient_id"]) for n in response.json()} == expected


async def test_an_entity_sees_its_own_notifications_newest_first(notifier: Harness) -> None:
    await notified(notifier)
    async with notifier.client() as client:
        response = await client.get("/notifications", headers=as_(notifier, "entity"))
    assert [n["event_type"] for n in response.json()] == ["account.opened", "entity.registered"]
    assert all(n["credit_code"] == CODE for n in response.json())


async def test_the_bureau_must_name_the_recipient_type_with_an_id(notifier: Harness) -> None:
    async with notifier.client() as client:
        response = await client.get(
            f"/notifications?recipient_id={CODE}", headers=as_(notifier, "bureau")
        )
    assert (response.status_code, error_code(response)) == (422, "invalid_request")
