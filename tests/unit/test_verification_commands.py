"""Verification's event handlers and commands on an in-memory database: the roster projection,
cases opened by reports and determinations, assignment by tender lot, site visits, returns,
approval with the verified figure recomputed by the engine, re-verification, the final figure and
the year's close. A refusal is asserted with its code and with nothing changed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4, uuid5

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.errors import Conflict, Forbidden, Invalid, NotFound, Rejection
from carbon_contracts.events import EmissionsDetermined, ProductionOutput, ReportSubmitted
from carbon_emissions.calculation import ActivityLine, FactorTable, calculate
from carbon_emissions.lines import ActivityInput, to_contract
from carbon_platform.context import UnitOfWork
from registry.domain.credit_code import make_credit_code
from tests.unit.support import (
    IN_THE_CYCLE,
    POLICY,
    SHANGHAI,
    Harness,
    consumed,
    entity_registered,
    report_submitted,
)
from verification import commands, store
from verification.domain.case import Case, case_id_for, sample_draw
from verification.schemas import (
    ApproveCase,
    AssignCase,
    AssignLot,
    FinaliseCase,
    NameContact,
    RecordSiteVisit,
    ReturnCase,
    SelectCase,
    YearCommand,
)

CODE = make_credit_code(1)  # chemicals in pudong: lot-2024-01, sh-verify-01
OTHER = make_credit_code(2)  # textiles in minhang: lot-2024-02, sh-verify-02
REPORT_ID = UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
CASE_ID = str(case_id_for(REPORT_ID))
AGENCY, OTHER_AGENCY, REVERIFIER = "sh-verify-01", "sh-verify-02", "sh-verify-03"
BUREAU = "regulator-user"
VISITED_ON = date(2025, 4, 10)
VERIFIED_LINES = [
    ActivityInput(source="electricity", activity=Decimal("2450.8")),
    ActivityInput(source="heat", activity=Decimal("48500")),
    ActivityInput(source="fuel", fuel="natural_gas", activity=Decimal("512.36")),
    ActivityInput(source="process", material="limestone", activity=Decimal("1200.5")),
]


def submitted(
    report_id: UUID = REPORT_ID, code: str = CODE, version: int = 1, emissions: str = "24251.551"
) -> ReportSubmitted:
    report = report_submitted(
        code, report_id, emissions=emissions, at=datetime(2025, 3, 20, tzinfo=UTC)
    )
    return report.model_copy(update={"version": version})


def heat(gj: str) -> list[ActivityInput]:
    """Verified lines of purchased heat only: 0.06 t per GJ."""
    return [ActivityInput(source="heat", activity=Decimal(gj))]


def assign(agency: str = AGENCY, case_id: str = CASE_ID) -> AssignCase:
    return AssignCase(case_id=case_id, agency_id=agency, by=BUREAU)


def visit(agency: str = AGENCY, on: date = VISITED_ON, case_id: str = CASE_ID) -> RecordSiteVisit:
    return RecordSiteVisit(
        case_id=case_id, agency_id=agency, visited_on=on, findings="meters agree", by=agency
    )


def approval(
    agency: str = AGENCY, lines: list[ActivityInput] = VERIFIED_LINES, case_id: str = CASE_ID
) -> ApproveCase:
    return ApproveCase(case_id=case_id, agency_id=agency, lines=lines, by=f"verifier-{agency}")


def returning(agency: str = AGENCY, reason: str = "heat invoices missing") -> ReturnCase:
    return ReturnCase(case_id=CASE_ID, agency_id=agency, reason=reason, by=agency)


def selection(case_id: str = CASE_ID) -> SelectCase:
    return SelectCase(case_id=case_id, reason="heat invoices differ from the supplier's", by=BUREAU)


def finalising(case_id: str = CASE_ID) -> FinaliseCase:
    return FinaliseCase(case_id=case_id, by=BUREAU)


YEAR = YearCommand(compliance_year=2024, by=BUREAU)


# --- states to start from ---------------------------------------------------------------------


async def opened(verification: Harness) -> None:
    await verification.handle(entity_registered(CODE))
    await verification.handle(submitted())


async def assigned(verification: Harness) -> None:
    await opened(verification)
    await verification.run(commands.assign_case, assign())


async def approved(verification: Harness, lines: list[ActivityInput] = VERIFIED_LINES) -> None:
    await assigned(verification)
    await verification.run(commands.record_site_visit, visit())
    await verification.run(commands.approve, approval(lines=lines))


async def selected(verification: Harness) -> None:
    await approved(verification)
    await verification.run(commands.select, selection())


async def reverifying(verification: Harness) -> None:
    await selected(verification)
    await verification.run(commands.assign_lot, AssignLot(lot_id="lot-2024-r1", by=BUREAU))


async def final(verification: Harness) -> None:
    await approved(verification)
    await verification.run(commands.finalise, finalising())


async def case(verification: Harness, case_id: str = CASE_ID) -> Case:
    row = await verification.read(store.get_case, case_id=case_id)
    assert row is not None
    return store.to_case(row)


async def history(verification: Harness, case_id: str = CASE_ID) -> list[tuple[Any, ...]]:
    rows = await verification.read(store.get_history, case_id=case_id)
    return [(row.action, row.from_status, row.to_status) for row in rows]


async def snapshot(verification: Harness) -> tuple[Any, ...]:
    """Everything the service holds, to compare before and after a refusal."""

    async def tables(conn: AsyncConnection) -> tuple[Any, ...]:
        rows = []
        for table in (store.cases, store.case_history, store.year_closures, store.roster):
            rows.append([tuple(row) for row in await conn.execute(select(table))])
        outbox = select(func.count()).select_from(store.messaging.outbox)
        return (*rows, (await conn.execute(outbox)).scalar())

    return await verification.read(tables)


async def refused(
    verification: Harness, command: Any, message: Any, kind: type[Rejection], code: str
) -> Rejection:
    """The command is refused with this code, and nothing changes."""
    before = await snapshot(verification)
    with pytest.raises(kind) as caught:
        await verification.run(command, message)
    assert caught.value.code == code, caught.value.message
    assert await snapshot(verification) == before
    return caught.value


def engine_total(lines: list[ActivityInput]) -> Decimal:
    """The figure the calculation engine gives for these lines, computed here directly."""
    activity = [
        ActivityLine(source=i.source, activity=i.activity, fuel=i.fuel, material=i.material)
        for i in lines
    ]
    return calculate(activity, FactorTable.from_policy(POLICY)).total


# --- entity.registered ------------------------------------------------------------------------


async def test_the_roster_learns_sector_and_district_once(verification: Harness) -> None:
    await verification.handle(entity_registered(CODE))
    await verification.handle(
        consumed(entity_registered(CODE, district="minhang"), event_id=str(uuid4()))
    )
    row = await verification.read(store.get_rostered, credit_code=CODE, compliance_year=2024)
    assert (row.district, row.sector) == ("pudong", "chemicals")


def test_verification_subscribes_to_the_roster_reports_and_determinations() -> None:
    from verification.service import SERVICE

    assert dict(SERVICE.handlers) == {
        "entity.registered": {"entity.registered": commands.on_entity_registered},
        "report.submitted": {"report.submitted": commands.on_report_submitted},
        "emissions.determined": {"emissions.determined": commands.on_emissions_determined},
    }


# --- report.submitted -------------------------------------------------------------------------


async def test_a_submitted_report_opens_one_case(verification: Harness) -> None:
    assert await verification.handle(submitted()) == []
    opened_case = await case(verification)
    assert (opened_case.status, opened_case.round, opened_case.report_version) == (
        "opened",
        "verification",
        1,
    )
    assert (opened_case.report_id, opened_case.credit_code) == (REPORT_ID, CODE)
    assert opened_case.reported_emissions == Decimal("24251.551")
    assert opened_case.opened_at == verification.clock.now()
    assert await history(verification) == [("open", None, "opened")]


async def test_a_redelivered_report_changes_nothing(verification: Harness) -> None:
    await opened(verification)
    before = await snapshot(verification)
    # Another event id (the inbox would not dedupe it), the same version.
    assert await verification.handle(consumed(submitted(), event_id=str(uuid4()))) == []
    assert await snapshot(verification) == before


async def test_a_report_before_its_entity_is_on_the_roster(verification: Harness) -> None:
    await verification.handle(submitted())  # entity.registered has not arrived yet
    view = (await verification.read(store.list_cases))[0]
    assert (view.district, view.sector) == (None, None)
    await refused(verification, commands.assign_case, assign(), Conflict, "entity_unknown")
    lot = await verification.run(commands.assign_lot, AssignLot(lot_id="lot-2024-01", by=BUREAU))
    assert (lot.result.assigned, lot.result.skipped_not_on_roster) == ([], 1)

    await verification.handle(entity_registered(CODE))
    lot = await verification.run(commands.assign_lot, AssignLot(lot_id="lot-2024-01", by=BUREAU))
    assert [view.case_id for view in lot.result.assigned] == [UUID(CASE_ID)]
    assert lot.result.skipped_not_on_roster == 0


async def test_a_newer_version_of_an_opened_report_is_the_one_verified(
    verification: Harness,
) -> None:
    await opened(verification)
    await verification.handle(submitted(version=2, emissions="24000.000"))
    updated = await case(verification)
    assert (updated.status, updated.report_version, updated.reported_emissions) == (
        "opened",
        2,
        Decimal("24000.000"),
    )
    # Version 1 delivered late, after version 2: nothing goes back.
    await verification.handle(consumed(submitted(version=1), event_id=str(uuid4())))
    assert (await case(verification)).report_version == 2


async def test_a_corrected_version_brings_a_returned_case_back_to_its_agency(
    verification: Harness,
) -> None:
    await assigned(verification)
    await verification.run(commands.return_case, returning())
    assert await verification.handle(submitted(version=2, emissions="24000.000")) == []
    back = await case(verification)
    assert (back.status, back.agency_id, back.report_version) == ("assigned", AGENCY, 2)
    assert (await history(verification))[-1] == ("resubmitted", "returned", "assigned")


async def test_a_corrected_version_voids_an_approval(verification: Harness) -> None:
    await approved(verification)
    await verification.handle(submitted(version=2, emissions="24000.000"))
    voided = await case(verification)
    assert (voided.status, voided.agency_id, voided.report_version) == ("assigned", AGENCY, 2)
    assert (voided.verified_emissions, voided.first_agency_id) == (None, None)
    rows = await verification.read(store.get_history, case_id=CASE_ID)
    assert (rows[-1].action, rows[-1].from_status, rows[-1].to_status) == (
        "approval_voided",
        "approved",
        "assigned",
    )
    assert "version 2" in rows[-1].reason and "void" in rows[-1].reason
    # The agency verifies the new version: its visit stands, the figure is recomputed.
    ran = await verification.run(commands.approve, approval())
    assert ran.events[0].payload["report_version"] == 2


@pytest.mark.parametrize("state", [selected, reverifying])
async def test_a_corrected_version_during_reverification_only_updates_the_report(
    verification: Harness, state: Any
) -> None:
    await state(verification)
    before = await case(verification)
    await verification.handle(submitted(version=2, emissions="24000.000"))
    after = await case(verification)
    assert (after.status, after.agency_id, after.verified_emissions) == (
        before.status,
        before.agency_id,
        before.verified_emissions,
    )
    assert (after.report_version, after.reported_emissions) == (2, Decimal("24000.000"))


async def test_a_corrected_version_after_final_leaves_the_final_figure(
    verification: Harness,
) -> None:
    await final(verification)
    await verification.handle(submitted(version=2, emissions="1.000"))
    after = await case(verification)
    assert (after.status, after.final_emissions, after.report_version) == (
        "final",
        engine_total(VERIFIED_LINES),
        2,
    )
    assert (await history(verification))[-1] == ("version_after_final", "final", "final")


# --- emissions.determined ---------------------------------------------------------------------


def determined(code: str = OTHER, determination_id: UUID | None = None) -> EmissionsDetermined:
    return EmissionsDetermined(
        credit_code=code,
        compliance_year=2024,
        determination_id=determination_id or UUID("3d1b2a5c-9e8f-4a7b-8c6d-5e4f3a2b1c0d"),
        factor_table="shanghai-default-2024.1",
        lines=[],
        process_lines=[],
        total_emissions=Decimal("900.000"),
        reason="no report by the deadline",
        determined_at=datetime(2025, 4, 20, tzinfo=UTC),
    )


async def test_a_determination_is_final_at_once_and_published_once(
    verification: Harness,
) -> None:
    event = determined()
    [finalised] = await verification.handle(event)
    case_id = str(case_id_for(event.determination_id))
    assert (finalised.topic, finalised.key) == ("verification.finalised", OTHER)
    assert finalised.payload == {
        "credit_code": OTHER,
        "compliance_year": 2024,
        "case_id": case_id,
        "report_id": None,
        "basis": "determination",
        "verified_emissions": "900.000",
        "finalised_at": verification.clock.now().isoformat(),
        "outputs": [],
    }
    made = await case(verification, case_id)
    assert (made.status, made.final_basis, made.determination_id) == (
        "final",
        "determination",
        event.determination_id,
    )
    rows = await verification.read(store.get_history, case_id=case_id)
    assert [(row.action, row.reason) for row in rows] == [
        ("determined", "no report by the deadline")
    ]
    # Redelivered under another event id: nothing opened or published again.
    assert await verification.handle(consumed(event, event_id=str(uuid4()))) == []
    assert len(await verification.outbox()) == 1


# --- assign -----------------------------------------------------------------------------------


async def test_assign_gives_the_case_its_lots_agency(verification: Harness) -> None:
    await opened(verification)
    ran = await verification.run(commands.assign_case, assign())

    changed = ran.result
    assert (changed.status, changed.agency_id, changed.lot_id, changed.round) == (
        "assigned",
        AGENCY,
        "lot-2024-01",
        "verification",
    )
    assert (changed.district, changed.sector) == ("pudong", "chemicals")
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
        "round": "verification",
        "lot_id": "lot-2024-01",
    }
    assert changed.event_ids == [event.event.id]
    assert [(h.action, h.by, h.to_status) for h in changed.history] == [
        ("open", "reporting", "opened"),
        ("assign", BUREAU, "assigned"),
    ]


async def test_assign_an_unknown_case_is_not_found(verification: Harness) -> None:
    await refused(verification, commands.assign_case, assign(), NotFound, "unknown_case")


async def test_assign_an_agency_outside_the_tender_results_is_invalid(
    verification: Harness,
) -> None:
    await opened(verification)
    error = await refused(
        verification, commands.assign_case, assign("agency-a"), Invalid, "unknown_agency"
    )
    assert "sh-verify-01" in error.message


async def test_an_agency_outside_the_lot_is_refused(verification: Harness) -> None:
    await opened(verification)
    error = await refused(
        verification, commands.assign_case, assign(OTHER_AGENCY), Conflict, "agency_not_in_lot"
    )
    assert "lot-2024-01" in error.message and AGENCY in error.message


async def test_assign_the_same_agency_again_is_refused(verification: Harness) -> None:
    await assigned(verification)
    await refused(verification, commands.assign_case, assign(), Conflict, "already_assigned")


async def test_assign_after_approval_or_once_final_is_refused(verification: Harness) -> None:
    await approved(verification)
    await refused(verification, commands.assign_case, assign(), Conflict, "already_approved")
    await verification.run(commands.finalise, finalising())
    await refused(verification, commands.assign_case, assign(), Conflict, "case_final")


async def test_assign_by_lot_takes_every_case_the_lot_covers_first(verification: Harness) -> None:
    reports = {code: uuid4() for code in (CODE, OTHER, make_credit_code(3), make_credit_code(4))}
    await verification.handle(entity_registered(CODE, sector="chemicals", district="pudong"))
    await verification.handle(
        entity_registered(OTHER, sector="textiles", district="minhang")
    )  # lot-2024-02's
    await verification.handle(
        entity_registered(make_credit_code(3), sector="power", district="jinshan")
    )
    for code, report_id in reports.items():  # make_credit_code(4) is not on the roster
        await verification.handle(submitted(report_id, code))

    ran = await verification.run(commands.assign_lot, AssignLot(lot_id="lot-2024-01", by=BUREAU))

    lot = ran.result
    expected = {str(case_id_for(reports[c])) for c in (CODE, make_credit_code(3))}
    assert {str(view.case_id) for view in lot.assigned} == expected
    assert all(view.agency_id == AGENCY and view.status == "assigned" for view in lot.assigned)
    assert (lot.skipped_not_on_roster, lot.skipped_same_agency) == (1, 0)
    assert [event.type for event in ran.events] == ["verification.assigned"] * 2
    assert {event.payload["lot_id"] for event in ran.events} == {"lot-2024-01"}
    assert lot.event_ids == [event.event.id for event in ran.events]
    other = await case(verification, str(case_id_for(reports[OTHER])))
    assert (other.status, other.agency_id) == ("opened", None)
    # Again: nothing is waiting for that lot any more.
    again = await verification.run(commands.assign_lot, AssignLot(lot_id="lot-2024-01", by=BUREAU))
    assert (again.result.assigned, again.events) == ([], [])


async def test_assign_an_unknown_lot_is_not_found(verification: Harness) -> None:
    error = await refused(
        verification,
        commands.assign_lot,
        AssignLot(lot_id="lot-9", by=BUREAU),
        NotFound,
        "unknown_lot",
    )
    assert "lot-2024-r1" in error.message


# --- contact and site visit -------------------------------------------------------------------


async def test_the_entity_names_its_contact(verification: Harness) -> None:
    await opened(verification)
    ran = await verification.run(
        commands.name_contact,
        NameContact(case_id=CASE_ID, name="Li Wei", phone="+86 21 5555 0101", by="entity"),
    )
    assert ran.result.contact is not None
    assert (ran.result.contact.name, ran.result.contact.phone) == ("Li Wei", "+86 21 5555 0101")
    assert (ran.events, ran.result.event_ids) == ([], [])
    assert (await history(verification))[-1] == ("contact", "opened", "opened")


async def test_no_contact_once_final(verification: Harness) -> None:
    await final(verification)
    message = NameContact(case_id=CASE_ID, name="Li Wei", phone="021 5555 0101", by="entity")
    await refused(verification, commands.name_contact, message, Conflict, "case_final")


async def test_the_agency_records_its_site_visit(verification: Harness) -> None:
    await assigned(verification)
    ran = await verification.run(commands.record_site_visit, visit())
    assert ran.result.verification_visit is not None
    assert ran.result.verification_visit.visited_on == VISITED_ON
    assert ran.result.verification_visit.findings == "meters agree"
    assert ran.events == []


async def test_site_visit_refusals(verification: Harness) -> None:
    await opened(verification)
    await refused(verification, commands.record_site_visit, visit(), Conflict, "not_assigned")
    await verification.run(commands.assign_case, assign())
    await refused(
        verification, commands.record_site_visit, visit(OTHER_AGENCY), Forbidden, "other_agency"
    )
    tomorrow = date(2025, 4, 16)  # the clock says 2025-04-15 in Shanghai
    await refused(
        verification,
        commands.record_site_visit,
        visit(on=tomorrow),
        Invalid,
        "visit_in_future",
    )


# --- return -----------------------------------------------------------------------------------


async def test_the_verifier_returns_the_report(verification: Harness) -> None:
    await assigned(verification)
    ran = await verification.run(commands.return_case, returning())
    assert (ran.result.status, ran.result.returned_at) == ("returned", verification.clock.now())
    [event] = ran.events
    assert (event.topic, event.key) == ("verification.returned", CODE)
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "case_id": CASE_ID,
        "report_id": str(REPORT_ID),
        "report_version": 1,
        "agency_id": AGENCY,
        "reason": "heat invoices missing",
        "returned_at": verification.clock.now().isoformat(),
    }
    await refused(verification, commands.approve, approval(), Conflict, "case_returned")
    await refused(verification, commands.return_case, returning(), Conflict, "case_returned")


async def test_return_refusals(verification: Harness) -> None:
    await opened(verification)
    await refused(verification, commands.return_case, returning(), Conflict, "not_assigned")
    await verification.run(commands.assign_case, assign())
    await refused(
        verification, commands.return_case, returning(OTHER_AGENCY), Forbidden, "other_agency"
    )


async def test_a_reverification_does_not_return_the_report(verification: Harness) -> None:
    await reverifying(verification)
    await refused(
        verification, commands.return_case, returning(REVERIFIER), Conflict, "not_returnable"
    )


# --- approve ----------------------------------------------------------------------------------


async def test_approval_recomputes_the_verified_figure_with_the_engine(
    verification: Harness,
) -> None:
    await assigned(verification)
    await verification.run(commands.record_site_visit, visit())
    ran = await verification.run(commands.approve, approval())

    figure = engine_total(VERIFIED_LINES)
    contract = to_contract(
        calculate(
            [
                ActivityLine(source=i.source, activity=i.activity, fuel=i.fuel, material=i.material)
                for i in VERIFIED_LINES
            ],
            FactorTable.from_policy(POLICY),
        )
    )
    changed = ran.result
    assert (changed.status, changed.verified_emissions, changed.first_agency_id) == (
        "approved",
        figure,
        AGENCY,
    )
    assert changed.difference == figure - Decimal("24251.551")
    assert changed.verification_outside_window is False
    assert changed.calculation.total == figure
    [event] = ran.events
    assert (event.topic, event.key) == ("verification.approved", CODE)
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "case_id": CASE_ID,
        "report_id": str(REPORT_ID),
        "agency_id": AGENCY,
        "reported_emissions": "24251.551",
        "verified_emissions": f"{figure:.3f}",
        "approved_at": verification.clock.now().isoformat(),
        "report_version": 1,
        "factor_table": "shanghai-default-2024.1",
        "lines": [line.model_dump(mode="json") for line in contract.lines],
        "process_lines": [line.model_dump(mode="json") for line in contract.process_lines],
        "outside_window": False,
    }
    assert [line["source"] for line in event.payload["lines"]] == ["electricity", "heat", "fuel"]
    assert event.payload["process_lines"][0]["material"] == "limestone"


async def test_approval_without_a_site_visit_is_refused(verification: Harness) -> None:
    await assigned(verification)
    await refused(verification, commands.approve, approval(), Conflict, "no_site_visit")


async def test_approval_with_lines_the_engine_refuses_is_invalid(verification: Harness) -> None:
    await assigned(verification)
    await verification.run(commands.record_site_visit, visit())
    unknown_fuel = [ActivityInput(source="fuel", fuel="peat", activity=Decimal("1"))]
    error = await refused(
        verification, commands.approve, approval(lines=unknown_fuel), Invalid, "invalid_activity"
    )
    assert "unknown fuel 'peat'" in error.message
    no_material = [ActivityInput(source="process", activity=Decimal("1"))]
    error = await refused(
        verification, commands.approve, approval(lines=no_material), Invalid, "invalid_activity"
    )
    assert "material" in error.message


@pytest.mark.parametrize(
    ("state", "agency", "kind", "code"),
    [
        (opened, AGENCY, Conflict, "not_assigned"),
        (assigned, OTHER_AGENCY, Forbidden, "other_agency"),
        (approved, AGENCY, Conflict, "already_approved"),
        (selected, AGENCY, Conflict, "not_assigned"),
        (reverifying, AGENCY, Forbidden, "other_agency"),
        (final, AGENCY, Conflict, "case_final"),
    ],
)
async def test_approval_refusals(
    verification: Harness, state: Any, agency: str, kind: type[Rejection], code: str
) -> None:
    await state(verification)
    await refused(verification, commands.approve, approval(agency), kind, code)


@pytest.mark.parametrize(
    ("at", "outside"),
    [
        (datetime(2025, 3, 31, 23, 59, 59, 999000, tzinfo=SHANGHAI), True),
        (datetime(2025, 4, 1, 0, 0, tzinfo=SHANGHAI), False),
        (datetime(2025, 5, 31, 23, 59, 59, 999000, tzinfo=SHANGHAI), False),
        (datetime(2025, 6, 1, 0, 0, tzinfo=SHANGHAI), True),
    ],
)
async def test_work_outside_april_and_may_is_accepted_and_flagged(
    verification: Harness, at: datetime, outside: bool
) -> None:
    await assigned(verification)
    verification.clock.current = at
    await verification.run(commands.record_site_visit, visit(on=date(2025, 3, 30)))
    ran = await verification.run(commands.approve, approval())
    assert ran.result.verification_outside_window is outside
    assert ran.events[0].payload["outside_window"] is outside
    assert (await case(verification)).verification_outside_window is outside


# --- select, finalise, re-verify --------------------------------------------------------------


async def test_the_bureau_selects_a_case_for_reverification(verification: Harness) -> None:
    await approved(verification)
    ran = await verification.run(commands.select, selection())
    changed = ran.result
    assert (changed.status, changed.round, changed.agency_id, changed.first_agency_id) == (
        "selected",
        "reverification",
        None,
        AGENCY,
    )
    assert (changed.selected_by, changed.lot_id) == ("bureau", "lot-2024-r1")
    [event] = ran.events
    assert (event.topic, event.key) == ("reverification.selected", CODE)
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "case_id": CASE_ID,
        "report_id": str(REPORT_ID),
        "selected_by": "bureau",
        "reason": "heat invoices differ from the supplier's",
        "first_verified_emissions": f"{engine_total(VERIFIED_LINES):.3f}",
        "selected_at": verification.clock.now().isoformat(),
    }


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (opened, "not_approved"),
        (assigned, "not_approved"),
        (selected, "already_selected"),
        (reverifying, "already_selected"),
        (final, "case_final"),
    ],
)
async def test_only_an_approved_case_is_selected_or_finalised(
    verification: Harness, state: Any, code: str
) -> None:
    await state(verification)
    await refused(verification, commands.select, selection(), Conflict, code)
    await refused(verification, commands.finalise, finalising(), Conflict, code)


async def test_an_approved_case_not_selected_is_final(verification: Harness) -> None:
    await approved(verification)
    ran = await verification.run(commands.finalise, finalising())
    figure = engine_total(VERIFIED_LINES)
    assert (ran.result.status, ran.result.final_basis, ran.result.final_emissions) == (
        "final",
        "verification",
        figure,
    )
    [event] = ran.events
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "case_id": CASE_ID,
        "report_id": str(REPORT_ID),
        "basis": "verification",
        "verified_emissions": f"{figure:.3f}",
        "finalised_at": verification.clock.now().isoformat(),
        "outputs": [],
    }


async def test_the_first_agency_still_reads_the_case_a_second_one_reverifies(
    verification: Harness,
) -> None:
    await reverifying(verification)
    async with verification.client() as client:

        def as_agency(agency: str) -> dict[str, str]:
            return verification.token("verifier", agency=agency)

        detail = {
            agency: await client.get(f"/cases/{CASE_ID}", headers=as_agency(agency))
            for agency in (AGENCY, REVERIFIER, OTHER_AGENCY)
        }
        listed = {
            agency: (await client.get("/cases", headers=as_agency(agency))).json()
            for agency in (AGENCY, REVERIFIER, OTHER_AGENCY)
        }
    assert {agency: reply.status_code for agency, reply in detail.items()} == {
        AGENCY: 200,
        REVERIFIER: 200,
        OTHER_AGENCY: 403,
    }
    assert detail[AGENCY].json()["agency_id"] == REVERIFIER
    assert {agency: len(cases) for agency, cases in listed.items()} == {
        AGENCY: 1,
        REVERIFIER: 1,
        OTHER_AGENCY: 0,
    }


async def test_reverification_by_the_first_agency_is_refused(verification: Harness) -> None:
    await selected(verification)
    error = await refused(
        verification, commands.assign_case, assign(AGENCY), Conflict, "same_agency"
    )
    assert AGENCY in error.message
    await refused(
        verification, commands.assign_case, assign(OTHER_AGENCY), Conflict, "agency_not_in_lot"
    )
    ran = await verification.run(commands.assign_case, assign(REVERIFIER))
    assert (ran.result.status, ran.result.agency_id, ran.result.lot_id) == (
        "reverifying",
        REVERIFIER,
        "lot-2024-r1",
    )
    assert (ran.events[0].payload["round"], ran.events[0].payload["lot_id"]) == (
        "reverification",
        "lot-2024-r1",
    )


async def test_the_reverification_lot_takes_the_selected_cases(verification: Harness) -> None:
    await selected(verification)
    ran = await verification.run(commands.assign_lot, AssignLot(lot_id="lot-2024-r1", by=BUREAU))
    [view] = ran.result.assigned
    assert (view.status, view.agency_id, view.first_agency_id) == (
        "reverifying",
        REVERIFIER,
        AGENCY,
    )
    assert ran.events[0].payload["round"] == "reverification"


async def test_a_reverified_figure_replaces_the_first_and_is_final(verification: Harness) -> None:
    await reverifying(verification)
    await refused(verification, commands.approve, approval(REVERIFIER), Conflict, "no_site_visit")
    await verification.run(commands.record_site_visit, visit(REVERIFIER))
    lines = [*VERIFIED_LINES[:1], ActivityInput(source="heat", activity=Decimal("48000"))]
    ran = await verification.run(commands.approve, approval(REVERIFIER, lines))

    first, second = engine_total(VERIFIED_LINES), engine_total(lines)
    changed = ran.result
    assert (changed.status, changed.final_basis) == ("final", "reverification")
    assert changed.final_emissions == changed.reverified_emissions == second != first
    assert changed.verified_emissions == first
    assert changed.difference == second - Decimal("24251.551")
    completed, finalised = ran.events
    assert completed.topic == "reverification.completed"
    assert completed.payload["agency_id"] == REVERIFIER
    assert completed.payload["first_verified_emissions"] == f"{first:.3f}"
    assert completed.payload["verified_emissions"] == f"{second:.3f}"
    assert completed.payload["outside_window"] is False
    assert finalised.topic == "verification.finalised"
    assert (finalised.payload["basis"], finalised.payload["verified_emissions"]) == (
        "reverification",
        f"{second:.3f}",
    )
    assert changed.event_ids == [completed.event.id, finalised.event.id]


async def test_the_final_figure_carries_the_outputs_as_reported_or_as_verified(
    verification: Harness,
) -> None:
    reported = [ProductionOutput(product="ethylene_glycol", unit="t", quantity=Decimal("182000"))]
    await verification.handle(entity_registered(CODE))
    await verification.handle(submitted().model_copy(update={"outputs": reported}))
    await verification.run(commands.assign_case, assign())
    await verification.run(commands.record_site_visit, visit())
    await verification.run(commands.approve, approval())
    ran = await verification.run(commands.finalise, finalising())
    assert ran.events[0].payload["outputs"] == [
        {"product": "ethylene_glycol", "unit": "t", "quantity": "182000"}
    ]

    # Selected, re-verified with outputs the agency corrected: those are final.
    await verification.handle(entity_registered(OTHER))
    other_report = uuid4()
    other_case = str(case_id_for(other_report))
    await verification.handle(
        submitted(other_report, OTHER).model_copy(update={"outputs": reported})
    )
    await verification.run(commands.assign_case, assign(case_id=other_case))
    await verification.run(commands.record_site_visit, visit(case_id=other_case))
    await verification.run(commands.approve, approval(case_id=other_case))
    await verification.run(commands.select, selection(other_case))
    await verification.run(commands.assign_lot, AssignLot(lot_id="lot-2024-r1", by=BUREAU))
    await verification.run(commands.record_site_visit, visit(REVERIFIER, case_id=other_case))
    corrected = [
        ProductionOutput(product="ethylene_glycol", unit="t", quantity=Decimal("181250.5"))
    ]
    command = approval(REVERIFIER, case_id=other_case).model_copy(update={"outputs": corrected})
    ran = await verification.run(commands.approve, command)
    assert ran.events[-1].topic == "verification.finalised"
    assert ran.events[-1].payload["outputs"] == [
        {"product": "ethylene_glycol", "unit": "t", "quantity": "181250.5"}
    ]


# --- the re-verification rule -----------------------------------------------------------------


def report_drawn(inside_sample: bool, skip: int = 0) -> UUID:
    """A report id whose case the policy's deterministic sample draws (or not)."""
    share = POLICY.verification.reverification.sample_per_mille
    found = [
        report_id
        for n in range(2000)
        if (
            (sample_draw(case_id_for(report_id := uuid5(REPORT_ID, str(n)))) < share)
            == inside_sample
        )
    ]
    return found[skip]


async def approved_case(
    verification: Harness, code: str, report_id: UUID, reported: str, lines: list[ActivityInput]
) -> str:
    case_id = str(case_id_for(report_id))
    await verification.handle(entity_registered(code))
    await verification.handle(submitted(report_id, code, emissions=reported))
    await verification.run(commands.assign_case, assign(case_id=case_id))
    await verification.run(commands.record_site_visit, visit(case_id=case_id))
    await verification.run(commands.approve, approval(lines=lines, case_id=case_id))
    return case_id


async def test_the_rule_selects_above_the_ratio_and_the_sample(verification: Harness) -> None:
    above = await approved_case(
        verification, make_credit_code(11), report_drawn(False, 0), "100.000", heat("1750.0167")
    )
    at_the_ratio = await approved_case(
        verification, make_credit_code(12), report_drawn(False, 1), "100.000", heat("1750")
    )
    sampled = await approved_case(
        verification, make_credit_code(13), report_drawn(True, 0), "60.000", heat("1000")
    )
    waiting = uuid4()  # not approved: the rule leaves it alone
    await verification.handle(submitted(waiting, make_credit_code(14)))

    ran = await verification.run(commands.apply_selection_rule, YEAR)

    assert sorted(map(str, ran.result.selected)) == sorted([above, sampled])
    assert list(map(str, ran.result.finalised)) == [at_the_ratio]
    assert (await case(verification, above)).selection_reason == (
        "verified 105.001 t differs from reported 100.000 t by 5.001% (> 5%)"
    )
    sampled_case = await case(verification, sampled)
    assert (sampled_case.selected_by, sampled_case.selection_reason) == (
        "rule",
        f"drawn in the sample: draw {sample_draw(UUID(sampled))} < 100 per mille",
    )
    at_ratio = await case(verification, at_the_ratio)
    assert (at_ratio.status, at_ratio.final_emissions) == ("final", Decimal("105.000"))
    assert (await case(verification, str(case_id_for(waiting)))).status == "opened"
    assert sorted(event.type for event in ran.events) == [
        "reverification.selected",
        "reverification.selected",
        "verification.finalised",
    ]
    assert {e.payload["selected_by"] for e in ran.events if "selected_by" in e.payload} == {"rule"}
    # Nothing approved is left: running it again does nothing.
    again = await verification.run(commands.apply_selection_rule, YEAR)
    assert (again.result.selected, again.result.finalised, again.events) == ([], [], [])


async def test_the_rule_runs_for_the_policys_year_only(verification: Harness) -> None:
    await refused(
        verification,
        commands.apply_selection_rule,
        YearCommand(compliance_year=2025, by=BUREAU),
        Invalid,
        "no_policy",
    )


# --- closing the year -------------------------------------------------------------------------


async def test_the_year_closes_once_every_case_is_final(verification: Harness) -> None:
    await approved(verification)
    await verification.handle(entity_registered(OTHER, sector="textiles", district="minhang"))
    error = await refused(verification, commands.close_year, YEAR, Conflict, "verification_open")
    assert "1 case(s) not final (1 approved)" in error.message
    assert f"1 rostered entity without a case: {OTHER}" in error.message

    await verification.run(commands.finalise, finalising())
    await verification.handle(determined(OTHER))
    view = await verification.read(commands.year_view, policy=POLICY, year=2024)
    assert (view.closed, view.rostered, view.cases, view.without_case) == (False, 2, 2, 0)
    assert view.cases_by_status["final"] == 2 and view.cases_by_status["approved"] == 0

    ran = await verification.run(commands.close_year, YEAR)

    total = engine_total(VERIFIED_LINES) + Decimal("900.000")
    assert (ran.result.cases, ran.result.total_verified_emissions) == (2, total)
    [event] = ran.events
    assert (event.topic, event.key) == ("verification.closed", "shanghai-2024")
    assert event.payload == {
        "policy": "shanghai-2024",
        "compliance_year": 2024,
        "cases": 2,
        "total_verified_emissions": f"{total:.3f}",
        "closed_at": verification.clock.now().isoformat(),
    }
    view = await verification.read(commands.year_view, policy=POLICY, year=2024)
    assert (view.closed, view.closed_at) == (True, verification.clock.now())
    await refused(verification, commands.close_year, YEAR, Conflict, "already_closed")


async def test_after_the_close_nothing_of_the_year_changes(verification: Harness) -> None:
    await final(verification)
    await verification.run(commands.close_year, YEAR)
    # A report arriving after the close is kept, but no agency may take it up.
    late = uuid4()
    await verification.handle(entity_registered(OTHER, sector="textiles", district="minhang"))
    await verification.handle(submitted(late, OTHER))
    late_case = str(case_id_for(late))
    assert (await case(verification, late_case)).status == "opened"
    await refused(
        verification, commands.assign_case, assign(OTHER_AGENCY, late_case), Conflict, "year_closed"
    )
    await refused(
        verification,
        commands.assign_lot,
        AssignLot(lot_id="lot-2024-02", by=BUREAU),
        Conflict,
        "year_closed",
    )
    await refused(verification, commands.approve, approval(), Conflict, "year_closed")
    await refused(verification, commands.select, selection(), Conflict, "year_closed")
    await refused(verification, commands.apply_selection_rule, YEAR, Conflict, "year_closed")


async def test_an_empty_year_does_not_close(verification: Harness) -> None:
    await refused(verification, commands.close_year, YEAR, Conflict, "verification_open")


# --- the guards under the rules ---------------------------------------------------------------


async def test_a_change_over_a_stale_read_writes_nothing(verification: Harness) -> None:
    await assigned(verification)
    stale = await case(verification)
    await verification.run(commands.record_site_visit, visit())  # another request got there first
    fresh = await case(verification)
    returned = stale.return_report(agency_id=AGENCY, reason="x", at=IN_THE_CYCLE).case

    async def save(conn: AsyncConnection) -> bool:
        return await store.save_case(conn, before=stale, after=returned)

    async with verification.context.engine.begin() as conn:
        assert await save(conn) is False
    assert await case(verification) == fresh


async def test_a_stale_command_is_a_conflict(verification: Harness, monkeypatch: Any) -> None:
    await assigned(verification)
    stale = await verification.read(store.get_case, case_id=CASE_ID)
    await verification.run(commands.record_site_visit, visit())

    async def as_read_before(conn: Any, *, case_id: str) -> Any:
        return stale

    monkeypatch.setattr(store, "get_case", as_read_before)
    with pytest.raises(Conflict) as caught:
        await verification.run(commands.return_case, returning())
    assert caught.value.code == "case_changed"


@pytest.mark.parametrize(
    "change",
    [
        {"status": "approved"},  # approved without a verified figure
        {"status": "final"},  # final without a final figure
        {"agency_id": None},  # assigned to nobody
        {"status": "reverifying", "round": "reverification", "first_agency_id": AGENCY},
        {"verified_emissions": Decimal("1.000"), "first_agency_id": AGENCY},  # not approved
        {"verification_outside_window": False},  # a window flag with no approval
        {"reverified_emissions": Decimal("1.000")},  # re-verified but not final
        {"contact_name": "Li Wei"},  # a contact without a phone
    ],
)
async def test_the_database_refuses_a_case_the_rules_never_make(
    verification: Harness, change: dict[str, Any]
) -> None:
    from dataclasses import replace

    await assigned(verification)
    before = await case(verification)
    with pytest.raises(IntegrityError):
        async with verification.context.engine.begin() as conn:
            await store.save_case(conn, before=before, after=replace(before, **change))
    assert await case(verification) == before


async def test_the_database_refuses_an_approval_without_its_site_visit(
    verification: Harness,
) -> None:
    from dataclasses import replace

    await assigned(verification)
    before = await case(verification)
    approved_unvisited = replace(
        before,
        status="approved",
        verified_emissions=Decimal("1.000"),
        first_agency_id=AGENCY,
        verification_outside_window=False,
    )
    with pytest.raises(IntegrityError):
        async with verification.context.engine.begin() as conn:
            await store.save_case(conn, before=before, after=approved_unvisited)


async def test_a_unit_of_work_reads_cases_it_changed(verification: Harness) -> None:
    # The command's answer is read back in its own transaction: it shows the change.
    await opened(verification)

    async def assign_and_read(uow: UnitOfWork, message: AssignCase) -> str:
        await commands.assign_case(uow, message)
        return str((await commands.load_case(uow.conn, CASE_ID)).status)

    assert (await verification.run(assign_and_read, assign())).result == "assigned"
