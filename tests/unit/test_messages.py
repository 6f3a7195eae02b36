"""Notifications for the entity concerned, its district bureau and the Bureau, from each v1
event."""

from __future__ import annotations

from decimal import Decimal

import pytest

from carbon_contracts import events as ev
from carbon_contracts.catalogue import catalogue
from carbon_contracts.policy import default_policy_path, load_policy
from notifier.domain.messages import Notification, district_notice, notifications_for
from tests.support import EXAMPLE_FILES, example, load_example

POLICY = load_policy(default_policy_path())
CODE = "91310115MA1K4C8N0W"
CASES = {
    f"{obligation}.{kind}"
    for obligation in ev.OBLIGATIONS
    for kind in ("overdue", "done_late", "case_escalated")
}
"""An obligation's case in the district's queue: opened (overdue), closed (done late) or sent on
to the Bureau (escalated)."""
ESCALATIONS = {f"{obligation}.case_escalated" for obligation in ev.OBLIGATIONS}
"""Told to the district and the Bureau, not to the entity."""
DISTRICT_EVENTS = {
    "entity.registered",
    "auction.award_cancelled",
    "report.submitted",
    "emissions.determined",
    "surrender.completed",
    *CASES,
}
DEADLINES_PASSED = {f"{obligation}.deadline_passed" for obligation in ev.OBLIGATIONS}


ENTITY_PAYLOADS = [
    payload for path in EXAMPLE_FILES if isinstance(payload := load_example(path), ev.EventPayload)
]
INBOUND = {e for t in catalogue().topics if t.is_inbound for e in t.event_types}
EXAMPLES = [
    pytest.param(payload, id=payload.EVENT)
    for payload in ENTITY_PAYLOADS
    if payload.EVENT not in INBOUND
]
"""Every example about one entity (a cycle-wide event concerns no entity: only deadline_passed
tells anyone, see test_notifier_deadlines.py; the notifier does not read the inbound topics)."""
OBLIGATION_EXAMPLES = [p for p in EXAMPLES if isinstance(p.values[0], ev.ObligationEvent)]
OTHER_EXAMPLES = [p for p in EXAMPLES if not isinstance(p.values[0], ev.ObligationEvent)]


def entity_example(event: str) -> ev.EventPayload:
    payload = example(event)
    assert isinstance(payload, ev.EventPayload)
    return payload


def to_entity(payload: ev.EventPayload, district: str | None = "pudong") -> Notification:
    (entity,) = [
        n
        for n in notifications_for(payload, district=district, policy=POLICY)
        if n.recipient_type == "entity"
    ]
    return entity


def test_every_event_type_about_an_entity_has_an_example_here() -> None:
    not_about_one_entity = {
        "verification.closed",
        "auction.announced",
        "auction.cleared",
        "market_day.closed",
        *DEADLINES_PASSED,
    }
    covered = {load_example(path).EVENT for path in EXAMPLE_FILES} - not_about_one_entity
    assert covered == {payload.EVENT for payload in ENTITY_PAYLOADS}
    assert covered == set(ev.EVENT_MODELS) - not_about_one_entity


@pytest.mark.parametrize("payload", EXAMPLES)
def test_every_event_but_an_escalation_notifies_the_entity_by_credit_code(
    payload: ev.EventPayload,
) -> None:
    notes = notifications_for(payload, district="pudong", policy=POLICY)
    entity = [n for n in notes if n.recipient_type == "entity"]
    if payload.EVENT in ESCALATIONS:  # the Bureau's business with the district now
        assert entity == []
        return
    assert len(entity) == 1
    assert entity[0].recipient_id == payload.credit_code
    assert entity[0].subject
    assert entity[0].message


@pytest.mark.parametrize("payload", EXAMPLES)
def test_the_district_is_told_only_of_roster_reports_surrenders_and_its_cases(
    payload: ev.EventPayload,
) -> None:
    notes = notifications_for(payload, district="pudong", policy=POLICY)
    entity = [n for n in notes if n.recipient_type == "entity"]
    district = [n for n in notes if n.recipient_type == "district"]
    bureau = [n for n in notes if n.recipient_type == "bureau"]
    if payload.EVENT in DISTRICT_EVENTS:
        assert len(district) == 1
        assert district[0].recipient_id == "pudong"
        assert payload.credit_code in district[0].subject
        assert (
            payload.credit_code in district[0].message
            or "上海示例化工有限公司" in district[0].message
        )
    else:
        assert district == []
    if payload.EVENT in ESCALATIONS:
        assert [(n.recipient_id, payload.credit_code in n.subject) for n in bureau] == [
            ("bureau", True)
        ]
    else:
        assert bureau == []
    assert len(notes) == len(entity) + len(district) + len(bureau)


@pytest.mark.parametrize("payload", OTHER_EXAMPLES)
def test_no_district_notification_without_a_known_district(payload: ev.EventPayload) -> None:
    notes = notifications_for(payload, district=None, policy=POLICY)
    assert [n.recipient_type for n in notes] == ["entity"]
    assert notes[0] == to_entity(payload, district="pudong")


@pytest.mark.parametrize("payload", OBLIGATION_EXAMPLES)
def test_an_obligation_event_tells_the_district_it_names(payload: ev.EventPayload) -> None:
    assert isinstance(payload, ev.ObligationEvent)
    named = notifications_for(payload, district="pudong", policy=POLICY)
    # Whatever the notifier's roster says (or does not), the producer's district is told.
    for known in (None, "minhang"):
        assert notifications_for(payload, district=known, policy=POLICY) == named
    moved = payload.model_copy(update={"district": "jinshan"})
    districts = [
        n.recipient_id
        for n in notifications_for(moved, district="pudong", policy=POLICY)
        if n.recipient_type == "district"
    ]
    assert districts == (["jinshan"] if payload.EVENT in DISTRICT_EVENTS else [])


@pytest.mark.parametrize("payload", EXAMPLES)
def test_the_district_notice_kept_before_the_district_is_known_is_the_one_it_would_get(
    payload: ev.EventPayload,
) -> None:
    told = [
        (n.subject, n.message)
        for n in notifications_for(payload, district="pudong", policy=POLICY)
        if n.recipient_type == "district"
    ]
    kept = district_notice(payload, policy=POLICY)
    assert ([kept] if kept else []) == told


def test_the_district_notification_goes_to_the_district_given() -> None:
    notes = notifications_for(entity_example("report.submitted"), district="minhang", policy=POLICY)
    assert [(n.recipient_type, n.recipient_id) for n in notes] == [
        ("entity", CODE),
        ("district", "minhang"),
    ]


def test_allocation_message_gives_the_surrender_deadline_in_shanghai_time() -> None:
    note = to_entity(entity_example("allocation.issued"))
    assert note.subject == "2024 allowances issued"
    assert "before 2025-06-30 17:00" in note.message
    assert "Final 2024 allocation 24223 (historical_emissions)" in note.message
    assert "19840 pre-allocated: 4383 allowances credited" in note.message
    assert "historical_emissions" in note.message
    assert "09:00" not in note.message  # not UTC


def test_assignment_message_gives_the_verification_window_in_shanghai_time() -> None:
    note = to_entity(entity_example("verification.assigned"))
    assert "sh-verify-01" in note.message
    # The window's end is the policy's first late instant, 2025-06-01 00:00: "by 2025-05-31".
    assert "from 2025-04-01 by 2025-05-31" in note.message


def test_a_new_entrant_is_told_to_open_accounts_by_the_deadline() -> None:
    payload = entity_example("entity.registered")
    assert isinstance(payload, ev.EntityRegistered)
    assert payload.new_entrant
    note = to_entity(payload)
    assert "new entrant" in note.message
    assert "accounts by 2025-03-31." in note.message


def test_an_existing_entity_gets_no_new_entrant_text() -> None:
    payload = entity_example("entity.registered").model_copy(update={"new_entrant": False})
    note = to_entity(payload)
    assert note.message == "上海示例化工有限公司 is a covered entity for 2024."
    assert "new entrant" not in note.message
    assert "2025-03-31" not in note.message


def test_report_message_quotes_the_exact_total_and_factor_table() -> None:
    note = to_entity(entity_example("report.submitted"))
    assert note.subject == "2024 emissions report received"
    assert "5f0c2a8e-7d1b-4c39-9e6a-2b8f41d7c305" in note.message
    assert "24251.551 tCO2e" in note.message
    assert "shanghai-default-2024.1" in note.message


def test_verification_message_quotes_verified_and_reported_emissions() -> None:
    payload = entity_example("verification.approved").model_copy(
        update={"verified_emissions": Decimal("24000.500")}
    )
    note = to_entity(payload)
    assert "Verified emissions: 24000.500 tCO2e" in note.message
    assert "reported 24251.551" in note.message
    assert "Re-verification may follow" in note.message


def test_the_final_figure_and_a_reverification_are_told_with_their_figures() -> None:
    final = to_entity(entity_example("verification.finalised"))
    assert "final verified 2024 emissions: 24251.551 tCO2e" in final.message
    redone = to_entity(entity_example("reverification.completed"))
    assert "Re-verified emissions: 24251.551 tCO2e (first verification 24281.551)" in (
        redone.message
    )


def test_a_returned_report_or_plan_tells_the_entity_why() -> None:
    report = to_entity(entity_example("report.returned"))
    assert "verification agency returned version 1" in report.message
    assert "diesel purchases missing from the fuel lines" in report.message
    plan = to_entity(entity_example("monitoring_plan.returned"))
    assert "the cracker's process emissions have no monitoring method" in plan.message


def test_a_late_report_is_told_to_the_district_as_late() -> None:
    late = entity_example("report.submitted").model_copy(update={"late": True})
    [_, district] = notifications_for(late, district="pudong", policy=POLICY)
    assert district.message == "91310115MA1K4C8N0W submitted its 2024 report after the deadline."


def test_surrender_messages_say_whether_on_time() -> None:
    payload = entity_example("surrender.completed")
    on_time = notifications_for(payload, district="pudong", policy=POLICY)
    assert all("on time" in n.message for n in on_time)
    assert "23052 allowances and 1200 offsets" in on_time[0].message
    assert "obligation of 24252" in on_time[1].message
    late = notifications_for(
        payload.model_copy(update={"on_time": False}), district="pudong", policy=POLICY
    )
    assert all("after the deadline" in n.message for n in late)


def test_preallocation_message_names_year_ratio_and_basis() -> None:
    note = to_entity(entity_example("preallocation.issued"))
    assert note.subject == "2025 pre-allocation issued"
    assert "19401 pre-allocated 2025 allowances" in note.message
    assert "0.8 of 2024 verified emissions" in note.message


def test_a_clawback_and_what_is_owed_are_told_and_the_district_hears_of_the_debt() -> None:
    payload = entity_example("allocation.issued").model_copy(
        update={"final_allocation": 15000, "allowances": 0, "clawed_back": 3000, "owed": 1840}
    )
    entity, district = notifications_for(payload, district="pudong", policy=POLICY)
    assert "3000 pre-allocated allowances taken back, 1840 owed" in entity.message
    assert (district.recipient_id, district.subject) == ("pudong", f"{CODE} owes 1840 allowances")


def test_a_late_new_entrant_account_is_told_to_the_district() -> None:
    late = entity_example("account.opened").model_copy(update={"on_time": False})
    _, district = notifications_for(late, district="pudong", policy=POLICY)
    assert "after the deadline (by 2025-03-31)" in district.message
    on_time = entity_example("account.opened").model_copy(update={"on_time": True})
    assert len(notifications_for(on_time, district="pudong", policy=POLICY)) == 1


def test_offsets_by_type_are_named_in_the_surrender_message() -> None:
    note = to_entity(entity_example("surrender.completed"))
    assert "23052 allowances and 1200 offsets (1200 SHCERCIR1)" in note.message


def test_account_message_names_the_account() -> None:
    note = to_entity(entity_example("account.opened"))
    assert "SHEA-91310115MA1K4C8N0W" in note.message
