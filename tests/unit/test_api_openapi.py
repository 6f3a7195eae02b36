"""What each service's /openapi.json documents: a response schema for every 2xx answer, and
for every route the 4xx statuses it may answer, each with the one error body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from carbon_platform.context import ServiceDefinition
from notifier.service import SERVICE as NOTIFIER
from registry.service import SERVICE as REGISTRY
from reporting.service import SERVICE as REPORTING
from tests.unit.support import Harness, harness
from verification.service import SERVICE as VERIFICATION

# Every route may be refused for a bad token (401), an oversized body (413) or a malformed
# request (422); the rest are the route's own.
EVERY_ROUTE = {401, 413, 422}
DOCUMENTED: dict[tuple[str, str, str], set[int]] = {
    ("registry", "post", "/entities"): {403, 409},
    ("registry", "post", "/entities/{credit_code}/account"): {403, 404, 409},
    ("registry", "post", "/entities/{credit_code}/surrenders"): {403, 404, 409},
    ("registry", "get", "/entities/{credit_code}"): {403, 404},
    ("registry", "get", "/districts"): {403},
    ("reporting", "get", "/obligations"): {403, 404},
    ("reporting", "get", "/obligations/{credit_code}/{obligation}"): {403, 404},
    ("reporting", "get", "/deadlines"): {403},
    ("reporting", "get", "/deadlines/{obligation}"): {403, 404},
    ("reporting", "get", "/districts/{district}/cases"): {403, 404},
    ("reporting", "get", "/cases"): {403},
    ("registry", "get", "/obligations"): {403, 404},
    ("registry", "get", "/obligations/{credit_code}/{obligation}"): {403, 404},
    ("registry", "get", "/deadlines"): {403},
    ("registry", "get", "/deadlines/{obligation}"): {403, 404},
    ("registry", "get", "/districts/{district}/cases"): {403, 404},
    ("registry", "get", "/cases"): {403},
    ("registry", "get", "/districts/{district}/shortfalls"): {403},
    ("registry", "post", "/roster/imports"): {403, 415},
    ("registry", "get", "/roster/imports/{import_id}"): {403, 404},
    ("registry", "get", "/roster/imports/{import_id}/rows"): {403, 404},
    ("registry", "post", "/allocations/{compliance_year}/approve"): {403, 409},
    ("registry", "post", "/allocations/{compliance_year}/previews"): {403, 409},
    ("registry", "get", "/allocations/{compliance_year}"): {403},
    ("registry", "get", "/entities/{credit_code}/allocations/{compliance_year}"): {403, 404},
    ("registry", "post", "/opening-balances"): {403, 415},
    ("registry", "get", "/entities/{credit_code}/offsets"): {403, 404},
    ("registry", "post", "/entities/{credit_code}/transfers"): {403, 404, 409},
    ("registry", "get", "/entities/{credit_code}/transfers"): {403, 404},
    ("registry", "get", "/ledger/reconciliation"): {403},
    ("reporting", "get", "/figures"): {403},
    ("registry", "get", "/figures"): {403},
    ("notifier", "get", "/figures"): {403},
    ("registry", "get", "/auctions"): {403},
    ("registry", "get", "/auctions/{auction_id}"): {403, 404},
    ("registry", "post", "/auctions/{auction_id}/announce"): {403, 404, 409},
    ("registry", "post", "/auctions/{auction_id}/clear"): {403, 404, 409},
    ("registry", "post", "/auctions/{auction_id}/bids"): {403, 404, 409},
    ("registry", "put", "/auctions/{auction_id}/bids/{bid_id}"): {403, 404, 409},
    ("registry", "delete", "/auctions/{auction_id}/bids/{bid_id}"): {403, 404, 409},
    ("registry", "get", "/auctions/{auction_id}/bids"): {403, 404, 409},
    ("registry", "get", "/auctions/{auction_id}/awards"): {403, 404},
    ("reporting", "post", "/reports"): {403, 404, 409},
    ("reporting", "get", "/reports"): {403},
    ("reporting", "get", "/reports/{report_id}"): {403, 404},
    ("reporting", "put", "/reports/{report_id}/draft"): {403, 404, 409},
    ("reporting", "post", "/reports/{report_id}/submit"): {403, 404, 409},
    ("reporting", "post", "/reports/{report_id}/versions"): {403, 404, 409},
    ("reporting", "post", "/reports/{report_id}/return"): {403, 404, 409},
    ("reporting", "post", "/reports/{report_id}/paper-copy"): {403, 404, 409},
    ("reporting", "post", "/reports/{report_id}/accept"): {403, 404, 409},
    ("reporting", "post", "/determinations"): {403, 404, 409},
    ("reporting", "get", "/determinations"): {403},
    ("reporting", "get", "/determinations/{determination_id}"): {403, 404},
    ("reporting", "post", "/monitoring-plans"): {403, 404, 409},
    ("reporting", "post", "/monitoring-plans/{plan_id}/versions"): {403, 404, 409},
    ("reporting", "post", "/monitoring-plans/{plan_id}/approve"): {403, 404, 409},
    ("reporting", "post", "/monitoring-plans/{plan_id}/return"): {403, 404, 409},
    ("reporting", "get", "/monitoring-plans"): {403},
    ("reporting", "get", "/monitoring-plans/{plan_id}"): {403, 404},
    ("verification", "get", "/lots"): set(),
    ("verification", "get", "/cases"): {403},
    ("verification", "get", "/cases/{case_id}"): {403, 404},
    ("verification", "post", "/lots/{lot_id}/assign"): {403, 404, 409},
    **{
        ("verification", "post", f"/cases/{{case_id}}/{action}"): {403, 404, 409}
        for action in ("assign", "contact", "site-visit", "return", "approve", "select", "finalise")
    },
    ("verification", "post", "/years/{year}/selection"): {403, 409},
    ("verification", "post", "/years/{year}/close"): {403, 409},
    ("verification", "get", "/years/{year}"): {403},
    ("notifier", "get", "/notifications"): {403},
    ("notifier", "post", "/subscriptions"): {403},
    ("notifier", "get", "/subscriptions"): {403},
    ("notifier", "delete", "/subscriptions/{subscription_id}"): {403, 404},
    ("notifier", "get", "/deliveries"): {403},
    ("notifier", "get", "/deliveries/{delivery_id}/attempts"): {403, 404},
    ("notifier", "post", "/deliveries/{delivery_id}/replay"): {403, 404, 409},
    ("notifier", "post", "/alerts"): {403},
}
PUBLIC: dict[tuple[str, str, str], set[int]] = {
    ("reporting", "get", "/factors"): set(),
    **{
        (service, "get", path): set()
        for service in ("registry", "reporting", "verification", "notifier")
        for path in ("/health/live", "/health/ready")
    },
}
SERVICES = [REGISTRY, REPORTING, VERIFICATION, NOTIFIER]


@pytest.fixture(params=SERVICES, ids=lambda definition: definition.name)
async def documented(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    definition: ServiceDefinition = request.param
    service: Harness
    async with harness(definition) as service, service.client() as client:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        yield definition.name, response.json()


def operations(name: str, document: dict[str, Any]) -> dict[tuple[str, str, str], Any]:
    return {
        (name, method, path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


def json_schema(response: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = (
        response.get("content", {}).get("application/json", {}).get("schema", {})
    )
    return schema


async def test_every_route_is_known_to_these_tests(
    documented: tuple[str, dict[str, Any]],
) -> None:
    name, document = documented
    expected = {key for key in (*DOCUMENTED, *PUBLIC) if key[0] == name}
    assert set(operations(name, document)) == expected


async def test_every_route_documents_its_refusals_with_the_error_body(
    documented: tuple[str, dict[str, Any]],
) -> None:
    name, document = documented
    for key, operation in operations(name, document).items():
        if key not in DOCUMENTED:
            continue
        refusals = {int(status) for status in operation["responses"] if status.startswith("4")}
        assert refusals == EVERY_ROUTE | DOCUMENTED[key], key
        for status in refusals:
            response = operation["responses"][str(status)]
            assert json_schema(response) == {"$ref": "#/components/schemas/ErrorResponse"}, key
            assert response["description"], key


async def test_every_2xx_answer_has_a_response_schema(
    documented: tuple[str, dict[str, Any]],
) -> None:
    name, document = documented
    for key, operation in operations(name, document).items():
        if key[2] == "/health/ready":
            continue  # see test_readiness_documents_its_200_body
        successes = [status for status in operation["responses"] if status.startswith("2")]
        assert successes, key
        for status in successes:
            assert json_schema(operation["responses"][status]), (key, status)


async def test_created_and_accepted_routes_document_their_status(
    documented: tuple[str, dict[str, Any]],
) -> None:
    name, document = documented
    created = {
        ("registry", "post", "/entities"): "201",
        ("registry", "post", "/entities/{credit_code}/account"): "201",
        ("registry", "post", "/entities/{credit_code}/surrenders"): "201",
        ("registry", "post", "/roster/imports"): "202",
        ("registry", "post", "/entities/{credit_code}/transfers"): "201",
        ("registry", "post", "/auctions/{auction_id}/bids"): "201",
        ("reporting", "post", "/reports"): "201",
        ("reporting", "post", "/reports/{report_id}/versions"): "201",
        ("reporting", "post", "/determinations"): "201",
        ("reporting", "post", "/monitoring-plans"): "201",
        ("reporting", "post", "/monitoring-plans/{plan_id}/versions"): "201",
        ("notifier", "post", "/subscriptions"): "201",
    }
    for key, operation in operations(name, document).items():
        if key in created:
            assert [s for s in operation["responses"] if s.startswith("2")] == [created[key]]


async def test_the_error_body_schema(documented: tuple[str, dict[str, Any]]) -> None:
    _, document = documented
    schemas = document["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert schemas["ErrorResponse"]["properties"]["error"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
    assert set(schemas["ErrorDetail"]["properties"]) == {"code", "message", "details"}


async def test_actual_refusals_match_the_documented_error_body() -> None:
    async with harness(REGISTRY) as registry, registry.client() as client:
        document = (await client.get("/openapi.json")).json()
        answers = [
            await client.post("/entities", json={}),  # 401
            await client.post(
                "/entities", json={}, headers=registry.token("district", district="x")
            ),
            await client.post("/entities", json={}, headers=registry.token("regulator")),  # 422
            await client.get(
                "/entities/91310115MA1K4C8N0W", headers=registry.token("regulator")
            ),  # 404
        ]
    schema = {"$ref": "#/components/schemas/ErrorResponse", "components": document["components"]}
    assert [answer.status_code for answer in answers] == [401, 403, 422, 404]
    for answer in answers:
        jsonschema.validate(answer.json(), schema)
    assert answers[2].json()["error"]["details"]  # the validation errors, located


async def test_the_roster_upload_documents_a_csv_body() -> None:
    async with harness(REGISTRY) as registry, registry.client() as client:
        document = (await client.get("/openapi.json")).json()
    body = document["paths"]["/roster/imports"]["post"]["requestBody"]
    assert body["required"] is True
    assert list(body["content"]) == ["text/csv"]


async def test_readiness_documents_503_with_its_checks() -> None:
    async with harness(NOTIFIER) as notifier, notifier.client() as client:
        document = (await client.get("/openapi.json")).json()
        ready = await client.get("/health/ready")
    responses = document["paths"]["/health/ready"]["get"]["responses"]
    assert json_schema(responses["503"]) == {"$ref": "#/components/schemas/Readiness"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": True}}


async def test_readiness_documents_its_200_body() -> None:
    async with harness(NOTIFIER) as notifier, notifier.client() as client:
        document = (await client.get("/openapi.json")).json()
    responses = document["paths"]["/health/ready"]["get"]["responses"]
    assert json_schema(responses["200"]) == {"$ref": "#/components/schemas/Readiness"}


async def test_routes_without_a_token_document_no_401() -> None:
    async with harness(REPORTING) as reporting, reporting.client() as client:
        document = (await client.get("/openapi.json")).json()
        factors = await client.get("/factors")
    assert factors.status_code == 200  # no token needed
    for key in PUBLIC:
        if key[0] == "reporting":
            assert "401" not in document["paths"][key[2]][key[1]]["responses"], key
