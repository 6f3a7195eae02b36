"""Offsets, surrender with offsets, transfers with the exchange and the reconciliation, run
through the registry's commands, handlers and API on a real (in-memory SQLite) database: every
refusal is checked to change nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError
from sqlalchemy import delete, select, update

from carbon_contracts.errors import Conflict, Invalid, NotFound, Rejection
from carbon_contracts.events import (
    CcerCancelled,
    ExchangeTransferSettled,
    Shcercir1Cancelled,
    TradingAccountOpened,
)
from carbon_platform import metrics
from registry import commands, ledger, store
from registry.domain import compliance
from registry.domain.credit_code import make_credit_code
from registry.schemas import OpenAccount, Registration, Surrender, TransferOut
from tests.unit.support import POLICY, SHANGHAI, Harness, consumed

CODE = make_credit_code(71)
OTHER = make_credit_code(72)
VERIFIED = "24251.551"  # obligation 24252; offsets cap floor(1212.57755) = 1212
TRADING = "SEEE-0012345"
CERTIFICATE = "SHCERCIR1-2025-0042"
ON_TIME = datetime(2025, 6, 24, 15, 20, tzinfo=SHANGHAI)

# --- set-up -----------------------------------------------------------------------------------


async def entity(
    registry: Harness,
    code: str = CODE,
    *,
    account: bool = True,
    verified: str | None = VERIFIED,
    held: dict[int, int] | None = None,
) -> None:
    """A registered entity, its account open, its verified emissions known (the obligation) and
    its holdings seeded as opening balances."""
    await registry.run(
        commands.register_entity,
        Registration(
            credit_code=code,
            name="上海示例化工有限公司",
            district="pudong",
            sector="chemicals",
            compliance_year=2024,
        ),
    )
    if account:
        await registry.run(commands.open_account, OpenAccount(credit_code=code))
    async with registry.context.transaction() as uow:
        if verified is not None:
            emissions = Decimal(verified)
            await store.create_obligation(
                uow.conn,
                credit_code=code,
                compliance_year=2024,
                case_id=str(uuid4()),
                verified_emissions=emissions,
                obligation=compliance.obligation(POLICY, emissions),
            )
        for vintage, amount in ({2024: 24252} if held is None else held).items():
            await store.move_allowances(
                uow.conn,
                credit_code=code,
                vintage=vintage,
                amount=amount,
                kind="opening_balance",
                reference="test-seed",
                at=uow.now,
            )


def certificate(
    proof_id: str = CERTIFICATE,
    *,
    code: str = CODE,
    quantity: int = 1200,
    cancelled_on: date = date(2025, 6, 20),
    project_id: str = "SHCI-PT-2024-007",
) -> Shcercir1Cancelled:
    return Shcercir1Cancelled(
        credit_code=code,
        compliance_year=2024,
        proof_id=proof_id,
        quantity=quantity,
        project_id=project_id,
        cancelled_on=cancelled_on,
        cancelled_at=datetime.combine(cancelled_on, datetime.min.time(), SHANGHAI),
    )


def ccer(
    proof_id: str = "CCER-2025-000817", *, code: str = CODE, quantity: int = 500
) -> CcerCancelled:
    return CcerCancelled(
        credit_code=code,
        compliance_year=2024,
        proof_id=proof_id,
        quantity=quantity,
        project_id="CCER-14-2024-0032",
        cancelled_on=date(2025, 6, 12),
        cancelled_at=datetime(2025, 6, 12, 10, tzinfo=SHANGHAI),
    )


def surrender(
    allowances: int = 0, *offsets: tuple[str, str], code: str = CODE, year: int = 2024
) -> Surrender:
    return Surrender(
        credit_code=code,
        compliance_year=year,
        allowances=allowances,
        offsets=[{"type": kind, "proof_id": proof_id} for kind, proof_id in offsets],
    )


def shcercir1(proof_id: str = CERTIFICATE) -> tuple[str, str]:
    return ("SHCERCIR1", proof_id)


def trading_account_opened(code: str = CODE, trading: str = TRADING) -> TradingAccountOpened:
    return TradingAccountOpened(
        credit_code=code,
        compliance_year=2024,
        trading_account_id=trading,
        opened_at=datetime(2025, 2, 12, 10, tzinfo=SHANGHAI),
    )


def settled(
    transfer_id: UUID,
    allowances: int = 400,
    *,
    code: str = CODE,
    trading: str = TRADING,
    vintage: int = 2024,
) -> ExchangeTransferSettled:
    return ExchangeTransferSettled(
        credit_code=code,
        compliance_year=2024,
        transfer_id=transfer_id,
        trading_account_id=trading,
        vintage=vintage,
        allowances=allowances,
        settled_at=datetime(2025, 6, 18, 15, 30, tzinfo=SHANGHAI),
    )


def transfer(allowances: int, vintage: int = 2024, code: str = CODE) -> TransferOut:
    return TransferOut(credit_code=code, vintage=vintage, allowances=allowances)


async def holdings(registry: Harness, code: str = CODE) -> dict[int, int]:
    return await registry.read(store.get_holdings, credit_code=code)


async def rows(registry: Harness, table: Any) -> list[tuple[Any, ...]]:
    async def query(conn: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await conn.execute(select(table))]

    return await registry.read(query)


async def state(registry: Harness) -> dict[str, Any]:
    """Everything a refusal must leave as it was."""
    return {
        table.name: await rows(registry, table)
        for table in (
            store.holdings,
            store.journal,
            store.offset_proofs,
            store.obligations,
            store.transfers,
            store.trading_accounts,
            registry.context.outbox,
        )
    }


async def refused_without_change(
    registry: Harness, command: Any, message: Any, kind: type[Rejection], code: str
) -> Rejection:
    before = await state(registry)
    with pytest.raises(kind) as refused:
        await registry.run(command, message)
    assert refused.value.code == code
    assert await state(registry) == before
    return refused.value


async def handler_refused_without_change(
    registry: Harness, event: Any, kind: type[Rejection], code: str
) -> Rejection:
    before = await state(registry)
    with pytest.raises(kind) as refused:
        await registry.handle(event)
    assert refused.value.code == code
    assert await state(registry) == before
    return refused.value


async def journal(registry: Harness, code: str = CODE) -> list[tuple[str, str, int, int, str]]:
    """(asset, kind, vintage, amount, reference) of the entity's journal, in order."""

    async def query(conn: Any) -> list[tuple[str, str, int, int, str]]:
        table = store.journal
        found = await conn.execute(
            select(table.c.asset, table.c.kind, table.c.vintage, table.c.amount, table.c.reference)
            .where(table.c.credit_code == code)
            .order_by(table.c.id)
        )
        return [tuple(row) for row in found]

    return await registry.read(query)


async def balanced(registry: Harness) -> bool:
    return (await ledger.reconcile(registry.context)).balanced


# --- offset cancellation proofs received -------------------------------------------------------


async def test_a_cancellation_proof_is_kept_and_journalled_as_offsets_held(
    registry: Harness,
) -> None:
    await entity(registry)
    event = consumed(certificate())
    assert await registry.handle(event) == []

    [proof] = await registry.read(store.list_offset_proofs, credit_code=CODE)
    assert (proof.offset_type, proof.proof_id, proof.quantity, proof.compliance_year) == (
        "SHCERCIR1",
        CERTIFICATE,
        1200,
        2024,
    )
    assert (proof.cancelled_on, proof.event_id, proof.used_at) == (
        date(2025, 6, 20),
        event.id,
        None,
    )
    assert (await journal(registry))[-1] == ("SHCERCIR1", "offset_in", 2024, 1200, CERTIFICATE)
    check = await ledger.reconcile(registry.context)
    assert (check.balanced, check.offsets_unused, check.journal_offsets) == (True, 1200, 1200)


async def test_the_same_proof_delivered_again_changes_nothing(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(certificate())
    before = await state(registry)
    assert await registry.handle(certificate()) == []  # another delivery, another event id
    assert await state(registry) == before


async def test_the_same_proof_id_with_other_content_is_refused(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(certificate())
    refusal = await handler_refused_without_change(
        registry, certificate(quantity=1300), Conflict, "proof_conflict"
    )
    assert CERTIFICATE in refusal.message
    await handler_refused_without_change(
        registry, certificate(code=OTHER), Conflict, "proof_conflict"
    )


async def test_a_proof_id_is_unique_per_type_only(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(certificate("P-1"))
    await registry.handle(ccer("P-1"))
    proofs = await registry.read(store.list_offset_proofs, credit_code=CODE)
    assert sorted((p.offset_type, p.proof_id) for p in proofs) == [
        ("CCER", "P-1"),
        ("SHCERCIR1", "P-1"),
    ]


async def test_a_proof_for_an_unregistered_entity_is_refused(registry: Harness) -> None:
    refusal = await handler_refused_without_change(
        registry, certificate(code=OTHER), NotFound, "unknown_entity"
    )
    assert refusal.status == 404


async def test_the_entity_reads_its_proofs_used_and_unused(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(certificate())
    await registry.handle(ccer())
    await registry.run(commands.surrender, surrender(0, ("CCER", "CCER-2025-000817")))
    async with registry.client() as client:
        own = await client.get(
            f"/entities/{CODE}/offsets", headers=registry.token("entity", credit_code=CODE)
        )
        other = await client.get(
            f"/entities/{CODE}/offsets", headers=registry.token("entity", credit_code=OTHER)
        )
        district = await client.get(
            f"/entities/{CODE}/offsets", headers=registry.token("district", district="pudong")
        )
    assert own.status_code == 200, own.text
    assert [(p["type"], p["proof_id"], p["status"], p["used_for_year"]) for p in own.json()] == [
        ("CCER", "CCER-2025-000817", "used", 2024),
        ("SHCERCIR1", CERTIFICATE, "unused", None),
    ]
    assert own.json()[1]["cancelled_on"] == "2025-06-20"
    assert other.status_code == 403
    assert district.status_code == 200


# --- surrender with offsets -------------------------------------------------------------------


async def test_a_surrender_combining_allowances_with_a_certificate_completes_the_year(
    registry: Harness,
) -> None:
    await entity(registry)
    await registry.handle(certificate())
    registry.clock.current = ON_TIME
    ran = await registry.run(commands.surrender, surrender(23052, shcercir1()))

    assert ran.types == ["surrender.completed", "preallocation.issued"]
    completed = ran.events[0].payload
    assert completed == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "policy": "shanghai-2024",
        "verified_emissions": VERIFIED,
        "obligation": 24252,
        "allowances_surrendered": 23052,
        "offsets_surrendered": 1200,
        "offsets_by_type": {"SHCERCIR1": 1200},
        "deadline": "2025-06-30T17:00:00+08:00",
        "on_time": True,
        "completed_at": ON_TIME.isoformat(),
    }
    receipt = ran.result
    assert (receipt.surrendered_now, receipt.surrendered, receipt.offsets_surrendered) == (
        24252,
        24252,
        1200,
    )
    assert [(o.type, o.proof_id, o.quantity) for o in receipt.offsets] == [
        ("SHCERCIR1", CERTIFICATE, 1200)
    ]
    assert [(h.vintage, h.allowances) for h in receipt.drawn_from] == [(2024, 23052)]
    assert (receipt.status, receipt.remaining) == ("compliant", 0)
    assert (await holdings(registry))[2024] == 1200  # 24252 held, 23052 surrendered
    [proof] = await registry.read(store.list_offset_proofs, credit_code=CODE)
    assert (proof.used_for_year, proof.used_at) == (2024, ON_TIME)
    due = await registry.read(store.get_obligation, credit_code=CODE, compliance_year=2024)
    assert (due.surrendered, due.offsets_surrendered, due.on_time) == (24252, 1200, True)
    assert ("SHCERCIR1", "offset_use", 2024, -1200, CERTIFICATE) in await journal(registry)
    assert await balanced(registry)


async def test_offsets_by_type_reports_every_type_used_in_the_year(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(certificate(quantity=700))
    await registry.handle(ccer(quantity=500))
    first = await registry.run(commands.surrender, surrender(0, ("CCER", "CCER-2025-000817")))
    assert (first.events, first.result.offsets_surrendered) == ([], 500)
    ran = await registry.run(commands.surrender, surrender(24252 - 1200, shcercir1()))
    completed = ran.events[0].payload
    assert completed["offsets_by_type"] == {"CCER": 500, "SHCERCIR1": 700}
    assert (completed["offsets_surrendered"], completed["allowances_surrendered"]) == (1200, 23052)


async def test_an_offset_one_unit_over_the_cap_is_refused_and_changes_nothing(
    registry: Harness,
) -> None:
    await entity(registry)
    await registry.handle(certificate("AT-CAP", quantity=1212))
    await registry.handle(certificate("OVER-CAP", quantity=1213))
    refusal = await refused_without_change(
        registry,
        commands.surrender,
        surrender(100, shcercir1("OVER-CAP")),
        Invalid,
        "offsets_over_cap",
    )
    assert "1213 offsets requested" in refusal.message
    assert "cap of 1212" in refusal.message

    ran = await registry.run(commands.surrender, surrender(100, shcercir1("AT-CAP")))
    assert ran.result.offsets_surrendered == 1212


async def test_the_cap_counts_offsets_surrendered_earlier_in_the_year(registry: Harness) -> None:
    await entity(registry)
    for proof_id, quantity in (("FIRST", 1000), ("OVER", 213), ("FITS", 212)):
        await registry.handle(certificate(proof_id, quantity=quantity))
    await registry.run(commands.surrender, surrender(0, shcercir1("FIRST")))
    refusal = await refused_without_change(
        registry, commands.surrender, surrender(0, shcercir1("OVER")), Invalid, "offsets_over_cap"
    )
    assert "1000 already surrendered" in refusal.message
    ran = await registry.run(commands.surrender, surrender(0, shcercir1("FITS")))
    assert ran.result.offsets_surrendered == 1212


async def test_a_certificate_dated_06_26_is_refused_and_06_25_accepted(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(certificate("DATED-0626", quantity=10, cancelled_on=date(2025, 6, 26)))
    await registry.handle(certificate("DATED-0625", quantity=10, cancelled_on=date(2025, 6, 25)))
    refusal = await refused_without_change(
        registry,
        commands.surrender,
        surrender(5, shcercir1("DATED-0626")),
        Invalid,
        "certificate_too_late",
    )
    assert "2025-06-26" in refusal.message
    ran = await registry.run(commands.surrender, surrender(5, shcercir1("DATED-0625")))
    assert [o.proof_id for o in ran.result.offsets] == ["DATED-0625"]


async def test_a_proof_used_twice_is_refused(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(certificate(quantity=100))
    await registry.run(commands.surrender, surrender(0, shcercir1()))
    await refused_without_change(
        registry, commands.surrender, surrender(10, shcercir1()), Conflict, "proof_used"
    )


async def test_a_proof_of_another_entity_is_refused(registry: Harness) -> None:
    await entity(registry)
    await entity(registry, OTHER)
    await registry.handle(certificate("THEIRS", code=OTHER, quantity=100))
    refusal = await refused_without_change(
        registry,
        commands.surrender,
        surrender(10, shcercir1("THEIRS")),
        Conflict,
        "proof_of_another_entity",
    )
    assert refusal.status == 409


async def test_ccer_is_refused_while_the_policy_switch_is_off(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(ccer())
    await registry.handle(certificate(quantity=100))
    registry.context.policy = POLICY.model_copy(
        update={
            "offsets": POLICY.offsets.model_copy(
                update={"allowed": {"CCER": False, "SHCERCIR1": True}}
            )
        }
    )
    refusal = await refused_without_change(
        registry,
        commands.surrender,
        surrender(10, shcercir1(), ("CCER", "CCER-2025-000817")),
        Invalid,
        "offset_type_not_allowed",
    )
    assert refusal.status == 422
    ran = await registry.run(commands.surrender, surrender(10, shcercir1()))
    assert ran.result.offsets_surrendered == 100

    registry.context.policy = POLICY  # switched on again (the national registry allows it)
    ran = await registry.run(commands.surrender, surrender(0, ("CCER", "CCER-2025-000817")))
    assert ran.result.offsets_surrendered == 600


async def test_an_unknown_proof_is_not_found(registry: Harness) -> None:
    await entity(registry)
    await registry.handle(ccer("ONLY-CCER"))
    refusal = await refused_without_change(
        registry,
        commands.surrender,
        surrender(10, shcercir1("ONLY-CCER")),  # a CCER proof id named as SHCERCIR1
        NotFound,
        "unknown_proof",
    )
    assert refusal.status == 404


@pytest.mark.parametrize(
    ("allowances", "kind", "code"),
    [
        (24252, Invalid, "exceeds_obligation"),  # with the 1200 offsets: 1200 too many
        (24253 - 1200, Invalid, "exceeds_obligation"),
        (5000, Conflict, "insufficient_holdings"),  # 4000 held
    ],
)
async def test_a_refused_combined_surrender_uses_no_proof_and_debits_nothing(
    registry: Harness, allowances: int, kind: type[Rejection], code: str
) -> None:
    await entity(registry, held={2024: 4000})
    await registry.handle(certificate())
    await refused_without_change(
        registry, commands.surrender, surrender(allowances, shcercir1()), kind, code
    )
    [proof] = await registry.read(store.list_offset_proofs, credit_code=CODE)
    assert proof.used_at is None


async def test_a_surrender_refused_for_one_proof_uses_none_of_the_others(
    registry: Harness,
) -> None:
    await entity(registry)
    await registry.handle(certificate("GOOD", quantity=100))
    await registry.handle(certificate("LATE", quantity=100, cancelled_on=date(2025, 6, 27)))
    await refused_without_change(
        registry,
        commands.surrender,
        surrender(50, shcercir1("GOOD"), shcercir1("LATE")),
        Invalid,
        "certificate_too_late",
    )


async def test_a_proof_used_meanwhile_is_refused_by_the_conditional_update(
    registry: Harness,
) -> None:
    # As if another surrender used it between this one's checks and its write.
    await entity(registry)
    await registry.handle(certificate(quantity=100))
    with pytest.raises(Conflict) as refused:
        async with registry.context.transaction() as uow:
            [row] = (await store.get_offset_proofs(uow.conn, keys=[shcercir1()])).values()
            await uow.conn.execute(
                update(store.offset_proofs).values(used_for_year=2024, used_at=uow.now)
            )
            await store.use_offset_proofs(
                uow.conn, credit_code=CODE, compliance_year=2024, proofs=[row], at=uow.now
            )
    assert refused.value.code == "proof_used"


def test_a_surrender_request_names_something_and_each_proof_once() -> None:
    with pytest.raises(ValidationError, match="at least one allowance or one offset"):
        Surrender(credit_code=CODE, compliance_year=2024)
    with pytest.raises(ValidationError, match="named once"):
        surrender(0, shcercir1(), shcercir1())
    with pytest.raises(ValidationError):
        surrender(-1, shcercir1())
    with pytest.raises(ValidationError):
        surrender(0, ("VCS", "X-1"))
    assert surrender(0, shcercir1(), ("CCER", CERTIFICATE)).allowances == 0


async def test_the_surrender_api_takes_offsets_and_refuses_with_a_reason(
    registry: Harness,
) -> None:
    await entity(registry)
    await registry.handle(certificate())
    headers = registry.token("entity", credit_code=CODE)
    path = f"/entities/{CODE}/surrenders"
    async with registry.client() as client:
        duplicate = await client.post(
            path,
            headers=headers,
            json={"compliance_year": 2024, "offsets": [{"type": "SHCERCIR1", "proof_id": "X"}] * 2},
        )
        nothing = await client.post(path, headers=headers, json={"compliance_year": 2024})
        unknown = await client.post(
            path,
            headers=headers,
            json={"compliance_year": 2024, "offsets": [{"type": "CCER", "proof_id": "NOPE"}]},
        )
        done = await client.post(
            path,
            headers=headers,
            json={
                "compliance_year": 2024,
                "allowances": 23052,
                "offsets": [{"type": "SHCERCIR1", "proof_id": CERTIFICATE}],
            },
        )
    assert (duplicate.status_code, nothing.status_code) == (422, 422)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_proof"
    assert done.status_code == 201, done.text
    body = done.json()
    assert (body["status"], body["offsets_surrendered"], body["surrendered_now"]) == (
        "compliant",
        1200,
        24252,
    )
    assert body["offsets"] == [{"type": "SHCERCIR1", "proof_id": CERTIFICATE, "quantity": 1200}]


# --- the surrender deadline -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "on_time"),
    [
        (datetime(2025, 6, 30, 16, 59, 59, 999000, tzinfo=SHANGHAI), True),
        (datetime(2025, 6, 30, 17, 0, 0, 0, tzinfo=SHANGHAI), False),
        (datetime(2025, 6, 30, 8, 59, 59, 999000, tzinfo=UTC), True),
        (datetime(2025, 6, 30, 9, 0, 0, 0, tzinfo=UTC), False),
    ],
)
async def test_a_surrender_at_16_59_59_999_is_on_time_and_at_17_00_late(
    registry: Harness, at: datetime, on_time: bool
) -> None:
    await entity(registry)
    await registry.handle(certificate())
    registry.clock.current = at
    ran = await registry.run(commands.surrender, surrender(23052, shcercir1()))
    completed = ran.events[0].payload
    assert (completed["on_time"], datetime.fromisoformat(completed["completed_at"])) == (
        on_time,
        at,
    )
    due = await registry.read(store.get_obligation, credit_code=CODE, compliance_year=2024)
    assert (due.on_time, due.completed_at) == (on_time, at)


# --- the trading account ----------------------------------------------------------------------


async def test_the_trading_account_is_linked_once_and_shown_with_the_entity(
    registry: Harness,
) -> None:
    await entity(registry)
    assert await registry.handle(trading_account_opened()) == []
    before = await state(registry)
    await registry.handle(trading_account_opened())  # again: nothing changes
    assert await state(registry) == before
    linked = await registry.read(store.get_trading_account, credit_code=CODE)
    assert (linked.trading_account_id, linked.opened_at) == (
        TRADING,
        datetime(2025, 2, 12, 10, tzinfo=SHANGHAI),
    )
    async with registry.client() as client:
        status = await client.get(
            f"/entities/{CODE}", headers=registry.token("entity", credit_code=CODE)
        )
    assert status.json()["trading_account_id"] == TRADING


async def test_a_second_trading_account_or_one_of_another_entity_is_refused(
    registry: Harness,
) -> None:
    await entity(registry)
    await entity(registry, OTHER)
    await registry.handle(trading_account_opened())
    second = trading_account_opened(CODE, "SEEE-9999999")
    await handler_refused_without_change(
        registry, second, Conflict, "trading_account_already_linked"
    )
    taken = trading_account_opened(OTHER, TRADING)
    await handler_refused_without_change(
        registry, taken, Conflict, "trading_account_of_another_entity"
    )


async def test_a_trading_account_for_an_unregistered_entity_is_refused(
    registry: Harness,
) -> None:
    await handler_refused_without_change(
        registry, trading_account_opened(), NotFound, "unknown_entity"
    )


async def test_the_trading_account_may_be_linked_before_the_registry_account_opens(
    registry: Harness,
) -> None:
    await entity(registry, account=False, held={})
    await registry.handle(trading_account_opened())
    assert await registry.read(store.get_trading_account, credit_code=CODE)


# --- transfers out and back -------------------------------------------------------------------


async def test_a_transfer_out_and_back_is_applied_once(registry: Harness) -> None:
    await entity(registry, held={2024: 1000, 2025: 50})
    await registry.handle(trading_account_opened())
    ran = await registry.run(ledger.transfer_out, transfer(600))

    receipt = ran.result
    [event] = ran.events
    assert (event.topic, event.key, event.type) == (
        "allowances.transferred",
        CODE,
        "allowances.transferred",
    )
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "transfer_id": receipt.transfer_id,
        "account_id": f"SHEA-{CODE}",
        "trading_account_id": TRADING,
        "vintage": 2024,
        "allowances": 600,
        "transferred_at": registry.clock.now().isoformat(),
    }
    assert receipt.event_id == event.event.id
    assert [(h.vintage, h.allowances) for h in receipt.holdings] == [(2024, 400), (2025, 50)]
    assert await holdings(registry) == {2024: 400, 2025: 50}
    assert (await journal(registry))[-1] == (
        "SHEA",
        "transfer_out",
        2024,
        -600,
        receipt.transfer_id,
    )

    back = uuid4()
    event_back = consumed(settled(back, 450))
    assert await registry.handle(event_back) == []
    assert await holdings(registry) == {2024: 850, 2025: 50}
    before = await state(registry)
    await registry.handle(event_back)  # the same event delivered again
    await registry.handle(settled(back, 450))  # the same transfer sent again, a new event id
    assert await state(registry) == before
    assert await holdings(registry) == {2024: 850, 2025: 50}

    listed = await registry.read(store.list_transfers, credit_code=CODE)
    assert sorted((t.direction, t.allowances) for t in listed) == [
        ("from_exchange", 450),
        ("to_exchange", 600),
    ]
    check = await ledger.reconcile(registry.context)
    assert (check.balanced, check.allowances_held, check.journal_allowances) == (True, 900, 900)


async def test_a_settled_transfer_with_other_content_under_the_same_id_is_refused(
    registry: Harness,
) -> None:
    await entity(registry)
    await registry.handle(trading_account_opened())
    back = uuid4()
    await registry.handle(settled(back, 450))
    await handler_refused_without_change(
        registry, settled(back, 451), Conflict, "transfer_conflict"
    )
    # Our own outbound transfer id sent back as if it were the exchange's: refused too.
    out = await registry.run(ledger.transfer_out, transfer(5))
    await handler_refused_without_change(
        registry, settled(UUID(out.result.transfer_id), 5), Conflict, "transfer_conflict"
    )


async def test_a_settled_transfer_from_another_trading_account_is_refused(
    registry: Harness,
) -> None:
    await entity(registry)
    await entity(registry, OTHER)
    refusal = await handler_refused_without_change(
        registry, settled(uuid4()), Conflict, "trading_account_mismatch"
    )
    assert "no linked trading account" in refusal.message
    await registry.handle(trading_account_opened())
    await handler_refused_without_change(
        registry, settled(uuid4(), trading="SEEE-7777777"), Conflict, "trading_account_mismatch"
    )
    await handler_refused_without_change(
        registry, settled(uuid4(), code=OTHER), Conflict, "trading_account_mismatch"
    )


async def test_a_settled_transfer_into_no_registry_account_is_refused(registry: Harness) -> None:
    await entity(registry, account=False, held={})
    await registry.handle(trading_account_opened())
    await handler_refused_without_change(registry, settled(uuid4()), Conflict, "account_not_open")
    await handler_refused_without_change(
        registry, settled(uuid4(), code=OTHER), NotFound, "unknown_entity"
    )


async def test_a_transfer_out_is_refused_without_accounts_or_holdings(registry: Harness) -> None:
    await refused_without_change(
        registry, ledger.transfer_out, transfer(1), NotFound, "unknown_entity"
    )
    await entity(registry, account=False, held={})
    await refused_without_change(
        registry, ledger.transfer_out, transfer(1), Conflict, "account_not_open"
    )
    await entity(registry, OTHER, held={2024: 10})
    await refused_without_change(
        registry, ledger.transfer_out, transfer(1, code=OTHER), Conflict, "no_trading_account"
    )
    await registry.handle(trading_account_opened(OTHER))
    for wanted in (transfer(11, code=OTHER), transfer(1, vintage=2023, code=OTHER)):
        await refused_without_change(
            registry, ledger.transfer_out, wanted, Conflict, "insufficient_holdings"
        )
    ran = await registry.run(ledger.transfer_out, transfer(10, code=OTHER))
    assert [(h.vintage, h.allowances) for h in ran.result.holdings] == [(2024, 0)]


async def test_the_transfer_api(registry: Harness) -> None:
    await entity(registry, held={2024: 100})
    await registry.handle(trading_account_opened())
    path = f"/entities/{CODE}/transfers"
    own = registry.token("entity", credit_code=CODE)
    async with registry.client() as client:
        by_other = await client.post(
            path,
            headers=registry.token("entity", credit_code=OTHER),
            json={"vintage": 2024, "allowances": 1},
        )
        by_bureau = await client.post(
            path, headers=registry.token("regulator"), json={"vintage": 2024, "allowances": 1}
        )
        zero = await client.post(path, headers=own, json={"vintage": 2024, "allowances": 0})
        too_many = await client.post(path, headers=own, json={"vintage": 2024, "allowances": 101})
        moved = await client.post(path, headers=own, json={"vintage": 2024, "allowances": 40})
        listed = await client.get(path, headers=registry.token("district", district="pudong"))
        elsewhere = await client.get(path, headers=registry.token("district", district="xuhui"))
    assert (by_other.status_code, by_bureau.status_code, zero.status_code) == (403, 403, 422)
    assert too_many.status_code == 409
    assert too_many.json()["error"]["code"] == "insufficient_holdings"
    assert moved.status_code == 201, moved.text
    assert moved.json()["holdings"] == [{"vintage": 2024, "allowances": 60}]
    assert listed.status_code == 200
    assert [(t["direction"], t["allowances"], t["trading_account_id"]) for t in listed.json()] == [
        ("to_exchange", 40, TRADING)
    ]
    assert elsewhere.status_code == 403


# --- the reconciliation -----------------------------------------------------------------------


async def test_the_ledger_balances_after_every_kind_of_movement(registry: Harness) -> None:
    await entity(registry, held={2023: 100, 2024: 24252})
    await entity(registry, OTHER, held={2024: 10})
    await registry.handle(certificate())
    await registry.handle(ccer(quantity=12))
    await registry.handle(trading_account_opened())
    await registry.run(ledger.transfer_out, transfer(1000))
    await registry.handle(settled(uuid4(), 700))
    await registry.run(commands.surrender, surrender(23052, shcercir1()))  # and pre-allocation

    check = await ledger.reconcile(registry.context)
    assert check.balanced
    assert check.differences == []
    assert check.accounts == 2
    # 2023: 100 - 100 surrendered; 2024: 24252 - 1000 + 700 - 22952; 2025: pre-allocated 19401;
    # the other entity's 10.
    assert await holdings(registry) == {2023: 0, 2024: 1000, 2025: 19401}
    assert check.allowances_held == check.journal_allowances == 1000 + 19401 + 10
    assert check.offsets_unused == check.journal_offsets == 12
    assert metrics.LEDGER_DIFFERENCE._value.get() == 0


async def test_a_holding_that_differs_from_its_journal_is_reported(registry: Harness) -> None:
    await entity(registry, held={2024: 100})
    await entity(registry, OTHER, held={2024: 7})
    await registry.handle(certificate(quantity=30))
    async with registry.context.transaction() as uow:
        # Changes that bypass the journal, as a bug or a hand edit would.
        await uow.conn.execute(
            update(store.holdings)
            .where(store.holdings.c.credit_code == CODE)
            .values(balance=store.holdings.c.balance + 3)
        )
        await uow.conn.execute(delete(store.journal).where(store.journal.c.credit_code == OTHER))
        await uow.conn.execute(update(store.offset_proofs).values(quantity=25))

    check = await ledger.reconcile(registry.context)
    assert not check.balanced
    assert [
        (d.credit_code, d.asset, d.vintage, d.holdings, d.journal) for d in check.differences
    ] == sorted(
        [
            (CODE, "SHCERCIR1", None, 25, 30),
            (CODE, "SHEA", 2024, 103, 100),
            (OTHER, "SHEA", 2024, 7, 0),
        ]
    )
    assert (check.allowances_held, check.journal_allowances) == (110, 100)
    assert (check.offsets_unused, check.journal_offsets) == (25, 30)
    assert metrics.LEDGER_DIFFERENCE._value.get() == 3 + 7 + 5


async def test_the_reconciliation_api_is_for_the_bureau(registry: Harness) -> None:
    await entity(registry, held={2024: 5})
    async with registry.client() as client:
        bureau = await client.get("/ledger/reconciliation", headers=registry.token("regulator"))
        entity_ = await client.get(
            "/ledger/reconciliation", headers=registry.token("entity", credit_code=CODE)
        )
        metrics = await client.get("/metrics")
    assert bureau.status_code == 200, bureau.text
    body = bureau.json()
    assert (body["balanced"], body["differences"], body["accounts"]) == (True, [], 1)
    assert (body["allowances_held"], body["journal_allowances"]) == (5, 5)
    assert datetime.fromisoformat(body["checked_at"]) == registry.clock.now()
    assert entity_.status_code == 403
    assert "carbon_ledger_difference_units 0.0" in metrics.text


async def test_the_reconciliation_runs_in_the_background(
    registry: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await entity(registry, held={2024: 5})
    async with registry.context.transaction() as uow:
        await uow.conn.execute(update(store.holdings).values(balance=9))
    monkeypatch.setattr(ledger, "RECONCILE_EVERY_S", 0.01)
    metrics.LEDGER_DIFFERENCE.set(0)
    task = asyncio.create_task(ledger.reconcile_periodically(registry.context))
    try:
        for _ in range(1000):  # 10 s at most
            if metrics.LEDGER_DIFFERENCE._value.get() == 4:  # 9 held, 5 journalled
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the background reconciliation never set the gauge")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_the_registry_consumes_the_external_systems_topics() -> None:
    from registry.service import SERVICE

    for topic, handler in {
        "ccer.cancelled": ledger.on_offset_cancelled,
        "shcercir1.cancelled": ledger.on_offset_cancelled,
        "trading_account.opened": ledger.on_trading_account_opened,
        "exchange_transfer.settled": ledger.on_exchange_transfer_settled,
    }.items():
        assert SERVICE.handlers[topic] == {topic: handler}
