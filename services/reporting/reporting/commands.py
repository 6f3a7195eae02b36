"""The reporting system's commands and event handlers: each a function over a unit of work that
loads state, applies the domain rules and records the events it causes. No HTTP, no Kafka.

Every transition is a conditional update on the state the domain saw (409 when another request
changed it first) and a row of the audit trail (who, when, why, and the event it published).

Each rostered entity of the cycle is bound by two obligations with deadlines (the monitoring plan
and the report, carbon_platform.obligations): it is enrolled when it is rostered (one rostered
before the deadlines were watched, by `backfill` at the watcher's start), and the plan and report
commands record its progress in the same unit of work as their change."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from carbon_contracts.errors import Conflict, Invalid, NotFound
from carbon_contracts.events import (
    EmissionsDetermined,
    EntityRegistered,
    MonitoringPlanApproved,
    MonitoringPlanOutput,
    MonitoringPlanReturned,
    MonitoringPlanSource,
    MonitoringPlanSubmitted,
    PaperCopyReceived,
    ProcessLine,
    ProductionOutput,
    ReportAccepted,
    ReportLine,
    ReportReturned,
    ReportSubmitted,
    VerificationReturned,
)
from carbon_contracts.policy import Policy
from carbon_emissions.calculation import FactorTable
from carbon_emissions.lines import ActivityInput, ContractLines, compute_with_policy, inputs_of
from carbon_platform import obligations
from carbon_platform.codec import Event
from carbon_platform.context import Handler, UnitOfWork
from reporting import store
from reporting.domain.plan import Plan, check_contents, plan_year_of
from reporting.domain.report import Report, ReturnedBy, check_products, is_late
from reporting.schemas import (
    AcceptReport,
    CorrectReport,
    DecidePlan,
    DeterminationChange,
    DeterminationView,
    Determine,
    EditDraft,
    PaperCopyView,
    PlanChange,
    PlanDetail,
    PlanVersionView,
    PlanView,
    RecordPaperCopy,
    ReportChange,
    ReportDetail,
    ReportVersionView,
    ReportView,
    ResubmitPlan,
    ReturnReport,
    SubmitDraft,
    SubmitPlan,
    SubmitReport,
    TransitionView,
)

log = logging.getLogger(__name__)


# --- monitoring plans -------------------------------------------------------------------------


async def submit_plan(uow: UnitOfWork, command: SubmitPlan) -> PlanChange:
    """The entity submits its monitoring plan for the year the policy names (online only; late
    is accepted and flagged)."""
    policy, code = uow.policy, command.credit_code
    plan_year = plan_year_of(policy, command.plan_year)
    check_contents(command.sources, command.outputs, FactorTable.from_policy(policy))
    await _rostered(uow, code, policy.compliance_year)
    if found := await store.find_plan(uow.conn, credit_code=code, plan_year=plan_year):
        raise Conflict(
            "already_submitted",
            f"{code} already submitted its {plan_year} monitoring plan {found.plan_id}; a "
            f"returned plan is submitted again at /monitoring-plans/{found.plan_id}/versions",
        )
    plan_id = uuid4()
    late = is_late(uow.now, policy.deadlines.monitoring_plan)
    await store.add_plan(
        uow.conn,
        plan_id=str(plan_id),
        credit_code=code,
        compliance_year=policy.compliance_year,
        plan_year=plan_year,
        late=late,
        at=uow.now,
    )
    change = await _plan_version_submitted(
        uow,
        Plan(plan_id, code, plan_year, "submitted", 1),
        sources=command.sources,
        outputs=command.outputs,
        late=late,
        by=command.submitted_by,
        from_status=None,
    )
    # The first submission meets the obligation; a later return does not reopen it.
    await obligations.complete(
        uow, store.obligation_tables, credit_code=code, obligation=MONITORING_PLAN, at=uow.now
    )
    return change


async def resubmit_plan(uow: UnitOfWork, command: ResubmitPlan) -> PlanChange:
    """A returned plan comes back as a new version."""
    check_contents(command.sources, command.outputs, FactorTable.from_policy(uow.policy))
    row = await _plan_row(uow, command.plan_id)
    before = _plan(row)
    after = before.resubmit()
    if not await store.transition_plan(
        uow.conn,
        plan_id=row.plan_id,
        from_status=before.status,
        from_version=before.version,
        status=after.status,
        version=after.version,
    ):
        raise _plan_changed(command.plan_id)
    return await _plan_version_submitted(
        uow,
        after,
        sources=command.sources,
        outputs=command.outputs,
        late=row.late,
        by=command.submitted_by,
        from_status=before.status,
    )


async def _plan_version_submitted(
    uow: UnitOfWork,
    plan: Plan,
    *,
    sources: list[MonitoringPlanSource],
    outputs: list[MonitoringPlanOutput],
    late: bool,
    by: str,
    from_status: str | None,
) -> PlanChange:
    await store.add_plan_version(
        uow.conn,
        plan_id=str(plan.plan_id),
        version=plan.version,
        sources=sources,
        outputs=outputs,
        submitted_by=by,
        at=uow.now,
    )
    event = uow.record(
        MonitoringPlanSubmitted(
            credit_code=plan.credit_code,
            compliance_year=uow.policy.compliance_year,
            plan_id=plan.plan_id,
            plan_year=plan.plan_year,
            version=plan.version,
            sources=sources,
            outputs=outputs,
            late=late,
            submitted_at=uow.now,
        )
    )
    await _trail(
        uow,
        "plan",
        plan.plan_id,
        plan.version,
        "submitted",
        from_status,
        "submitted",
        by,
        event_id=event.event_id,
    )
    return await _plan_change(uow, plan.plan_id, event.event_id)


async def decide_plan(uow: UnitOfWork, command: DecidePlan) -> PlanChange:
    """The Bureau (or the technical centre for it) approves the latest version, or returns it
    with a reason."""
    row = await _plan_row(uow, command.plan_id)
    before = _plan(row)
    after = before.decide(command.version, command.decision)
    version = before.version  # the one decided
    decided = await store.decide_plan_version(
        uow.conn,
        plan_id=row.plan_id,
        version=version,
        decision=command.decision,
        reason=command.reason if command.decision == "returned" else None,
        decided_by=command.decided_by,
        at=uow.now,
    )
    if not decided or not await store.transition_plan(
        uow.conn,
        plan_id=row.plan_id,
        from_status=before.status,
        from_version=before.version,
        status=after.status,
        version=after.version,
    ):
        raise _plan_changed(command.plan_id)
    common = {
        "credit_code": row.credit_code,
        "compliance_year": row.compliance_year,
        "plan_id": command.plan_id,
        "plan_year": row.plan_year,
        "version": version,
    }
    if command.decision == "approved":
        event = uow.record(MonitoringPlanApproved(**common, approved_at=uow.now))
    else:
        event = uow.record(
            MonitoringPlanReturned(**common, reason=command.reason or "", returned_at=uow.now)
        )
    await _trail(
        uow,
        "plan",
        command.plan_id,
        version,
        "approved" if command.decision == "approved" else "returned",
        before.status,
        after.status,
        command.decided_by,
        reason=command.reason,
        event_id=event.event_id,
    )
    return await _plan_change(uow, command.plan_id, event.event_id)


async def _plan_row(uow: UnitOfWork, plan_id: UUID) -> Any:
    row = await store.get_plan(uow.conn, plan_id=str(plan_id))
    if row is None:
        raise NotFound("unknown_plan", f"no monitoring plan {plan_id}")
    return row


def _plan(row: Any) -> Plan:
    return Plan(UUID(row.plan_id), row.credit_code, row.plan_year, row.status, row.version)


def _plan_changed(plan_id: UUID) -> Conflict:
    return Conflict("plan_changed", f"monitoring plan {plan_id} was changed meanwhile")


async def _plan_change(uow: UnitOfWork, plan_id: UUID, event_id: str) -> PlanChange:
    view = plan_view(await _plan_row(uow, plan_id))
    return PlanChange(**dict(view), event_id=event_id)


def plan_view(row: Any) -> PlanView:
    return PlanView(
        plan_id=row.plan_id,
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        plan_year=row.plan_year,
        district=row.district,
        sector=row.sector,
        status=row.status,
        version=row.version,
        late=row.late,
        first_submitted_at=row.first_submitted_at,
        sources=store.loads(row.sources),
        outputs=store.loads(row.outputs),
    )


def plan_detail(row: Any, versions: list[Any], trail: list[Any]) -> PlanDetail:
    return PlanDetail(
        **dict(plan_view(row)),
        versions=[
            PlanVersionView(
                version=version.version,
                sources=store.loads(version.sources),
                outputs=store.loads(version.outputs),
                submitted_at=version.submitted_at,
                decision=version.decision,
                decided_at=version.decided_at,
                reason=version.reason,
            )
            for version in versions
        ],
        history=[transition_view(step) for step in trail],
    )


# --- reports ----------------------------------------------------------------------------------


async def submit_report(uow: UnitOfWork, command: SubmitReport) -> ReportChange:
    """A covered entity submits its annual report as activity lines (or keeps it as a draft);
    the total is computed from the policy's factor table, never typed."""
    policy = uow.policy
    code, year = command.credit_code, command.compliance_year
    _this_cycle(policy, year, "reports")
    contents = _compute(command.lines, policy)
    _check_outputs(command.outputs)
    await _rostered(uow, code, year)
    if found := await store.find_report(uow.conn, credit_code=code, compliance_year=year):
        if found.status == "draft":
            raise Conflict(
                "draft_exists",
                f"{code} has a draft {year} report {found.report_id}: edit it at "
                f"/reports/{found.report_id}/draft and submit it at "
                f"/reports/{found.report_id}/submit",
            )
        raise Conflict(
            "already_submitted",
            f"{code} already submitted its {year} report {found.report_id}; a correction is a "
            f"new version at /reports/{found.report_id}/versions",
        )
    await _not_determined(uow, code, year)
    report_id = uuid4()
    status = "draft" if command.draft else "submitted"
    late = None if command.draft else is_late(uow.now, policy.deadlines.report)
    if not command.draft:
        await _claim_for_report(uow, code, year)
    await store.add_report(
        uow.conn,
        report_id=str(report_id),
        credit_code=code,
        compliance_year=year,
        status=status,
        late=late,
        created_by=command.submitted_by,
        at=uow.now,
    )
    await store.add_report_version(
        uow.conn,
        report_id=str(report_id),
        version=1,
        factor_table=contents.factor_table,
        lines=contents.lines,
        process_lines=contents.process_lines,
        outputs=command.outputs,
        total_emissions=contents.total,
        submitted_by=None if command.draft else command.submitted_by,
        submitted_at=None if command.draft else uow.now,
    )
    if command.draft:
        await _trail(uow, "report", report_id, 1, "drafted", None, "draft", command.submitted_by)
        return await _report_change(uow, report_id, None)
    event = _report_submitted(uow, code, year, report_id, 1, contents, command.outputs, late)
    await _trail(
        uow,
        "report",
        report_id,
        1,
        "submitted",
        None,
        "submitted",
        command.submitted_by,
        event_id=event.event_id,
    )
    await _report_obligation(uow, report_id)
    return await _report_change(uow, report_id, event.event_id)


async def edit_draft(uow: UnitOfWork, command: EditDraft) -> ReportChange:
    """The entity rewrites its draft; nothing is published until it submits it."""
    contents = _compute(command.lines, uow.policy)
    _check_outputs(command.outputs)
    row = await _report_row(uow, command.report_id)
    _report(row).edit_draft()
    if not await store.rewrite_draft(
        uow.conn,
        report_id=row.report_id,
        factor_table=contents.factor_table,
        lines=contents.lines,
        process_lines=contents.process_lines,
        outputs=command.outputs,
        total_emissions=contents.total,
    ):
        raise _report_changed(command.report_id)
    await _trail(uow, "report", command.report_id, 1, "edited", "draft", "draft", command.edited_by)
    return await _report_change(uow, command.report_id, None)


async def submit_draft(uow: UnitOfWork, command: SubmitDraft) -> ReportChange:
    """The entity submits its draft as version 1, recomputed with the factor table in force."""
    policy = uow.policy
    row = await _report_row(uow, command.report_id)
    before = _report(row)
    after = before.submit_draft()
    await _not_determined(uow, row.credit_code, row.compliance_year)
    lines = [ReportLine.model_validate(line) for line in store.loads(row.lines)]
    process = [ProcessLine.model_validate(line) for line in store.loads(row.process_lines)]
    contents = _compute(inputs_of(lines, process), policy)
    outputs = [ProductionOutput.model_validate(output) for output in store.loads(row.outputs)]
    late = is_late(uow.now, policy.deadlines.report)
    await _claim_for_report(uow, row.credit_code, row.compliance_year)
    submitted = await store.rewrite_draft(
        uow.conn,
        report_id=row.report_id,
        factor_table=contents.factor_table,
        lines=contents.lines,
        process_lines=contents.process_lines,
        outputs=outputs,
        total_emissions=contents.total,
        submitted_by=command.submitted_by,
        submitted_at=uow.now,
    )
    if not submitted or not await store.transition_report(
        uow.conn,
        report_id=row.report_id,
        from_status=before.status,
        from_version=before.version,
        status=after.status,
        late=late,
        first_submitted_at=uow.now,
    ):
        raise _report_changed(command.report_id)
    event = _report_submitted(
        uow, row.credit_code, row.compliance_year, command.report_id, 1, contents, outputs, late
    )
    await _trail(
        uow,
        "report",
        command.report_id,
        1,
        "submitted",
        "draft",
        "submitted",
        command.submitted_by,
        event_id=event.event_id,
    )
    await _report_obligation(uow, command.report_id)
    return await _report_change(uow, command.report_id, event.event_id)


async def correct_report(uow: UnitOfWork, command: CorrectReport) -> ReportChange:
    """A correction after submission: a new version with a reason, of a submitted or returned
    report (an accepted one is returned first). Verification works on the latest version."""
    contents = _compute(command.lines, uow.policy)
    _check_outputs(command.outputs)
    row = await _report_row(uow, command.report_id)
    before = _report(row)
    after = before.correct()
    await store.add_report_version(
        uow.conn,
        report_id=row.report_id,
        version=after.version,
        factor_table=contents.factor_table,
        lines=contents.lines,
        process_lines=contents.process_lines,
        outputs=command.outputs,
        total_emissions=contents.total,
        correction_reason=command.reason,
        submitted_by=command.submitted_by,
        submitted_at=uow.now,
    )
    if not await store.transition_report(
        uow.conn,
        report_id=row.report_id,
        from_status=before.status,
        from_version=before.version,
        status=after.status,
        version=after.version,
    ):
        raise _report_changed(command.report_id)
    event = _report_submitted(
        uow,
        row.credit_code,
        row.compliance_year,
        command.report_id,
        after.version,
        contents,
        command.outputs,
        row.late,
        correction_reason=command.reason,
    )
    await _trail(
        uow,
        "report",
        command.report_id,
        after.version,
        "corrected",
        before.status,
        after.status,
        command.submitted_by,
        reason=command.reason,
        event_id=event.event_id,
    )
    return await _report_change(uow, command.report_id, event.event_id)


async def return_report(uow: UnitOfWork, command: ReturnReport) -> ReportChange:
    """The Bureau returns the latest version to the entity for correction, with a reason."""
    row = await _report_row(uow, command.report_id)
    event_id = await _give_back(
        uow,
        row,
        command.version,
        by="bureau",
        actor=command.returned_by,
        reason=command.reason,
        at=uow.now,
    )
    return await _report_change(uow, command.report_id, event_id)


async def record_paper_copy(uow: UnitOfWork, command: RecordPaperCopy) -> ReportChange:
    """The Bureau records the day the sealed paper copy arrived and how; once per report."""
    policy = uow.policy
    row = await _report_row(uow, command.report_id)
    report = _report(row)
    today = uow.now.astimezone(ZoneInfo(policy.timezone)).date()
    report.record_paper_copy(command.received_on, today=today, required=policy.report.paper_copy)
    if not await store.record_paper_copy(
        uow.conn,
        report_id=row.report_id,
        received_on=command.received_on,
        delivery=command.delivery,
        recorded_by=command.recorded_by,
        at=uow.now,
    ):
        raise _report_changed(command.report_id)
    event = uow.record(
        PaperCopyReceived(
            credit_code=row.credit_code,
            compliance_year=row.compliance_year,
            report_id=command.report_id,
            received_on=command.received_on,
            delivery=command.delivery,
            recorded_at=uow.now,
        )
    )
    await _trail(
        uow,
        "report",
        command.report_id,
        report.version,
        "paper_copy_received",
        report.status,
        report.status,
        command.recorded_by,
        event_id=event.event_id,
    )
    await _report_obligation(uow, command.report_id)
    return await _report_change(uow, command.report_id, event.event_id)


async def accept_report(uow: UnitOfWork, command: AcceptReport) -> ReportChange:
    """The Bureau accepts the latest version: submitted online and, when the policy asks for
    it, received on paper."""
    row = await _report_row(uow, command.report_id)
    before = _report(row)
    after = before.accept(command.version, paper_copy_required=uow.policy.report.paper_copy)
    if not await store.transition_report(
        uow.conn,
        report_id=row.report_id,
        from_status=before.status,
        from_version=before.version,
        status=after.status,
        accepted_version=after.version,
        accepted_by=command.accepted_by,
        accepted_at=uow.now,
    ):
        raise _report_changed(command.report_id)
    event = uow.record(
        ReportAccepted(
            credit_code=row.credit_code,
            compliance_year=row.compliance_year,
            report_id=command.report_id,
            version=after.version,
            total_emissions=row.total_emissions,
            accepted_at=uow.now,
        )
    )
    await _trail(
        uow,
        "report",
        command.report_id,
        after.version,
        "accepted",
        before.status,
        after.status,
        command.accepted_by,
        event_id=event.event_id,
    )
    return await _report_change(uow, command.report_id, event.event_id)


async def _give_back(
    uow: UnitOfWork,
    row: Any,
    version: int | None,
    *,
    by: ReturnedBy,
    actor: str,
    reason: str,
    at: datetime,
) -> str:
    before = _report(row)
    after = before.give_back(version)
    if not await store.transition_report(
        uow.conn,
        report_id=row.report_id,
        from_status=before.status,
        from_version=before.version,
        status=after.status,
    ):
        raise _report_changed(before.report_id)
    event = uow.record(
        ReportReturned(
            credit_code=row.credit_code,
            compliance_year=row.compliance_year,
            report_id=before.report_id,
            version=before.version,
            returned_by=by,
            reason=reason,
            returned_at=at,
        )
    )
    await _trail(
        uow,
        "report",
        before.report_id,
        before.version,
        "returned",
        before.status,
        after.status,
        actor,
        reason=reason,
        event_id=event.event_id,
        at=at,
    )
    return event.event_id


def _report_submitted(
    uow: UnitOfWork,
    code: str,
    year: int,
    report_id: UUID,
    version: int,
    contents: ContractLines,
    outputs: list[ProductionOutput],
    late: bool | None,
    *,
    correction_reason: str | None = None,
) -> Any:
    return uow.record(
        ReportSubmitted(
            credit_code=code,
            compliance_year=year,
            report_id=report_id,
            factor_table=contents.factor_table,
            lines=contents.lines,
            total_emissions=contents.total,
            submitted_at=uow.now,
            version=version,
            correction_reason=correction_reason,
            late=late,
            process_lines=contents.process_lines,
            outputs=outputs,
        )
    )


async def _report_row(uow: UnitOfWork, report_id: UUID) -> Any:
    row = await store.get_report(uow.conn, report_id=str(report_id))
    if row is None:
        raise NotFound("unknown_report", f"no report {report_id}")
    return row


def _report(row: Any) -> Report:
    return Report(
        report_id=UUID(row.report_id),
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        status=row.status,
        version=row.version,
        paper_copy_received=row.paper_copy_received_on is not None,
    )


def _report_changed(report_id: UUID) -> Conflict:
    return Conflict("report_changed", f"report {report_id} was changed meanwhile")


async def _claim_for_report(uow: UnitOfWork, code: str, year: int) -> None:
    """The database's guard that a report and a determination never both make the figure."""
    if not await store.claim_filing(
        uow.conn, credit_code=code, compliance_year=year, filing="report"
    ):
        await _not_determined(uow, code, year)
        raise Conflict("already_submitted", f"{code} already submitted its {year} report")


async def _not_determined(uow: UnitOfWork, code: str, year: int) -> None:
    if found := await store.find_determination(uow.conn, credit_code=code, compliance_year=year):
        raise Conflict(
            "emissions_determined",
            f"the Bureau determined {code}'s {year} emissions ({found.determination_id}): no "
            "report is taken any more",
        )


async def _report_change(uow: UnitOfWork, report_id: UUID, event_id: str | None) -> ReportChange:
    view = report_view(await _report_row(uow, report_id), uow.policy)
    return ReportChange(**dict(view), event_id=event_id)


def report_view(row: Any, policy: Policy) -> ReportView:
    return ReportView(
        report_id=row.report_id,
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        district=row.district,
        sector=row.sector,
        status=row.status,
        version=row.version,
        late=row.late,
        first_submitted_at=row.first_submitted_at,
        paper_copy=(
            PaperCopyView(
                received_on=row.paper_copy_received_on,
                delivery=row.paper_copy_delivery,
                recorded_at=row.paper_copy_recorded_at,
            )
            if row.paper_copy_received_on is not None
            else None
        ),
        complete=_report(row).is_complete(paper_copy_required=policy.report.paper_copy),
        accepted_version=row.accepted_version,
        factor_table=row.factor_table,
        lines=store.loads(row.lines),
        process_lines=store.loads(row.process_lines),
        outputs=store.loads(row.outputs),
        total_emissions=row.total_emissions,
        submitted_at=row.submitted_at,
        correction_reason=row.correction_reason,
    )


def report_detail(row: Any, policy: Policy, versions: list[Any], trail: list[Any]) -> ReportDetail:
    return ReportDetail(
        **dict(report_view(row, policy)),
        versions=[
            ReportVersionView(
                version=version.version,
                factor_table=version.factor_table,
                lines=store.loads(version.lines),
                process_lines=store.loads(version.process_lines),
                outputs=store.loads(version.outputs),
                total_emissions=version.total_emissions,
                submitted_at=version.submitted_at,
                correction_reason=version.correction_reason,
            )
            for version in versions
        ],
        history=[transition_view(step) for step in trail],
    )


def transition_view(row: Any) -> TransitionView:
    return TransitionView(
        version=row.version,
        action=row.action,
        from_status=row.from_status,
        to_status=row.to_status,
        by=row.actor,
        at=row.at,
        reason=row.reason,
        event_id=row.event_id,
    )


# --- regulator determinations -----------------------------------------------------------------


async def determine(uow: UnitOfWork, command: Determine) -> DeterminationChange:
    """No report came by the deadline: the Bureau determines the entity's emissions itself, from
    activity lines and with a reason. The figure is final; no report is taken afterwards."""
    policy = uow.policy
    code, year = command.credit_code, command.compliance_year
    _this_cycle(policy, year, "determinations")
    contents = _compute(command.lines, policy, for_a_report=False)
    await _rostered(uow, code, year)
    if not is_late(uow.now, policy.deadlines.report):
        raise Conflict(
            "before_deadline",
            f"the {year} report deadline ({policy.deadlines.report.isoformat()}) has not passed: "
            f"{code} may still report",
        )
    found = await store.find_report(uow.conn, credit_code=code, compliance_year=year)
    if found is not None and found.status != "draft":
        raise Conflict("report_exists", f"{code} submitted its {year} report {found.report_id}")
    if await store.find_determination(uow.conn, credit_code=code, compliance_year=year):
        raise Conflict("already_determined", f"{code}'s {year} emissions are already determined")
    if not await store.claim_filing(
        uow.conn, credit_code=code, compliance_year=year, filing="determination"
    ):
        raise Conflict("report_exists", f"{code} submitted its {year} report meanwhile")
    determination_id = uuid4()
    await store.add_determination(
        uow.conn,
        determination_id=str(determination_id),
        credit_code=code,
        compliance_year=year,
        factor_table=contents.factor_table,
        lines=contents.lines,
        process_lines=contents.process_lines,
        total_emissions=contents.total,
        reason=command.reason,
        determined_by=command.determined_by,
        at=uow.now,
    )
    event = uow.record(
        EmissionsDetermined(
            credit_code=code,
            compliance_year=year,
            determination_id=determination_id,
            factor_table=contents.factor_table,
            lines=contents.lines,
            process_lines=contents.process_lines,
            total_emissions=contents.total,
            reason=command.reason,
            determined_at=uow.now,
        )
    )
    row = await store.get_determination(uow.conn, determination_id=str(determination_id))
    return DeterminationChange(**dict(determination_view(row)), event_id=event.event_id)


def determination_view(row: Any) -> DeterminationView:
    return DeterminationView(
        determination_id=row.determination_id,
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        district=row.district,
        sector=row.sector,
        factor_table=row.factor_table,
        lines=store.loads(row.lines),
        process_lines=store.loads(row.process_lines),
        total_emissions=row.total_emissions,
        reason=row.reason,
        determined_at=row.determined_at,
    )


# --- shared checks ----------------------------------------------------------------------------


def _this_cycle(policy: Policy, year: int, what: str) -> None:
    """One policy file is one cycle: its deadlines and factor table are for its year only."""
    if year != policy.compliance_year:
        raise Invalid(
            "wrong_compliance_year",
            f"the {policy.cycle} cycle takes {what} for compliance year "
            f"{policy.compliance_year}, not {year}",
        )


def _compute(
    lines: list[ActivityInput], policy: Policy, *, for_a_report: bool = True
) -> ContractLines:
    contents = compute_with_policy(lines, policy)
    if for_a_report and not contents.lines:
        # report.submitted v1 carries at least one fuel, electricity or heat line.
        raise Invalid(
            "invalid_activity",
            "a report has at least one fuel, electricity or heat line besides its process lines",
        )
    return contents


def _check_outputs(outputs: list[ProductionOutput]) -> None:
    check_products(output.product for output in outputs)


async def _rostered(uow: UnitOfWork, code: str, year: int) -> Any:
    rostered = await store.get_rostered(uow.conn, credit_code=code, compliance_year=year)
    if rostered is None:
        raise NotFound("unknown_entity", f"{code} is not a registered covered entity for {year}")
    return rostered


async def _trail(
    uow: UnitOfWork,
    kind: str,
    subject_id: UUID,
    version: int,
    action: str,
    from_status: str | None,
    to_status: str,
    actor: str,
    *,
    reason: str | None = None,
    event_id: str | None = None,
    at: datetime | None = None,
) -> None:
    await store.add_transition(
        uow.conn,
        kind=kind,
        subject_id=str(subject_id),
        version=version,
        action=action,
        from_status=from_status,
        to_status=to_status,
        actor=actor,
        at=at or uow.now,
        reason=reason,
        event_id=event_id,
    )


# --- obligations with deadlines ---------------------------------------------------------------

MONITORING_PLAN = "monitoring_plan"
REPORT = "report"
REPORT_WITHOUT_PAPER_COPY = "report submitted, paper copy not received"
PAPER_COPY_WITHOUT_REPORT = "paper copy received; report not submitted"


def plan_missing(policy: Policy) -> str:
    """What an enrolled entity lacks for its monitoring plan: the plan of the policy's plan
    year."""
    return f"no {policy.monitoring_plan.year} monitoring plan submitted"


def report_missing(policy: Policy) -> str:
    """What an enrolled entity lacks for its report: the online submission and, when the policy
    asks for one, the paper copy."""
    missing = f"{policy.compliance_year} emissions report not submitted"
    return f"{missing}; paper copy not received" if policy.report.paper_copy else missing


async def _enroll(uow: UnitOfWork, registered: EntityRegistered) -> None:
    """An entity on the cycle's roster is bound by its monitoring plan and its report (once;
    overdue at once when rostered after a deadline)."""
    for obligation, missing in (
        (MONITORING_PLAN, plan_missing(uow.policy)),
        (REPORT, report_missing(uow.policy)),
    ):
        await obligations.enroll(
            uow,
            store.obligation_tables,
            credit_code=registered.credit_code,
            obligation=obligation,
            name=registered.name,
            district=registered.district,
            missing=missing,
        )


def report_standing(
    policy: Policy, *, submitted_at: datetime | None, paper_at: datetime | None
) -> datetime | str:
    """Where an entity's report obligation stands, from the instants its report was first
    submitted online and its paper copy recorded: the instant it was met (the later of the two;
    the online submission alone when the policy asks for no paper copy), or what is missing."""
    if not policy.report.paper_copy:
        paper_at = submitted_at  # no paper copy asked for: the online submission is all
    if submitted_at is not None and paper_at is not None:
        return max(submitted_at, paper_at)
    # One half is in. (A paper copy is taken only of a submitted report, so today the second
    # text never shows; it is kept should the Bureau record paper before the online copy.)
    if submitted_at is not None:
        return REPORT_WITHOUT_PAPER_COPY
    if paper_at is not None:
        return PAPER_COPY_WITHOUT_REPORT
    return report_missing(policy)


async def _report_obligation(uow: UnitOfWork, report_id: UUID) -> None:
    """Where the entity's report obligation stands after its report changed (report_standing):
    met, on time iff before the deadline; until then its missing text says which half is still
    to come."""
    row = await _report_row(uow, report_id)
    if row.compliance_year != uow.policy.compliance_year:
        return  # an earlier cycle's report: that cycle's obligation, not this one's
    submitted_at, paper_at = row.first_submitted_at, row.paper_copy_recorded_at
    if submitted_at is None and paper_at is None:
        return  # nothing in yet: the enrolment's text stands
    tables, code = store.obligation_tables, row.credit_code
    standing = report_standing(uow.policy, submitted_at=submitted_at, paper_at=paper_at)
    if isinstance(standing, datetime):
        await obligations.complete(uow, tables, credit_code=code, obligation=REPORT, at=standing)
        return
    await obligations.still_missing(
        uow, tables, credit_code=code, obligation=REPORT, missing=standing
    )


async def backfill(uow: UnitOfWork, _: None) -> int:
    """Enrol the entities rostered before reporting watched its deadlines (an upgrade in the
    middle of the cycle: migration 0004 added the tables empty, and the registry publishes
    entity.registered once), each where it stands now: bound by what it has still to do, or met
    at the instant its plan or report says. The watcher runs it at each start, before its first
    check; once everyone is enrolled it finds nobody. Returns how many obligations it enrolled."""
    policy, year = uow.policy, uow.policy.compliance_year
    enrolled = 0
    for row in await store.unenrolled_for_plan(
        uow.conn, compliance_year=year, plan_year=policy.monitoring_plan.year
    ):
        enrolled += await obligations.enroll_found(
            uow,
            store.obligation_tables,
            row,
            obligation=MONITORING_PLAN,
            missing=plan_missing(policy),
            done_at=row.first_submitted_at,
        )
    for row in await store.unenrolled_for_report(uow.conn, compliance_year=year):
        standing = report_standing(
            policy, submitted_at=row.first_submitted_at, paper_at=row.paper_copy_recorded_at
        )
        if isinstance(standing, datetime):  # met: its enrolment names what it was bound to
            missing, met_at = report_missing(policy), standing
        else:
            missing, met_at = standing, None
        enrolled += await obligations.enroll_found(
            uow, store.obligation_tables, row, obligation=REPORT, missing=missing, done_at=met_at
        )
    return enrolled


# --- consumed events --------------------------------------------------------------------------


async def on_entity_registered(uow: UnitOfWork, event: Event[Any]) -> None:
    """Reporting learns who may report, where they are supervised and their sector from the
    registry; an entity on the cycle's roster is bound by its plan and report deadlines."""
    registered: EntityRegistered = event.payload
    await store.add_to_roster(
        uow.conn,
        credit_code=registered.credit_code,
        compliance_year=registered.compliance_year,
        name=registered.name,
        district=registered.district,
        sector=registered.sector,
    )
    if registered.compliance_year == uow.policy.compliance_year:
        await _enroll(uow, registered)


async def on_verification_returned(uow: UnitOfWork, event: Event[Any]) -> None:
    """The verifier returned the report for correction: the report is returned to the entity
    (`report.returned`, by the verifier). A return of a version the entity has corrected since,
    or one already applied, changes nothing."""
    returned: VerificationReturned = event.payload
    row = await _report_row(uow, returned.report_id)
    if row.version != returned.report_version or row.status in ("returned", "draft"):
        log.info(
            "verification.returned of report %s version %s left as is: the report is %s at "
            "version %s",
            returned.report_id,
            returned.report_version,
            row.status,
            row.version,
        )
        return
    try:
        await _give_back(
            uow,
            row,
            returned.report_version,
            by="verifier",
            actor=returned.agency_id,
            reason=returned.reason,
            at=returned.returned_at,
        )
    except Conflict as race:
        if race.code != "report_changed":
            raise
        # The entity corrected it in between: the return is of a version no longer the latest.
        log.info("verification.returned of report %s lost a race: %s", row.report_id, race)


HANDLERS: dict[str, dict[str, Handler]] = {
    "entity.registered": {"entity.registered": on_entity_registered},
    "verification.returned": {"verification.returned": on_verification_returned},
}
