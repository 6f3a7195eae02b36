"""Offsets, transfers with the exchange and the ledger's reconciliation: cancellation proofs
from the offset issuers, allowances moved to and from the entity's trading account, and the
proof that holdings equal the journal."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.errors import Conflict
from carbon_contracts.events import (
    AllowancesTransferred,
    ExchangeTransferSettled,
    OffsetCancelled,
    TradingAccountOpened,
)
from carbon_platform import metrics
from carbon_platform.access import ENTITY, OPERATIONS, Owner, allowed
from carbon_platform.auth import Principal
from carbon_platform.codec import Event
from carbon_platform.context import Context, Handler, ServiceContext, UnitOfWork
from carbon_platform.http import refusals
from registry import deadlines, store
from registry.api import EntityCode
from registry.domain.credit_code import checked_credit_code
from registry.schemas import (
    Holding,
    LedgerDifference,
    OffsetProofView,
    Reconciliation,
    TransferOut,
    TransferReceipt,
    TransferRequest,
    TransferView,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["ledger"])

RECONCILE_EVERY_S = 60.0


# --- inbound: offset cancellation proofs ------------------------------------------------------


async def on_offset_cancelled(uow: UnitOfWork, event: Event[Any]) -> None:
    """Keep a cancellation proof (CCER or SHCERCIR1) that its issuer published for a registered
    entity; the entity names it when it surrenders. The same proof again changes nothing; the
    same proof id with other content is refused (the issuer's ids are unique)."""
    cancelled: OffsetCancelled = event.payload
    kind, code = cancelled.OFFSET_TYPE, cancelled.credit_code
    key = (kind, cancelled.proof_id)
    known = (await store.get_offset_proofs(uow.conn, keys=[key])).get(key)
    if known is not None:
        if _same_proof(known, cancelled):
            return
        raise Conflict(
            "proof_conflict",
            f"{kind} proof {cancelled.proof_id} was received before with other content",
        )
    await store.known_entity(uow.conn, credit_code=code)
    await store.add_offset_proof(
        uow.conn,
        offset_type=kind,
        proof_id=cancelled.proof_id,
        credit_code=code,
        compliance_year=cancelled.compliance_year,
        quantity=cancelled.quantity,
        project_id=cancelled.project_id,
        cancelled_on=cancelled.cancelled_on,
        cancelled_at=cancelled.cancelled_at,
        event_id=event.id,
        at=uow.now,
    )


def _same_proof(row: Any, cancelled: OffsetCancelled) -> bool:
    return (
        row.credit_code,
        row.compliance_year,
        row.quantity,
        row.project_id,
        row.cancelled_on,
        row.cancelled_at,
    ) == (
        cancelled.credit_code,
        cancelled.compliance_year,
        cancelled.quantity,
        cancelled.project_id,
        cancelled.cancelled_on,
        cancelled.cancelled_at,
    )


# --- inbound: the exchange's trading accounts and settled transfers ---------------------------


async def on_trading_account_opened(uow: UnitOfWork, event: Event[Any]) -> None:
    """Link the entity's trading account at the exchange to its registry entry, once: the same
    link again changes nothing; another account for the entity, or the account for another
    entity, is refused."""
    opened: TradingAccountOpened = event.payload
    code, account_id = opened.credit_code, opened.trading_account_id
    await store.known_entity(uow.conn, credit_code=code)
    linked = await store.get_trading_account(uow.conn, credit_code=code)
    if linked is not None:
        if linked.trading_account_id == account_id:
            return
        raise Conflict(
            "trading_account_already_linked",
            f"{code} is linked to trading account {linked.trading_account_id}, not {account_id}",
        )
    if await store.get_trading_account_by_id(uow.conn, trading_account_id=account_id):
        raise Conflict(
            "trading_account_of_another_entity",
            f"trading account {account_id} is linked to another entity, not {code}",
        )
    await store.link_trading_account(
        uow.conn,
        credit_code=code,
        trading_account_id=account_id,
        opened_at=opened.opened_at,
        at=uow.now,
    )
    await deadlines.accounts_changed(uow, code)


async def on_exchange_transfer_settled(uow: UnitOfWork, event: Event[Any]) -> None:
    """Credit allowances the exchange moved back from the entity's trading account, once per
    transfer id however often it is sent; the same id with other content is refused."""
    settled: ExchangeTransferSettled = event.payload
    code, transfer_id = settled.credit_code, str(settled.transfer_id)
    earlier = await store.get_transfer(uow.conn, transfer_id=transfer_id)
    if earlier is not None:
        if _same_transfer(earlier, settled):
            return
        raise Conflict(
            "transfer_conflict", f"transfer {transfer_id} was applied before with other content"
        )
    await store.known_entity(uow.conn, credit_code=code)
    linked = await store.get_trading_account(uow.conn, credit_code=code)
    if linked is None or linked.trading_account_id != settled.trading_account_id:
        raise Conflict(
            "trading_account_mismatch",
            f"transfer {transfer_id} comes from trading account {settled.trading_account_id}; "
            + (
                f"{code} is linked to {linked.trading_account_id}"
                if linked
                else f"{code} has no linked trading account"
            ),
        )
    if await store.get_account(uow.conn, credit_code=code) is None:
        raise Conflict("account_not_open", f"{code} has no allowance account")
    await store.move_allowances(
        uow.conn,
        credit_code=code,
        vintage=settled.vintage,
        amount=settled.allowances,
        kind="transfer_in",
        reference=transfer_id,
        at=uow.now,
    )
    await store.add_transfer(
        uow.conn,
        transfer_id=transfer_id,
        credit_code=code,
        direction="from_exchange",
        trading_account_id=settled.trading_account_id,
        vintage=settled.vintage,
        allowances=settled.allowances,
        at=settled.settled_at,
    )


def _same_transfer(row: Any, settled: ExchangeTransferSettled) -> bool:
    return (
        row.direction,
        row.credit_code,
        row.trading_account_id,
        row.vintage,
        row.allowances,
        row.at,
    ) == (
        "from_exchange",
        settled.credit_code,
        settled.trading_account_id,
        settled.vintage,
        settled.allowances,
        settled.settled_at,
    )


HANDLERS: dict[str, dict[str, Handler]] = {
    "ccer.cancelled": {"ccer.cancelled": on_offset_cancelled},
    "shcercir1.cancelled": {"shcercir1.cancelled": on_offset_cancelled},
    "trading_account.opened": {"trading_account.opened": on_trading_account_opened},
    "exchange_transfer.settled": {"exchange_transfer.settled": on_exchange_transfer_settled},
}


# --- commands ---------------------------------------------------------------------------------


async def transfer_out(uow: UnitOfWork, command: TransferOut) -> TransferReceipt:
    """Move allowances of one vintage from the entity's registry account to its trading account
    at the exchange (`allowances.transferred`); never more than the vintage holds, however many
    transfers run at once."""
    code = checked_credit_code(command.credit_code)
    await store.known_entity(uow.conn, credit_code=code)
    account = await store.get_account(uow.conn, credit_code=code)
    if account is None:
        raise Conflict("account_not_open", f"{code} has no allowance account")
    trading = await store.get_trading_account(uow.conn, credit_code=code)
    if trading is None:
        raise Conflict(
            "no_trading_account", f"{code} has no trading account at the exchange linked yet"
        )
    transfer_id = uuid.uuid4()
    try:
        await store.move_allowances(
            uow.conn,
            credit_code=code,
            vintage=command.vintage,
            amount=-command.allowances,
            kind="transfer_out",
            reference=str(transfer_id),
            at=uow.now,
        )
    except Conflict:
        # Refused for want of allowances: say so when the vintage's others are surrender-only,
        # which never move (looked up only then, off the transfer's usual path).
        vintage = command.vintage
        restricted = (await store.get_surrender_only(uow.conn, credit_code=code)).get(vintage, 0)
        if not restricted:
            raise
        held = (await store.get_holdings(uow.conn, credit_code=code)).get(vintage, 0)
        raise Conflict(
            "surrender_only",
            f"vintage {vintage} holds {held} transferable allowances; its other "
            f"{restricted}, bought at auction, may only be surrendered",
        ) from None
    await store.add_transfer(
        uow.conn,
        transfer_id=str(transfer_id),
        credit_code=code,
        direction="to_exchange",
        trading_account_id=trading.trading_account_id,
        vintage=command.vintage,
        allowances=command.allowances,
        at=uow.now,
    )
    event = uow.record(
        AllowancesTransferred(
            credit_code=code,
            compliance_year=uow.policy.compliance_year,
            transfer_id=transfer_id,
            account_id=account.account_id,
            trading_account_id=trading.trading_account_id,
            vintage=command.vintage,
            allowances=command.allowances,
            transferred_at=uow.now,
        )
    )
    holdings = await store.get_holdings(uow.conn, credit_code=code)
    return TransferReceipt(
        transfer_id=str(transfer_id),
        credit_code=code,
        account_id=account.account_id,
        trading_account_id=trading.trading_account_id,
        vintage=command.vintage,
        allowances=command.allowances,
        transferred_at=uow.now,
        holdings=[Holding(vintage=v, allowances=n) for v, n in holdings.items()],
        event_id=event.event_id,
    )


async def reconcile(context: ServiceContext) -> Reconciliation:
    """Prove that holdings equal the journal: allowances per entity and vintage, offsets (unused
    proofs) per entity and type. Sets the difference gauge."""
    checked_at = context.clock.now()
    async with context.reader.connect() as conn:
        await _one_snapshot(conn)
        checked = await store.reconcile(conn)
    differences = [
        LedgerDifference(
            credit_code=row.credit_code,
            asset=row.asset,
            vintage=row.vintage,
            holdings=int(row.held),
            journal=int(row.journalled),
        )
        for row in checked.differences
    ]
    metrics.LEDGER_DIFFERENCE.set(sum(abs(d.holdings - d.journal) for d in differences))
    return Reconciliation(
        checked_at=checked_at,
        accounts=checked.accounts,
        allowances_held=checked.allowances_held,
        journal_allowances=checked.journal_allowances,
        offsets_unused=checked.offsets_unused,
        journal_offsets=checked.journal_offsets,
        differences=differences,
        balanced=not differences,
    )


async def _one_snapshot(conn: AsyncConnection) -> None:
    # The totals and the differences are two statements; under PostgreSQL's default (read
    # committed) each would see its own moment, so one answer could mix two states.
    if conn.dialect.name == "postgresql":
        await conn.execution_options(isolation_level="REPEATABLE READ")


async def reconcile_periodically(context: ServiceContext) -> None:
    """Reconciles every RECONCILE_EVERY_S seconds, so that the gauge (and its alert) shows a
    difference soon after it appears; a failed run (database away) is retried at the next."""
    while True:
        try:
            result = await reconcile(context)
        except Exception as error:
            log.warning("ledger reconciliation failed: %r", error)
        else:
            if not result.balanced:
                log.error(
                    "ledger out of balance: %d positions differ from the journal",
                    len(result.differences),
                )
        await asyncio.sleep(RECONCILE_EVERY_S)


# --- routes -----------------------------------------------------------------------------------


async def _check_read(conn: AsyncConnection, principal: Principal, code: str) -> None:
    entity = await store.known_entity(conn, credit_code=code)
    ENTITY.check(principal, "read", Owner(credit_code=code, district=entity.district))


@router.get(
    "/entities/{credit_code}/offsets",
    responses=refusals(403, 404),
    response_model=list[OffsetProofView],
)
async def offsets(
    code: EntityCode,
    context: Context,
    principal: Annotated[Principal, allowed(ENTITY, "read")],
) -> list[OffsetProofView]:
    """The cancellation proofs received for the entity, used or not."""
    ENTITY.check_entity(principal, "read", code)  # before the lookup: a 404 tells it nothing
    async with context.reader.connect() as conn:
        await _check_read(conn, principal, code)
        rows = await store.list_offset_proofs(conn, credit_code=code)
    return [
        OffsetProofView(
            type=row.offset_type,
            proof_id=row.proof_id,
            compliance_year=row.compliance_year,
            quantity=row.quantity,
            project_id=row.project_id,
            cancelled_on=row.cancelled_on,
            cancelled_at=row.cancelled_at,
            received_at=row.received_at,
            status="used" if row.used_at else "unused",
            used_for_year=row.used_for_year,
            used_at=row.used_at,
        )
        for row in rows
    ]


@router.post(
    "/entities/{credit_code}/transfers",
    status_code=201,
    responses=refusals(403, 404, 409),
    response_model=TransferReceipt,
)
async def transfer(
    code: EntityCode,
    body: TransferRequest,
    context: Context,
    principal: Annotated[Principal, allowed(ENTITY, "transfer")],
) -> TransferReceipt:
    """The entity moves allowances of a vintage to its trading account at the exchange
    (`allowances.transferred`); the exchange sends them back as `exchange_transfer.settled`."""
    ENTITY.check_entity(principal, "transfer", code)
    return await context.execute(transfer_out, TransferOut(credit_code=code, **body.model_dump()))


@router.get(
    "/entities/{credit_code}/transfers",
    responses=refusals(403, 404),
    response_model=list[TransferView],
)
async def transfers(
    code: EntityCode,
    context: Context,
    principal: Annotated[Principal, allowed(ENTITY, "read")],
) -> list[TransferView]:
    """Transfers between the entity's registry account and its trading account, both ways."""
    ENTITY.check_entity(principal, "read", code)
    async with context.reader.connect() as conn:
        await _check_read(conn, principal, code)
        rows = await store.list_transfers(conn, credit_code=code)
    return [
        TransferView(
            transfer_id=row.transfer_id,
            direction=row.direction,
            trading_account_id=row.trading_account_id,
            vintage=row.vintage,
            allowances=row.allowances,
            at=row.at,
        )
        for row in rows
    ]


@router.get("/ledger/reconciliation", responses=refusals(403), response_model=Reconciliation)
async def reconciliation(
    context: Context, _: Annotated[Principal, allowed(OPERATIONS, "operate")]
) -> Reconciliation:
    """Holdings against the journal, now: `balanced` when every position equals the sum of its
    journal entries; otherwise the positions that differ."""
    return await reconcile(context)
