"""The reporting API in process, as each role uses it: the monitoring plan and the report through
their whole lifecycle, refusals as 4xx with a code and a reason that leave the resource as it
was, who sees which plans, reports and determinations, and the listings' filters."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.unit.reporting_support import (
    BEFORE_THE_PLAN_DEADLINE,
    BEFORE_THE_REPORT_DEADLINE,
    CODE,
    OTHER,
    OUTPUTS,
    PLAN_OUTPUTS,
    PLAN_SOURCES,
    README_LINES,
    REPORT_DEADLINE,
)
from tests.unit.support import Harness, entity_registered

THIRD = "91310115MA1K4C8N0W"
A_UUID = "5c1c3a0e-8d7e-4f35-9a51-0f3b2b8c9d10"
REPORT = {"compliance_year": 2024, "lines": README_LINES, "outputs": OUTPUTS}
PLAN = {"plan_year": 2025, "sources": PLAN_SOURCES, "outputs": PLAN_OUTPUTS}


def caller(service: Harness, who: str) -> dict[str, str]:
    return {
        "bureau": service.token("regulator"),
        "entity": service.token("entity", credit_code=CODE),
        "other entity": service.token("entity", credit_code=OTHER),
        "district": service.token("district", district="pudong"),
        "other district": service.token("district", district="minhang"),
        "agency": service.token("verifier", agency="sh-verify-01"),
    }[who]


def refusal(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error["message"]


async def rostered(reporting: Harness) -> None:
    """CODE: chemicals in Pudong (lot-2024-01); OTHER: steel in Minhang (lot-2024-01);
    THIRD: textiles in Pudong (lot-2024-02)."""
    await reporting.handle(entity_registered(CODE, district="pudong", sector="chemicals"))
    await reporting.handle(entity_registered(OTHER, district="minhang", sector="steel"))
    await reporting.handle(entity_registered(THIRD, district="pudong", sector="textiles"))


async def test_a_monitoring_plan_from_submission_to_approval(reporting: Harness) -> None:
    await rostered(reporting)
    reporting.clock.current = BEFORE_THE_PLAN_DEADLINE
    async with reporting.client() as client:
        submitted = await client.post(
            "/monitoring-plans", json=PLAN, headers=caller(reporting, "entity")
        )
        assert submitted.status_code == 201, submitted.text
        plan_id = submitted.json()["plan_id"]
        path = f"/monitoring-plans/{plan_id}"
        assert (submitted.json()["status"], submitted.json()["late"]) == ("submitted", False)

        returned = await client.post(
            f"{path}/return",
            json={"version": 1, "reason": "the boilers' gas meter is not named"},
            headers=caller(reporting, "bureau"),
        )
        assert returned.json()["status"] == "returned", returned.text
        again = await client.post(
            f"{path}/versions",
            json={"sources": PLAN_SOURCES, "outputs": PLAN_OUTPUTS},
            headers=caller(reporting, "entity"),
        )
        assert again.status_code == 201, again.text
        assert (again.json()["version"], again.json()["status"]) == (2, "submitted")
        stale = await client.post(
            f"{path}/approve", json={"version": 1}, headers=caller(reporting, "bureau")
        )
        refusal(stale, 409, "stale_version")
        approved = await client.post(f"{path}/approve", headers=caller(reporting, "bureau"))
        assert approved.json()["status"] == "approved", approved.text
        detail = (await client.get(path, headers=caller(reporting, "entity"))).json()
    assert [v["decision"] for v in detail["versions"]] == ["returned", "approved"]
    assert detail["versions"][0]["reason"] == "the boilers' gas meter is not named"
    assert [(step["version"], step["action"]) for step in detail["history"]] == [
        (1, "submitted"),
        (1, "returned"),
        (2, "submitted"),
        (2, "approved"),
    ]
    assert detail["history"][1]["by"] == "regulator-user"
    assert all(step["event_id"] for step in detail["history"])


async def test_a_report_from_submission_to_acceptance(reporting: Harness) -> None:
    await rostered(reporting)
    reporting.clock.current = BEFORE_THE_REPORT_DEADLINE
    async with reporting.client() as client:
        created = await client.post("/reports", json=REPORT, headers=caller(reporting, "entity"))
        assert created.status_code == 201, created.text
        body = created.json()
        assert (body["status"], body["version"], body["late"]) == ("submitted", 1, False)
        assert body["total_emissions"] == "24251.551"
        assert body["event_id"]
        path = f"/reports/{body['report_id']}"

        early = await client.post(
            f"{path}/accept", json={"version": 1}, headers=caller(reporting, "bureau")
        )
        assert "paper copy" in refusal(early, 409, "paper_copy_missing")
        unchanged = (await client.get(path, headers=caller(reporting, "bureau"))).json()
        assert (unchanged["status"], unchanged["complete"]) == ("submitted", False)

        copy = await client.post(
            f"{path}/paper-copy",
            json={"received_on": "2025-03-20", "delivery": "courier"},
            headers=caller(reporting, "bureau"),
        )
        assert copy.status_code == 200, copy.text
        assert copy.json()["paper_copy"]["delivery"] == "courier"
        assert copy.json()["complete"] is True
        accepted = await client.post(f"{path}/accept", headers=caller(reporting, "bureau"))
        assert accepted.json()["status"] == "accepted", accepted.text

        fix = {"lines": README_LINES, "outputs": OUTPUTS, "reason": "meter re-read"}
        too_late = await client.post(
            f"{path}/versions", json=fix, headers=caller(reporting, "entity")
        )
        assert "returned" in refusal(too_late, 409, "report_accepted")
        returned = await client.post(
            f"{path}/return",
            json={"reason": "the meter was re-read"},
            headers=caller(reporting, "bureau"),
        )
        assert returned.json()["status"] == "returned", returned.text
        correction = await client.post(
            f"{path}/versions", json=fix, headers=caller(reporting, "entity")
        )
        assert correction.status_code == 201, correction.text
        assert (correction.json()["version"], correction.json()["status"]) == (2, "submitted")
        detail = (await client.get(path, headers=caller(reporting, "district"))).json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert detail["versions"][1]["correction_reason"] == "meter re-read"
    assert [step["action"] for step in detail["history"]] == [
        "submitted",
        "paper_copy_received",
        "accepted",
        "returned",
        "corrected",
    ]
    assert detail["history"][3]["reason"] == "the meter was re-read"


async def test_a_draft_over_http(reporting: Harness) -> None:
    await rostered(reporting)
    async with reporting.client() as client:
        entity = caller(reporting, "entity")
        draft = await client.post("/reports", json={**REPORT, "draft": True}, headers=entity)
        assert (draft.status_code, draft.json()["status"]) == (201, "draft")
        assert draft.json()["event_id"] is None
        path = f"/reports/{draft.json()['report_id']}"
        edited = await client.put(
            f"{path}/draft", json={"lines": [{"source": "heat", "activity": "1"}]}, headers=entity
        )
        assert edited.json()["total_emissions"] == "0.060", edited.text
        submitted = await client.post(f"{path}/submit", headers=entity)
        assert submitted.json()["status"] == "submitted", submitted.text
        again = await client.post(f"{path}/submit", headers=entity)
    refusal(again, 409, "not_a_draft")


async def test_a_determination_over_http(reporting: Harness) -> None:
    await rostered(reporting)
    reporting.clock.current = REPORT_DEADLINE
    body = {
        "credit_code": CODE,
        "compliance_year": 2024,
        "lines": [{"source": "electricity", "activity": "100"}],
        "reason": "no report by 2025-03-31",
    }
    async with reporting.client() as client:
        made = await client.post("/determinations", json=body, headers=caller(reporting, "bureau"))
        assert made.status_code == 201, made.text
        assert made.json()["total_emissions"] == "420.000"
        path = f"/determinations/{made.json()['determination_id']}"
        own = await client.get(path, headers=caller(reporting, "entity"))
        other = await client.get(path, headers=caller(reporting, "other entity"))
        district = await client.get("/determinations", headers=caller(reporting, "district"))
        elsewhere = await client.get("/determinations", headers=caller(reporting, "other district"))
        unknown = await client.get(f"/determinations/{A_UUID}", headers=caller(reporting, "bureau"))
        late_report = await client.post(
            "/reports", json=REPORT, headers=caller(reporting, "entity")
        )
    assert own.json()["reason"] == "no report by 2025-03-31"
    refusal(other, 403, "forbidden")
    assert [d["credit_code"] for d in district.json()] == [CODE]
    assert elsewhere.json() == []
    refusal(unknown, 404, "unknown_determination")
    refusal(late_report, 409, "emissions_determined")


async def test_an_entity_acts_on_its_own_reports_and_plans_only(reporting: Harness) -> None:
    await rostered(reporting)
    reporting.clock.current = BEFORE_THE_REPORT_DEADLINE
    async with reporting.client() as client:
        report_id = (
            await client.post("/reports", json=REPORT, headers=caller(reporting, "entity"))
        ).json()["report_id"]
        plan_id = (
            await client.post("/monitoring-plans", json=PLAN, headers=caller(reporting, "entity"))
        ).json()["plan_id"]
        other = caller(reporting, "other entity")
        answers = [
            await client.post(
                f"/reports/{report_id}/versions",
                json={"lines": README_LINES, "reason": "mine now"},
                headers=other,
            ),
            await client.post(f"/reports/{report_id}/submit", headers=other),
            await client.put(
                f"/reports/{report_id}/draft", json={"lines": README_LINES}, headers=other
            ),
            await client.post(
                f"/monitoring-plans/{plan_id}/versions",
                json={"sources": PLAN_SOURCES},
                headers=other,
            ),
            await client.get(f"/reports/{report_id}", headers=other),
            await client.get(f"/monitoring-plans/{plan_id}", headers=other),
            await client.get(f"/reports/{report_id}", headers=caller(reporting, "other district")),
        ]
        for answer in answers:
            refusal(answer, 403, "forbidden")
        unknown = [
            await client.post(
                f"/reports/{A_UUID}/versions",
                json={"lines": README_LINES, "reason": "x"},
                headers=other,
            ),
            await client.post("/reports/not-a-uuid/submit", headers=other),
            await client.get(f"/monitoring-plans/{A_UUID}", headers=other),
        ]
        refusal(unknown[0], 404, "unknown_report")
        refusal(unknown[1], 404, "unknown_report")
        refusal(unknown[2], 404, "unknown_plan")
        after = await client.get(f"/reports/{report_id}", headers=caller(reporting, "entity"))
    assert (after.json()["version"], len(after.json()["history"])) == (1, 1)


async def test_the_bureaus_review_routes_refuse_bad_requests_and_change_nothing(
    reporting: Harness,
) -> None:
    await rostered(reporting)
    reporting.clock.current = BEFORE_THE_REPORT_DEADLINE
    bureau = caller(reporting, "bureau")
    async with reporting.client() as client:
        report_id = (
            await client.post("/reports", json=REPORT, headers=caller(reporting, "entity"))
        ).json()["report_id"]
        path = f"/reports/{report_id}"
        before = (await client.get(path, headers=bureau)).json()
        answers = {
            "future copy": await client.post(
                f"{path}/paper-copy",
                json={"received_on": "2025-03-21", "delivery": "post"},
                headers=bureau,
            ),
            "stale return": await client.post(
                f"{path}/return", json={"version": 2, "reason": "x"}, headers=bureau
            ),
            "unknown report": await client.post(
                f"/reports/{A_UUID}/accept", json={"version": 1}, headers=bureau
            ),
        }
        after = (await client.get(path, headers=bureau)).json()
    refusal(answers["future copy"], 422, "received_in_future")
    refusal(answers["stale return"], 409, "stale_version")
    refusal(answers["unknown report"], 404, "unknown_report")
    assert after == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("accept", {"version": "1"}),
        ("accept", {"version": 1.0}),
        ("accept", {"version": True}),
        ("accept", {"version": 0}),
        ("return", {"version": 1, "reason": "   "}),
        ("return", {"version": 1}),
        ("return", {"version": 1, "reason": "x" * 2001}),
        ("paper-copy", {"received_on": 1742947200, "delivery": "post"}),
        ("paper-copy", {"received_on": "2025-03-20T10:00:00+08:00", "delivery": "post"}),
        ("paper-copy", {"received_on": "20250320", "delivery": "post"}),
        ("paper-copy", {"received_on": "2025-02-30", "delivery": "post"}),
        ("paper-copy", {"received_on": "2025-03-20", "delivery": "pigeon"}),
        ("paper-copy", {"received_on": "2025-03-20", "delivery": "post", "copies": 2}),
    ],
)
async def test_review_bodies_are_strict(
    reporting: Harness, path: str, body: dict[str, Any]
) -> None:
    await rostered(reporting)
    async with reporting.client() as client:
        report_id = (
            await client.post("/reports", json=REPORT, headers=caller(reporting, "entity"))
        ).json()["report_id"]
        answer = await client.post(
            f"/reports/{report_id}/{path}", json=body, headers=caller(reporting, "bureau")
        )
    refusal(answer, 422, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {**REPORT, "draft": "true"},
        {**REPORT, "lines": [{"source": "process", "material": "Lime Stone", "activity": "1"}]},
        {**REPORT, "outputs": [{"product": "glycol", "unit": "t", "quantity": 182000}]},
        {**REPORT, "total_emissions": "1.000"},
        {"compliance_year": 2024, "lines": []},
    ],
)
async def test_report_bodies_are_strict(reporting: Harness, body: dict[str, Any]) -> None:
    await rostered(reporting)
    async with reporting.client() as client:
        answer = await client.post("/reports", json=body, headers=caller(reporting, "entity"))
        listed = await client.get("/reports", headers=caller(reporting, "bureau"))
    refusal(answer, 422, "invalid_request")
    assert listed.json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"sources": PLAN_SOURCES},
        {**PLAN, "plan_year": "2025"},
        {**PLAN, "sources": []},
        {**PLAN, "sources": [{"source": "heat", "monitoring": "guess", "factor": "default"}]},
        {**PLAN, "sources": [{"source": "heat", "monitoring": "meter", "factor": "assumed"}]},
    ],
)
async def test_plan_bodies_are_strict(reporting: Harness, body: dict[str, Any]) -> None:
    await rostered(reporting)
    async with reporting.client() as client:
        answer = await client.post(
            "/monitoring-plans", json=body, headers=caller(reporting, "entity")
        )
        listed = await client.get("/monitoring-plans", headers=caller(reporting, "bureau"))
    refusal(answer, 422, "invalid_request")
    assert listed.json() == []


async def listed(reporting: Harness, path: str, who: str) -> list[str]:
    async with reporting.client() as client:
        answer = await client.get(path, headers=caller(reporting, who))
    assert answer.status_code == 200, answer.text
    return [item["credit_code"] for item in answer.json()]


async def three_reports(reporting: Harness) -> None:
    """CODE's on time with its paper copy in; OTHER's late; THIRD's a draft."""
    await rostered(reporting)
    async with reporting.client() as client:
        reporting.clock.current = BEFORE_THE_REPORT_DEADLINE
        for code, body in ((CODE, REPORT), (THIRD, {**REPORT, "draft": True})):
            answer = await client.post(
                "/reports", json=body, headers=reporting.token("entity", credit_code=code)
            )
            assert answer.status_code == 201, answer.text
            reporting.clock.current = BEFORE_THE_REPORT_DEADLINE + timedelta(hours=1)
            if code == CODE:
                await client.post(
                    f"/reports/{answer.json()['report_id']}/paper-copy",
                    json={"received_on": "2025-03-20", "delivery": "post"},
                    headers=caller(reporting, "bureau"),
                )
        reporting.clock.current = REPORT_DEADLINE
        await client.post("/reports", json=REPORT, headers=caller(reporting, "other entity"))


@pytest.mark.parametrize(
    ("who", "query", "expected"),
    [
        ("bureau", "", [CODE, THIRD, OTHER]),
        ("bureau", f"?credit_code={OTHER}", [OTHER]),
        ("bureau", "?status=draft", [THIRD]),
        ("bureau", "?status=submitted", [CODE, OTHER]),
        ("bureau", "?district=pudong", [CODE, THIRD]),
        ("bureau", "?sector=steel", [OTHER]),
        ("bureau", "?lot=lot-2024-01", [CODE, OTHER]),
        ("bureau", "?lot=lot-2024-02", [THIRD]),
        ("bureau", "?lot=lot-2024-r1", [CODE, THIRD, OTHER]),
        ("bureau", "?late=true", [OTHER]),
        ("bureau", "?paper_copy=false&status=submitted", [OTHER]),
        ("bureau", "?district=pudong&lot=lot-2024-01", [CODE]),
        ("bureau", "?compliance_year=2025", []),
        ("entity", "", [CODE]),
        ("entity", f"?credit_code={OTHER}", [CODE]),
        ("district", "", [CODE, THIRD]),
        ("district", "?district=minhang", [CODE, THIRD]),
        ("district", "?sector=textiles", [THIRD]),
        ("other district", "", [OTHER]),
    ],
)
async def test_report_listings_are_scoped_and_filtered(
    reporting: Harness, who: str, query: str, expected: list[str]
) -> None:
    await three_reports(reporting)
    assert await listed(reporting, f"/reports{query}", who) == expected


async def test_an_unknown_lot_is_refused(reporting: Harness) -> None:
    async with reporting.client() as client:
        answers = [
            await client.get(f"{path}?lot=lot-1999-01", headers=caller(reporting, "bureau"))
            for path in ("/reports", "/monitoring-plans")
        ]
    for answer in answers:
        assert "lot-2024-01" in refusal(answer, 422, "unknown_lot")


@pytest.mark.parametrize(
    ("who", "query", "expected"),
    [
        ("bureau", "", [CODE, OTHER]),
        ("bureau", "?status=returned", [OTHER]),
        ("bureau", "?late=true", [OTHER]),
        ("bureau", "?plan_year=2025&sector=chemicals", [CODE]),
        ("bureau", "?plan_year=2026", []),
        ("entity", "", [CODE]),
        ("district", "", [CODE]),
        ("other district", "", [OTHER]),
    ],
)
async def test_plan_listings_are_scoped_and_filtered(
    reporting: Harness, who: str, query: str, expected: list[str]
) -> None:
    await rostered(reporting)
    async with reporting.client() as client:
        reporting.clock.current = BEFORE_THE_PLAN_DEADLINE
        await client.post("/monitoring-plans", json=PLAN, headers=caller(reporting, "entity"))
        reporting.clock.current = BEFORE_THE_REPORT_DEADLINE  # well after the plan deadline
        late = await client.post(
            "/monitoring-plans", json=PLAN, headers=caller(reporting, "other entity")
        )
        await client.post(
            f"/monitoring-plans/{late.json()['plan_id']}/return",
            json={"version": 1, "reason": "process emissions missing"},
            headers=caller(reporting, "bureau"),
        )
    assert await listed(reporting, f"/monitoring-plans{query}", who) == expected


async def test_the_factor_table_lists_the_process_factors(reporting: Harness) -> None:
    async with reporting.client() as client:
        table = (await client.get("/factors")).json()
    assert table["processes"] == {
        "limestone": {"unit": "t", "factor": "0.44"},
        "dolomite": {"unit": "t", "factor": "0.477"},
        "sodium_carbonate": {"unit": "t", "factor": "0.415"},
    }
