"""The registry's commands and event handlers: each a function over a unit of work that loads
state, applies the domain rules and records the events it causes. No HTTP, no Kafka."""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from carbon_contracts.errors import Conflict, Invalid, NotFound, Rejection, where_invalid
from carbon_contracts.events import (
    AccountOpened,
    EntityRegistered,
    PreallocationIssued,
    SurrenderCompleted,
)
from carbon_platform.context import Handler, UnitOfWork
from registry import allocation, deadlines, store
from registry.domain import compliance, offsets
from registry.domain.credit_code import checked_credit_code
from registry.schemas import (
    Account,
    Holding,
    OffsetUsed,
    OpenAccount,
    PreallocationView,
    RegisteredEntity,
    Registration,
    RosterImport,
    RosterUpload,
    Surrender,
    SurrenderReceipt,
)
from registry.uploads import csv_rows

ROSTER_COLUMNS = ("credit_code", "name", "district", "sector", "compliance_year")
ROSTER_OPTIONAL = ("new_entrant",)
ROSTER_MAX_ROWS = 200_000


async def register_entity(uow: UnitOfWork, command: Registration) -> RegisteredEntity:
    """The Bureau puts a covered entity on the roster of the policy's compliance year."""
    code = checked_credit_code(command.credit_code)
    year = command.compliance_year
    uow.policy.ensure_year(year)
    uow.policy.ensure_district(command.district)
    if await store.is_rostered(uow.conn, credit_code=code, compliance_year=year):
        raise Conflict("already_registered", f"{code} is already on the {year} roster")
    await store.register(
        uow.conn,
        credit_code=code,
        name=command.name,
        district=command.district,
        sector=command.sector,
        compliance_year=year,
        new_entrant=command.new_entrant,
        at=uow.now,
    )
    event = uow.record(
        EntityRegistered(
            credit_code=code,
            compliance_year=year,
            name=command.name,
            district=command.district,
            sector=command.sector,
            new_entrant=command.new_entrant,
            registered_at=uow.now,
        )
    )
    await deadlines.enroll(
        uow,
        credit_code=code,
        name=command.name,
        district=command.district,
        new_entrant=command.new_entrant,
    )
    return RegisteredEntity(
        **command.model_dump(exclude={"credit_code"}), credit_code=code, event_id=event.event_id
    )


async def open_account(uow: UnitOfWork, command: OpenAccount) -> Account:
    """A registered entity opens its allowance account, once; a new entrant's opening is on
    time only before the policy's date. Allocations approved while it had no account are issued
    into it in the same transaction."""
    code = checked_credit_code(command.credit_code)
    policy = uow.policy
    await store.known_entity(uow.conn, credit_code=code)
    if await store.get_account(uow.conn, credit_code=code) is not None:
        raise Conflict("account_exists", f"{code} already has an allowance account")
    account_id = f"SHEA-{code}"
    await store.open_account(uow.conn, account_id=account_id, credit_code=code, at=uow.now)
    # Only the notice's new entrants have a date to open by; for the others it is no rule's.
    entry = await store.get_roster_entry(
        uow.conn, credit_code=code, compliance_year=policy.compliance_year
    )
    on_time = None
    if entry is not None and entry.new_entrant:
        on_time = uow.now < policy.deadlines.accounts_opening
        await store.set_account_on_time(uow.conn, credit_code=code, on_time=on_time)
    event = uow.record(
        AccountOpened(
            credit_code=code,
            compliance_year=policy.compliance_year,
            account_id=account_id,
            opened_at=uow.now,
            on_time=on_time,
        )
    )
    if entry is not None and entry.new_entrant:
        await deadlines.accounts_changed(uow, code)
    await allocation.issue_waiting(uow, code)
    return Account(account_id=account_id, credit_code=code, event_id=event.event_id)


async def surrender(uow: UnitOfWork, command: Surrender) -> SurrenderReceipt:
    """Surrender allowances and offsets (named cancellation proofs) for a year, all of it or
    nothing; meeting the whole obligation completes compliance and issues next year's
    pre-allocation in the same transaction."""
    code = checked_credit_code(command.credit_code)
    year, policy = command.compliance_year, uow.policy
    if await store.get_account(uow.conn, credit_code=code) is None:
        raise Conflict("account_not_open", f"{code} has no allowance account")
    # Locked first: a concurrent surrender of the entity waits, then plans on what this one did.
    due = await store.lock_obligation(uow.conn, credit_code=code, compliance_year=year)
    if due is None:
        raise NotFound("no_obligation", f"{code} has no verified emissions for {year} yet")
    keys = [(offset.type, offset.proof_id) for offset in command.offsets]
    found = await store.get_offset_proofs(uow.conn, keys=keys)
    proofs = offsets.check_proofs(
        policy,
        keys,
        {key: _proof(row) for key, row in found.items()},
        credit_code=code,
        compliance_year=year,
    )
    done = compliance.surrender(
        policy,
        compliance_year=year,
        allowances=command.allowances,
        offsets=proofs,
        verified_emissions=due.verified_emissions,
        obligation=due.obligation,
        surrendered=due.surrendered,
        offsets_surrendered=due.offsets_surrendered,
        holdings=await store.get_holdings(uow.conn, credit_code=code),
        surrender_only=(await store.get_surrender_only(uow.conn, credit_code=code)).get(year, 0),
        at=uow.now,
    )
    await store.use_offset_proofs(
        uow.conn, credit_code=code, compliance_year=year, proofs=list(found.values()), at=uow.now
    )
    if done.surrender_only:
        await store.move_surrender_only(
            uow.conn,
            credit_code=code,
            vintage=year,
            amount=-done.surrender_only,
            kind="surrender",
            reference=f"surrender-{year}",
            at=uow.now,
        )
    for vintage, amount in done.drawn:
        await store.move_allowances(
            uow.conn,
            credit_code=code,
            vintage=vintage,
            amount=-amount,
            kind="surrender",
            reference=f"surrender-{year}",
            at=uow.now,
        )
    await store.add_surrender(
        uow.conn,
        credit_code=code,
        compliance_year=year,
        allowances=command.allowances,
        offsets=done.offsets,
        completed_at=uow.now if done.complete else None,
        on_time=done.on_time if done.complete else None,
    )
    preallocated: PreallocationIssued | None = None
    if done.complete:
        uow.record(
            SurrenderCompleted(
                credit_code=code,
                compliance_year=year,
                policy=policy.cycle,
                verified_emissions=due.verified_emissions,
                obligation=due.obligation,
                allowances_surrendered=done.surrendered - done.offsets_surrendered,
                offsets_surrendered=done.offsets_surrendered,
                offsets_by_type=await store.offsets_used_by_type(
                    uow.conn, credit_code=code, compliance_year=year
                ),
                deadline=policy.deadlines.surrender,
                on_time=done.on_time,
                completed_at=uow.now,
            )
        )
        preallocated = await _preallocate(uow, code, year, due.verified_emissions)
    await deadlines.surrendered(
        uow,
        credit_code=code,
        compliance_year=year,
        surrendered=done.surrendered,
        obligation=due.obligation,
        completed_at=uow.now if done.complete else None,
    )
    return SurrenderReceipt(
        credit_code=code,
        compliance_year=year,
        surrendered_now=command.allowances + done.offsets,
        surrender_only_drawn=done.surrender_only,
        drawn_from=[Holding(vintage=v, allowances=n) for v, n in done.drawn],
        offsets=[
            OffsetUsed(type=p.offset_type, proof_id=p.proof_id, quantity=p.quantity) for p in proofs
        ],
        obligation=due.obligation,
        surrendered=done.surrendered,
        offsets_surrendered=done.offsets_surrendered,
        remaining=done.remaining,
        status="compliant" if done.complete else "open",
        preallocation=(
            PreallocationView(
                compliance_year=preallocated.compliance_year, allowances=preallocated.allowances
            )
            if preallocated
            else None
        ),
        event_ids=[event.event_id for event in uow.events],
    )


def _proof(row: Any) -> offsets.Proof:
    return offsets.Proof(
        offset_type=row.offset_type,
        proof_id=row.proof_id,
        credit_code=row.credit_code,
        compliance_year=row.compliance_year,
        quantity=row.quantity,
        cancelled_on=row.cancelled_on,
        used=row.used_at is not None,
    )


async def _preallocate(
    uow: UnitOfWork, code: str, year: int, verified: Decimal
) -> PreallocationIssued:
    """Next year's pre-allocation, credited and published with the completed surrender."""
    policy = uow.policy
    allowances = compliance.preallocation(policy, verified)
    next_year = year + 1
    await store.issue_allowances(
        uow.conn,
        credit_code=code,
        compliance_year=next_year,
        kind="preallocation",
        method="preallocation",
        basis_emissions=verified,
        allowances=allowances,
        reference=f"preallocation-{next_year}",
        at=uow.now,
    )
    issued = PreallocationIssued(
        credit_code=code,
        compliance_year=next_year,
        policy=policy.cycle,
        basis_year=year,
        basis_verified_emissions=verified,
        ratio=policy.preallocation.ratio,
        allowances=allowances,
        issued_at=uow.now,
    )
    uow.record(issued)
    return issued


# The final verified figure and the year's allocation are handled in registry/allocation.py.
HANDLERS: dict[str, dict[str, Handler]] = {}


# --- Roster upload: the Bureau registers the year's roster in one CSV ------------------------


async def upload_roster(uow: UnitOfWork, upload: RosterUpload) -> RosterImport:
    """Take a roster CSV and keep each data row as pending; rows are registered in the
    background, each with its own result. The file itself must be sound: its header names the
    columns, and it has at least one and at most ROSTER_MAX_ROWS rows."""
    rows = csv_rows(
        upload.text,
        required=ROSTER_COLUMNS,
        optional=ROSTER_OPTIONAL,
        max_rows=ROSTER_MAX_ROWS,
        rule=f"the header must name {', '.join(ROSTER_COLUMNS)} once each (and may name "
        "new_entrant)",
    )
    import_id = str(uuid.uuid4())
    await store.add_roster_import(
        uow.conn, import_id=import_id, uploaded_by=upload.uploaded_by, rows=rows, at=uow.now
    )
    return RosterImport(
        import_id=import_id,
        status="pending",
        rows=len(rows),
        done=0,
        registered=0,
        refused=0,
        uploaded_at=uow.now,
        finished_at=None,
    )


async def register_pending_rows(uow: UnitOfWork, limit: int) -> int:
    """Register up to `limit` pending rows of any upload, each alone: a refused row (bad value,
    already registered...) keeps its reason and undoes nothing of its neighbours."""
    claimed = await store.claim_pending_rows(uow.conn, limit=limit)
    results: list[dict[str, Any]] = []
    for row in claimed:
        outcome: dict[str, Any] = {"import_id": row.import_id, "line": row.line}
        try:
            registration = _registration(row.fields)
            async with uow.savepoint():
                registered = await register_entity(uow, registration)
        except Rejection as refused:
            outcome |= {"status": "refused", "code": refused.code, "message": refused.message}
            outcome["event_id"] = None
        else:
            outcome |= {"status": "registered", "code": None, "message": None}
            outcome["event_id"] = registered.event_id
        results.append(outcome)
    if results:
        await store.record_row_results(uow.conn, results=results)
        await store.finish_imports(
            uow.conn, import_ids={row.import_id for row in claimed}, at=uow.now
        )
    return len(claimed)


def _registration(fields_json: str) -> Registration:
    fields = json.loads(fields_json)
    if "_extra" in fields:
        raise Invalid("invalid_row", f"more values than columns: {fields['_extra'][:100]}")
    absent = [name for name in ROSTER_COLUMNS if name not in fields]
    if absent:
        raise Invalid("invalid_row", f"fewer values than columns: no {', '.join(absent)}")
    if not re.fullmatch(r"[0-9]{4}", fields["compliance_year"]):
        raise Invalid("invalid_row", f"compliance_year {fields['compliance_year']!r}: four digits")
    year = int(fields["compliance_year"])
    flag = fields.get("new_entrant", "").lower()
    if flag not in ("", "true", "false"):
        raise Invalid("invalid_row", f"new_entrant {fields['new_entrant']!r}: true or false")
    try:
        return Registration(
            credit_code=fields["credit_code"],
            name=fields["name"],
            district=fields["district"],
            sector=fields["sector"],
            compliance_year=year,
            new_entrant=flag == "true",
        )
    except ValidationError as error:
        raise Invalid("invalid_row", where_invalid(error.errors())) from None
