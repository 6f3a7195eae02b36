"""The registry's ledger under concurrency, on the real database (PostgreSQL when
CARBON_TEST_DATABASE_URL is set, else an SQLite file): hundreds of debits racing for one
account's allowances, surrenders racing for one proof and for the allowances transfers take. No
debit ever overdraws, no proof is used twice, totals are conserved and every reconciliation,
even one taken in the middle of the race, balances."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import func, select

from carbon_contracts.errors import Rejection
from carbon_contracts.policy import default_policy_path, load_policy
from carbon_platform import metrics
from carbon_platform.clock import Clock
from carbon_platform.context import ServiceContext
from carbon_platform.db import make_engine
from registry import commands, ledger, store
from registry.domain import compliance
from registry.domain.credit_code import make_credit_code
from registry.schemas import Surrender, TransferOut
from registry.service import SERVICE
from tests.support import migrated_schema

pytestmark = pytest.mark.integration

CODE = make_credit_code(881)
HELD = 200
ATTEMPTS = 300
TRADING = "SEEE-0000881"


@pytest.fixture
async def context(tmp_path: Path) -> AsyncIterator[ServiceContext]:
    """The registry's migrated schema and a service context on it."""
    async with migrated_schema(SERVICE, tmp_path) as settings:
        engine = make_engine(settings)
        yield ServiceContext(
            name="registry",
            settings=settings,
            engine=engine,
            inbox=store.messaging.inbox,
            outbox=store.messaging.outbox,
            clock=Clock(datetime(2025, 6, 10, 9, 0, tzinfo=UTC)),
            policy=load_policy(default_policy_path()),
        )
        await engine.dispose()


async def seed(
    context: ServiceContext, *, held: int, verified: str | None = None, proofs: int = 0
) -> None:
    """A rostered entity with its registry and trading accounts, `held` allowances of 2024, the
    year's obligation if `verified`, and `proofs` SHCERCIR1 proofs of 10 units each."""
    async with context.transaction() as uow:
        conn, now = uow.conn, uow.now
        await store.register(
            conn,
            credit_code=CODE,
            name="Race Ltd",
            district="pudong",
            sector="chemicals",
            compliance_year=2024,
            new_entrant=False,
            at=now,
        )
        await store.open_account(conn, account_id=f"SHEA-{CODE}", credit_code=CODE, at=now)
        await store.link_trading_account(
            conn, credit_code=CODE, trading_account_id=TRADING, opened_at=now, at=now
        )
        if held:
            await store.move_allowances(
                conn,
                credit_code=CODE,
                vintage=2024,
                amount=held,
                kind="opening_balance",
                reference="seed",
                at=now,
            )
        if verified is not None:
            emissions = Decimal(verified)
            await store.create_obligation(
                conn,
                credit_code=CODE,
                compliance_year=2024,
                case_id=str(uuid4()),
                verified_emissions=emissions,
                obligation=compliance.obligation(context.policy, emissions),
            )
        for number in range(proofs):
            await store.add_offset_proof(
                conn,
                offset_type="SHCERCIR1",
                proof_id=f"P-{number}",
                credit_code=CODE,
                compliance_year=2024,
                quantity=10,
                project_id="SHCI-PT-2024-007",
                cancelled_on=date(2025, 6, 1),
                cancelled_at=datetime(2025, 6, 1, tzinfo=UTC),
                event_id=str(uuid4()),
                at=now,
            )


async def outcome(attempt: Awaitable[Any]) -> str:
    """'done', or the refusal's code."""
    try:
        await attempt
    except Rejection as refused:
        return refused.code
    return "done"


async def scalar(context: ServiceContext, query: Any) -> Any:
    async with context.engine.connect() as conn:
        return await conn.scalar(query)


class Watch:
    """Reads holdings and reconciles over and over while the race runs, on connections of its
    own (the racers queue for the service's pool)."""

    def __init__(self, context: ServiceContext) -> None:
        self.engine = make_engine(context.settings)
        self.context = ServiceContext(
            name=context.name,
            settings=context.settings,
            engine=self.engine,
            inbox=context.inbox,
            outbox=context.outbox,
            clock=context.clock,
            policy=context.policy,
        )
        self.lowest = HELD
        self.checks: list[bool] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                async with self.context.reader.connect() as conn:
                    held = await store.get_holdings(conn, credit_code=CODE)
                self.lowest = min([self.lowest, *held.values()])
                check = await ledger.reconcile(self.context)
                self.checks.append(
                    check.balanced
                    and check.allowances_held == check.journal_allowances
                    and check.offsets_unused == check.journal_offsets
                )
        finally:
            await self.engine.dispose()


async def racing(
    context: ServiceContext, attempts: list[Awaitable[Any]]
) -> tuple[Counter[str], Watch]:
    watch = Watch(context)
    watcher = asyncio.create_task(watch.run())
    try:
        outcomes = Counter(await asyncio.gather(*(outcome(a) for a in attempts)))
    finally:
        watch.stop.set()
        await watcher
    return outcomes, watch


async def test_hundreds_of_concurrent_debits_never_overdraw_and_the_ledger_balances(
    context: ServiceContext,
) -> None:
    await seed(context, held=HELD)
    move_one = TransferOut(credit_code=CODE, vintage=2024, allowances=1)

    outcomes, watch = await racing(
        context, [context.execute(ledger.transfer_out, move_one) for _ in range(ATTEMPTS)]
    )

    assert outcomes == {"done": HELD, "insufficient_holdings": ATTEMPTS - HELD}
    assert watch.lowest >= 0
    assert watch.checks and all(watch.checks), "a reconciliation during the race differed"
    async with context.reader.connect() as conn:
        assert await store.get_holdings(conn, credit_code=CODE) == {2024: 0}
        moved = await store.list_transfers(conn, credit_code=CODE)
    assert len(moved) == HELD
    assert {(t.direction, t.allowances, t.trading_account_id) for t in moved} == {
        ("to_exchange", 1, TRADING)
    }
    published = await scalar(
        context,
        select(func.count()).where(context.outbox.c.event_type == "allowances.transferred"),
    )
    assert published == HELD
    check = await ledger.reconcile(context)
    assert (check.balanced, check.differences) == (True, [])
    # Conserved: what was held is now either held or at the exchange, and the journal says so.
    assert check.allowances_held == check.journal_allowances == 0
    journalled_out = await scalar(
        context,
        select(func.sum(store.journal.c.amount)).where(store.journal.c.kind == "transfer_out"),
    )
    assert journalled_out == -HELD
    assert metrics.LEDGER_DIFFERENCE._value.get() == 0


async def test_concurrent_surrenders_naming_one_proof_use_it_once(
    context: ServiceContext,
) -> None:
    await seed(context, held=0, verified="1000.000", proofs=1)  # cap 50, the proof 10
    name_it = Surrender(
        credit_code=CODE,
        compliance_year=2024,
        offsets=[{"type": "SHCERCIR1", "proof_id": "P-0"}],
    )

    outcomes, watch = await racing(
        context, [context.execute(commands.surrender, name_it) for _ in range(20)]
    )

    assert outcomes == {"done": 1, "proof_used": 19}
    assert all(watch.checks)
    async with context.reader.connect() as conn:
        due = await store.get_obligation(conn, credit_code=CODE, compliance_year=2024)
        [proof] = await store.list_offset_proofs(conn, credit_code=CODE)
    assert (due.surrendered, due.offsets_surrendered) == (10, 10)
    assert proof.used_for_year == 2024
    check = await ledger.reconcile(context)
    assert (check.balanced, check.offsets_unused, check.journal_offsets) == (True, 0, 0)


async def test_surrenders_and_transfers_racing_for_the_same_allowances_conserve_them(
    context: ServiceContext,
) -> None:
    # Obligation 1000, 200 held, 10 proofs of 10 (cap 50): transfers of 1, surrenders of 30
    # allowances plus a proof, all at once.
    await seed(context, held=HELD, verified="1000.000", proofs=10)
    transfers = [
        context.execute(
            ledger.transfer_out, TransferOut(credit_code=CODE, vintage=2024, allowances=1)
        )
        for _ in range(150)
    ]
    surrenders = [
        context.execute(
            commands.surrender,
            Surrender(
                credit_code=CODE,
                compliance_year=2024,
                allowances=30,
                offsets=[{"type": "SHCERCIR1", "proof_id": f"P-{number}"}],
            ),
        )
        for number in range(10)
    ]
    attempts: list[Awaitable[Any]] = list(transfers)
    for number, surrender in enumerate(surrenders):  # spread among the transfers
        attempts.insert(number * 16, surrender)

    outcomes, watch = await racing(context, attempts)

    assert set(outcomes) <= {"done", "insufficient_holdings", "offsets_over_cap"}
    assert watch.lowest >= 0
    assert all(watch.checks)
    async with context.reader.connect() as conn:
        held = (await store.get_holdings(conn, credit_code=CODE))[2024]
        due = await store.get_obligation(conn, credit_code=CODE, compliance_year=2024)
        moved = await store.list_transfers(conn, credit_code=CODE)
    offsets = due.offsets_surrendered
    assert offsets <= 50 and offsets % 10 == 0
    allowances_surrendered = due.surrendered - offsets
    assert allowances_surrendered == 30 * (offsets // 10)
    assert held + len(moved) + allowances_surrendered == HELD
    assert outcomes["done"] == len(moved) + offsets // 10
    check = await ledger.reconcile(context)
    assert check.balanced
    assert check.allowances_held == check.journal_allowances == held
    assert check.offsets_unused == check.journal_offsets == 100 - offsets
