"""The report's and the monitoring plan's state machines, pure: every action from every state,
and what it gives (the next state, or the refusal's code)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from uuid import uuid4

import pytest

from carbon_contracts.errors import Rejection
from reporting.domain.plan import Plan
from reporting.domain.plan import Status as PlanStatus
from reporting.domain.report import STATUSES, Report, Status, is_late
from tests.unit.support import SHANGHAI

TODAY = date(2025, 3, 26)


def report(status: Status, *, paper_copy: bool = False, version: int = 1) -> Report:
    return Report(uuid4(), "91310115MA1K4C8N0W", 2024, status, version, paper_copy)


ACTIONS: dict[str, Callable[[Report], Report]] = {
    "edit draft": lambda r: r.edit_draft(),
    "submit draft": lambda r: r.submit_draft(),
    "correct": lambda r: r.correct(),
    "return": lambda r: r.give_back(r.version),
    "paper copy": lambda r: r.record_paper_copy(TODAY, today=TODAY, required=True),
    "accept": lambda r: r.accept(r.version, paper_copy_required=True),
}
# What each action gives from each state (with no paper copy yet): the next state, or the code
# it is refused with.
EXPECTED: dict[str, dict[Status, str]] = {
    "edit draft": {
        "draft": "draft",
        "submitted": "not_a_draft",
        "returned": "not_a_draft",
        "accepted": "not_a_draft",
    },
    "submit draft": {
        "draft": "submitted",
        "submitted": "not_a_draft",
        "returned": "not_a_draft",
        "accepted": "not_a_draft",
    },
    "correct": {
        "draft": "not_submitted",
        "submitted": "submitted",
        "returned": "submitted",
        "accepted": "report_accepted",
    },
    "return": {
        "draft": "not_submitted",
        "submitted": "returned",
        "returned": "already_returned",
        "accepted": "returned",
    },
    "paper copy": {
        "draft": "not_submitted",
        "submitted": "submitted",
        "returned": "returned",
        "accepted": "accepted",
    },
    "accept": {
        "draft": "not_submitted",
        "submitted": "paper_copy_missing",
        "returned": "awaiting_correction",
        "accepted": "already_accepted",
    },
}
CASES = [(action, status) for action in ACTIONS for status in STATUSES]


def outcome(action: Callable[[Report], Report], before: Report) -> str:
    try:
        return action(before).status
    except Rejection as refusal:
        return refusal.code


@pytest.mark.parametrize(("action", "status"), CASES, ids=[f"{a} from {s}" for a, s in CASES])
def test_every_action_from_every_state(action: str, status: Status) -> None:
    assert outcome(ACTIONS[action], report(status)) == EXPECTED[action][status]


def test_a_correction_is_the_next_version_and_a_draft_stays_version_1() -> None:
    assert report("returned", version=3).correct().version == 4
    assert report("draft").submit_draft().version == 1


def test_acceptance_needs_the_paper_copy_only_when_the_policy_asks() -> None:
    assert report("submitted", paper_copy=True).accept(1, paper_copy_required=True).status == (
        "accepted"
    )
    assert report("submitted").accept(1, paper_copy_required=False).status == "accepted"


@pytest.mark.parametrize("action", ["return", "accept"])
def test_decisions_name_the_latest_version_or_none(action: str) -> None:
    latest = report("submitted", paper_copy=True, version=2)
    decide = {
        "return": lambda version: latest.give_back(version),
        "accept": lambda version: latest.accept(version, paper_copy_required=True),
    }[action]
    with pytest.raises(Rejection) as refused:
        decide(1)
    assert refused.value.code == "stale_version"
    assert decide(2).version == decide(None).version == 2


def test_the_paper_copy_is_recorded_once_on_a_day_that_has_come() -> None:
    received = report("submitted").record_paper_copy(TODAY, today=TODAY, required=True)
    assert received.paper_copy_received
    for attempt, code in [
        (
            lambda: received.record_paper_copy(TODAY, today=TODAY, required=True),
            "paper_copy_already_received",
        ),
        (
            lambda: report("submitted").record_paper_copy(
                TODAY + timedelta(days=1), today=TODAY, required=True
            ),
            "received_in_future",
        ),
        (
            lambda: report("submitted").record_paper_copy(TODAY, today=TODAY, required=False),
            "no_paper_copy",
        ),
    ]:
        with pytest.raises(Rejection) as refused:
            attempt()
        assert refused.value.code == code


def test_complete_means_online_and_on_paper_when_asked() -> None:
    assert not report("draft", paper_copy=False).is_complete(paper_copy_required=False)
    assert not report("submitted").is_complete(paper_copy_required=True)
    assert report("submitted").is_complete(paper_copy_required=False)
    assert report("accepted", paper_copy=True).is_complete(paper_copy_required=True)


def test_late_is_from_the_deadline_instant_on() -> None:
    deadline = datetime(2025, 4, 1, tzinfo=SHANGHAI)
    assert not is_late(deadline - timedelta(milliseconds=1), deadline)
    assert is_late(deadline, deadline)


PLAN_EXPECTED: dict[str, dict[PlanStatus, str]] = {
    "resubmit": {
        "submitted": "awaiting_decision",
        "approved": "already_approved",
        "returned": "submitted",
    },
    "approve": {
        "submitted": "approved",
        "approved": "already_approved",
        "returned": "already_returned",
    },
    "return": {
        "submitted": "returned",
        "approved": "already_approved",
        "returned": "already_returned",
    },
}
PLAN_ACTIONS: dict[str, Callable[[Plan], Plan]] = {
    "resubmit": lambda p: p.resubmit(),
    "approve": lambda p: p.decide(p.version, "approved"),
    "return": lambda p: p.decide(p.version, "returned"),
}
PLAN_CASES = [(a, s) for a in PLAN_EXPECTED for s in PLAN_EXPECTED[a]]


@pytest.mark.parametrize(
    ("action", "status"), PLAN_CASES, ids=[f"{a} from {s}" for a, s in PLAN_CASES]
)
def test_every_plan_action_from_every_state(action: str, status: PlanStatus) -> None:
    before = Plan(uuid4(), "91310115MA1K4C8N0W", 2025, status, 1)
    got: str
    try:
        got = PLAN_ACTIONS[action](before).status
    except Rejection as refusal:
        got = refusal.code
    assert got == PLAN_EXPECTED[action][status]


def test_a_plan_decision_names_the_latest_version() -> None:
    with pytest.raises(Rejection) as refused:
        Plan(uuid4(), "91310115MA1K4C8N0W", 2025, "submitted", 2).decide(1, "approved")
    assert refused.value.code == "stale_version"
    assert Plan(uuid4(), "x", 2025, "submitted", 2).decide(None, "approved").version == 2
    assert Plan(uuid4(), "x", 2025, "returned", 2).resubmit().version == 3
