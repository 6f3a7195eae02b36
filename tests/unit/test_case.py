"""The verification case state machine, pure: opened -> assigned -> (returned -> assigned) ->
approved -> final, or approved -> selected -> reverifying -> final; a determination is final at
once. Every transition, every refused one, the re-verification rule and the year's close."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4, uuid5

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.errors import Conflict, Forbidden, Invalid, Rejection
from carbon_contracts.policy import Lot, ReverificationRule
from verification.domain.case import (
    Case,
    SiteVisit,
    case_id_for,
    closing_refusal,
    sample_draw,
    selected_by_rule,
)

REPORT_ID = UUID("5f0c2a8e-7d1b-4c39-9e6a-2b8f41d7c305")
CODE = "91310115MA1K4C8N0W"
AT = datetime(2025, 4, 15, 2, 0, tzinfo=UTC)
TODAY = date(2025, 4, 15)
AGENCY, OTHER_AGENCY, REVERIFIER = "sh-verify-01", "sh-verify-02", "sh-verify-03"
LOT = Lot(id="lot-2024-01", round="verification", agency=AGENCY, sectors=["chemicals"])
OTHER_LOT = Lot(id="lot-2024-02", round="verification", agency=OTHER_AGENCY)
REVERIFICATION_LOT = Lot(id="lot-2024-r1", round="reverification", agency=REVERIFIER)
REPORTED = Decimal("24251.551")
VERIFIED = Decimal("24281.551")
RULE = ReverificationRule(difference_ratio=Decimal("0.05"), sample_per_mille=100)


def opened(version: int = 1, reported: Decimal = REPORTED) -> Case:
    return Case.for_report(
        report_id=REPORT_ID,
        credit_code=CODE,
        compliance_year=2024,
        version=version,
        reported=reported,
        at=AT,
    )


def assigned() -> Case:
    return opened().assign(agency_id=AGENCY, lot=LOT, at=AT).case


def visited(case: Case, agency: str = AGENCY) -> Case:
    return case.record_site_visit(
        agency_id=agency, visited_on=TODAY, findings="meters agree", today=TODAY
    ).case


def approved(verified: Decimal = VERIFIED) -> Case:
    return (
        visited(assigned())
        .approve(agency_id=AGENCY, verified=verified, outside_window=False, at=AT)
        .case
    )


def selected() -> Case:
    return approved().select(by="bureau", reason="heat invoices differ", at=AT).case


def reverifying() -> Case:
    return selected().assign(agency_id=REVERIFIER, lot=REVERIFICATION_LOT, at=AT).case


def final_after_reverification(figure: Decimal = REPORTED) -> Case:
    return (
        visited(reverifying(), REVERIFIER)
        .approve(agency_id=REVERIFIER, verified=figure, outside_window=False, at=AT)
        .case
    )


def refused(kind: type[Rejection], code: str, call: object) -> Rejection:
    assert callable(call)
    with pytest.raises(kind) as caught:
        call()
    assert caught.value.code == code
    assert caught.value.message
    return caught.value


# --- opening ----------------------------------------------------------------------------------


def test_a_report_opens_a_case_waiting_for_its_agency() -> None:
    case = opened()
    assert (case.status, case.round, case.report_version) == ("opened", "verification", 1)
    assert (case.case_id, case.reported_emissions) == (case_id_for(REPORT_ID), REPORTED)
    assert (case.agency_id, case.verified_emissions, case.final_emissions) == (None, None, None)


def test_a_determination_is_final_at_once() -> None:
    determination = uuid4()
    case = Case.for_determination(
        determination_id=determination,
        credit_code=CODE,
        compliance_year=2024,
        determined=Decimal("900.000"),
        at=AT,
    )
    assert (case.status, case.final_basis, case.final_emissions) == (
        "final",
        "determination",
        Decimal("900.000"),
    )
    assert (case.case_id, case.report_id, case.finalised_at) == (
        case_id_for(determination),
        None,
        AT,
    )


# --- the happy paths --------------------------------------------------------------------------


def test_verified_then_finalised_without_reverification() -> None:
    change = approved().finalise(at=AT)
    case = change.case
    assert (case.status, case.final_basis, case.final_emissions) == (
        "final",
        "verification",
        VERIFIED,
    )
    assert change.action == "finalise"


def test_a_reverified_figure_replaces_the_first_and_is_final() -> None:
    case = final_after_reverification(Decimal("24251.000"))
    assert case.status == "final"
    assert (case.first_agency_id, case.agency_id) == (AGENCY, REVERIFIER)
    assert case.verified_emissions == VERIFIED  # the first figure is kept, for the record
    assert case.reverified_emissions == case.final_emissions == Decimal("24251.000")
    assert (case.final_basis, case.round) == ("reverification", "reverification")


def test_transitions_leave_the_case_they_start_from_alone() -> None:
    case = assigned()
    case.record_site_visit(agency_id=AGENCY, visited_on=TODAY, findings="x", today=TODAY)
    assert (case.status, case.verification_visit) == ("assigned", None)


# --- assign -----------------------------------------------------------------------------------


def test_assign_gives_the_case_the_lots_agency() -> None:
    change = opened().assign(agency_id=AGENCY, lot=LOT, at=AT)
    assert (change.case.status, change.case.agency_id, change.case.lot_id) == (
        "assigned",
        AGENCY,
        LOT.id,
    )
    assert (change.action, change.case.assigned_at) == ("assign", AT)


def test_an_agency_outside_the_lot_is_refused() -> None:
    error = refused(
        Conflict,
        "agency_not_in_lot",
        lambda: opened().assign(agency_id=OTHER_AGENCY, lot=LOT, at=AT),
    )
    assert LOT.id in error.message and AGENCY in error.message and OTHER_AGENCY in error.message


def test_the_same_agency_twice_is_refused() -> None:
    refused(
        Conflict, "already_assigned", lambda: assigned().assign(agency_id=AGENCY, lot=LOT, at=AT)
    )


def test_reassignment_before_approval_clears_the_earlier_agencys_visit() -> None:
    # The entity's lot changed (another lot covers it now): its agency takes the case over.
    change = visited(assigned()).assign(agency_id=OTHER_AGENCY, lot=OTHER_LOT, at=AT)
    assert (change.action, change.case.status, change.case.agency_id) == (
        "reassign",
        "assigned",
        OTHER_AGENCY,
    )
    assert change.case.verification_visit is None
    refused(
        Forbidden,
        "other_agency",
        lambda: change.case.record_site_visit(
            agency_id=AGENCY, visited_on=TODAY, findings="x", today=TODAY
        ),
    )


def test_a_returned_case_reassigned_stays_returned() -> None:
    returned = assigned().return_report(agency_id=AGENCY, reason="fix heat", at=AT).case
    change = returned.assign(agency_id=OTHER_AGENCY, lot=OTHER_LOT, at=AT)
    assert (change.case.status, change.case.agency_id) == ("returned", OTHER_AGENCY)


def test_no_assignment_after_approval_nor_once_final() -> None:
    refused(
        Conflict,
        "already_approved",
        lambda: approved().assign(agency_id=OTHER_AGENCY, lot=OTHER_LOT, at=AT),
    )
    final = approved().finalise(at=AT).case
    refused(
        Conflict, "case_final", lambda: final.assign(agency_id=OTHER_AGENCY, lot=OTHER_LOT, at=AT)
    )


def test_reverification_is_by_another_agency_than_the_first() -> None:
    same = Lot(id="lot-r-same", round="reverification", agency=AGENCY)
    refused(Conflict, "same_agency", lambda: selected().assign(agency_id=AGENCY, lot=same, at=AT))
    change = selected().assign(agency_id=REVERIFIER, lot=REVERIFICATION_LOT, at=AT)
    assert (change.case.status, change.case.agency_id, change.case.lot_id) == (
        "reverifying",
        REVERIFIER,
        REVERIFICATION_LOT.id,
    )


def test_a_lot_of_the_other_round_is_a_bug() -> None:
    with pytest.raises(ValueError):
        opened().assign(agency_id=REVERIFIER, lot=REVERIFICATION_LOT, at=AT)


# --- contact, site visit, return --------------------------------------------------------------


@pytest.mark.parametrize("case", [opened, assigned, approved, selected, reverifying])
def test_the_entity_names_its_contact_until_final(case: object) -> None:
    assert callable(case)
    change = case().name_contact(name="Li Wei", phone="+86 21 5555 0101")
    assert (change.case.contact_name, change.case.contact_phone) == ("Li Wei", "+86 21 5555 0101")
    final = approved().finalise(at=AT).case
    refused(Conflict, "case_final", lambda: final.name_contact(name="Li Wei", phone="021 5555"))


def test_the_site_visit_is_the_current_rounds() -> None:
    first = visited(assigned())
    assert first.verification_visit == SiteVisit(TODAY, "meters agree")
    again = visited(reverifying(), REVERIFIER)
    assert again.reverification_visit == SiteVisit(TODAY, "meters agree")
    assert again.verification_visit == SiteVisit(TODAY, "meters agree")


def test_a_site_visit_in_the_future_is_refused() -> None:
    refused(
        Invalid,
        "visit_in_future",
        lambda: assigned().record_site_visit(
            agency_id=AGENCY, visited_on=TODAY + timedelta(days=1), findings="x", today=TODAY
        ),
    )


@pytest.mark.parametrize(
    ("case", "code"),
    [(opened, "not_assigned"), (selected, "not_assigned"), (approved, "already_approved")],
)
def test_no_site_visit_without_an_agency_at_work(case: object, code: str) -> None:
    assert callable(case)
    refused(
        Conflict,
        code,
        lambda: case().record_site_visit(
            agency_id=AGENCY, visited_on=TODAY, findings="x", today=TODAY
        ),
    )


def test_return_sends_the_report_back_and_a_new_version_brings_it_back() -> None:
    returned = assigned().return_report(agency_id=AGENCY, reason="heat invoices missing", at=AT)
    assert (returned.case.status, returned.action, returned.reason) == (
        "returned",
        "return",
        "heat invoices missing",
    )
    refused(
        Conflict,
        "case_returned",
        lambda: returned.case.return_report(agency_id=AGENCY, reason="again", at=AT),
    )
    back = returned.case.take_version(2, Decimal("24000.000"), AT)
    assert back is not None
    assert (back.case.status, back.case.agency_id, back.case.report_version) == (
        "assigned",
        AGENCY,
        2,
    )
    assert back.case.reported_emissions == Decimal("24000.000")


def test_only_the_agency_at_work_returns_and_not_in_reverification() -> None:
    refused(
        Forbidden,
        "other_agency",
        lambda: assigned().return_report(agency_id=OTHER_AGENCY, reason="x", at=AT),
    )
    refused(
        Conflict,
        "not_returnable",
        lambda: reverifying().return_report(agency_id=REVERIFIER, reason="x", at=AT),
    )


# --- approve ----------------------------------------------------------------------------------


def test_approval_needs_the_rounds_site_visit() -> None:
    refused(
        Conflict,
        "no_site_visit",
        lambda: assigned().approve(
            agency_id=AGENCY, verified=VERIFIED, outside_window=False, at=AT
        ),
    )
    # The first round's visit is not the re-verification's.
    refused(
        Conflict,
        "no_site_visit",
        lambda: reverifying().approve(
            agency_id=REVERIFIER, verified=VERIFIED, outside_window=False, at=AT
        ),
    )


def test_approval_keeps_the_first_agency_and_the_window_flag() -> None:
    change = visited(assigned()).approve(
        agency_id=AGENCY, verified=VERIFIED, outside_window=True, at=AT
    )
    case = change.case
    assert (case.status, case.verified_emissions, case.first_agency_id) == (
        "approved",
        VERIFIED,
        AGENCY,
    )
    assert case.verification_outside_window is True
    assert "outside the verification window" in (change.reason or "")


@pytest.mark.parametrize(
    ("case", "agency", "kind", "code"),
    [
        (opened, AGENCY, Conflict, "not_assigned"),
        (approved, AGENCY, Conflict, "already_approved"),
        (approved, OTHER_AGENCY, Conflict, "already_approved"),  # a conflict, not forbidden
        (assigned, OTHER_AGENCY, Forbidden, "other_agency"),
        (reverifying, AGENCY, Forbidden, "other_agency"),  # the first agency no longer
    ],
)
def test_approval_refusals(case: object, agency: str, kind: type[Rejection], code: str) -> None:
    assert callable(case)
    refused(
        kind,
        code,
        lambda: case().approve(agency_id=agency, verified=VERIFIED, outside_window=False, at=AT),
    )


def test_a_final_case_takes_no_approval() -> None:
    final = final_after_reverification()
    refused(
        Conflict,
        "case_final",
        lambda: final.approve(agency_id=REVERIFIER, verified=VERIFIED, outside_window=False, at=AT),
    )


# --- select and finalise ----------------------------------------------------------------------


def test_selection_waits_for_the_reverification_agency() -> None:
    change = approved().select(by="rule", reason="sample", at=AT)
    case = change.case
    assert (case.status, case.round, case.agency_id, case.lot_id) == (
        "selected",
        "reverification",
        None,
        None,
    )
    assert (case.selected_by, case.selection_reason, case.first_agency_id) == (
        "rule",
        "sample",
        AGENCY,
    )


@pytest.mark.parametrize(
    ("case", "code"),
    [
        (opened, "not_approved"),
        (assigned, "not_approved"),
        (selected, "already_selected"),
        (reverifying, "already_selected"),
        (final_after_reverification, "case_final"),
    ],
)
def test_only_an_approved_case_is_selected_or_finalised(case: object, code: str) -> None:
    assert callable(case)
    refused(Conflict, code, lambda: case().select(by="bureau", reason="x", at=AT))
    refused(Conflict, code, lambda: case().finalise(at=AT))


# --- new versions of the report ---------------------------------------------------------------


def test_the_same_or_an_older_version_changes_nothing() -> None:
    case = opened(version=2)
    assert case.take_version(2, REPORTED, AT) is None
    assert case.take_version(1, Decimal("1.000"), AT) is None


def test_a_new_version_voids_an_approval() -> None:
    change = approved().take_version(2, Decimal("24300.000"), AT)
    assert change is not None
    case = change.case
    assert (case.status, case.agency_id, case.report_version) == ("assigned", AGENCY, 2)
    assert (case.verified_emissions, case.first_agency_id, case.approved_at) == (None, None, None)
    assert case.verification_outside_window is None
    assert change.action == "approval_voided"
    assert str(VERIFIED) in (change.reason or "")


@pytest.mark.parametrize("case", [opened, assigned, selected, reverifying])
def test_a_new_version_elsewhere_is_taken_without_a_status_change(case: object) -> None:
    assert callable(case)
    before = case()
    change = before.take_version(2, Decimal("24300.000"), AT)
    assert change is not None
    assert (change.case.status, change.case.report_version) == (before.status, 2)
    assert change.case.verified_emissions == before.verified_emissions


def test_a_new_version_after_final_leaves_the_final_figure() -> None:
    before = final_after_reverification()
    change = before.take_version(2, Decimal("1.000"), AT)
    assert change is not None
    assert (change.case.status, change.case.final_emissions, change.case.report_version) == (
        "final",
        before.final_emissions,
        2,
    )
    assert change.action == "version_after_final"


# --- the re-verification rule -----------------------------------------------------------------


def report_drawn(inside_sample: bool) -> UUID:
    """A report id whose case the deterministic sample draws (or not)."""
    for n in range(10_000):
        report_id = uuid5(REPORT_ID, str(n))
        if (sample_draw(case_id_for(report_id)) < RULE.sample_per_mille) == inside_sample:
            return report_id
    raise AssertionError("no such report id")  # pragma: no cover


def approved_with(report_id: UUID, reported: str, verified: str) -> Case:
    return replace(
        approved(Decimal(verified)),
        case_id=case_id_for(report_id),
        report_id=report_id,
        reported_emissions=Decimal(reported),
    )


def test_a_difference_just_above_the_ratio_selects() -> None:
    case = approved_with(report_drawn(inside_sample=False), "100.000", "105.001")
    assert selected_by_rule(case, RULE) == (
        "verified 105.001 t differs from reported 100.000 t by 5.001% (> 5%)"
    )
    lower = approved_with(report_drawn(inside_sample=False), "100.000", "94.999")
    assert "by 5.001% (> 5%)" in (selected_by_rule(lower, RULE) or "")


def test_a_difference_exactly_at_the_ratio_does_not() -> None:
    for verified in ("105.000", "95.000", "100.000"):
        case = approved_with(report_drawn(inside_sample=False), "100.000", verified)
        assert selected_by_rule(case, RULE) is None


def test_a_difference_a_hair_above_reads_above_the_limit() -> None:
    # 5.0001% is shown rounded away from the limit, never as "5.000% (> 5%)".
    case = approved_with(report_drawn(inside_sample=False), "10000.000", "10500.010")
    assert "by 5.001% (> 5%)" in (selected_by_rule(case, RULE) or "")


def test_the_sample_is_deterministic() -> None:
    inside = approved_with(report_drawn(inside_sample=True), "100.000", "100.000")
    draw = sample_draw(inside.case_id)
    assert selected_by_rule(inside, RULE) == f"drawn in the sample: draw {draw} < 100 per mille"
    assert sample_draw(inside.case_id) == draw == sample_draw(UUID(str(inside.case_id)))
    nobody = ReverificationRule(difference_ratio=Decimal("0.05"), sample_per_mille=0)
    assert selected_by_rule(inside, nobody) is None


def test_the_sample_draws_about_its_share() -> None:
    draws = [sample_draw(case_id_for(uuid5(REPORT_ID, str(n)))) for n in range(5000)]
    assert 400 < sum(draw < 100 for draw in draws) < 600


def test_a_figure_verified_where_nothing_was_reported_selects() -> None:
    case = approved_with(report_drawn(inside_sample=False), "0.000", "0.001")
    assert "where 0.000 t were reported" in (selected_by_rule(case, RULE) or "")


# --- closing the year -------------------------------------------------------------------------


def test_the_year_closes_when_every_case_is_final_and_every_entity_has_one() -> None:
    assert closing_refusal(2024, cases_by_status={"final": 3}, without_case=[]) is None


def test_closing_is_refused_with_the_counts_and_the_codes() -> None:
    refusal = closing_refusal(
        2024,
        cases_by_status={"final": 3, "approved": 1, "reverifying": 2},
        without_case=[f"code-{n:02d}" for n in range(12)],
    )
    assert refusal is not None
    assert refusal.code == "verification_open"
    assert "3 case(s) not final (1 approved, 2 reverifying)" in refusal.message
    assert "12 rostered entities without a case: code-00" in refusal.message
    assert "code-09 and 2 more" in refusal.message and "code-10" not in refusal.message


def test_an_empty_year_does_not_close() -> None:
    refusal = closing_refusal(2024, cases_by_status={}, without_case=[])
    assert refusal is not None and refusal.code == "verification_open"


# --- case ids ---------------------------------------------------------------------------------


def test_case_id_is_deterministic_per_report() -> None:
    assert case_id_for(REPORT_ID) == case_id_for(UUID(str(REPORT_ID)))
    assert case_id_for(REPORT_ID).version == 5
    assert case_id_for(REPORT_ID) != REPORT_ID


@given(st.uuids(), st.uuids())
def test_case_ids_are_distinct_per_report(first: UUID, second: UUID) -> None:
    assert (case_id_for(first) == case_id_for(second)) == (first == second)
