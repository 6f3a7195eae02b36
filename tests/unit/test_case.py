"""The verification case state machine: opened -> assigned -> approved."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.errors import Conflict, Forbidden
from verification.domain.case import Case, case_id_for

REPORT_ID = UUID("5f0c2a8e-7d1b-4c39-9e6a-2b8f41d7c305")
AGENCY = "sh-verifier-03"
OTHER_AGENCY = "sh-verifier-07"
REPORTED = Decimal("24251.551")


def opened() -> Case:
    return Case(
        case_id=case_id_for(REPORT_ID),
        report_id=REPORT_ID,
        credit_code="91310115MA1K4C8N0W",
        compliance_year=2024,
        reported_emissions=REPORTED,
    )


def test_a_new_case_is_opened_without_agency_or_verified_emissions() -> None:
    case = opened()
    assert case.status == "opened"
    assert case.agency_id is None
    assert case.verified_emissions is None


def test_the_happy_path_opened_assigned_approved() -> None:
    case = opened()
    assigned = case.assign(AGENCY)
    assert (assigned.status, assigned.agency_id) == ("assigned", AGENCY)
    approved = assigned.approve(agency_id=AGENCY, verified_emissions=Decimal("24250.000"))
    assert approved.status == "approved"
    assert approved.agency_id == AGENCY
    assert approved.verified_emissions == Decimal("24250.000")
    assert approved.reported_emissions == REPORTED
    assert (approved.case_id, approved.report_id) == (case.case_id, case.report_id)


def test_transitions_return_new_cases_and_leave_the_old_one_alone() -> None:
    case = opened()
    assigned = case.assign(AGENCY)
    assigned.approve(agency_id=AGENCY, verified_emissions=REPORTED)
    assert case.status == "opened"
    assert case.agency_id is None
    assert assigned.status == "assigned"
    assert assigned.verified_emissions is None


def test_reassignment_to_another_agency_before_approval_is_allowed() -> None:
    reassigned = opened().assign(AGENCY).assign(OTHER_AGENCY)
    assert (reassigned.status, reassigned.agency_id) == ("assigned", OTHER_AGENCY)
    approved = reassigned.approve(agency_id=OTHER_AGENCY, verified_emissions=REPORTED)
    assert approved.status == "approved"


def test_the_previous_agency_may_not_approve_after_reassignment() -> None:
    reassigned = opened().assign(AGENCY).assign(OTHER_AGENCY)
    with pytest.raises(Forbidden) as caught:
        reassigned.approve(agency_id=AGENCY, verified_emissions=REPORTED)
    assert caught.value.code == "other_agency"


def test_assigning_the_same_agency_twice_conflicts() -> None:
    assigned = opened().assign(AGENCY)
    with pytest.raises(Conflict) as caught:
        assigned.assign(AGENCY)
    assert caught.value.code == "already_assigned"
    assert caught.value.status == 409
    assert AGENCY in caught.value.message


def test_assigning_an_approved_case_conflicts() -> None:
    approved = opened().assign(AGENCY).approve(agency_id=AGENCY, verified_emissions=REPORTED)
    with pytest.raises(Conflict) as caught:
        approved.assign(OTHER_AGENCY)
    assert caught.value.code == "case_closed"
    assert caught.value.status == 409


def test_approval_by_another_agency_is_forbidden() -> None:
    assigned = opened().assign(AGENCY)
    with pytest.raises(Forbidden) as caught:
        assigned.approve(agency_id=OTHER_AGENCY, verified_emissions=REPORTED)
    assert caught.value.status == 403
    assert caught.value.code == "other_agency"


def test_approval_before_assignment_conflicts() -> None:
    with pytest.raises(Conflict) as caught:
        opened().approve(agency_id=AGENCY, verified_emissions=REPORTED)
    assert caught.value.code == "not_assigned"
    assert caught.value.status == 409


def test_approving_twice_conflicts() -> None:
    approved = opened().assign(AGENCY).approve(agency_id=AGENCY, verified_emissions=REPORTED)
    with pytest.raises(Conflict) as caught:
        approved.approve(agency_id=AGENCY, verified_emissions=Decimal("1.000"))
    assert caught.value.code == "case_closed"
    assert caught.value.status == 409


def test_a_second_approval_by_another_agency_is_a_conflict_not_forbidden() -> None:
    approved = opened().assign(AGENCY).approve(agency_id=AGENCY, verified_emissions=REPORTED)
    with pytest.raises(Conflict):
        approved.approve(agency_id=OTHER_AGENCY, verified_emissions=REPORTED)


def test_case_id_is_deterministic_per_report() -> None:
    assert case_id_for(REPORT_ID) == case_id_for(UUID(str(REPORT_ID)))
    assert case_id_for(REPORT_ID).version == 5
    assert case_id_for(REPORT_ID) != REPORT_ID


@given(st.uuids(), st.uuids())
def test_case_ids_are_distinct_per_report(first: UUID, second: UUID) -> None:
    assert (case_id_for(first) == case_id_for(second)) == (first == second)


def test_many_reports_give_many_case_ids() -> None:
    reports = [uuid4() for _ in range(500)]
    assert len({case_id_for(report) for report in reports}) == 500
