"""Reporting HTTP API: routes parse, authorise, call a command and answer with its typed view;
queries read the database.

An entity acts on its own plans and reports: a route that names one looks it up (404), then
checks that it is the caller's (403). The Bureau's routes are gated by role; the command finds
the plan or report itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Query

from carbon_contracts.errors import Invalid, NotFound
from carbon_contracts.policy import Policy
from carbon_contracts.types import IDENTIFIER_PATTERN
from carbon_emissions.calculation import FactorTable
from carbon_platform.access import PLAN, REPORT, AccessPolicy, Owner, allowed
from carbon_platform.auth import Principal
from carbon_platform.context import Context, ServiceContext
from carbon_platform.http import refusals
from reporting import commands, store
from reporting.domain import plan, report
from reporting.schemas import (
    AcceptReport,
    ApproveInput,
    CorrectionInput,
    CorrectReport,
    DecidePlan,
    DeterminationChange,
    DeterminationInput,
    DeterminationView,
    Determine,
    EditDraft,
    FactorTableView,
    FactorView,
    PaperCopyInput,
    PlanChange,
    PlanContents,
    PlanDetail,
    PlanInput,
    PlanView,
    RecordPaperCopy,
    ReportChange,
    ReportContents,
    ReportDetail,
    ReportInput,
    ReportView,
    ResubmitPlan,
    ReturnInput,
    ReturnReport,
    SubmitDraft,
    SubmitPlan,
    SubmitReport,
)

router = APIRouter(tags=["reporting"])
Row = TypeVar("Row")

Filter = Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN)]
Lot = Annotated[
    str | None,
    Query(
        pattern=IDENTIFIER_PATTERN,
        description="a tender lot of the policy: the entities whose case it takes",
    ),
]


@router.get("/factors", response_model=FactorTableView)
async def factor_table(context: Context) -> FactorTableView:
    """The versioned emission factor table in force (no token needed)."""
    table = FactorTable.from_policy(context.policy)
    return FactorTableView(
        version=table.version,
        electricity=FactorView(unit=table.electricity.unit, factor=table.electricity.factor),
        heat=FactorView(unit=table.heat.unit, factor=table.heat.factor),
        fuels={
            name: FactorView(unit=factor.unit, factor=factor.factor)
            for name, factor in table.fuels.items()
        },
        processes={
            name: FactorView(unit=factor.unit, factor=factor.factor)
            for name, factor in table.processes.items()
        },
    )


# --- monitoring plans -------------------------------------------------------------------------


@router.post(
    "/monitoring-plans",
    status_code=201,
    responses=refusals(403, 404, 409),
    response_model=PlanChange,
)
async def submit_plan(
    body: PlanInput,
    context: Context,
    principal: Annotated[Principal, allowed(PLAN, "submit")],
) -> PlanChange:
    """The entity submits its monitoring plan for the policy's plan year, online
    (`monitoring_plan.submitted`); after the deadline it is taken and flagged late."""
    command = SubmitPlan(
        **dict(body), credit_code=principal.credit_code or "", submitted_by=principal.subject
    )
    return await context.execute(commands.submit_plan, command)


@router.post(
    "/monitoring-plans/{plan_id}/versions",
    status_code=201,
    responses=refusals(403, 404, 409),
    response_model=PlanChange,
)
async def resubmit_plan(
    plan_id: str,
    body: PlanContents,
    context: Context,
    principal: Annotated[Principal, allowed(PLAN, "submit")],
) -> PlanChange:
    """The entity submits a returned plan again as a new version (`monitoring_plan.submitted`)."""
    key = await _own_plan(context, plan_id, principal, "submit")
    command = ResubmitPlan(plan_id=key, **dict(body), submitted_by=principal.subject)
    return await context.execute(commands.resubmit_plan, command)


@router.post(
    "/monitoring-plans/{plan_id}/approve",
    responses=refusals(403, 404, 409),
    response_model=PlanChange,
)
async def approve_plan(
    plan_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(PLAN, "decide")],
    body: ApproveInput | None = None,
) -> PlanChange:
    """The Bureau (or the technical centre for it) approves the latest version
    (`monitoring_plan.approved`). The body may name the version decided on (no body: the
    latest)."""
    command = DecidePlan(
        plan_id=_key(plan_id, "unknown_plan", "monitoring plan"),
        version=body.version if body else None,
        decision="approved",
        decided_by=principal.subject,
    )
    return await context.execute(commands.decide_plan, command)


@router.post(
    "/monitoring-plans/{plan_id}/return",
    responses=refusals(403, 404, 409),
    response_model=PlanChange,
)
async def return_plan(
    plan_id: str,
    body: ReturnInput,
    context: Context,
    principal: Annotated[Principal, allowed(PLAN, "decide")],
) -> PlanChange:
    """The Bureau returns the latest version with a reason (`monitoring_plan.returned`); the
    entity submits a new version."""
    command = DecidePlan(
        plan_id=_key(plan_id, "unknown_plan", "monitoring plan"),
        version=body.version,
        decision="returned",
        reason=body.reason,
        decided_by=principal.subject,
    )
    return await context.execute(commands.decide_plan, command)


@router.get("/monitoring-plans/{plan_id}", responses=refusals(403, 404), response_model=PlanDetail)
async def get_plan(
    plan_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(PLAN, "read")],
) -> PlanDetail:
    """A plan with every version and its audit trail."""
    key = str(_key(plan_id, "unknown_plan", "monitoring plan"))
    async with context.reader.connect() as conn:
        row = await store.get_plan(conn, plan_id=key)
        if row is None:
            raise NotFound("unknown_plan", f"no monitoring plan {plan_id}")
        PLAN.check(principal, "read", Owner(credit_code=row.credit_code, district=row.district))
        versions = await store.list_plan_versions(conn, plan_id=key)
        trail = await store.list_transitions(conn, kind="plan", subject_id=key)
    return commands.plan_detail(row, versions, trail)


@router.get("/monitoring-plans", responses=refusals(403), response_model=list[PlanView])
async def list_plans(
    context: Context,
    principal: Annotated[Principal, allowed(PLAN, "read")],
    credit_code: str | None = None,
    plan_year: Annotated[int | None, Query(ge=2013, le=2100)] = None,
    status: plan.Status | None = None,
    district: Filter = None,
    sector: Filter = None,
    lot: Lot = None,
    late: bool | None = None,
) -> list[PlanView]:
    """Plans in order of first submission, with their latest version: an entity sees its own,
    a district those of its entities, the Bureau all; filtered by any of the parameters."""
    scope = PLAN.scope(principal, "read")
    async with context.reader.connect() as conn:
        rows = await store.list_plans(
            conn,
            credit_code=scope.credit_code or credit_code,
            district=scope.district or district,
            sector=sector,
            plan_year=plan_year,
            status=status,
            late=late,
        )
    return [commands.plan_view(row) for row in _in_lot(context.policy, lot, rows)]


# --- reports ----------------------------------------------------------------------------------


@router.post(
    "/reports", status_code=201, responses=refusals(403, 404, 409), response_model=ReportChange
)
async def submit_report(
    body: ReportInput,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "submit")],
) -> ReportChange:
    """The entity submits its annual report as activity lines; the total is computed
    (`report.submitted`), and a report submitted at or after the deadline is flagged late. With
    `"draft": true` it is kept as a draft instead, and nothing is published. The report is always
    the token's entity's."""
    command = SubmitReport(
        **dict(body), credit_code=principal.credit_code or "", submitted_by=principal.subject
    )
    return await context.execute(commands.submit_report, command)


@router.put(
    "/reports/{report_id}/draft", responses=refusals(403, 404, 409), response_model=ReportChange
)
async def edit_draft(
    report_id: str,
    body: ReportContents,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "submit")],
) -> ReportChange:
    """The entity rewrites its draft (nothing is published)."""
    key = await _own_report(context, report_id, principal, "submit")
    command = EditDraft(report_id=key, **dict(body), edited_by=principal.subject)
    return await context.execute(commands.edit_draft, command)


@router.post(
    "/reports/{report_id}/submit", responses=refusals(403, 404, 409), response_model=ReportChange
)
async def submit_draft(
    report_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "submit")],
) -> ReportChange:
    """The entity submits its draft as version 1 (`report.submitted`)."""
    key = await _own_report(context, report_id, principal, "submit")
    command = SubmitDraft(report_id=key, submitted_by=principal.subject)
    return await context.execute(commands.submit_draft, command)


@router.post(
    "/reports/{report_id}/versions",
    status_code=201,
    responses=refusals(403, 404, 409),
    response_model=ReportChange,
)
async def correct_report(
    report_id: str,
    body: CorrectionInput,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "submit")],
) -> ReportChange:
    """The entity corrects its report: a new version with a reason (`report.submitted`)."""
    key = await _own_report(context, report_id, principal, "submit")
    command = CorrectReport(report_id=key, **dict(body), submitted_by=principal.subject)
    return await context.execute(commands.correct_report, command)


@router.post(
    "/reports/{report_id}/return", responses=refusals(403, 404, 409), response_model=ReportChange
)
async def return_report(
    report_id: str,
    body: ReturnInput,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "review")],
) -> ReportChange:
    """The Bureau returns the latest version for correction, with a reason (`report.returned`)."""
    command = ReturnReport(
        report_id=_key(report_id, "unknown_report", "report"),
        **dict(body),
        returned_by=principal.subject,
    )
    return await context.execute(commands.return_report, command)


@router.post(
    "/reports/{report_id}/paper-copy",
    responses=refusals(403, 404, 409),
    response_model=ReportChange,
)
async def record_paper_copy(
    report_id: str,
    body: PaperCopyInput,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "review")],
) -> ReportChange:
    """The Bureau records the receipt of the sealed paper copy (`report.paper_copy_received`)."""
    command = RecordPaperCopy(
        report_id=_key(report_id, "unknown_report", "report"),
        **dict(body),
        recorded_by=principal.subject,
    )
    return await context.execute(commands.record_paper_copy, command)


@router.post(
    "/reports/{report_id}/accept", responses=refusals(403, 404, 409), response_model=ReportChange
)
async def accept_report(
    report_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "review")],
    body: ApproveInput | None = None,
) -> ReportChange:
    """The Bureau accepts the latest version, complete online and on paper
    (`report.accepted`). The body may name the version accepted (no body: the latest)."""
    command = AcceptReport(
        report_id=_key(report_id, "unknown_report", "report"),
        version=body.version if body else None,
        accepted_by=principal.subject,
    )
    return await context.execute(commands.accept_report, command)


@router.get("/reports/{report_id}", responses=refusals(403, 404), response_model=ReportDetail)
async def get_report(
    report_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "read")],
) -> ReportDetail:
    """A report with every version and its audit trail."""
    key = str(_key(report_id, "unknown_report", "report"))
    async with context.reader.connect() as conn:
        row = await store.get_report(conn, report_id=key)
        if row is None:
            raise NotFound("unknown_report", f"no report {report_id}")
        REPORT.check(principal, "read", Owner(credit_code=row.credit_code, district=row.district))
        versions = await store.list_report_versions(conn, report_id=key)
        trail = await store.list_transitions(conn, kind="report", subject_id=key)
    return commands.report_detail(row, context.policy, versions, trail)


@router.get("/reports", responses=refusals(403), response_model=list[ReportView])
async def list_reports(
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "read")],
    credit_code: str | None = None,
    compliance_year: Annotated[int | None, Query(ge=2013, le=2100)] = None,
    status: report.Status | None = None,
    district: Filter = None,
    sector: Filter = None,
    lot: Lot = None,
    late: bool | None = None,
    paper_copy: Annotated[bool | None, Query(description="its paper copy received")] = None,
) -> list[ReportView]:
    """Reports in order of creation, with their latest version: an entity sees its own, a
    district those of its entities, the Bureau all; filtered by any of the parameters."""
    scope = REPORT.scope(principal, "read")
    async with context.reader.connect() as conn:
        rows = await store.list_reports(
            conn,
            credit_code=scope.credit_code or credit_code,
            district=scope.district or district,
            sector=sector,
            compliance_year=compliance_year,
            status=status,
            late=late,
            paper_copy=paper_copy,
        )
    return [commands.report_view(row, context.policy) for row in _in_lot(context.policy, lot, rows)]


# --- regulator determinations -----------------------------------------------------------------


@router.post(
    "/determinations",
    status_code=201,
    responses=refusals(403, 404, 409),
    response_model=DeterminationChange,
)
async def determine(
    body: DeterminationInput,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "determine")],
) -> DeterminationChange:
    """No report came by the deadline: the Bureau determines the entity's emissions from
    activity lines, with a reason (`emissions.determined`)."""
    command = Determine(**dict(body), determined_by=principal.subject)
    return await context.execute(commands.determine, command)


@router.get(
    "/determinations/{determination_id}",
    responses=refusals(403, 404),
    response_model=DeterminationView,
)
async def get_determination(
    determination_id: str,
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "read")],
) -> DeterminationView:
    key = str(_key(determination_id, "unknown_determination", "determination"))
    async with context.reader.connect() as conn:
        row = await store.get_determination(conn, determination_id=key)
    if row is None:
        raise NotFound("unknown_determination", f"no determination {determination_id}")
    REPORT.check(principal, "read", Owner(credit_code=row.credit_code, district=row.district))
    return commands.determination_view(row)


@router.get("/determinations", responses=refusals(403), response_model=list[DeterminationView])
async def list_determinations(
    context: Context,
    principal: Annotated[Principal, allowed(REPORT, "read")],
    credit_code: str | None = None,
    compliance_year: Annotated[int | None, Query(ge=2013, le=2100)] = None,
    district: Filter = None,
    sector: Filter = None,
) -> list[DeterminationView]:
    """Determinations in the order they were made, scoped like reports."""
    scope = REPORT.scope(principal, "read")
    async with context.reader.connect() as conn:
        rows = await store.list_determinations(
            conn,
            credit_code=scope.credit_code or credit_code,
            district=scope.district or district,
            sector=sector,
            compliance_year=compliance_year,
        )
    return [commands.determination_view(row) for row in rows]


# --- helpers ----------------------------------------------------------------------------------


def _key(value: str, code: str, what: str) -> UUID:
    """A path's id; one that is no UUID names nothing (404, as an unknown one)."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(code, f"no {what} {value}") from None


async def _own_plan(
    context: ServiceContext, plan_id: str, principal: Principal, action: str
) -> UUID:
    key = _key(plan_id, "unknown_plan", "monitoring plan")
    async with context.reader.connect() as conn:
        row = await store.get_plan(conn, plan_id=str(key))
    return _owned(PLAN, row, key, principal, action, "unknown_plan", "monitoring plan")


async def _own_report(
    context: ServiceContext, report_id: str, principal: Principal, action: str
) -> UUID:
    key = _key(report_id, "unknown_report", "report")
    async with context.reader.connect() as conn:
        row = await store.get_report(conn, report_id=str(key))
    return _owned(REPORT, row, key, principal, action, "unknown_report", "report")


def _owned(
    policy: AccessPolicy,
    row: Any,
    key: UUID,
    principal: Principal,
    action: str,
    code: str,
    what: str,
) -> UUID:
    """The resource exists (404) and the caller holds `action` on it (403). Its entity never
    changes, so the check made here holds for the command's own transaction."""
    if row is None:
        raise NotFound(code, f"no {what} {key}")
    policy.check(principal, action, Owner(credit_code=row.credit_code, district=row.district))
    return key


def _in_lot(policy: Policy, lot_id: str | None, rows: Iterable[Row]) -> list[Row]:
    """The rows whose entity's case the tender lot takes (the first lot of its round, in the
    policy's order, that covers the entity's sector and district)."""
    if lot_id is None:
        return list(rows)
    rules = policy.verification
    lot = next((lot for lot in rules.lots if lot.id == lot_id), None)
    if lot is None:
        raise Invalid(
            "unknown_lot",
            f"no tender lot {lot_id!r} in {policy.cycle}: "
            f"{', '.join(lot.id for lot in rules.lots)}",
        )
    return [
        row
        for row in rows
        if rules.lot_for(lot.round, sector=_of(row, "sector"), district=_of(row, "district")) == lot
    ]


def _of(row: Any, field: str) -> str:
    value: str | None = getattr(row, field)
    return value or ""  # unknown (a roster row from before 0003): only a lot open to all takes it
