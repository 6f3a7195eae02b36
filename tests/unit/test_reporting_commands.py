"""The reporting system's report lifecycle, regulator determinations and consumed events on an
in-memory database: every transition, every refused one (and that a refusal changes nothing),
and the deadline at its exact instant."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy.exc import IntegrityError

from carbon_contracts.errors import Conflict, Invalid, NotFound
from carbon_contracts.policy import ReportRules
from reporting import commands, store
from reporting.schemas import (
    AcceptReport,
    ActivityInput,
    CorrectReport,
    Determine,
    EditDraft,
    RecordPaperCopy,
    ReturnReport,
    SubmitDraft,
)
from tests.unit.reporting_support import (
    BEFORE_THE_REPORT_DEADLINE,
    CODE,
    LIMESTONE,
    OTHER,
    OUTPUTS,
    README_LINES,
    REPORT_DEADLINE,
    refused,
    report,
    snapshot,
    verification_returned,
)
from tests.unit.support import SHANGHAI, Harness, entity_registered

BUREAU = "regulator-user"


def lines(*given: dict[str, Any]) -> list[ActivityInput]:
    return [ActivityInput.model_validate(line) for line in given]


def correction(report_id: UUID, *given: dict[str, Any], reason: str = "meter misread") -> Any:
    return CorrectReport(
        report_id=report_id,
        lines=lines(*(given or README_LINES)),
        reason=reason,
        submitted_by=f"entity-{CODE}",
    )


def give_back(report_id: UUID, version: int = 1, reason: str = "heat invoices missing") -> Any:
    return ReturnReport(report_id=report_id, version=version, reason=reason, returned_by=BUREAU)


def paper_copy(report_id: UUID, received_on: date = date(2025, 3, 20)) -> RecordPaperCopy:
    return RecordPaperCopy(
        report_id=report_id, received_on=received_on, delivery="post", recorded_by=BUREAU
    )


def accept(report_id: UUID, version: int = 1) -> AcceptReport:
    return AcceptReport(report_id=report_id, version=version, accepted_by=BUREAU)


def determination(code: str = CODE, *given: dict[str, Any], year: int = 2024) -> Determine:
    return Determine(
        credit_code=code,
        compliance_year=year,
        lines=lines(*(given or [{"source": "heat", "activity": "1000"}])),
        reason="no 2024 report by 2025-03-31",
        determined_by=BUREAU,
    )


async def submitted(reporting: Harness, **arguments: Any) -> UUID:
    """A submitted report of CODE (rostered first), on time."""
    await reporting.handle(entity_registered(CODE))
    reporting.clock.current = BEFORE_THE_REPORT_DEADLINE
    ran = await reporting.run(commands.submit_report, report(**arguments))
    report_id: UUID = ran.result.report_id
    return report_id


async def state(reporting: Harness, report_id: UUID) -> Any:
    return await reporting.read(store.get_report, report_id=str(report_id))


async def trail(reporting: Harness, report_id: UUID) -> list[tuple[str, str | None, str]]:
    steps = await reporting.read(store.list_transitions, kind="report", subject_id=str(report_id))
    return [(step.action, step.from_status, step.to_status) for step in steps]


# --- submission -------------------------------------------------------------------------------


async def test_submit_report_computes_the_total_from_the_factor_table(
    reporting: Harness,
) -> None:
    await reporting.handle(entity_registered(CODE))
    reporting.clock.current = BEFORE_THE_REPORT_DEADLINE
    ran = await reporting.run(commands.submit_report, report(outputs=OUTPUTS))

    submitted_report = ran.result
    assert submitted_report.total_emissions == Decimal("24251.551")
    assert (submitted_report.status, submitted_report.version) == ("submitted", 1)
    assert (submitted_report.late, submitted_report.complete) == (False, False)
    assert (submitted_report.district, submitted_report.sector) == ("pudong", "chemicals")
    [event] = ran.events
    assert (event.topic, event.key, event.type) == ("report.submitted", CODE, "report.submitted")
    assert event.headers["ce_source"] == "/carbon/reporting"
    assert event.event.id == submitted_report.event_id
    payload = event.payload
    assert payload["report_id"] == str(submitted_report.report_id)
    assert payload["total_emissions"] == "24251.551"
    assert payload["factor_table"] == "shanghai-default-2024.1"
    assert payload["submitted_at"] == BEFORE_THE_REPORT_DEADLINE.isoformat()
    assert (payload["version"], payload["late"], payload["correction_reason"]) == (1, False, None)
    assert payload["process_lines"] == []
    assert payload["outputs"] == OUTPUTS
    assert [(line["source"], line["unit"], line["emissions"]) for line in payload["lines"]] == [
        ("electricity", "10^4 kWh", "10293.360"),
        ("heat", "GJ", "2880.000"),
        ("fuel", "10^4 Nm3", "11078.191"),
    ]
    # The lines add up to the total exactly.
    assert sum(Decimal(line["emissions"]) for line in payload["lines"]) == Decimal("24251.551")
    stored = await state(reporting, submitted_report.report_id)
    assert (stored.credit_code, stored.compliance_year, stored.status) == (CODE, 2024, "submitted")
    assert stored.total_emissions == Decimal("24251.551")
    assert stored.created_by == stored.submitted_by == f"entity-{CODE}"
    # (Rostered after both deadlines, the entity was also published overdue: see
    # test_reporting_deadlines.py.)
    outbox = [e.event.id for e in await reporting.outbox() if e.topic == "report.submitted"]
    assert outbox == [submitted_report.event_id]
    assert await trail(reporting, submitted_report.report_id) == [("submitted", None, "submitted")]


async def test_process_emissions_are_computed_and_published_apart(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    ran = await reporting.run(commands.submit_report, report([*README_LINES, LIMESTONE]))

    payload = ran.events[0].payload
    assert payload["process_lines"] == [
        {
            "material": "limestone",
            "activity": "9000",
            "unit": "t",
            "factor": "0.44",
            "emissions": "3960.000",
        }
    ]
    assert [line["source"] for line in payload["lines"]] == ["electricity", "heat", "fuel"]
    assert payload["total_emissions"] == "28211.551"  # 24251.551 + 3960.000
    assert ran.result.total_emissions == Decimal("28211.551")


@pytest.mark.parametrize(
    ("at", "late"),
    [
        (datetime(2025, 3, 31, 23, 59, 59, 999000, tzinfo=SHANGHAI), False),
        (datetime(2025, 4, 1, 0, 0, 0, tzinfo=SHANGHAI), True),
        (datetime(2025, 4, 3, 9, 0, tzinfo=SHANGHAI), True),
    ],
    ids=["2025-03-31T23:59:59.999+08:00", "2025-04-01T00:00:00+08:00", "days later"],
)
async def test_a_report_is_late_from_the_first_instant_after_the_deadline_day(
    reporting: Harness, at: datetime, late: bool
) -> None:
    assert datetime(2025, 4, 1, tzinfo=SHANGHAI) == REPORT_DEADLINE
    await reporting.handle(entity_registered(CODE))
    reporting.clock.current = at
    ran = await reporting.run(commands.submit_report, report())
    assert ran.result.late is late
    assert ran.events[0].payload["late"] is late  # late is taken, and flagged
    assert (await state(reporting, ran.result.report_id)).late is late


async def test_a_report_of_process_lines_alone_is_refused_with_its_reason(
    reporting: Harness,
) -> None:
    # The contract's report.submitted carries at least one fuel, electricity or heat line.
    await reporting.handle(entity_registered(CODE))
    error = await refused(
        reporting, commands.submit_report, report([LIMESTONE]), Invalid, "invalid_activity"
    )
    assert "at least one fuel, electricity or heat line" in str(error)


async def test_a_report_for_another_cycle_is_invalid(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE, year=2025))
    error = await refused(
        reporting, commands.submit_report, report(year=2025), Invalid, "wrong_compliance_year"
    )
    assert "takes reports for compliance year 2024, not 2025" in error.message


async def test_submit_report_before_the_roster_knows_the_entity_is_not_found(
    reporting: Harness,
) -> None:
    await refused(reporting, commands.submit_report, report(), NotFound, "unknown_entity")


async def test_a_second_report_for_the_year_conflicts(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    error = await refused(
        reporting,
        commands.submit_report,
        report([{"source": "heat", "activity": "1"}]),
        Conflict,
        "already_submitted",
    )
    assert f"/reports/{report_id}/versions" in error.message


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"source": "fuel", "activity": "10"}, "line 2: a fuel line must name its fuel"),
        ({"source": "fuel", "fuel": "peat", "activity": "10"}, "unknown fuel 'peat'"),
        ({"source": "electricity", "fuel": "diesel", "activity": "10"}, "names no fuel"),
        ({"source": "process", "activity": "10"}, "must name its material"),
        ({"source": "process", "material": "chalk", "activity": "10"}, "unknown material"),
        ({"source": "heat", "material": "limestone", "activity": "10"}, "names no material"),
    ],
)
async def test_an_activity_line_the_engine_cannot_compute_is_invalid(
    reporting: Harness, line: dict[str, Any], reason: str
) -> None:
    await reporting.handle(entity_registered(CODE))
    error = await refused(
        reporting,
        commands.submit_report,
        report([README_LINES[0], line]),
        Invalid,
        "invalid_activity",
    )
    assert reason in error.message


async def test_an_output_listed_twice_is_invalid(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    await refused(
        reporting,
        commands.submit_report,
        report(outputs=OUTPUTS * 2),
        Invalid,
        "duplicate_output",
    )


# --- drafts -----------------------------------------------------------------------------------


async def test_a_draft_publishes_nothing_until_it_is_submitted(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    reporting.clock.current = datetime(2025, 3, 2, 9, 0, tzinfo=SHANGHAI)
    drafted = await reporting.run(
        commands.submit_report, report([{"source": "heat", "activity": "10"}], draft=True)
    )
    report_id = drafted.result.report_id
    assert drafted.events == []
    assert (drafted.result.status, drafted.result.event_id) == ("draft", None)
    assert (drafted.result.late, drafted.result.submitted_at) == (None, None)
    assert drafted.result.total_emissions == Decimal("0.600")

    edited = await reporting.run(
        commands.edit_draft,
        EditDraft(
            report_id=report_id,
            lines=lines(*README_LINES),
            outputs=[],
            edited_by=f"entity-{CODE}",
        ),
    )
    assert edited.events == []
    assert (edited.result.status, edited.result.total_emissions) == (
        "draft",
        Decimal("24251.551"),
    )

    # Submitted after the deadline, the draft's report is late: lateness is the submission's.
    reporting.clock.current = REPORT_DEADLINE
    ran = await reporting.run(
        commands.submit_draft, SubmitDraft(report_id=report_id, submitted_by=f"entity-{CODE}")
    )
    assert (ran.result.status, ran.result.version, ran.result.late) == ("submitted", 1, True)
    [event] = ran.events
    assert event.type == "report.submitted"
    assert (event.payload["version"], event.payload["late"]) == (1, True)
    assert event.payload["total_emissions"] == "24251.551"
    assert event.payload["submitted_at"] == REPORT_DEADLINE.isoformat()
    assert await trail(reporting, report_id) == [
        ("drafted", None, "draft"),
        ("edited", "draft", "draft"),
        ("submitted", "draft", "submitted"),
    ]
    # (Besides the overdue events of rostering after both deadlines: test_reporting_deadlines.)
    outbox = [e.type for e in await reporting.outbox() if not e.topic.endswith(".deadline")]
    assert outbox == ["report.submitted"]


async def test_a_draft_stands_in_the_way_of_a_second_report(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    draft = await reporting.run(commands.submit_report, report(draft=True))
    error = await refused(reporting, commands.submit_report, report(), Conflict, "draft_exists")
    assert f"/reports/{draft.result.report_id}/submit" in error.message


async def test_a_submitted_report_is_no_draft_any_more(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    await refused(
        reporting,
        commands.edit_draft,
        EditDraft(report_id=report_id, lines=lines(*README_LINES), outputs=[], edited_by="x"),
        Conflict,
        "not_a_draft",
    )
    await refused(
        reporting,
        commands.submit_draft,
        SubmitDraft(report_id=report_id, submitted_by="x"),
        Conflict,
        "not_a_draft",
    )


async def test_the_bureau_and_corrections_wait_for_a_draft_to_be_submitted(
    reporting: Harness,
) -> None:
    await reporting.handle(entity_registered(CODE))
    draft = await reporting.run(commands.submit_report, report(draft=True))
    report_id = draft.result.report_id
    attempts: list[tuple[Any, Any]] = [
        (commands.return_report, give_back(report_id)),
        (commands.record_paper_copy, paper_copy(report_id)),
        (commands.accept_report, accept(report_id)),
        (commands.correct_report, correction(report_id)),
    ]
    for command, message in attempts:
        await refused(reporting, command, message, Conflict, "not_submitted")


async def test_an_unknown_report_is_not_found(reporting: Harness) -> None:
    unknown = uuid4()
    attempts: list[tuple[Any, Any]] = [
        (
            commands.edit_draft,
            EditDraft(report_id=unknown, lines=lines(*README_LINES), edited_by="x"),
        ),
        (commands.submit_draft, SubmitDraft(report_id=unknown, submitted_by="x")),
        (commands.return_report, give_back(unknown)),
        (commands.record_paper_copy, paper_copy(unknown)),
        (commands.accept_report, accept(unknown)),
        (commands.correct_report, correction(unknown)),
    ]
    for command, message in attempts:
        await refused(reporting, command, message, NotFound, "unknown_report")


# --- return, correction, paper copy, acceptance -----------------------------------------------


async def test_the_bureau_returns_the_report_and_the_entity_corrects_it(
    reporting: Harness,
) -> None:
    report_id = await submitted(reporting)
    reporting.clock.current = datetime(2025, 3, 25, 10, 0, tzinfo=SHANGHAI)
    returned = await reporting.run(commands.return_report, give_back(report_id))
    assert returned.result.status == "returned"
    [event] = returned.events
    assert (event.type, event.key) == ("report.returned", CODE)
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "report_id": str(report_id),
        "version": 1,
        "returned_by": "bureau",
        "reason": "heat invoices missing",
        "returned_at": "2025-03-25T10:00:00+08:00",
    }

    await refused(
        reporting, commands.return_report, give_back(report_id), Conflict, "already_returned"
    )
    await refused(
        reporting, commands.accept_report, accept(report_id), Conflict, "awaiting_correction"
    )

    # After the deadline the correction keeps the report's lateness (it was on time).
    reporting.clock.current = datetime(2025, 4, 2, 9, 0, tzinfo=SHANGHAI)
    corrected = await reporting.run(
        commands.correct_report, correction(report_id, *README_LINES, LIMESTONE)
    )
    assert (corrected.result.status, corrected.result.version) == ("submitted", 2)
    assert corrected.result.correction_reason == "meter misread"
    [event] = corrected.events
    assert event.type == "report.submitted"
    assert (event.payload["version"], event.payload["correction_reason"]) == (2, "meter misread")
    assert (event.payload["late"], event.payload["total_emissions"]) == (False, "28211.551")
    assert event.payload["report_id"] == str(report_id)

    detail = await reporting.read(store.list_report_versions, report_id=str(report_id))
    assert [(v.version, v.total_emissions, v.correction_reason) for v in detail] == [
        (1, Decimal("24251.551"), None),
        (2, Decimal("28211.551"), "meter misread"),
    ]
    assert await trail(reporting, report_id) == [
        ("submitted", None, "submitted"),
        ("returned", "submitted", "returned"),
        ("corrected", "returned", "submitted"),
    ]
    steps = await reporting.read(store.list_transitions, kind="report", subject_id=str(report_id))
    assert (steps[1].actor, steps[1].reason) == (BUREAU, "heat invoices missing")
    assert steps[2].reason == "meter misread"


async def test_the_entity_may_correct_a_submitted_report_without_a_return(
    reporting: Harness,
) -> None:
    report_id = await submitted(reporting)
    corrected = await reporting.run(
        commands.correct_report, correction(report_id, {"source": "heat", "activity": "5"})
    )
    assert (corrected.result.status, corrected.result.version) == ("submitted", 2)
    assert corrected.result.total_emissions == Decimal("0.300")
    # The first version is kept as it was.
    first = (await reporting.read(store.list_report_versions, report_id=str(report_id)))[0]
    assert first.total_emissions == Decimal("24251.551")


async def test_return_and_acceptance_name_the_latest_version(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    await reporting.run(commands.correct_report, correction(report_id))
    await reporting.run(commands.record_paper_copy, paper_copy(report_id))
    await refused(
        reporting, commands.return_report, give_back(report_id, 1), Conflict, "stale_version"
    )
    error = await refused(
        reporting, commands.accept_report, accept(report_id, 1), Conflict, "stale_version"
    )
    assert "the latest is version 2" in error.message
    accepted = await reporting.run(commands.accept_report, accept(report_id, 2))
    assert (accepted.result.status, accepted.result.accepted_version) == ("accepted", 2)


async def test_the_paper_copy_completes_the_report_and_allows_acceptance(
    reporting: Harness,
) -> None:
    report_id = await submitted(reporting, outputs=OUTPUTS)
    error = await refused(
        reporting, commands.accept_report, accept(report_id), Conflict, "paper_copy_missing"
    )
    assert "paper copy" in error.message

    reporting.clock.current = datetime(2025, 3, 26, 15, 0, tzinfo=SHANGHAI)
    received = await reporting.run(
        commands.record_paper_copy, paper_copy(report_id, date(2025, 3, 26))
    )
    assert received.result.complete is True
    assert received.result.paper_copy is not None
    assert received.result.paper_copy.received_on == date(2025, 3, 26)
    assert received.result.status == "submitted"  # the copy changes no state by itself
    [event] = received.events
    assert event.type == "report.paper_copy_received"
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "report_id": str(report_id),
        "received_on": "2025-03-26",
        "delivery": "post",
        "recorded_at": "2025-03-26T15:00:00+08:00",
    }
    await refused(
        reporting,
        commands.record_paper_copy,
        paper_copy(report_id, date(2025, 3, 25)),
        Conflict,
        "paper_copy_already_received",
    )

    reporting.clock.current = datetime(2025, 3, 28, 10, 0, tzinfo=SHANGHAI)
    accepted = await reporting.run(commands.accept_report, accept(report_id))
    assert (accepted.result.status, accepted.result.accepted_version) == ("accepted", 1)
    [event] = accepted.events
    assert event.type == "report.accepted"
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "report_id": str(report_id),
        "version": 1,
        "total_emissions": "24251.551",
        "accepted_at": "2025-03-28T10:00:00+08:00",
    }
    await refused(
        reporting, commands.accept_report, accept(report_id), Conflict, "already_accepted"
    )
    await refused(
        reporting,
        commands.record_paper_copy,
        paper_copy(report_id),
        Conflict,
        "paper_copy_already_received",
    )
    assert await trail(reporting, report_id) == [
        ("submitted", None, "submitted"),
        ("paper_copy_received", "submitted", "submitted"),
        ("accepted", "submitted", "accepted"),
    ]


async def test_a_paper_copy_cannot_arrive_tomorrow(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    # 23:30 on 03-20 in Shanghai is 15:30 UTC: "today" is the Shanghai date, 03-20.
    reporting.clock.current = datetime(2025, 3, 20, 23, 30, tzinfo=SHANGHAI)
    await refused(
        reporting,
        commands.record_paper_copy,
        paper_copy(report_id, date(2025, 3, 21)),
        Invalid,
        "received_in_future",
    )
    ran = await reporting.run(commands.record_paper_copy, paper_copy(report_id, date(2025, 3, 20)))
    assert ran.result.complete


async def test_without_a_paper_copy_in_the_policy_the_report_is_accepted_online(
    reporting: Harness,
) -> None:
    reporting.context.policy = reporting.context.policy.model_copy(
        update={"report": ReportRules(paper_copy=False)}
    )
    report_id = await submitted(reporting)
    assert (await reporting.run(commands.accept_report, accept(report_id))).result.complete
    await refused(
        reporting, commands.record_paper_copy, paper_copy(report_id), Conflict, "no_paper_copy"
    )


async def test_an_accepted_report_is_corrected_only_after_a_return(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    await reporting.run(commands.record_paper_copy, paper_copy(report_id))
    await reporting.run(commands.accept_report, accept(report_id))
    error = await refused(
        reporting, commands.correct_report, correction(report_id), Conflict, "report_accepted"
    )
    assert "only a returned (or not yet accepted) report" in error.message
    await reporting.run(commands.return_report, give_back(report_id))
    corrected = await reporting.run(commands.correct_report, correction(report_id))
    assert (corrected.result.status, corrected.result.version) == ("submitted", 2)
    assert corrected.result.accepted_version == 1  # what was accepted stays on record
    accepted = await reporting.run(commands.accept_report, accept(report_id, 2))
    assert accepted.events[0].payload["version"] == 2


async def test_a_decision_without_a_version_is_on_the_latest(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    await reporting.run(commands.correct_report, correction(report_id))
    await reporting.run(commands.record_paper_copy, paper_copy(report_id))
    accepted = await reporting.run(
        commands.accept_report, AcceptReport(report_id=report_id, accepted_by=BUREAU)
    )
    assert (accepted.result.status, accepted.events[0].payload["version"]) == ("accepted", 2)
    returned = await reporting.run(
        commands.return_report,
        ReturnReport(report_id=report_id, reason="plant 2 missing", returned_by=BUREAU),
    )
    assert returned.events[0].payload["version"] == 2


async def test_the_bureau_may_return_an_accepted_report(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    await reporting.run(commands.record_paper_copy, paper_copy(report_id))
    await reporting.run(commands.accept_report, accept(report_id))
    returned = await reporting.run(commands.return_report, give_back(report_id))
    assert returned.result.status == "returned"


# --- verification's events ---------------------------------------------------------------------


async def test_the_verifier_returns_the_report_through_verification(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    events = await reporting.handle(verification_returned(report_id))
    assert [event.type for event in events] == ["report.returned"]
    assert events[0].payload["returned_by"] == "verifier"
    assert events[0].payload["reason"] == "diesel missing"
    assert events[0].payload["returned_at"] == "2025-04-18T15:00:00+08:00"
    assert (await state(reporting, report_id)).status == "returned"
    steps = await reporting.read(store.list_transitions, kind="report", subject_id=str(report_id))
    assert (steps[-1].action, steps[-1].actor) == ("returned", "sh-verify-01")

    # The same return again, or one of a version corrected since, changes nothing.
    before = await snapshot(reporting)
    assert await reporting.handle(verification_returned(report_id)) == []
    assert await snapshot(reporting) == before
    await reporting.run(commands.correct_report, correction(report_id))
    before = await snapshot(reporting)
    assert await reporting.handle(verification_returned(report_id, 1)) == []
    assert await snapshot(reporting) == before
    assert (await state(reporting, report_id)).status == "submitted"


async def test_a_return_for_an_unknown_report_is_rejected(reporting: Harness) -> None:
    with pytest.raises(NotFound):
        await reporting.handle(verification_returned(uuid4()))


async def test_the_verifier_may_return_an_accepted_report(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    await reporting.run(commands.record_paper_copy, paper_copy(report_id))
    await reporting.run(commands.accept_report, accept(report_id))
    assert [e.type for e in await reporting.handle(verification_returned(report_id))] == [
        "report.returned"
    ]
    corrected = await reporting.run(commands.correct_report, correction(report_id))
    assert (corrected.result.status, corrected.result.version) == ("submitted", 2)


async def test_a_verifiers_return_of_a_draft_changes_nothing(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    draft = await reporting.run(commands.submit_report, report(draft=True))
    before = await snapshot(reporting)
    assert await reporting.handle(verification_returned(draft.result.report_id)) == []
    assert await snapshot(reporting) == before


# --- regulator determinations -----------------------------------------------------------------


async def test_the_bureau_determines_the_emissions_of_an_entity_that_did_not_report(
    reporting: Harness,
) -> None:
    await reporting.handle(entity_registered(CODE))
    reporting.clock.current = datetime(2025, 3, 31, 23, 59, 59, 999000, tzinfo=SHANGHAI)
    await refused(reporting, commands.determine, determination(), Conflict, "before_deadline")

    reporting.clock.current = REPORT_DEADLINE
    ran = await reporting.run(
        commands.determine,
        determination(
            CODE,
            {"source": "fuel", "fuel": "raw_coal", "activity": "41000"},
            {"source": "electricity", "activity": "5200"},
            {"source": "process", "material": "limestone", "activity": "9000"},
        ),
    )
    assert ran.result.total_emissions == Decimal("103712.253")
    [event] = ran.events
    assert (event.type, event.key) == ("emissions.determined", CODE)
    assert event.payload["determination_id"] == str(ran.result.determination_id)
    assert event.payload["total_emissions"] == "103712.253"
    assert event.payload["reason"] == "no 2024 report by 2025-03-31"
    assert [line["emissions"] for line in event.payload["lines"]] == ["77912.253", "21840.000"]
    assert event.payload["process_lines"][0]["emissions"] == "3960.000"
    assert event.payload["determined_at"] == "2025-04-01T00:00:00+08:00"

    await refused(reporting, commands.determine, determination(), Conflict, "already_determined")
    # The figure is the Bureau's now: the entity's report is no longer taken.
    await refused(reporting, commands.submit_report, report(), Conflict, "emissions_determined")
    await refused(
        reporting, commands.submit_report, report(draft=True), Conflict, "emissions_determined"
    )


async def test_no_determination_once_the_report_came(reporting: Harness) -> None:
    await submitted(reporting)
    reporting.clock.current = REPORT_DEADLINE
    await refused(reporting, commands.determine, determination(), Conflict, "report_exists")


async def test_a_draft_left_unsubmitted_is_no_report(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE))
    draft = await reporting.run(commands.submit_report, report(draft=True))
    reporting.clock.current = REPORT_DEADLINE
    await reporting.run(commands.determine, determination())
    await refused(
        reporting,
        commands.submit_draft,
        SubmitDraft(report_id=draft.result.report_id, submitted_by="x"),
        Conflict,
        "emissions_determined",
    )


async def test_a_determination_is_for_a_rostered_entity_of_this_cycle(reporting: Harness) -> None:
    reporting.clock.current = REPORT_DEADLINE
    await refused(reporting, commands.determine, determination(), NotFound, "unknown_entity")
    await reporting.handle(entity_registered(CODE, year=2025))
    await refused(
        reporting, commands.determine, determination(year=2025), Invalid, "wrong_compliance_year"
    )
    await reporting.handle(entity_registered(CODE))
    await refused(
        reporting,
        commands.determine,
        determination(CODE, {"source": "fuel", "fuel": "peat", "activity": "1"}),
        Invalid,
        "invalid_activity",
    )


# --- the database's own guards ----------------------------------------------------------------


async def test_a_transition_from_a_state_the_report_left_updates_nothing(
    reporting: Harness,
) -> None:
    report_id = await submitted(reporting)
    await reporting.run(commands.return_report, give_back(report_id))
    before = await snapshot(reporting)
    async with reporting.context.engine.begin() as conn:
        # What a second instance that read the report before the return would try.
        assert not await store.transition_report(
            conn,
            report_id=str(report_id),
            from_status="submitted",
            from_version=1,
            status="accepted",
            accepted_version=1,
            accepted_at=REPORT_DEADLINE,
        )
        assert not await store.claim_filing(
            conn, credit_code=CODE, compliance_year=2024, filing="determination"
        )
    assert await snapshot(reporting) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "filed"},
        {"status": "accepted"},  # accepted with no accepted version
        {"status": "verified"},  # no such state
        {"status": "draft"},  # a draft was never submitted
        {"paper_copy_received_on": date(2025, 3, 26)},  # received, but by whom and how?
    ],
)
async def test_the_database_refuses_an_inconsistent_report(
    reporting: Harness, changes: dict[str, Any]
) -> None:
    report_id = await submitted(reporting)
    with pytest.raises(IntegrityError):
        async with reporting.context.engine.begin() as conn:
            await conn.execute(
                store.reports.update()
                .where(store.reports.c.report_id == str(report_id))
                .values(**changes)
            )


async def test_the_database_refuses_a_correction_without_a_reason(reporting: Harness) -> None:
    report_id = await submitted(reporting)
    with pytest.raises(IntegrityError):
        async with reporting.context.engine.begin() as conn:
            await store.add_report_version(
                conn,
                report_id=str(report_id),
                version=2,
                factor_table="t",
                lines=[],
                process_lines=[],
                outputs=[],
                total_emissions=Decimal("1.000"),
                submitted_by="x",
                submitted_at=REPORT_DEADLINE,
            )


# --- the roster -------------------------------------------------------------------------------


async def test_entity_registered_puts_the_entity_on_the_roster(reporting: Harness) -> None:
    # Rostered after both deadlines (the harness's clock): bound by both, and overdue at once.
    published = await reporting.handle(entity_registered(CODE))
    assert [e.type for e in published] == ["monitoring_plan.overdue", "report.overdue"]
    row = await reporting.read(store.get_rostered, credit_code=CODE, compliance_year=2024)
    assert (row.name, row.district, row.sector, row.filing) == (
        "示例化工",
        "pudong",
        "chemicals",
        None,
    )


async def test_a_second_entity_registered_overwrites_name_district_and_sector(
    reporting: Harness,
) -> None:
    await submitted(reporting)
    await reporting.handle(
        entity_registered(CODE, name="Renamed Ltd", district="minhang", sector="steel")
    )
    row = await reporting.read(store.get_rostered, credit_code=CODE, compliance_year=2024)
    assert (row.name, row.district, row.sector) == ("Renamed Ltd", "minhang", "steel")
    assert row.filing == "report"  # what the roster learns never resets what was filed


async def test_the_roster_keeps_one_row_per_year(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE, year=2024, district="pudong"))
    await reporting.handle(entity_registered(CODE, year=2025, district="minhang"))
    rows = [
        await reporting.read(store.get_rostered, credit_code=CODE, compliance_year=year)
        for year in (2024, 2025)
    ]
    assert [row.district for row in rows] == ["pudong", "minhang"]


async def test_listings_follow_the_roster(reporting: Harness) -> None:
    await reporting.handle(entity_registered(CODE, district="pudong", sector="chemicals"))
    await reporting.handle(entity_registered(OTHER, district="minhang", sector="steel"))
    reporting.clock.current = BEFORE_THE_REPORT_DEADLINE
    first = await reporting.run(commands.submit_report, report(code=CODE))
    reporting.clock.current = datetime(2025, 3, 21, 9, 0, tzinfo=SHANGHAI)
    await reporting.run(commands.submit_report, report(code=OTHER, draft=True))
    await reporting.run(commands.record_paper_copy, paper_copy(first.result.report_id))

    async def codes(**filters: Any) -> list[str]:
        rows = await reporting.read(store.list_reports, credit_code=None, **filters)
        return [row.credit_code for row in rows]

    assert await codes() == [CODE, OTHER]
    assert await codes(district="pudong") == [CODE]
    assert await codes(sector="steel") == [OTHER]
    assert await codes(status="draft") == [OTHER]
    assert await codes(paper_copy=True) == [CODE]
    assert await codes(paper_copy=False) == [OTHER]
    assert await codes(late=False) == [CODE]
    assert await codes(compliance_year=2025) == []


def test_reporting_subscribes_to_the_roster_and_to_verifiers_returns() -> None:
    from reporting.service import SERVICE

    assert dict(SERVICE.handlers) == {
        "entity.registered": {"entity.registered": commands.on_entity_registered},
        "verification.returned": {"verification.returned": commands.on_verification_returned},
    }
