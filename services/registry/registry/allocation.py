"""The year's allocation: previews from the final verified figures once verification has
closed, the Bureau's batch approval, issuance into open accounts with the true-up against
pre-allocation, and the opening balances the Bureau imports."""

from __future__ import annotations

import json
import logging
import re
import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from carbon_contracts.errors import Conflict, Invalid, NotFound, Rejection
from carbon_contracts.events import AllocationIssued, VerificationClosed, VerificationFinalised
from carbon_contracts.policy import Policy
from carbon_platform.access import ENTITY, OPERATIONS, Owner, allowed
from carbon_platform.auth import Principal
from carbon_platform.codec import Event, Outgoing
from carbon_platform.context import Context, Handler, UnitOfWork
from carbon_platform.http import refusals
from registry import deadlines, store
from registry.domain import allocation as plan
from registry.domain import compliance
from registry.domain.credit_code import checked_credit_code
from registry.schemas import (
    AllocationBatch,
    AllocationLine,
    AllocationStatus,
    AllocationSummary,
    AllocationTotals,
    AllocationYear,
    Approval,
    ApproveAllocation,
    OpeningBalanceRefusal,
    OpeningBalancesImport,
    OpeningBalancesUpload,
    PreviewRun,
    Unpreviewed,
)
from registry.uploads import csv_body, csv_rows

log = logging.getLogger(__name__)
router = APIRouter(tags=["allocation"])

# --- the final figure and the closure of verification -----------------------------------------


async def on_verification_finalised(uow: UnitOfWork, event: Event[Any]) -> None:
    """Record the final verified emissions (and outputs) as the year's obligation. Allowances
    wait for the Bureau's approval; once verification has closed for the year, the entity's
    preview is computed at once. Only the final figure counts: a first verification that
    re-verification can still change (`verification.approved`) is never acted on. Only for an
    entity on this registry's roster for that year: a figure for anyone else is refused,
    whatever the event says."""
    final: VerificationFinalised = event.payload
    policy = uow.policy
    code, year = final.credit_code, final.compliance_year
    policy.ensure_year(year)
    if not await store.is_rostered(uow.conn, credit_code=code, compliance_year=year):
        raise NotFound("unknown_entity", f"{code} is not on the {year} roster")
    if await store.get_obligation(uow.conn, credit_code=code, compliance_year=year):
        raise Conflict("already_verified", f"{code} already has verified emissions for {year}")
    obligation = compliance.obligation(policy, final.verified_emissions)
    await store.create_obligation(
        uow.conn,
        credit_code=code,
        compliance_year=year,
        case_id=str(final.case_id),
        verified_emissions=final.verified_emissions,
        obligation=obligation,
        outputs=[output.model_dump(mode="json") for output in final.outputs],
    )
    await deadlines.obligation_determined(uow, credit_code=code, obligation=obligation)
    if await store.get_closure(uow.conn, compliance_year=year):
        await _preview_year(uow, year, credit_code=code)


async def on_verification_closed(uow: UnitOfWork, event: Event[Any]) -> None:
    """Verification closed for the year: every figure is final, so every entity's allocation is
    previewed (and those whose final figure arrives later, as it arrives). Once per year."""
    closed: VerificationClosed = event.payload
    policy, year = uow.policy, closed.compliance_year
    policy.ensure_year(year)
    if closed.policy != policy.cycle:
        raise Invalid("no_policy", f"policy {closed.policy} is not loaded (running {policy.cycle})")
    if await store.get_closure(uow.conn, compliance_year=year):
        raise Conflict("already_closed", f"verification for {year} is already closed")
    await store.add_closure(uow.conn, compliance_year=year, cases=closed.cases, at=closed.closed_at)
    await _preview_year(uow, year)


HANDLERS: dict[str, dict[str, Handler]] = {
    "verification.finalised": {"verification.finalised": on_verification_finalised},
    "verification.closed": {"verification.closed": on_verification_closed},
}


async def preview_missing(uow: UnitOfWork, year: int) -> PreviewRun:
    """Compute the previews the closure could not (e.g. after the policy's plan was corrected);
    those still refused say why."""
    uow.policy.ensure_year(year)
    await _ensure_closed(uow, year)
    computed, unpreviewed = await _preview_year(uow, year)
    return PreviewRun(compliance_year=year, computed=computed, unpreviewed=unpreviewed)


async def _preview_year(
    uow: UnitOfWork, year: int, *, credit_code: str | None = None
) -> tuple[int, list[Unpreviewed]]:
    """A preview for every final figure of the year without one. A figure the plan cannot
    allocate (e.g. no verified output for its method) stays without one, and is listed with the
    reason: it must not hold up everyone else's allocation."""
    computed, unpreviewed = 0, []
    rows = await store.obligations_without_preview(
        uow.conn, compliance_year=year, credit_code=credit_code, district=None
    )
    for row in rows:
        try:
            method, parameters, final, preallocated = await _computed(uow.conn, uow.policy, row)
        except Rejection as refused:
            log.warning("no allocation preview for %s: %s", row.credit_code, refused.message)
            unpreviewed.append(_unpreviewed(row, refused))
            continue
        await store.add_preview(
            uow.conn,
            credit_code=row.credit_code,
            compliance_year=year,
            method=method,
            parameters=parameters,
            verified_emissions=row.verified_emissions,
            final_allocation=final,
            preallocated=preallocated,
            at=uow.now,
        )
        computed += 1
    return computed, unpreviewed


async def _computed(conn: Any, policy: Policy, row: Any) -> tuple[str, dict[str, str], int, int]:
    """Method, parameters (as the event writes them), final allocation and pre-allocated of one
    obligation (joined with its entity's sector)."""
    code, year = row.credit_code, row.compliance_year
    if await store.get_allocation(conn, credit_code=code, compliance_year=year, kind="allocation"):
        raise Conflict("already_issued", f"the {year} allocation of {code} is already issued")
    outputs = [
        plan.Output(product=item["product"], unit=item["unit"], quantity=Decimal(item["quantity"]))
        for item in json.loads(row.outputs or "[]")
    ]
    computed = plan.compute(
        policy,
        sector=row.sector,
        compliance_year=year,
        verified_emissions=row.verified_emissions,
        outputs=outputs,
        base_figures=await store.known_emissions(conn, credit_code=code),
    )
    parameters = {name: plan.parameter_text(value) for name, value in computed.parameters.items()}
    preallocated = await _preallocated(conn, code, year)
    return computed.method, parameters, computed.final_allocation, preallocated


async def _preallocated(conn: Any, code: str, year: int) -> int:
    """What was pre-allocated for the year: by this registry, else as imported, else nothing."""
    own = await store.get_allocation(
        conn, credit_code=code, compliance_year=year, kind="preallocation"
    )
    if own is not None:
        return int(own.allowances)
    imported = await store.get_opening_balance(conn, credit_code=code, compliance_year=year)
    if imported is not None and imported.preallocated is not None:
        return int(imported.preallocated)
    return 0


def _unpreviewed(row: Any, refused: Rejection) -> Unpreviewed:
    return Unpreviewed(credit_code=row.credit_code, code=refused.code, message=refused.message)


async def _ensure_closed(uow: UnitOfWork, year: int) -> None:
    if await store.get_closure(uow.conn, compliance_year=year) is None:
        raise Conflict(
            "verification_open",
            f"verification for {year} is still open: allocations are previewed once it closes",
        )


# --- approval and issuance --------------------------------------------------------------------


async def approve(uow: UnitOfWork, command: Approval) -> AllocationBatch:
    """The Bureau approves a batch of previewed allocations (the named entities, or every one
    previewed). Each is issued at once into an open account, or waits, approved, until the
    entity's account opens."""
    year = command.compliance_year
    uow.policy.ensure_year(year)
    await _ensure_closed(uow, year)
    # Locked: an approval, an account opening and an opening balance that would change a
    # preview never interleave on one entity (each waits for the other, then sees its result).
    locked = await store.list_previews(uow.conn, compliance_year=year, for_update=True)
    previews = {row.credit_code: row for row in locked}
    if command.credit_codes is None:
        chosen = [row for row in previews.values() if row.status == "previewed"]
    else:
        codes = list(dict.fromkeys(checked_credit_code(code) for code in command.credit_codes))
        refused = [
            f"{code} ({previews[code].status if code in previews else 'no preview'})"
            for code in codes
            if code not in previews or previews[code].status != "previewed"
        ]
        if refused:
            more = f" and {len(refused) - 10} more" if len(refused) > 10 else ""
            raise Conflict(
                "not_previewed",
                f"not waiting for approval in {year}: {', '.join(refused[:10])}{more}",
            )
        chosen = [previews[code] for code in codes]
    if not chosen:
        raise Conflict("nothing_to_approve", f"no {year} allocation is waiting for approval")
    batch_id = str(uuid.uuid4())
    await store.add_batch(
        uow.conn,
        batch_id=batch_id,
        compliance_year=year,
        approved_by=command.approved_by,
        entities=len(chosen),
        final_allocation=sum(row.final_allocation for row in chosen),
        at=uow.now,
    )
    events: list[Outgoing] = []
    for row in chosen:
        await store.approve_preview(
            uow.conn, credit_code=row.credit_code, compliance_year=year, batch_id=batch_id
        )
        if await store.get_account(uow.conn, credit_code=row.credit_code) is not None:
            events.append(await _issue(uow, row, batch_id))
    lines = [
        allocation_line(row)
        for row in await store.list_previews(uow.conn, compliance_year=year, batch_id=batch_id)
    ]
    return AllocationBatch(
        batch_id=batch_id,
        compliance_year=year,
        approved_by=command.approved_by,
        approved_at=uow.now,
        entities=len(lines),
        final_allocation=sum(line.final_allocation for line in lines),
        issued=sum(line.status == "issued" for line in lines),
        waiting_for_account=sum(line.waiting_for_account for line in lines),
        lines=lines,
        event_ids=[event.event_id for event in events],
    )


async def issue_waiting(uow: UnitOfWork, credit_code: str) -> None:
    """Issue the entity's approved allocations that were waiting for its account (which has
    just opened, in this same transaction)."""
    # Locked whatever their status: an approval under way is waited for, then seen approved.
    for row in await store.list_previews(uow.conn, credit_code=credit_code, for_update=True):
        if row.status == "approved":
            await _issue(uow, row, row.batch_id)


async def _issue(uow: UnitOfWork, row: Any, batch_id: str) -> Outgoing:
    """Issue an approved allocation with its true-up: top up the vintage by what the final
    allocation exceeds the pre-allocation, or take the excess back from what is still held of
    the vintage and record the rest as owed."""
    code, year = row.credit_code, row.compliance_year
    held = (await store.get_holdings(uow.conn, credit_code=code)).get(year, 0)
    done = plan.true_up(
        final_allocation=row.final_allocation, preallocated=row.preallocated, held=held
    )
    # The allocation row (once per entity and year) records the issuance even with no top-up.
    await store.issue_allowances(
        uow.conn,
        credit_code=code,
        compliance_year=year,
        kind="allocation",
        method=row.method,
        basis_emissions=row.verified_emissions,
        allowances=done.topped_up,
        reference=batch_id,
        at=uow.now,
    )
    if done.clawed_back:
        await store.move_allowances(
            uow.conn,
            credit_code=code,
            vintage=year,
            amount=-done.clawed_back,
            kind="clawback",
            reference=batch_id,
            at=uow.now,
        )
    await store.mark_issued(
        uow.conn,
        credit_code=code,
        compliance_year=year,
        topped_up=done.topped_up,
        clawed_back=done.clawed_back,
        owed=done.owed,
        at=uow.now,
    )
    event = uow.record(
        AllocationIssued(
            credit_code=code,
            compliance_year=year,
            policy=uow.policy.cycle,
            method=row.method,
            verified_emissions=row.verified_emissions,
            final_allocation=row.final_allocation,
            preallocated=row.preallocated,
            allowances=done.topped_up,
            issued_at=uow.now,
            batch_id=uuid.UUID(batch_id),
            parameters=json.loads(row.parameters),
            clawed_back=done.clawed_back,
            owed=done.owed,
        )
    )
    return event


# --- views ------------------------------------------------------------------------------------


def allocation_line(row: Any) -> AllocationLine:
    return AllocationLine(
        credit_code=row.credit_code,
        name=row.name,
        district=row.district,
        sector=row.sector,
        compliance_year=row.compliance_year,
        status=row.status,
        waiting_for_account=row.status == "approved",
        method=row.method,
        parameters=json.loads(row.parameters),
        verified_emissions=row.verified_emissions,
        final_allocation=row.final_allocation,
        preallocated=row.preallocated,
        difference=row.final_allocation - row.preallocated,
        topped_up=row.topped_up,
        clawed_back=row.clawed_back,
        owed=row.owed,
        computed_at=row.computed_at,
        batch_id=row.batch_id,
        issued_at=row.issued_at,
    )


def allocation_summary(row: Any) -> AllocationSummary:
    """The year's allocation beside the entity's obligation (GET /entities/{credit_code})."""
    return AllocationSummary(
        status=row.status,
        final_allocation=row.final_allocation,
        preallocated=row.preallocated,
        topped_up=row.topped_up,
        clawed_back=row.clawed_back,
        owed=row.owed,
        issued_at=row.issued_at,
    )


async def allocation_year(
    conn: Any,
    policy: Policy,
    year: int,
    *,
    credit_code: str | None = None,
    district: str | None = None,
) -> AllocationYear:
    """Every preview of the year within the caller's scope, with totals, and the final figures
    the plan could not allocate (each with its reason)."""
    policy.ensure_year(year)
    closure = await store.get_closure(conn, compliance_year=year)
    rows = await store.list_previews(
        conn, compliance_year=year, credit_code=credit_code, district=district
    )
    lines = [allocation_line(row) for row in rows]
    unpreviewed: list[Unpreviewed] = []
    if closure is not None:
        for row in await store.obligations_without_preview(
            conn, compliance_year=year, credit_code=credit_code, district=district
        ):
            try:
                await _computed(conn, policy, row)
            except Rejection as refused:
                unpreviewed.append(_unpreviewed(row, refused))
            else:  # computable now (the plan changed since): POST .../previews computes it
                unpreviewed.append(
                    Unpreviewed(
                        credit_code=row.credit_code,
                        code="not_computed",
                        message=f"computable now: POST /allocations/{year}/previews computes it",
                    )
                )
    by_status: dict[AllocationStatus, int] = {"previewed": 0, "approved": 0, "issued": 0}
    for line in lines:
        by_status[line.status] += 1
    return AllocationYear(
        compliance_year=year,
        policy=policy.cycle,
        verification_closed_at=closure.closed_at if closure else None,
        totals=AllocationTotals(
            entities=len(lines),
            final_allocation=sum(line.final_allocation for line in lines),
            preallocated=sum(line.preallocated for line in lines),
            topped_up=sum(line.topped_up for line in lines),
            clawed_back=sum(line.clawed_back for line in lines),
            owed=sum(line.owed for line in lines),
            by_status=by_status,
        ),
        allocations=lines,
        unpreviewed=unpreviewed,
    )


# --- opening balances: what the registry would have known had it run before -------------------

OPENING_KEYS = ("credit_code", "compliance_year")
OPENING_VALUES = ("verified_emissions", "preallocated", "held")
OPENING_MAX_ROWS = 50_000
_EMISSIONS = re.compile(r"(0|[1-9][0-9]{0,11})(\.[0-9]{1,3})?")
_WHOLE = re.compile(r"0|[1-9][0-9]{0,9}")
_MAX_WHOLE = 2**31 - 1  # the allowance columns are 32-bit integers
FIRST_YEAR = 2013  # the scheme's first compliance year (as the contracts' ComplianceYear)


async def import_opening_balances(
    uow: UnitOfWork, upload: OpeningBalancesUpload
) -> OpeningBalancesImport:
    """Apply an opening balances CSV, each row on its own (its own savepoint): a refused row is
    reported with its reason and stops nothing else. The file itself must be sound first."""
    rows = csv_rows(
        upload.text,
        required=OPENING_KEYS,
        optional=OPENING_VALUES,
        one_of=OPENING_VALUES,
        max_rows=OPENING_MAX_ROWS,
        rule=f"the header must name {', '.join(OPENING_KEYS)} and at least one of "
        f"{', '.join(OPENING_VALUES)}, each once, and nothing else",
    )
    import_id = str(uuid.uuid4())
    refused_rows: list[OpeningBalanceRefusal] = []
    for line, written, fields in rows:
        try:
            async with uow.savepoint():
                await _apply_opening_balance(uow, import_id, fields)
        except Rejection as refused:
            refused_rows.append(
                OpeningBalanceRefusal(
                    line=line, credit_code=written[:64], code=refused.code, message=refused.message
                )
            )
    return OpeningBalancesImport(
        import_id=import_id,
        rows=len(rows),
        applied=len(rows) - len(refused_rows),
        refused=len(refused_rows),
        refusals=refused_rows,
    )


async def _apply_opening_balance(uow: UnitOfWork, import_id: str, fields: dict[str, str]) -> None:
    policy, current = uow.policy, uow.policy.compliance_year
    if "_extra" in fields:
        raise Invalid("invalid_row", f"more values than columns: {fields['_extra'][:100]}")
    if "_missing" in fields:
        raise Invalid("invalid_row", f"fewer values than columns: no {fields['_missing']}")
    code = checked_credit_code(fields["credit_code"])
    written = fields["compliance_year"]
    if not re.fullmatch(r"[0-9]{4}", written) or int(written) < FIRST_YEAR:
        raise Invalid("invalid_row", f"compliance_year {written[:40]!r}: {FIRST_YEAR} or later")
    year = int(written)
    verified = _emissions(fields.get("verified_emissions", ""))
    preallocated = _whole(fields.get("preallocated", ""), "preallocated")
    held = _whole(fields.get("held", ""), "held")
    if verified is None and preallocated is None and held is None:
        raise Invalid("invalid_row", "no verified_emissions, preallocated or held")
    if year > current:
        raise Invalid("wrong_year", f"{year} is after the policy's compliance year {current}")
    if year == current and verified is not None:
        raise Invalid(
            "wrong_year", f"the {year} verified emissions come from its verification, not an import"
        )
    if year < current and (preallocated is not None or held is not None):
        raise Invalid(
            "wrong_year",
            f"preallocated and held only for the compliance year {current}; for {year} only "
            "verified_emissions",
        )
    await store.known_entity(uow.conn, credit_code=code)
    if await store.get_opening_balance(uow.conn, credit_code=code, compliance_year=year):
        raise Conflict("already_imported", f"an opening balance of {code} for {year} exists")
    if verified is not None and await store.get_obligation(
        uow.conn, credit_code=code, compliance_year=year
    ):
        raise Conflict("already_verified", f"the registry has the final {year} figure of {code}")
    # The allocation of the compliance year reads all of it: once approved, it is fixed (locked:
    # an approval under way is waited for, then seen).
    preview = await store.get_preview(
        uow.conn, credit_code=code, compliance_year=current, for_update=True
    )
    issued = await store.get_allocation(
        uow.conn, credit_code=code, compliance_year=current, kind="allocation"
    )
    if issued is not None or (preview is not None and preview.status == "issued"):
        raise Conflict("already_issued", f"the {current} allocation of {code} is already issued")
    if preview is not None and preview.status == "approved":
        raise Conflict(
            "allocation_approved", f"the {current} allocation of {code} is already approved"
        )
    if preallocated is not None and await store.get_allocation(
        uow.conn, credit_code=code, compliance_year=year, kind="preallocation"
    ):
        raise Conflict(
            "already_preallocated", f"this registry pre-allocated {year} to {code} itself"
        )
    await store.add_opening_balance(
        uow.conn,
        credit_code=code,
        compliance_year=year,
        verified_emissions=verified,
        preallocated=preallocated,
        held=held,
        import_id=import_id,
        at=uow.now,
    )
    if held:
        await store.move_allowances(
            uow.conn,
            credit_code=code,
            vintage=year,
            amount=held,
            kind="opening_balance",
            reference=import_id,
            at=uow.now,
        )
    if preview is not None:  # previewed without what this row says: computed again
        obligation = await store.get_obligation_for_preview(
            uow.conn, credit_code=code, compliance_year=current
        )
        method, parameters, final, preallocated_now = await _computed(uow.conn, policy, obligation)
        await store.replace_preview(
            uow.conn,
            credit_code=code,
            compliance_year=current,
            method=method,
            parameters=parameters,
            verified_emissions=obligation.verified_emissions,
            final_allocation=final,
            preallocated=preallocated_now,
            at=uow.now,
        )


def _emissions(text: str) -> Decimal | None:
    if not text:
        return None
    if not _EMISSIONS.fullmatch(text):
        raise Invalid(
            "invalid_row",
            f"verified_emissions {text[:40]!r}: tonnes, at most three decimals, e.g. 25100.5",
        )
    return Decimal(text).quantize(plan.EMISSIONS_QUANTUM)


def _whole(text: str, name: str) -> int | None:
    if not text:
        return None
    if not _WHOLE.fullmatch(text) or int(text) > _MAX_WHOLE:
        raise Invalid("invalid_row", f"{name} {text[:40]!r}: whole allowances, 0 or more")
    return int(text)


# --- routes -----------------------------------------------------------------------------------

Bureau = Annotated[Principal, allowed(ENTITY, "allocate")]
Operator = Annotated[Principal, allowed(OPERATIONS, "operate")]
Reader = Annotated[Principal, allowed(ENTITY, "read")]


@router.post(
    "/allocations/{compliance_year}/approve",
    responses=refusals(403, 409),
    response_model=AllocationBatch,
)
async def approve_allocation(
    compliance_year: int,
    context: Context,
    principal: Bureau,
    body: Annotated[ApproveAllocation | None, Body()] = None,
) -> AllocationBatch:
    """The Bureau approves the year's previewed allocations (`credit_codes`, or all of them):
    issued at once into open accounts (`allocation.issued`), the others when their account
    opens."""
    command = Approval(
        compliance_year=compliance_year,
        credit_codes=body.credit_codes if body else None,
        approved_by=principal.subject,
    )
    return await context.execute(approve, command)


@router.post(
    "/allocations/{compliance_year}/previews",
    responses=refusals(403, 409),
    response_model=PreviewRun,
)
async def compute_previews(compliance_year: int, context: Context, _: Bureau) -> PreviewRun:
    """Compute the previews of final figures that have none (refused before, e.g. for want of
    a verified output, and computable since the plan was corrected)."""
    return await context.execute(preview_missing, compliance_year)


@router.get(
    "/allocations/{compliance_year}", responses=refusals(403), response_model=AllocationYear
)
async def year_allocations(
    compliance_year: int, context: Context, principal: Reader
) -> AllocationYear:
    """The year's allocations with totals: the Bureau sees all, a district its entities, an
    entity its own."""
    scope = ENTITY.scope(principal, "read")
    async with context.reader.connect() as conn:
        return await allocation_year(
            conn,
            context.policy,
            compliance_year,
            credit_code=scope.credit_code,
            district=scope.district,
        )


@router.get(
    "/entities/{credit_code}/allocations/{compliance_year}",
    responses=refusals(403, 404),
    response_model=AllocationLine,
)
async def entity_allocation(
    credit_code: str, compliance_year: int, context: Context, principal: Reader
) -> AllocationLine:
    """One entity's allocation of the year: its preview and what became of it."""
    code = checked_credit_code(credit_code)
    ENTITY.check_entity(principal, "read", code)  # before the lookup: a 404 tells it nothing
    async with context.reader.connect() as conn:
        entity = await store.known_entity(conn, credit_code=code)
        ENTITY.check(principal, "read", Owner(credit_code=code, district=entity.district))
        row = await store.get_preview(conn, credit_code=code, compliance_year=compliance_year)
    if row is None:
        raise NotFound("no_allocation", f"no {compliance_year} allocation of {code} yet")
    return allocation_line(row)


@router.post(
    "/opening-balances",
    responses=refusals(403, 415),
    response_model=OpeningBalancesImport,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "header: credit_code,compliance_year and any of verified_emissions,"
            "preallocated,held; UTF-8; one entity and year per row",
        }
    },
)
async def import_opening_balances_csv(
    request: Request, context: Context, principal: Operator
) -> OpeningBalancesImport:
    """The Bureau imports what was known before this registry (earlier years' verified
    emissions; this year's pre-allocation and what of it is still held), row by row: the answer
    lists every refused row and why."""
    text = await csv_body(request, "the file")
    return await context.execute(
        import_opening_balances, OpeningBalancesUpload(text=text, imported_by=principal.subject)
    )
