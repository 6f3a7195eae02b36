"""Verification's commands and event handlers: each a function over a unit of work that loads
state, applies the domain rules and records the events it causes. No HTTP, no Kafka."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from carbon_contracts.errors import Conflict, Invalid, NotFound
from carbon_contracts.events import (
    EmissionsDetermined,
    EntityRegistered,
    ProductionOutput,
    ReportSubmitted,
    ReverificationCompleted,
    ReverificationSelected,
    VerificationApproved,
    VerificationAssigned,
    VerificationClosed,
    VerificationFinalised,
    VerificationReturned,
)
from carbon_contracts.policy import Lot, Policy
from carbon_emissions.lines import compute_with_policy
from carbon_platform.access import Owner
from carbon_platform.codec import Event, Outgoing
from carbon_platform.context import Handler, UnitOfWork
from verification import store
from verification.domain.case import (
    STATUSES,
    Case,
    Change,
    case_id_for,
    closing_refusal,
    selected_by_rule,
)
from verification.schemas import (
    ApproveCase,
    ApprovedCase,
    AssignCase,
    AssignLot,
    CalculationView,
    CaseDetail,
    CaseView,
    ChangedCase,
    ContactView,
    FinaliseCase,
    HistoryEntry,
    LotAssignment,
    NameContact,
    RecordSiteVisit,
    ReturnCase,
    SelectCase,
    Selection,
    SiteVisitView,
    YearClosure,
    YearCommand,
    YearView,
)

_ZERO = Decimal("0.000")
_ATTEMPTS = 3
"""A handler re-reads a case and applies its event again when a concurrent change won."""


# --- consumed events --------------------------------------------------------------------------


async def on_entity_registered(uow: UnitOfWork, event: Event[Any]) -> None:
    """The roster: which lot covers an entity depends on its sector and district."""
    registered: EntityRegistered = event.payload
    await store.add_to_roster(
        uow.conn,
        credit_code=registered.credit_code,
        compliance_year=registered.compliance_year,
        district=registered.district,
        sector=registered.sector,
        at=registered.registered_at,
    )


async def on_report_submitted(uow: UnitOfWork, event: Event[Any]) -> None:
    """A report's first version opens its case; a later version becomes the one verified (see
    Case.take_version); an older or the same version changes nothing. Never refused: events of
    one report arrive in order, and a redelivery is a no-op. The version's production outputs
    are kept: what the agency verifies unless it says otherwise."""
    report: ReportSubmitted = event.payload
    case_id = await _take_report(uow, report)
    await store.save_outputs(
        uow.conn,
        case_id=case_id,
        source=f"report-{report.version}",
        outputs=[output.model_dump(mode="json") for output in report.outputs],
    )


async def _take_report(uow: UnitOfWork, report: ReportSubmitted) -> str:
    case_id = str(case_id_for(report.report_id))
    for _ in range(_ATTEMPTS):
        row = await store.get_case(uow.conn, case_id=case_id)
        if row is None:
            opened = Case.for_report(
                report_id=report.report_id,
                credit_code=report.credit_code,
                compliance_year=report.compliance_year,
                version=report.version,
                reported=report.total_emissions,
                at=uow.now,
            )
            if await store.open_case(uow.conn, case=opened):
                await _history(
                    uow,
                    opened,
                    by="reporting",
                    action="open",
                    from_status=None,
                    reason=f"report version {report.version}: {report.total_emissions} t",
                )
                return case_id
            continue  # another instance opened it meanwhile: apply this version to it
        before = store.to_case(row)
        change = before.take_version(report.version, report.total_emissions, uow.now)
        if change is None or await _saved(uow, before, change, by="reporting"):
            return case_id
    raise RuntimeError(f"case {case_id} kept changing while report version {report.version} came")


async def on_emissions_determined(uow: UnitOfWork, event: Event[Any]) -> None:
    """No report came and the Bureau determined the emissions: a case final at once, and the
    final figure published (once: a redelivery finds the case)."""
    determined: EmissionsDetermined = event.payload
    case = Case.for_determination(
        determination_id=determined.determination_id,
        credit_code=determined.credit_code,
        compliance_year=determined.compliance_year,
        determined=determined.total_emissions,
        at=uow.now,
    )
    if not await store.open_case(uow.conn, case=case):
        return
    await _history(
        uow, case, by="reporting", action="determined", from_status=None, reason=determined.reason
    )
    uow.record(await _finalised(uow, case))


HANDLERS: dict[str, dict[str, Handler]] = {
    "entity.registered": {"entity.registered": on_entity_registered},
    "report.submitted": {"report.submitted": on_report_submitted},
    "emissions.determined": {"emissions.determined": on_emissions_determined},
}


# --- the Bureau assigns -----------------------------------------------------------------------


async def assign_lot(uow: UnitOfWork, command: AssignLot) -> LotAssignment:
    """Every case waiting for this lot's round (verification: opened; re-verification:
    selected) whose entity the lot covers first gets the lot's agency."""
    policy = uow.policy
    lot = next((lot for lot in policy.verification.lots if lot.id == command.lot_id), None)
    if lot is None:
        known = ", ".join(lot.id for lot in policy.verification.lots)
        raise NotFound("unknown_lot", f"no tender lot {command.lot_id} in {policy.cycle}: {known}")
    await _ensure_open(uow, policy.compliance_year)
    waiting = "opened" if lot.round == "verification" else "selected"
    rows = await store.list_cases(uow.conn, compliance_year=policy.compliance_year, status=waiting)
    assigned: list[CaseView] = []
    events: list[Outgoing] = []
    not_on_roster = same_agency = 0
    for row in rows:
        if row.district is None:
            not_on_roster += 1
            continue
        covering = policy.verification.lot_for(lot.round, sector=row.sector, district=row.district)
        if covering is None or covering.id != lot.id:
            continue
        before = store.to_case(row)
        if before.first_agency_id == lot.agency:
            same_agency += 1
            continue
        change = before.assign(agency_id=lot.agency, lot=lot, at=uow.now)
        if not await _saved(uow, before, change, by=command.by):
            continue  # changed by another request meanwhile: left as that request made it
        events.append(uow.record(_assigned(change.case, lot, uow.now)))
        assigned.append(case_view(change.case, row.district, row.sector, policy))
    return LotAssignment(
        lot_id=lot.id,
        assigned=assigned,
        skipped_not_on_roster=not_on_roster,
        skipped_same_agency=same_agency,
        event_ids=[event.event_id for event in events],
    )


async def assign_case(uow: UnitOfWork, command: AssignCase) -> ChangedCase:
    """One case to the agency of its lot for the current round (reassigned before approval or
    completion only if its lot changed)."""
    policy = uow.policy
    row = await load_case(uow.conn, command.case_id)
    if command.agency_id not in {agency.id for agency in policy.verification.agencies}:
        known = ", ".join(agency.id for agency in policy.verification.agencies)
        raise Invalid(
            "unknown_agency",
            f"{command.agency_id} is not a tender agency of {policy.cycle}: {known}",
        )
    before = store.to_case(row)
    await _ensure_open(uow, before.compliance_year)
    before.ensure_assignable()
    lot = _lot_of(policy, before, row)
    change = before.assign(agency_id=command.agency_id, lot=lot, at=uow.now)
    after = await _apply(uow, before, change, by=command.by)
    return await _changed(uow, after, [uow.record(_assigned(after, lot, uow.now))])


def _lot_of(policy: Policy, case: Case, row: Any) -> Lot:
    if row.district is None:
        raise Conflict(
            "entity_unknown",
            f"{case.credit_code} is not on the {case.compliance_year} roster here yet: its lot "
            "depends on its sector and district",
        )
    lot = policy.verification.lot_for(case.round, sector=row.sector, district=row.district)
    if lot is None:
        raise Conflict(
            "no_lot",
            f"no {case.round} lot of {policy.cycle} covers sector {row.sector} in {row.district}",
        )
    return lot


def _assigned(case: Case, lot: Lot, at: datetime) -> VerificationAssigned:
    return VerificationAssigned(
        credit_code=case.credit_code,
        compliance_year=case.compliance_year,
        case_id=case.case_id,
        report_id=_report_id(case),
        agency_id=lot.agency,
        assigned_at=at,
        round=case.round,
        lot_id=lot.id,
    )


# --- the entity names its contact; the agency verifies ----------------------------------------


async def name_contact(uow: UnitOfWork, command: NameContact) -> ChangedCase:
    """The entity's contact person for the agency (any time before the case is final)."""
    before = store.to_case(await load_case(uow.conn, command.case_id))
    change = before.name_contact(name=command.name, phone=command.phone)
    return await _changed(uow, await _apply(uow, before, change, by=command.by), [])


async def record_site_visit(uow: UnitOfWork, command: RecordSiteVisit) -> ChangedCase:
    """The agency at work records its site visit and findings for the current round."""
    before = store.to_case(await load_case(uow.conn, command.case_id))
    await _ensure_open(uow, before.compliance_year)
    today = uow.now.astimezone(ZoneInfo(uow.policy.timezone)).date()
    change = before.record_site_visit(
        agency_id=command.agency_id,
        visited_on=command.visited_on,
        findings=command.findings,
        today=today,
    )
    return await _changed(uow, await _apply(uow, before, change, by=command.by), [])


async def return_case(uow: UnitOfWork, command: ReturnCase) -> ChangedCase:
    """The verifier returns the report to the entity for correction (`verification.returned`):
    the corrected version brings the case back to it."""
    before = store.to_case(await load_case(uow.conn, command.case_id))
    await _ensure_open(uow, before.compliance_year)
    change = before.return_report(agency_id=command.agency_id, reason=command.reason, at=uow.now)
    after = await _apply(uow, before, change, by=command.by)
    event = uow.record(
        VerificationReturned(
            credit_code=after.credit_code,
            compliance_year=after.compliance_year,
            case_id=after.case_id,
            report_id=_report_id(after),
            report_version=_version(after),
            agency_id=command.agency_id,
            reason=command.reason,
            returned_at=uow.now,
        )
    )
    return await _changed(uow, after, [event])


async def approve(uow: UnitOfWork, command: ApproveCase) -> ApprovedCase:
    """The agency at work approves with the verified activity lines; the emissions are
    recomputed by the engine reporting uses. A verification's figure is approved
    (`verification.approved`, final only once the Bureau decides); a re-verification's replaces
    it and is final (`reverification.completed`, `verification.finalised`). Work outside the
    policy's window is accepted and flagged."""
    policy = uow.policy
    before = store.to_case(await load_case(uow.conn, command.case_id))
    await _ensure_open(uow, before.compliance_year)
    before.ensure_approvable(command.agency_id)
    computed = compute_with_policy(command.lines, policy)
    window = policy.deadlines
    outside = not window.verification_start <= uow.now < window.verification_end
    change = before.approve(
        agency_id=command.agency_id, verified=computed.total, outside_window=outside, at=uow.now
    )
    after = await _apply(uow, before, change, by=command.by)
    if command.outputs is not None:  # verified outputs; otherwise the reported ones stand
        await store.save_outputs(
            uow.conn,
            case_id=str(after.case_id),
            source=before.round,
            outputs=[output.model_dump(mode="json") for output in command.outputs],
        )
    if after.status == "approved":
        events = [
            uow.record(
                VerificationApproved(
                    credit_code=after.credit_code,
                    compliance_year=after.compliance_year,
                    case_id=after.case_id,
                    report_id=_report_id(after),
                    agency_id=command.agency_id,
                    reported_emissions=after.reported_emissions,
                    verified_emissions=computed.total,
                    approved_at=uow.now,
                    report_version=after.report_version,
                    factor_table=computed.factor_table,
                    lines=computed.lines,
                    process_lines=computed.process_lines,
                    outside_window=outside,
                )
            )
        ]
    else:
        completed = ReverificationCompleted(
            credit_code=after.credit_code,
            compliance_year=after.compliance_year,
            case_id=after.case_id,
            report_id=_report_id(after),
            agency_id=command.agency_id,
            first_verified_emissions=after.verified_emissions,
            verified_emissions=computed.total,
            factor_table=computed.factor_table,
            lines=computed.lines,
            process_lines=computed.process_lines,
            outside_window=outside,
            completed_at=uow.now,
        )
        events = [uow.record(completed), uow.record(await _finalised(uow, after))]
    changed = await _changed(uow, after, events)
    calculation = CalculationView(
        factor_table=computed.factor_table,
        lines=computed.lines,
        process_lines=computed.process_lines,
        total=computed.total,
    )
    return ApprovedCase(**dict(changed), calculation=calculation)


# --- the Bureau decides on approved figures ---------------------------------------------------


async def select(uow: UnitOfWork, command: SelectCase) -> ChangedCase:
    """The Bureau selects an approved case for re-verification by hand
    (`reverification.selected`)."""
    before = store.to_case(await load_case(uow.conn, command.case_id))
    await _ensure_open(uow, before.compliance_year)
    change = before.select(by="bureau", reason=command.reason, at=uow.now)
    after = await _apply(uow, before, change, by=command.by)
    return await _changed(uow, after, [uow.record(_selected(after, uow.now))])


async def finalise(uow: UnitOfWork, command: FinaliseCase) -> ChangedCase:
    """An approved case not selected: its verified figure is final (`verification.finalised`)."""
    before = store.to_case(await load_case(uow.conn, command.case_id))
    await _ensure_open(uow, before.compliance_year)
    after = await _apply(uow, before, before.finalise(at=uow.now), by=command.by)
    return await _changed(uow, after, [uow.record(await _finalised(uow, after))])


async def apply_selection_rule(uow: UnitOfWork, command: YearCommand) -> Selection:
    """The policy's rule over every approved case of the year: selected for re-verification
    when the verified figure differs from the reported one by more than the ratio, or when the
    deterministic sample draws it; every other one is final."""
    policy, year = uow.policy, command.compliance_year
    policy.ensure_year(year)
    await _ensure_open(uow, year)
    selected: list[UUID] = []
    finalised: list[UUID] = []
    events: list[Outgoing] = []
    for row in await store.list_cases(uow.conn, compliance_year=year, status="approved"):
        before = store.to_case(row)
        reason = selected_by_rule(before, policy.verification.reverification)
        if reason is not None:
            change = before.select(by="rule", reason=reason, at=uow.now)
        else:
            change = before.finalise(at=uow.now)
        if not await _saved(uow, before, change, by=command.by):
            continue  # changed by another request meanwhile (e.g. selected by hand)
        if reason is not None:
            selected.append(before.case_id)
            events.append(uow.record(_selected(change.case, uow.now)))
        else:
            finalised.append(before.case_id)
            events.append(uow.record(await _finalised(uow, change.case)))
    return Selection(
        compliance_year=year,
        selected=selected,
        finalised=finalised,
        event_ids=[event.event_id for event in events],
    )


def _selected(case: Case, at: datetime) -> ReverificationSelected:
    assert case.selected_by is not None and case.selection_reason is not None
    return ReverificationSelected(
        credit_code=case.credit_code,
        compliance_year=case.compliance_year,
        case_id=case.case_id,
        report_id=_report_id(case),
        selected_by=case.selected_by,
        reason=case.selection_reason,
        first_verified_emissions=case.verified_emissions,
        selected_at=at,
    )


async def _finalised(uow: UnitOfWork, case: Case) -> VerificationFinalised:
    """The final figure with the outputs of the round that made it (as reported when the agency
    verified none; none for a determination)."""
    assert case.final_basis is not None
    kept = await store.get_outputs(uow.conn, case_id=str(case.case_id))
    outputs = kept.get(case.final_basis, kept.get(f"report-{case.report_version}", []))
    return VerificationFinalised(
        credit_code=case.credit_code,
        compliance_year=case.compliance_year,
        case_id=case.case_id,
        report_id=case.report_id,
        basis=case.final_basis,
        verified_emissions=case.final_emissions,
        finalised_at=uow.now,
        outputs=[ProductionOutput.model_validate(output) for output in outputs],
    )


# --- the year ---------------------------------------------------------------------------------


async def close_year(uow: UnitOfWork, command: YearCommand) -> YearClosure:
    """Once every case of the year is final and every entity on the roster has one, the Bureau
    closes the year's verification (`verification.closed`); nothing of it changes after."""
    policy, year = uow.policy, command.compliance_year
    policy.ensure_year(year)
    await _ensure_open(uow, year, code="already_closed")
    refusal = closing_refusal(
        year,
        cases_by_status=await store.cases_by_status(uow.conn, compliance_year=year),
        without_case=await store.rostered_without_case(uow.conn, compliance_year=year),
    )
    if refusal is not None:
        raise refusal
    final = await store.list_cases(uow.conn, compliance_year=year, status="final")
    total = sum((row.final_emissions for row in final), start=_ZERO)
    await store.close_year(
        uow.conn,
        compliance_year=year,
        policy=policy.cycle,
        cases=len(final),
        total_verified_emissions=total,
        closed_by=command.by,
        at=uow.now,
    )
    event = uow.record(
        VerificationClosed(
            policy=policy.cycle,
            compliance_year=year,
            cases=len(final),
            total_verified_emissions=total,
            closed_at=uow.now,
        )
    )
    return YearClosure(
        compliance_year=year,
        policy=policy.cycle,
        cases=len(final),
        total_verified_emissions=total,
        closed_at=uow.now,
        event_id=event.event_id,
    )


async def year_view(conn: Any, policy: Policy, year: int) -> YearView:
    policy.ensure_year(year)
    by_status = await store.cases_by_status(conn, compliance_year=year)
    closure = await store.get_closure(conn, compliance_year=year)
    return YearView(
        compliance_year=year,
        closed=closure is not None,
        closed_at=closure.closed_at if closure else None,
        rostered=await store.count_rostered(conn, compliance_year=year),
        cases=sum(by_status.values()),
        cases_by_status={status: by_status.get(status, 0) for status in STATUSES},
        without_case=len(await store.rostered_without_case(conn, compliance_year=year)),
    )


async def _ensure_open(uow: UnitOfWork, year: int, *, code: str = "year_closed") -> None:
    closure = await store.get_closure(uow.conn, compliance_year=year)
    if closure is not None:
        raise Conflict(
            code, f"verification of {year} was closed at {closure.closed_at.isoformat()}"
        )


# --- loading, saving, views -------------------------------------------------------------------


async def load_case(conn: Any, case_id: str) -> Any:
    row = await store.get_case(conn, case_id=case_id)
    if row is None:
        raise NotFound("unknown_case", f"no verification case {case_id}")
    return row


def owner_of(row: Any) -> Owner:
    """Whom a case belongs to: its entity, the entity's district, the agency at work."""
    return Owner(credit_code=row.credit_code, district=row.district, agency=row.agency_id)


def readers_of(row: Any) -> list[Owner]:
    """Who may read a case: its owner, and the agency of its first round, which keeps seeing
    the case it verified once a second agency re-verifies it."""
    owners = [owner_of(row)]
    if row.first_agency_id and row.first_agency_id != row.agency_id:
        owners.append(replace(owners[0], agency=row.first_agency_id))
    return owners


async def _saved(uow: UnitOfWork, before: Case, change: Change, *, by: str) -> bool:
    """Save the change with its audit line; False (nothing written) when the case changed
    since `before` was read."""
    if not await store.save_case(uow.conn, before=before, after=change.case):
        return False
    await _history(
        uow,
        change.case,
        by=by,
        action=change.action,
        from_status=before.status,
        reason=change.reason,
    )
    return True


async def _apply(uow: UnitOfWork, before: Case, change: Change, *, by: str) -> Case:
    if not await _saved(uow, before, change, by=by):
        raise Conflict(
            "case_changed", f"case {before.case_id} changed meanwhile: read it again and retry"
        )
    return change.case


async def _history(
    uow: UnitOfWork,
    case: Case,
    *,
    by: str,
    action: str,
    from_status: str | None,
    reason: str | None,
) -> None:
    await store.add_history(
        uow.conn,
        case_id=case.case_id,
        at=uow.now,
        by=by,
        action=action,
        from_status=from_status,
        to_status=case.status,
        reason=reason,
    )


async def _changed(uow: UnitOfWork, case: Case, events: list[Outgoing]) -> ChangedCase:
    detail = await case_detail(uow.conn, await load_case(uow.conn, str(case.case_id)), uow.policy)
    return ChangedCase(**dict(detail), event_ids=[event.event_id for event in events])


async def case_detail(conn: Any, row: Any, policy: Policy) -> CaseDetail:
    view = case_view(store.to_case(row), row.district, row.sector, policy)
    history = [
        HistoryEntry(
            at=entry.at,
            by=entry.by,
            action=entry.action,
            from_status=entry.from_status,
            to_status=entry.to_status,
            reason=entry.reason,
        )
        for entry in await store.get_history(conn, case_id=row.case_id)
    ]
    return CaseDetail(**dict(view), history=history)


def case_view(case: Case, district: str | None, sector: str | None, policy: Policy) -> CaseView:
    lot_id = case.lot_id
    if lot_id is None and district is not None and sector is not None and case.status != "final":
        lot = policy.verification.lot_for(case.round, sector=sector, district=district)
        lot_id = lot.id if lot else None
    latest = case.latest_verified
    reported = case.reported_emissions
    visit, revisit = case.verification_visit, case.reverification_visit
    return CaseView(
        case_id=case.case_id,
        report_id=case.report_id,
        determination_id=case.determination_id,
        credit_code=case.credit_code,
        compliance_year=case.compliance_year,
        district=district,
        sector=sector,
        status=case.status,
        round=case.round,
        lot_id=lot_id,
        agency_id=case.agency_id,
        first_agency_id=case.first_agency_id,
        report_version=case.report_version,
        reported_emissions=reported,
        verified_emissions=case.verified_emissions,
        reverified_emissions=case.reverified_emissions,
        difference=latest - reported if latest is not None and reported is not None else None,
        final_emissions=case.final_emissions,
        final_basis=case.final_basis,
        selected_by=case.selected_by,
        selection_reason=case.selection_reason,
        contact=(
            ContactView(name=case.contact_name, phone=case.contact_phone)
            if case.contact_name and case.contact_phone
            else None
        ),
        verification_visit=SiteVisitView(visited_on=visit.visited_on, findings=visit.findings)
        if visit
        else None,
        reverification_visit=SiteVisitView(visited_on=revisit.visited_on, findings=revisit.findings)
        if revisit
        else None,
        verification_outside_window=case.verification_outside_window,
        reverification_outside_window=case.reverification_outside_window,
        opened_at=case.opened_at,
        assigned_at=case.assigned_at,
        returned_at=case.returned_at,
        approved_at=case.approved_at,
        selected_at=case.selected_at,
        reverified_at=case.reverified_at,
        finalised_at=case.finalised_at,
    )


def _version(case: Case) -> int:
    assert case.report_version is not None, f"case {case.case_id} has no report"
    return case.report_version


def _report_id(case: Case) -> UUID:
    # Only a report's case is assigned, verified or selected: a determination is final at once.
    assert case.report_id is not None, f"case {case.case_id} has no report"
    return case.report_id
