"""Verification's report.submitted handler and its assign and approve commands on an in-memory
database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from carbon_contracts.errors import Conflict, Forbidden, NotFound
from carbon_contracts.events import ReportSubmitted
from registry.domain.credit_code import make_credit_code
from tests.unit.support import Harness, consumed, report_submitted
from verification import commands, store
from verification.domain.case import case_id_for
from verification.schemas import ApproveCase, AssignCase

CODE = make_credit_code(1)
REPORT_ID = UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
CASE_ID = str(case_id_for(REPORT_ID))
AGENCY, OTHER_AGENCY = "sh-verify-01", "sh-verify-02"


def submitted(report_id: UUID = REPORT_ID, code: str = CODE) -> ReportSubmitted:
    return report_submitted(
        code,
        report_id,
        heat_gj="404192.516666667",
        emissions="24251.551",
        at=datetime(2025, 3, 20, tzinfo=UTC),
    )


def approve(verified: str = "24250.000", agency: str = AGENCY) -> ApproveCase:
    return ApproveCase(
        case_id=CASE_ID,
        agency_id=agency,
        approved_by=f"verifier-{agency}",
        verified_emissions=Decimal(verified),
    )


async def case(verification: Harness, case_id: str = CASE_ID) -> Any:
    return await verification.read(store.get_case, case_id=case_id)


async def assigned(verification: Harness, agency: str = AGENCY) -> None:
    await verification.handle(submitted())
    await verification.run(commands.assign, AssignCase(case_id=CASE_ID, agency_id=agency))


# --- on_report_submitted ----------------------------------------------------------------------


async def test_a_submitted_report_opens_one_case(verification: Harness) -> None:
    assert await verification.handle(submitted()) == []
    row = await case(verification)
    assert row is not None
    assert (row.report_id, row.credit_code, row.compliance_year) == (str(REPORT_ID), CODE, 2024)
    assert (row.status, row.agency_id, row.verified_emissions) == ("opened", None, None)
    assert row.reported_emissions == Decimal("24251.551")
    assert row.opened_at == verification.clock.now()
    assert [r.case_id for r in await verification.read(store.list_cases)] == [CASE_ID]


async def test_a_second_report_event_with_the_same_report_id_is_refused(
    verification: Harness,
) -> None:
    await verification.handle(submitted())
    with pytest.raises(Conflict) as refused:
        # Another event id (the inbox would not dedupe it), the same report.
        await verification.handle(consumed(submitted(), event_id=str(uuid4())))
    assert refused.value.code == "case_exists"
    assert len(await verification.read(store.list_cases)) == 1


async def test_each_report_gets_its_own_case(verification: Harness) -> None:
    other_report = uuid4()
    await verification.handle(submitted())
    await verification.handle(submitted(other_report, make_credit_code(2)))
    cases = await verification.read(store.list_cases)
    assert {row.case_id for row in cases} == {CASE_ID, str(case_id_for(other_report))}


def test_verification_subscribes_its_handler_to_report_submitted() -> None:
    from verification.service import SERVICE

    assert dict(SERVICE.handlers) == {
        "report.submitted": {"report.submitted": commands.on_report_submitted}
    }


# --- assign -----------------------------------------------------------------------------------


async def test_assign_records_verification_assigned(verification: Harness) -> None:
    await verification.handle(submitted())
    ran = await verification.run(commands.assign, AssignCase(case_id=CASE_ID, agency_id=AGENCY))

    changed = ran.result
    assert (changed.status, changed.agency_id) == ("assigned", AGENCY)
    assert changed.assigned_at == verification.clock.now()
    [event] = ran.events
    assert (event.topic, event.key) == ("verification.assigned", CODE)
    assert event.headers["ce_source"] == "/carbon/verification"
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "case_id": CASE_ID,
        "report_id": str(REPORT_ID),
        "agency_id": AGENCY,
        "assigned_at": verification.clock.now().isoformat(),
    }
    assert event.event.id == changed.event_id
    row = await case(verification)
    assert (row.status, row.agency_id) == ("assigned", AGENCY)


async def test_assign_an_unknown_case_is_not_found(verification: Harness) -> None:
    with pytest.raises(NotFound) as refused:
        await verification.run(commands.assign, AssignCase(case_id=CASE_ID, agency_id=AGENCY))
    assert refused.value.code == "unknown_case"
    assert await verification.outbox() == []


async def test_reassign_to_another_agency_before_approval(verification: Harness) -> None:
    await assigned(verification, AGENCY)
    verification.clock.current += timedelta(hours=1)
    ran = await verification.run(
        commands.assign, AssignCase(case_id=CASE_ID, agency_id=OTHER_AGENCY)
    )
    assert (ran.result.agency_id, ran.result.assigned_at) == (
        OTHER_AGENCY,
        verification.clock.now(),
    )
    assert ran.events[0].payload["agency_id"] == OTHER_AGENCY
    # The agency it was taken from may no longer approve.
    with pytest.raises(Forbidden) as refused:
        await verification.run(commands.approve, approve(agency=AGENCY))
    assert refused.value.code == "other_agency"
    assert [e.type for e in await verification.outbox()] == ["verification.assigned"] * 2


async def test_assign_the_same_agency_again_conflicts(verification: Harness) -> None:
    await assigned(verification, AGENCY)
    with pytest.raises(Conflict) as refused:
        await verification.run(commands.assign, AssignCase(case_id=CASE_ID, agency_id=AGENCY))
    assert refused.value.code == "already_assigned"
    assert len(await verification.outbox()) == 1


async def test_assign_after_approval_is_refused(verification: Harness) -> None:
    await assigned(verification)
    await verification.run(commands.approve, approve())
    with pytest.raises(Conflict) as refused:
        await verification.run(commands.assign, AssignCase(case_id=CASE_ID, agency_id=OTHER_AGENCY))
    assert refused.value.code == "case_closed"
    row = await case(verification)
    assert (row.status, row.agency_id) == ("approved", AGENCY)


# --- approve ----------------------------------------------------------------------------------


async def test_approve_records_reported_and_verified_emissions(verification: Harness) -> None:
    await assigned(verification)
    ran = await verification.run(commands.approve, approve("24250.000"))

    changed = ran.result
    assert changed.status == "approved"
    assert changed.verified_emissions == Decimal("24250.000")
    assert changed.approved_at == verification.clock.now()
    [event] = ran.events
    assert (event.topic, event.key) == ("verification.approved", CODE)
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "case_id": CASE_ID,
        "report_id": str(REPORT_ID),
        "agency_id": AGENCY,
        "reported_emissions": "24251.551",
        "verified_emissions": "24250.000",
        "approved_at": verification.clock.now().isoformat(),
    }
    row = await case(verification)
    assert (row.status, row.verified_emissions, row.approved_by) == (
        "approved",
        Decimal("24250.000"),
        f"verifier-{AGENCY}",
    )


async def test_approve_an_unknown_case_is_not_found(verification: Harness) -> None:
    with pytest.raises(NotFound) as refused:
        await verification.run(commands.approve, approve())
    assert refused.value.code == "unknown_case"


async def test_approve_before_assignment_is_refused(verification: Harness) -> None:
    await verification.handle(submitted())
    with pytest.raises(Conflict) as refused:
        await verification.run(commands.approve, approve())
    assert refused.value.code == "not_assigned"
    assert (await case(verification)).status == "opened"


async def test_approve_by_another_agency_is_forbidden(verification: Harness) -> None:
    await assigned(verification, AGENCY)
    with pytest.raises(Forbidden) as refused:
        await verification.run(commands.approve, approve(agency=OTHER_AGENCY))
    assert (refused.value.code, refused.value.status) == ("other_agency", 403)
    row = await case(verification)
    assert (row.status, row.verified_emissions) == ("assigned", None)
    assert len(await verification.outbox()) == 1


async def test_approve_twice_is_refused(verification: Harness) -> None:
    await assigned(verification)
    await verification.run(commands.approve, approve("24250.000"))
    with pytest.raises(Conflict) as refused:
        await verification.run(commands.approve, approve("1.000"))
    assert refused.value.code == "case_closed"
    assert (await case(verification)).verified_emissions == Decimal("24250.000")
    assert [e.type for e in await verification.outbox()] == [
        "verification.assigned",
        "verification.approved",
    ]
