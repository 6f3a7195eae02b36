"""Monitoring plans in the reporting system, on an in-memory database: submission (late taken and
flagged), the Bureau's decision on each version, resubmission after a return, and every refused
transition, which changes nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy.exc import IntegrityError

from carbon_contracts.errors import Conflict, Invalid, NotFound
from carbon_contracts.events import MonitoringPlanOutput, MonitoringPlanSource
from reporting import commands, store
from reporting.schemas import DecidePlan, ResubmitPlan
from tests.unit.reporting_support import (
    BEFORE_THE_PLAN_DEADLINE,
    CODE,
    PLAN_DEADLINE,
    PLAN_OUTPUTS,
    PLAN_SOURCES,
    plan,
    refused,
    snapshot,
)
from tests.unit.support import SHANGHAI, Harness, entity_registered

BUREAU = "technical-centre"


def approve(plan_id: UUID, version: int = 1) -> DecidePlan:
    return DecidePlan(plan_id=plan_id, version=version, decision="approved", decided_by=BUREAU)


def give_back(plan_id: UUID, version: int = 1, reason: str = "no method for the cracker") -> Any:
    return DecidePlan(
        plan_id=plan_id, version=version, decision="returned", reason=reason, decided_by=BUREAU
    )


def resubmission(plan_id: UUID, sources: list[dict[str, Any]] = PLAN_SOURCES) -> ResubmitPlan:
    return ResubmitPlan(
        plan_id=plan_id,
        sources=[MonitoringPlanSource.model_validate(source) for source in sources],
        outputs=[MonitoringPlanOutput.model_validate(output) for output in PLAN_OUTPUTS],
        submitted_by=f"entity-{CODE}",
    )


async def submitted(reporting: Harness) -> UUID:
    await reporting.handle(entity_registered(CODE))
    reporting.clock.current = BEFORE_THE_PLAN_DEADLINE
    plan_id: UUID = (await reporting.run(commands.submit_plan, plan())).result.plan_id
    return plan_id


async def trail(reporting: Harness, plan_id: UUID) -> list[tuple[int, str, str | None, str]]:
    steps = await reporting.read(store.list_transitions, kind="plan", subject_id=str(plan_id))
    return [(step.version, step.action, step.from_status, step.to_status) for step in steps]


async def test_the_entity_submits_its_plan_for_next_year(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    reporting.clock.current = BEFORE_THE_PLAN_DEADLINE
    ran = await reporting.run(commands.submit_plan, plan())

    result = ran.result
    assert (result.status, result.version, result.late) == ("submitted", 1, False)
    assert (result.compliance_year, result.plan_year) == (2024, 2025)
    assert (result.district, result.sector) == ("pudong", "chemicals")
    [event] = ran.events
    assert (event.topic, event.key, event.type) == (
        "monitoring_plan.submitted",
        CODE,
        "monitoring_plan.submitted",
    )
    assert event.event.id == result.event_id
    payload = event.payload
    assert (payload["plan_id"], payload["plan_year"], payload["compliance_year"]) == (
        str(result.plan_id),
        2025,
        2024,
    )
    assert (payload["version"], payload["late"]) == (1, False)
    assert payload["submitted_at"] == "2025-01-10T14:30:00+08:00"
    assert [source["source"] for source in payload["sources"]] == ["electricity", "heat", "fuel"]
    assert payload["sources"][2]["description"] == "boilers 1-3, gas meter GM-01"
    assert payload["outputs"] == PLAN_OUTPUTS
    assert await trail(reporting, result.plan_id) == [(1, "submitted", None, "submitted")]


@pytest.mark.parametrize(
    ("at", "late"),
    [
        (datetime(2025, 1, 15, 23, 59, 59, 999000, tzinfo=SHANGHAI), False),
        (datetime(2025, 1, 16, 0, 0, 0, tzinfo=SHANGHAI), True),
    ],
    ids=["2025-01-15T23:59:59.999+08:00", "2025-01-16T00:00:00+08:00"],
)
async def test_a_plan_is_late_from_the_first_instant_after_the_deadline_day(
    reporting: Harness, at: datetime, late: bool
) -> None:
    assert datetime(2025, 1, 16, tzinfo=SHANGHAI) == PLAN_DEADLINE
    await reporting.handle(entity_registered(CODE))
    reporting.clock.current = at
    ran = await reporting.run(commands.submit_plan, plan())
    assert ran.result.late is late
    assert ran.events[0].payload["late"] is late


async def test_the_bureau_approves_the_plan_once(reporting: Harness) -> None:
    plan_id = await submitted(reporting)
    reporting.clock.current = datetime(2025, 1, 20, 10, 0, tzinfo=SHANGHAI)
    ran = await reporting.run(commands.decide_plan, approve(plan_id))
    assert (ran.result.status, ran.result.version) == ("approved", 1)
    [event] = ran.events
    assert event.type == "monitoring_plan.approved"
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "plan_id": str(plan_id),
        "plan_year": 2025,
        "version": 1,
        "approved_at": "2025-01-20T10:00:00+08:00",
    }
    await refused(reporting, commands.decide_plan, approve(plan_id), Conflict, "already_approved")
    await refused(reporting, commands.decide_plan, give_back(plan_id), Conflict, "already_approved")
    await refused(
        reporting, commands.resubmit_plan, resubmission(plan_id), Conflict, "already_approved"
    )
    [version] = await reporting.read(store.list_plan_versions, plan_id=str(plan_id))
    assert (version.decision, version.decided_by, version.reason) == ("approved", BUREAU, None)


async def test_a_returned_plan_comes_back_as_a_new_version(reporting: Harness) -> None:
    plan_id = await submitted(reporting)
    reporting.clock.current = datetime(2025, 1, 17, 10, 0, tzinfo=SHANGHAI)
    returned = await reporting.run(commands.decide_plan, give_back(plan_id))
    assert returned.result.status == "returned"
    [event] = returned.events
    assert event.type == "monitoring_plan.returned"
    assert (event.payload["version"], event.payload["reason"]) == (1, "no method for the cracker")
    assert event.payload["returned_at"] == "2025-01-17T10:00:00+08:00"
    await refused(reporting, commands.decide_plan, give_back(plan_id), Conflict, "already_returned")
    await refused(reporting, commands.decide_plan, approve(plan_id), Conflict, "already_returned")

    # Resubmitted after the deadline: the plan itself came on time, and stays so.
    reporting.clock.current = datetime(2025, 1, 20, 9, 0, tzinfo=SHANGHAI)
    sources = [
        *PLAN_SOURCES,
        {
            "source": "process",
            "material": "limestone",
            "monitoring": "lab_measurement",
            "factor": "measured",
        },
    ]
    again = await reporting.run(commands.resubmit_plan, resubmission(plan_id, sources))
    assert (again.result.status, again.result.version, again.result.late) == (
        "submitted",
        2,
        False,
    )
    assert again.result.sources[-1].material == "limestone"
    [event] = again.events
    assert event.type == "monitoring_plan.submitted"
    assert (event.payload["plan_id"], event.payload["version"]) == (str(plan_id), 2)
    assert event.payload["late"] is False

    await refused(reporting, commands.decide_plan, approve(plan_id, 1), Conflict, "stale_version")
    await refused(
        reporting, commands.resubmit_plan, resubmission(plan_id), Conflict, "awaiting_decision"
    )
    approved = await reporting.run(commands.decide_plan, approve(plan_id, 2))
    assert (approved.result.status, approved.result.version) == ("approved", 2)

    versions = await reporting.read(store.list_plan_versions, plan_id=str(plan_id))
    assert [(v.version, v.decision, v.reason) for v in versions] == [
        (1, "returned", "no method for the cracker"),
        (2, "approved", None),
    ]
    assert await trail(reporting, plan_id) == [
        (1, "submitted", None, "submitted"),
        (1, "returned", "submitted", "returned"),
        (2, "submitted", "returned", "submitted"),
        (2, "approved", "submitted", "approved"),
    ]


async def test_a_version_awaiting_its_decision_cannot_be_replaced(reporting: Harness) -> None:
    plan_id = await submitted(reporting)
    await refused(
        reporting, commands.resubmit_plan, resubmission(plan_id), Conflict, "awaiting_decision"
    )


async def test_one_plan_per_entity_and_year(reporting: Harness) -> None:
    plan_id = await submitted(reporting)
    error = await refused(reporting, commands.submit_plan, plan(), Conflict, "already_submitted")
    assert f"/monitoring-plans/{plan_id}/versions" in error.message


async def test_the_plan_is_for_the_year_the_policy_names(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    error = await refused(
        reporting, commands.submit_plan, plan(plan_year=2024), Invalid, "wrong_plan_year"
    )
    assert "takes monitoring plans for 2025, not 2024" in error.message


async def test_a_plan_from_an_entity_off_the_roster_is_not_found(reporting: Harness) -> None:
    await reporting.handle(
        entity_registered(CODE, year=2025)
    )  # rostered, but not for the cycle's year 2024
    await refused(reporting, commands.submit_plan, plan(), NotFound, "unknown_entity")


@pytest.mark.parametrize(
    ("sources", "code", "reason"),
    [
        (
            [{"source": "fuel", "monitoring": "meter", "factor": "default"}],
            "invalid_source",
            "must name its fuel",
        ),
        (
            [{"source": "fuel", "fuel": "peat", "monitoring": "meter", "factor": "default"}],
            "invalid_source",
            "unknown fuel 'peat'",
        ),
        (
            [
                {
                    "source": "process",
                    "material": "chalk",
                    "monitoring": "invoice",
                    "factor": "default",
                }
            ],
            "invalid_source",
            "unknown material 'chalk'",
        ),
        (
            [{"source": "heat", "fuel": "diesel", "monitoring": "invoice", "factor": "default"}],
            "invalid_source",
            "names no fuel",
        ),
        (
            [
                {
                    "source": "electricity",
                    "material": "limestone",
                    "monitoring": "meter",
                    "factor": "default",
                }
            ],
            "invalid_source",
            "names no material",
        ),
        ([PLAN_SOURCES[0], PLAN_SOURCES[0]], "duplicate_source", "source 2 (electricity)"),
    ],
)
async def test_a_plan_names_known_sources_once(
    reporting: Harness, sources: list[dict[str, Any]], code: str, reason: str
) -> None:
    await reporting.handle(entity_registered(CODE))
    error = await refused(reporting, commands.submit_plan, plan(sources), Invalid, code)
    assert reason in error.message


async def test_an_output_listed_twice_is_invalid(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    await refused(
        reporting,
        commands.submit_plan,
        plan(outputs=PLAN_OUTPUTS * 2),
        Invalid,
        "duplicate_output",
    )


async def test_an_unknown_plan_is_not_found(reporting: Harness) -> None:
    unknown = uuid4()
    await refused(reporting, commands.decide_plan, approve(unknown), NotFound, "unknown_plan")
    await refused(
        reporting, commands.resubmit_plan, resubmission(unknown), NotFound, "unknown_plan"
    )


async def test_a_decision_from_a_state_the_plan_left_updates_nothing(reporting: Harness) -> None:
    plan_id = await submitted(reporting)
    await reporting.run(commands.decide_plan, approve(plan_id))
    before = await snapshot(reporting)
    async with reporting.context.engine.begin() as conn:
        # What a second instance that read the plan before the approval would try.
        assert not await store.decide_plan_version(
            conn,
            plan_id=str(plan_id),
            version=1,
            decision="returned",
            reason="late",
            decided_by=BUREAU,
            at=PLAN_DEADLINE,
        )
        assert not await store.transition_plan(
            conn,
            plan_id=str(plan_id),
            from_status="submitted",
            from_version=1,
            status="returned",
            version=1,
        )
    assert await snapshot(reporting) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"decision": "returned", "decided_by": BUREAU, "decided_at": PLAN_DEADLINE},  # no reason
        {"decision": "approved"},  # by nobody, never
        {"reason": "a reason without a decision"},
        {"decision": "maybe", "decided_by": BUREAU, "decided_at": PLAN_DEADLINE},
    ],
)
async def test_the_database_refuses_an_inconsistent_decision(
    reporting: Harness, changes: dict[str, Any]
) -> None:
    plan_id = await submitted(reporting)
    with pytest.raises(IntegrityError):
        async with reporting.context.engine.begin() as conn:
            await conn.execute(
                store.monitoring_plan_versions.update()
                .where(store.monitoring_plan_versions.c.plan_id == str(plan_id))
                .values(**changes)
            )
