"""The registry's obligations with deadlines, per entity on the policy year's roster: the
surrender (every entity) and the opening of accounts (new entrants: the registry account and the
linked trading account). The commands that change what an entity has done call these in their
own units of work; carbon_platform.obligations reminds, marks overdue and escalates on time.
Also the projected shortfall of a district's entities before the surrender, from their holdings
and their obligation (or, until verification determines it, their reported emissions)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter

from carbon_contracts.errors import Forbidden
from carbon_contracts.events import ReportSubmitted
from carbon_contracts.policy import Policy
from carbon_platform import obligations
from carbon_platform.access import SUPERVISION, Owner, allowed
from carbon_platform.auth import Principal
from carbon_platform.codec import Event
from carbon_platform.context import Context, Handler, UnitOfWork
from carbon_platform.http import refusals
from registry import store
from registry.domain import compliance
from registry.schemas import Shortfall

router = APIRouter(tags=["deadlines"])

SURRENDER = "surrender"
ACCOUNTS_OPENING = "accounts_opening"
OWNED = (ACCOUNTS_OPENING, SURRENDER)
NOT_DETERMINED = "obligation not yet determined (verification under way)"
NO_REGISTRY_ACCOUNT = "registry account not opened"
NO_TRADING_ACCOUNT = "trading account not linked"


# --- what is still missing, in plain words ----------------------------------------------------


def surrender_missing(*, surrendered: int, obligation: int) -> str:
    """A surrender may be made in parts (each part all or nothing): say how far it has got."""
    return f"surrendered {surrendered} of {obligation} allowances"


def accounts_missing(*, account: Any, trading: Any) -> str | None:
    """The accounts a new entrant has still to open; None once both are there."""
    missing = [
        text
        for text, row in ((NO_REGISTRY_ACCOUNT, account), (NO_TRADING_ACCOUNT, trading))
        if row is None
    ]
    return "; ".join(missing) or None


# --- what the registry's commands and handlers call ------------------------------------------


async def enroll(
    uow: UnitOfWork, *, credit_code: str, name: str, district: str, new_entrant: bool
) -> None:
    """The entity was put on the roster of the policy's year: bound to surrender (its
    obligation is unknown yet: verification.finalised needs the roster entry), and a new
    entrant to open its accounts too, with what it has still to open. A new entrant that has
    both already (known from an earlier year) is not bound by accounts_opening."""
    tables = store.obligation_tables
    await obligations.enroll(
        uow,
        tables,
        credit_code=credit_code,
        obligation=SURRENDER,
        name=name,
        district=district,
        missing=NOT_DETERMINED,
    )
    if not new_entrant:
        return
    missing = accounts_missing(
        account=await store.get_account(uow.conn, credit_code=credit_code),
        trading=await store.get_trading_account(uow.conn, credit_code=credit_code),
    )
    if missing is not None:
        await obligations.enroll(
            uow,
            tables,
            credit_code=credit_code,
            obligation=ACCOUNTS_OPENING,
            name=name,
            district=district,
            missing=missing,
        )


async def obligation_determined(uow: UnitOfWork, *, credit_code: str, obligation: int) -> None:
    """The final verified figure set the year's obligation: the reminders now say how much. An
    obligation of nothing is met as it is determined."""
    tables = store.obligation_tables
    if obligation == 0:
        await obligations.complete(
            uow, tables, credit_code=credit_code, obligation=SURRENDER, at=uow.now
        )
        return
    await obligations.still_missing(
        uow,
        tables,
        credit_code=credit_code,
        obligation=SURRENDER,
        missing=surrender_missing(surrendered=0, obligation=obligation),
    )


async def surrendered(
    uow: UnitOfWork,
    *,
    credit_code: str,
    compliance_year: int,
    surrendered: int,
    obligation: int,
    completed_at: datetime | None,
) -> None:
    """A surrender went through: the obligation is met at `completed_at` (the instant its
    `on_time` is judged by), or the text of what is left changes."""
    if compliance_year != uow.policy.compliance_year:  # only the policy's year is watched
        return
    tables = store.obligation_tables
    if completed_at is not None:
        await obligations.complete(
            uow, tables, credit_code=credit_code, obligation=SURRENDER, at=completed_at
        )
        return
    await obligations.still_missing(
        uow,
        tables,
        credit_code=credit_code,
        obligation=SURRENDER,
        missing=surrender_missing(surrendered=surrendered, obligation=obligation),
    )


async def accounts_changed(uow: UnitOfWork, credit_code: str) -> None:
    """The registry account opened or the trading account was linked: a new entrant has met
    its accounts_opening obligation once both are there, at the later of the two instants the
    registry recorded (nothing changes for an entity not bound by it)."""
    tables = store.obligation_tables
    account = await store.get_account(uow.conn, credit_code=credit_code)
    trading = await store.get_trading_account(uow.conn, credit_code=credit_code)
    missing = accounts_missing(account=account, trading=trading)
    if missing is not None:
        await obligations.still_missing(
            uow, tables, credit_code=credit_code, obligation=ACCOUNTS_OPENING, missing=missing
        )
        return
    at = max(account.opened_at, trading.linked_at)
    await obligations.complete(
        uow, tables, credit_code=credit_code, obligation=ACCOUNTS_OPENING, at=at
    )


# --- the entities rostered before the registry watched its deadlines ------------------------


async def backfill(uow: UnitOfWork, _: None) -> int:
    """Enrol the entities bound by the policy year's roster that have no obligation row yet
    (rostered before an upgrade in the middle of the cycle added the tables), each where it
    stands now: what it has still to do, or met at the instant the registry recorded. Run at
    each start (Watched.backfill); once all are enrolled it finds nobody. Returns how many
    obligations it enrolled."""
    return await _backfill_surrender(uow) + await _backfill_accounts_opening(uow)


async def _backfill_surrender(uow: UnitOfWork) -> int:
    year, enrolled = uow.policy.compliance_year, 0
    for row in await store.unenrolled_roster(uow.conn, compliance_year=year, obligation=SURRENDER):
        missing = (
            NOT_DETERMINED
            if row.obligation is None
            else surrender_missing(surrendered=row.surrendered, obligation=row.obligation)
        )
        met = row.completed_at
        if met is None and row.obligation == 0:  # met as determined: that instant is not kept
            met = uow.now
        enrolled += await obligations.enroll_found(
            uow, store.obligation_tables, row, obligation=SURRENDER, missing=missing, done_at=met
        )
    return enrolled


async def _backfill_accounts_opening(uow: UnitOfWork) -> int:
    year, enrolled = uow.policy.compliance_year, 0
    for row in await store.unenrolled_new_entrants(
        uow.conn, compliance_year=year, obligation=ACCOUNTS_OPENING
    ):
        missing = accounts_missing(account=row.opened_at, trading=row.linked_at)
        met = None
        if missing is None:  # both open: met when the later came, bound to what it lacked then
            met = max(row.opened_at, row.linked_at)
            missing = _accounts_missing_when_rostered(row)
        enrolled += await obligations.enroll_found(
            uow,
            store.obligation_tables,
            row,
            obligation=ACCOUNTS_OPENING,
            missing=missing,
            done_at=met,
        )
    return enrolled


def _accounts_missing_when_rostered(row: Any) -> str:
    """What a new entrant that has both accounts now had still to open when it was rostered
    (one at least, or it would not be bound)."""

    def then(at: datetime) -> datetime | None:
        return at if at < row.registered_at else None

    missing = accounts_missing(account=then(row.opened_at), trading=then(row.linked_at))
    return missing or NO_REGISTRY_ACCOUNT


# --- inbound: reported emissions --------------------------------------------------------------


async def on_report_submitted(uow: UnitOfWork, event: Event[Any]) -> None:
    """Keep the entity's latest reported total of the year (a correction is a later version;
    an earlier version arriving late changes nothing): the basis of its projected shortfall
    until its obligation is determined. Rejects `unknown_entity` (never registered here)."""
    report: ReportSubmitted = event.payload
    await store.known_entity(uow.conn, credit_code=report.credit_code)
    await store.keep_reported_emissions(
        uow.conn,
        credit_code=report.credit_code,
        compliance_year=report.compliance_year,
        report_id=str(report.report_id),
        version=report.version,
        total_emissions=report.total_emissions,
        submitted_at=report.submitted_at,
    )


HANDLERS: dict[str, dict[str, Handler]] = {
    "report.submitted": {"report.submitted": on_report_submitted},
}


# --- the projected shortfall ------------------------------------------------------------------


def shortfall(policy: Policy, row: Any) -> Shortfall:
    """One entity's projection (a row of store.shortfall_positions)."""
    basis: int | None = None
    source = None
    if row.obligation is not None:
        basis, source = int(row.obligation), "obligation"
    elif row.total_emissions is not None:
        basis, source = compliance.obligation(policy, row.total_emissions), "reported_emissions"
    done = int(row.surrendered or 0)
    held = int(row.held)
    return Shortfall(
        credit_code=row.credit_code,
        name=row.name,
        compliance_year=policy.compliance_year,
        held=held,
        basis=basis,
        basis_source=source,
        reported_emissions=row.total_emissions,
        report_version=row.version,
        surrendered=done,
        shortfall=None if basis is None else max(0, basis - done - held),
    )


@router.get(
    "/districts/{district}/shortfalls", responses=refusals(403), response_model=list[Shortfall]
)
async def district_shortfalls(
    district: str,
    context: Context,
    principal: Annotated[Principal, allowed(SUPERVISION, "read")],
) -> list[Shortfall]:
    """Before the surrender: each entity of the district on the year's roster, what it holds
    that the surrender could use against its obligation (or, until verification determines it,
    its latest reported emissions), the largest shortfall first (no basis: last). A district
    bureau sees its own district, the Bureau any."""
    context.policy.ensure_district(district)
    if not SUPERVISION.allows(principal, "read", Owner(district=district)):
        raise Forbidden("forbidden", "a district bureau sees its own district's shortfalls")
    async with context.reader.connect() as conn:
        rows = await store.shortfall_positions(
            conn, district=district, compliance_year=context.policy.compliance_year
        )
    views = [shortfall(context.policy, row) for row in rows]
    return sorted(
        views, key=lambda view: (view.shortfall is None, -(view.shortfall or 0), view.credit_code)
    )
