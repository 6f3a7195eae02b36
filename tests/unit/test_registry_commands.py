"""The registry's commands and its verification.finalised handler on an in-memory database:
roster, accounts, the final figure, surrender, pre-allocation and roster uploads (the allocation
itself: tests/unit/test_registry_allocation.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.errors import Conflict, Invalid, NotFound, Rejection
from carbon_contracts.events import VerificationClosed, VerificationFinalised
from carbon_contracts.policy import HistoricalEmissions, Policy
from registry import allocation, commands, store
from registry.domain.credit_code import make_credit_code
from registry.schemas import Approval, OpenAccount, Registration, RosterUpload, Surrender
from tests.unit.support import (
    DEADLINE,
    POLICY,
    SHANGHAI,
    Harness,
    consumed,
    verification_finalised,
)

CODE = make_credit_code(1)
OTHER = make_credit_code(2)
CASE_ID = UUID("0b7e7a53-6a1f-4b5e-9b44-3e0f0c9d1a01")
HEADER = "credit_code,name,district,sector,compliance_year"
REGISTERED_LATE = ["entity.registered", "accounts_opening.overdue"]
"""What registering a new entrant after the accounts_opening deadline (2025-03-31) publishes."""


def registration(code: str = CODE, **changes: object) -> Registration:
    fields: dict[str, object] = {
        "credit_code": code,
        "name": "上海示例化工有限公司",
        "district": "pudong",
        "sector": "chemicals",
        "compliance_year": 2024,
        "new_entrant": True,
    }
    return Registration.model_validate({**fields, **changes})


def final_figure(
    code: str = CODE, verified: str = "24251.551", year: int = 2024
) -> VerificationFinalised:
    """The entity's final verified figure for the year (after any re-verification)."""
    return verification_finalised(
        code, verified, year=year, case_id=CASE_ID, at=datetime(2025, 5, 20, 15, 0, tzinfo=SHANGHAI)
    )


def surrender(allowances: int, code: str = CODE, year: int = 2024) -> Surrender:
    return Surrender(credit_code=code, compliance_year=year, allowances=allowances)


async def register(registry: Harness, code: str = CODE) -> None:
    await registry.run(commands.register_entity, registration(code))


def allocating(decline: str) -> Policy:
    """The policy with its chemicals plan at `decline` x the verified emissions."""
    chemicals = HistoricalEmissions(method="historical_emissions", decline=Decimal(decline))
    sectors = {**POLICY.allocation.sectors, "chemicals": chemicals}
    return POLICY.model_copy(
        update={"allocation": POLICY.allocation.model_copy(update={"sectors": sectors})}
    )


async def allocated(registry: Harness) -> None:
    """Verification closes for the year and the Bureau approves every preview: issued."""
    await registry.handle(
        VerificationClosed(
            policy="shanghai-2024",
            compliance_year=2024,
            cases=1,
            total_verified_emissions=Decimal("0.000"),
            closed_at=datetime(2025, 6, 2, 10, 0, tzinfo=SHANGHAI),
        )
    )
    await registry.run(
        allocation.approve, Approval(compliance_year=2024, credit_codes=None, approved_by="bureau")
    )


async def verified(
    registry: Harness, emissions: str = "24251.551", code: str = CODE, *, decline: str = "1.00"
) -> None:
    """Registered, account open, emissions verified and the year's allowances issued, by
    default under a plan allocating the verified emissions in full (so that a surrender test
    holds exactly its obligation)."""
    registry.context.policy = allocating(decline)
    await register(registry, code)
    await registry.run(commands.open_account, OpenAccount(credit_code=code))
    await registry.handle(final_figure(code, emissions))
    await allocated(registry)


async def holdings(registry: Harness, code: str = CODE) -> dict[int, int]:
    return await registry.read(store.get_holdings, credit_code=code)


async def obligation(registry: Harness, code: str = CODE) -> Any:
    return await registry.read(store.get_obligation, credit_code=code, compliance_year=2024)


# --- register_entity --------------------------------------------------------------------------


async def test_register_entity_rosters_it_and_records_entity_registered(
    registry: Harness,
) -> None:
    ran = await registry.run(commands.register_entity, registration())

    assert ran.result.credit_code == CODE
    # A new entrant put on the roster after 2025-03-31 is overdue with its accounts at once.
    event, overdue = ran.events
    assert (event.topic, event.key, event.type) == ("entity.registered", CODE, "entity.registered")
    assert (overdue.type, overdue.payload["missing"]) == (
        "accounts_opening.overdue",
        "registry account not opened; trading account not linked",
    )
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "name": "上海示例化工有限公司",
        "district": "pudong",
        "sector": "chemicals",
        "new_entrant": True,
        "registered_at": registry.clock.now().isoformat(),
    }
    assert event.headers["ce_source"] == "/carbon/registry"
    assert event.event.id == ran.result.event_id
    entity = await registry.read(store.get_entity, credit_code=CODE)
    assert (entity.name, entity.district, entity.sector) == (
        "上海示例化工有限公司",
        "pudong",
        "chemicals",
    )
    assert await registry.read(store.is_rostered, credit_code=CODE, compliance_year=2024)
    assert [e.event.id for e in await registry.outbox()] == [ran.result.event_id, overdue.event.id]


async def test_register_entity_normalises_the_credit_code(registry: Harness) -> None:
    ran = await registry.run(
        commands.register_entity, registration(" 91310115ma1k4c8n0w ", new_entrant=False)
    )
    assert ran.result.credit_code == "91310115MA1K4C8N0W"
    assert ran.events[0].key == "91310115MA1K4C8N0W"
    assert ran.events[0].payload["new_entrant"] is False
    assert await registry.read(store.get_entity, credit_code="91310115MA1K4C8N0W") is not None


async def test_register_entity_refuses_an_invalid_credit_code(registry: Harness) -> None:
    with pytest.raises(Invalid) as refused:
        await registry.run(commands.register_entity, registration("91310115MA1K4C8N0X"))
    assert refused.value.code == "invalid_credit_code"
    assert "expected 'W'" in refused.value.message
    assert await registry.read(store.get_entity, credit_code="91310115MA1K4C8N0X") is None
    assert await registry.outbox() == []


async def test_register_entity_refuses_a_year_without_a_policy(registry: Harness) -> None:
    with pytest.raises(Invalid) as refused:
        await registry.run(commands.register_entity, registration(compliance_year=2025))
    assert refused.value.code == "no_policy"
    assert not await registry.read(store.is_rostered, credit_code=CODE, compliance_year=2025)
    assert await registry.outbox() == []


async def test_register_entity_refuses_a_district_not_in_the_policy(registry: Harness) -> None:
    # A well-formed identifier, but not one of the policy's codes (the code is `pudong`).
    with pytest.raises(Invalid) as refused:
        await registry.run(commands.register_entity, registration(district="pudong-new-area"))
    assert refused.value.code == "unknown_district"
    assert "'pudong-new-area'" in refused.value.message
    assert "shanghai-2024" in refused.value.message
    assert await registry.read(store.get_entity, credit_code=CODE) is None
    assert not await registry.read(store.is_rostered, credit_code=CODE, compliance_year=2024)
    assert await registry.outbox() == []


async def test_register_entity_accepts_a_zone_committee(registry: Harness) -> None:
    ran = await registry.run(commands.register_entity, registration(district="chemical-park"))
    assert ran.events[0].payload["district"] == "chemical-park"


async def test_register_entity_twice_conflicts_and_records_one_event(registry: Harness) -> None:
    await register(registry)
    with pytest.raises(Conflict) as refused:
        await registry.run(commands.register_entity, registration(name="Renamed Ltd"))
    assert refused.value.code == "already_registered"
    assert (await registry.read(store.get_entity, credit_code=CODE)).name == "上海示例化工有限公司"
    assert [event.type for event in await registry.outbox()] == REGISTERED_LATE


# --- open_account -----------------------------------------------------------------------------


async def test_open_account_opens_it_once_and_records_account_opened(registry: Harness) -> None:
    await register(registry)
    ran = await registry.run(commands.open_account, OpenAccount(credit_code=CODE))

    assert ran.result.account_id == f"SHEA-{CODE}"
    [event] = ran.events
    assert (event.topic, event.key) == ("account.opened", CODE)
    assert event.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "account_id": f"SHEA-{CODE}",
        "opened_at": registry.clock.now().isoformat(),
        "on_time": False,  # a new entrant, opening after 2025-03-31
    }
    assert event.event.id == ran.result.event_id
    account = await registry.read(store.get_account, credit_code=CODE)
    assert account.account_id == f"SHEA-{CODE}"


async def test_open_account_for_an_unknown_entity_is_not_found(registry: Harness) -> None:
    with pytest.raises(NotFound) as refused:
        await registry.run(commands.open_account, OpenAccount(credit_code=CODE))
    assert (refused.value.code, refused.value.status) == ("unknown_entity", 404)
    assert await registry.read(store.get_account, credit_code=CODE) is None


async def test_open_account_twice_conflicts(registry: Harness) -> None:
    await register(registry)
    await registry.run(commands.open_account, OpenAccount(credit_code=CODE))
    with pytest.raises(Conflict) as refused:
        await registry.run(commands.open_account, OpenAccount(credit_code=CODE))
    assert refused.value.code == "account_exists"
    assert [e.type for e in await registry.outbox()] == [*REGISTERED_LATE, "account.opened"]


async def test_open_account_refuses_an_invalid_credit_code(registry: Harness) -> None:
    with pytest.raises(Invalid) as refused:
        await registry.run(commands.open_account, OpenAccount(credit_code="not-a-code"))
    assert refused.value.code == "invalid_credit_code"


# --- on_verification_finalised ----------------------------------------------------------------


async def test_the_final_figure_sets_the_obligation_and_issues_nothing_yet(
    registry: Harness,
) -> None:
    await register(registry)
    approved = consumed(final_figure())
    # The year's allowances wait for verification to close and the Bureau's approval.
    assert await registry.handle(approved) == []

    due = await obligation(registry)
    assert (due.verified_emissions, due.obligation, due.surrendered) == (
        Decimal("24251.551"),
        24252,
        0,
    )
    assert due.case_id == str(CASE_ID)
    assert await holdings(registry) == {}
    assert [e.type for e in await registry.outbox()] == REGISTERED_LATE


@pytest.mark.parametrize(
    ("emissions", "allowances"),
    [("1000.500", 1001), ("1000.499", 1000), ("0.500", 1), ("2.500", 3)],
)
async def test_obligation_and_allocation_round_half_up(
    registry: Harness, emissions: str, allowances: int
) -> None:
    await verified(registry, emissions)  # allocated at 1.00 x the verified emissions
    assert (await obligation(registry)).obligation == allowances
    assert await holdings(registry) == {2024: allowances}
    [issued] = [e for e in await registry.outbox() if e.type == "allocation.issued"]
    assert issued.payload["final_allocation"] == allowances


async def preallocated(registry: Harness, *, basis_emissions: str, allowances: int) -> None:
    """The 2024 pre-allocation issued the year before, as the registry records it."""
    async with registry.context.transaction() as uow:
        await store.issue_allowances(
            uow.conn,
            credit_code=CODE,
            compliance_year=2024,
            kind="preallocation",
            method="preallocation",
            basis_emissions=Decimal(basis_emissions),
            allowances=allowances,
            reference="preallocation-2024",
            at=uow.now,
        )


async def test_an_earlier_preallocation_is_deducted_from_the_allocation(
    registry: Harness,
) -> None:
    await register(registry)
    await registry.run(commands.open_account, OpenAccount(credit_code=CODE))
    await preallocated(registry, basis_emissions="25000.000", allowances=20000)
    await registry.handle(final_figure())
    await allocated(registry)  # 24251.551 x 0.98 = 23766.51998
    [issued] = [e for e in await registry.outbox() if e.type == "allocation.issued"]
    assert (issued.payload["final_allocation"], issued.payload["preallocated"]) == (23767, 20000)
    assert issued.payload["allowances"] == 3767
    assert await holdings(registry) == {2024: 23767}


async def test_a_preallocation_above_the_final_allocation_is_clawed_back(
    registry: Harness,
) -> None:
    await register(registry)
    await registry.run(commands.open_account, OpenAccount(credit_code=CODE))
    await preallocated(registry, basis_emissions="40000.000", allowances=32000)
    await registry.handle(final_figure())
    await allocated(registry)
    [issued] = [e for e in await registry.outbox() if e.type == "allocation.issued"]
    assert (issued.payload["preallocated"], issued.payload["allowances"]) == (32000, 0)
    assert (issued.payload["clawed_back"], issued.payload["owed"]) == (32000 - 23767, 0)
    assert await holdings(registry) == {2024: 23767}


async def test_a_final_figure_for_an_entity_not_on_the_roster_is_refused(registry: Harness) -> None:
    with pytest.raises(NotFound) as refused:
        await registry.handle(final_figure())
    assert refused.value.code == "unknown_entity"
    assert await obligation(registry) is None
    assert await registry.outbox() == []


async def test_a_final_figure_for_another_year_is_refused(registry: Harness) -> None:
    await register(registry)
    with pytest.raises(Invalid) as refused:
        await registry.handle(final_figure(year=2023))
    assert refused.value.code == "no_policy"
    assert await registry.read(store.list_obligations, credit_code=CODE) == []
    assert await holdings(registry) == {}


async def test_a_second_final_figure_is_refused_and_changes_nothing(registry: Harness) -> None:
    await register(registry)
    await registry.handle(final_figure())
    with pytest.raises(Conflict) as refused:
        await registry.handle(final_figure(verified="30000.000"))
    assert refused.value.code == "already_verified"
    assert (await obligation(registry)).verified_emissions == Decimal("24251.551")
    assert await holdings(registry) == {}
    assert [e.type for e in await registry.outbox()] == REGISTERED_LATE


def test_the_registry_acts_on_the_final_verified_figure_only() -> None:
    # Never on verification.approved: re-verification may still replace that figure.
    from registry.service import SERVICE

    assert SERVICE.handlers["verification.finalised"] == {
        "verification.finalised": allocation.on_verification_finalised
    }
    assert not any(topic.startswith("verification.approved") for topic in SERVICE.handlers)


# --- surrender --------------------------------------------------------------------------------


async def test_surrender_without_an_account_is_refused(registry: Harness) -> None:
    await register(registry)
    await registry.handle(final_figure())
    await allocated(registry)  # approved, waiting for the account
    with pytest.raises(Conflict) as refused:
        await registry.run(commands.surrender, surrender(100))
    assert refused.value.code == "account_not_open"
    assert await holdings(registry) == {}


async def test_surrender_before_verification_has_no_obligation(registry: Harness) -> None:
    await register(registry)
    await registry.run(commands.open_account, OpenAccount(credit_code=CODE))
    with pytest.raises(NotFound) as refused:
        await registry.run(commands.surrender, surrender(100))
    assert (refused.value.code, refused.value.status) == ("no_obligation", 404)


async def test_surrender_beyond_the_obligation_is_refused_and_changes_nothing(
    registry: Harness,
) -> None:
    await verified(registry)
    with pytest.raises(Invalid) as refused:
        await registry.run(commands.surrender, surrender(24253))
    assert refused.value.code == "exceeds_obligation"
    assert await holdings(registry) == {2024: 24252}
    assert (await obligation(registry)).surrendered == 0


async def test_surrender_beyond_the_holdings_is_refused(registry: Harness) -> None:
    # Under a plan allocating 90% of the verified emissions the entity holds too few.
    await verified(registry, "1000.000", decline="0.90")
    assert await holdings(registry) == {2024: 900}
    with pytest.raises(Conflict) as refused:
        await registry.run(commands.surrender, surrender(901))
    assert refused.value.code == "insufficient_holdings"
    assert await holdings(registry) == {2024: 900}
    assert (await obligation(registry)).surrendered == 0


async def test_a_partial_surrender_debits_holdings_and_records_no_event(
    registry: Harness,
) -> None:
    await verified(registry)
    ran = await registry.run(commands.surrender, surrender(10000))

    assert ran.events == []
    receipt = ran.result
    assert (receipt.status, receipt.surrendered_now, receipt.surrendered, receipt.remaining) == (
        "open",
        10000,
        10000,
        14252,
    )
    assert [(h.vintage, h.allowances) for h in receipt.drawn_from] == [(2024, 10000)]
    assert receipt.preallocation is None
    assert receipt.event_ids == []
    assert await holdings(registry) == {2024: 14252}
    due = await obligation(registry)
    assert (due.surrendered, due.completed_at, due.on_time) == (10000, None, None)


async def test_completing_the_surrender_records_completion_and_the_preallocation(
    registry: Harness,
) -> None:
    await verified(registry)
    await registry.run(commands.surrender, surrender(24000))
    ran = await registry.run(commands.surrender, surrender(252))

    assert ran.types == ["surrender.completed", "preallocation.issued"]
    completed, preallocated = ran.events
    now = registry.clock.now().isoformat()
    assert (completed.topic, completed.key) == ("surrender.completed", CODE)
    assert completed.payload == {
        "credit_code": CODE,
        "compliance_year": 2024,
        "policy": "shanghai-2024",
        "verified_emissions": "24251.551",
        "obligation": 24252,
        "allowances_surrendered": 24252,
        "offsets_surrendered": 0,
        "deadline": DEADLINE.isoformat(),
        "on_time": True,
        "completed_at": now,
        "offsets_by_type": {},
    }
    # 80% of 24251.551 is 19401.2408: 19401 allowances of vintage 2025.
    assert (preallocated.topic, preallocated.key) == ("preallocation.issued", CODE)
    assert preallocated.payload == {
        "credit_code": CODE,
        "compliance_year": 2025,
        "policy": "shanghai-2024",
        "basis_year": 2024,
        "basis_verified_emissions": "24251.551",
        "ratio": "0.8",
        "allowances": 19401,
        "issued_at": now,
    }
    receipt = ran.result
    assert (receipt.status, receipt.remaining, receipt.surrendered) == ("compliant", 0, 24252)
    assert receipt.preallocation is not None
    assert (receipt.preallocation.compliance_year, receipt.preallocation.allowances) == (
        2025,
        19401,
    )
    assert receipt.event_ids == [completed.event.id, preallocated.event.id]
    assert await holdings(registry) == {2024: 0, 2025: 19401}
    due = await obligation(registry)
    assert (due.surrendered, due.completed_at, due.on_time) == (
        24252,
        registry.clock.now(),
        True,
    )
    outbox = [e.type for e in await registry.outbox()]
    assert outbox[-2:] == ["surrender.completed", "preallocation.issued"]


@pytest.mark.parametrize(
    ("emissions", "preallocation"),
    # 80% of: 1000.625 -> 800.5 (half up: 801, half even would say 800); 1000.624 -> 800.4992
    [("1000.625", 801), ("1000.624", 800), ("1.875", 2)],
)
async def test_the_preallocation_rounds_half_up(
    registry: Harness, emissions: str, preallocation: int
) -> None:
    await verified(registry, emissions)
    due = (await obligation(registry)).obligation
    ran = await registry.run(commands.surrender, surrender(due))
    assert ran.events[1].payload["allowances"] == preallocation
    assert (await holdings(registry))[2025] == preallocation


@pytest.mark.parametrize(
    ("at", "on_time"),
    [
        (DEADLINE - timedelta(microseconds=1), True),
        (DEADLINE, False),
        (datetime(2025, 6, 30, 16, 59, 59, 999999, tzinfo=SHANGHAI), True),
        (datetime(2025, 6, 30, 17, 0, 0, tzinfo=SHANGHAI), False),
        (datetime(2025, 6, 30, 8, 59, 59, tzinfo=UTC), True),  # 16:59:59 in Shanghai
        (datetime(2025, 6, 30, 9, 0, 0, tzinfo=UTC), False),  # 17:00 in Shanghai
        (DEADLINE + timedelta(days=1), False),
    ],
)
async def test_on_time_means_strictly_before_the_deadline(
    registry: Harness, at: datetime, on_time: bool
) -> None:
    await verified(registry)
    registry.clock.current = at
    ran = await registry.run(commands.surrender, surrender(24252))
    assert ran.events[0].payload["on_time"] is on_time
    assert datetime.fromisoformat(ran.events[0].payload["completed_at"]) == at
    assert (await obligation(registry)).on_time is on_time


def test_the_deadline_is_five_pm_shanghai_time() -> None:
    assert datetime(2025, 6, 30, 17, 0, tzinfo=SHANGHAI) == DEADLINE
    assert datetime(2025, 6, 30, 16, 59, 59, 999999, tzinfo=SHANGHAI) < DEADLINE


async def test_surrender_after_compliance_is_refused(registry: Harness) -> None:
    await verified(registry)
    await registry.run(commands.surrender, surrender(24252))
    with pytest.raises(Conflict) as refused:
        await registry.run(commands.surrender, surrender(1))
    assert refused.value.code == "already_compliant"
    assert await holdings(registry) == {2024: 0, 2025: 19401}


async def test_surrender_draws_oldest_vintages_first_and_never_next_years(
    registry: Harness,
) -> None:
    # Under a plan allocating 90%, the 2024 allocation (900) falls short of the obligation.
    await verified(registry, "1000.000", decline="0.90")
    async with registry.context.transaction() as uow:
        for vintage, amount in ((2025, 500), (2023, 60)):
            await store.move_allowances(
                uow.conn,
                credit_code=CODE,
                vintage=vintage,
                amount=amount,
                kind="allocation",
                reference="test",
                at=uow.now,
            )
    with pytest.raises(Conflict) as refused:
        await registry.run(commands.surrender, surrender(1000))
    assert refused.value.code == "insufficient_holdings"
    assert "only 960" in refused.value.message

    ran = await registry.run(commands.surrender, surrender(950))
    assert [(h.vintage, h.allowances) for h in ran.result.drawn_from] == [(2023, 60), (2024, 890)]
    assert await holdings(registry) == {2023: 0, 2024: 10, 2025: 500}


# --- roster uploads ---------------------------------------------------------------------------


def upload(text: str) -> RosterUpload:
    return RosterUpload(text=text, uploaded_by="bureau")


async def process(registry: Harness, limit: int = 1000) -> int:
    return (await registry.run(commands.register_pending_rows, limit)).result


@pytest.mark.parametrize(
    "header",
    [
        "credit_code,name,district,sector",  # compliance_year missing
        "credit_code,name,district,sector,compliance_year,colour",  # unknown column
        "code,name,district,sector,compliance_year",
        "",
    ],
)
async def test_an_upload_with_a_bad_header_is_refused(registry: Harness, header: str) -> None:
    with pytest.raises(Invalid) as refused:
        await registry.run(commands.upload_roster, upload(f"{header}\n{CODE},A,pudong,x,2024\n"))
    assert refused.value.code == "invalid_csv"
    assert await process(registry) == 0


@pytest.mark.parametrize("text", [HEADER, f"{HEADER}\n", f"{HEADER}\n\n\n"])
async def test_an_upload_with_a_header_only_is_refused(registry: Harness, text: str) -> None:
    with pytest.raises(Invalid) as refused:
        await registry.run(commands.upload_roster, upload(text))
    assert refused.value.code == "invalid_csv"
    assert "no rows" in refused.value.message


async def test_an_upload_registers_each_row_alone_and_keeps_every_result(
    registry: Harness,
) -> None:
    first, second, third = make_credit_code(11), make_credit_code(12), make_credit_code(13)
    text = "\n".join(
        [
            f"{HEADER},new_entrant",
            f"{first},First Ltd,pudong,chemicals,2024,true",  # line 2
            "91310115MA1K4C8N0X,Bad Code Ltd,pudong,chemicals,2024,",  # 3: check character
            f"{second},Second Ltd,minhang,steel,2023,",  # 4: another year
            f"{second},Second Ltd,minhang,steel,twenty,",  # 5: not a year
            f"{third},Third Ltd,jinshan,power,2024,false,surplus",  # 6: extra column
            f"{first},First Ltd,pudong,chemicals,2024,true",  # 7: duplicate of line 2
            f"{second},Second Ltd,minhang,steel,2024,",  # 8
            f"{third},Third Ltd,jinshan,power,2024,maybe",  # 9: flag
        ]
    )
    uploaded = (await registry.run(commands.upload_roster, upload(text))).result
    assert (uploaded.status, uploaded.rows, uploaded.done) == ("pending", 8, 0)
    pending = await registry.read(store.get_roster_import, import_id=uploaded.import_id)
    assert pending.finished_at is None

    ran = await registry.run(commands.register_pending_rows, 1000)

    assert ran.result == 8
    # The new entrant, registered after the accounts_opening deadline, is overdue at once.
    assert ran.types == ["entity.registered", "accounts_opening.overdue", "entity.registered"]
    registered = [e for e in ran.events if e.type == "entity.registered"]
    assert [(e.key, e.payload["new_entrant"]) for e in registered] == [
        (first, True),
        (second, False),
    ]
    rows = await registry.read(
        store.list_import_rows,
        import_id=uploaded.import_id,
        status=None,
        after_line=0,
        limit=100,
    )
    assert [(row.line, row.status, row.code) for row in rows] == [
        (2, "registered", None),
        (3, "refused", "invalid_credit_code"),
        (4, "refused", "no_policy"),
        (5, "refused", "invalid_row"),
        (6, "refused", "invalid_row"),
        (7, "refused", "already_registered"),
        (8, "registered", None),
        (9, "refused", "invalid_row"),
    ]
    by_line = {row.line: row for row in rows}
    assert by_line[2].event_id == registered[0].event.id
    assert by_line[8].event_id == registered[1].event.id
    assert all(row.event_id is None for row in rows if row.status == "refused")
    assert "surplus" in by_line[6].message
    assert by_line[3].credit_code == "91310115MA1K4C8N0X"
    # The good rows are on the roster; the refused ones left nothing behind.
    assert await registry.read(store.is_rostered, credit_code=first, compliance_year=2024)
    assert await registry.read(store.is_rostered, credit_code=second, compliance_year=2024)
    assert await registry.read(store.get_entity, credit_code=third) is None
    counts = await registry.read(store.count_rows_by_status, import_id=uploaded.import_id)
    assert counts == {"registered": 2, "refused": 6}
    done = await registry.read(store.get_roster_import, import_id=uploaded.import_id)
    assert done.finished_at == registry.clock.now()
    assert [e.type for e in await registry.outbox()] == ran.types


async def test_an_upload_refuses_a_row_whose_district_is_not_in_the_policy(
    registry: Harness,
) -> None:
    first, unknown, last = make_credit_code(14), make_credit_code(15), make_credit_code(16)
    text = "\n".join(
        [
            HEADER,
            f"{first},First Ltd,lingang,power,2024",
            f"{unknown},Unknown Ltd,nanhui,power,2024",  # merged into pudong in 2009
            f"{last},Last Ltd,ftz-bonded,power,2024",
        ]
    )
    uploaded = (await registry.run(commands.upload_roster, upload(text))).result
    ran = await registry.run(commands.register_pending_rows, 10)

    assert [e.key for e in ran.events] == [first, last]
    [row] = await registry.read(
        store.list_import_rows,
        import_id=uploaded.import_id,
        status="refused",
        after_line=0,
        limit=10,
    )
    assert (row.line, row.credit_code, row.code) == (3, unknown, "unknown_district")
    assert "'nanhui'" in row.message
    assert await registry.read(store.get_entity, credit_code=unknown) is None


async def test_an_upload_is_finished_once_no_row_is_pending(registry: Harness) -> None:
    codes = [make_credit_code(seed) for seed in range(20, 25)]
    text = "\n".join([HEADER, *(f"{code},Co {code},pudong,power,2024" for code in codes)])
    uploaded = (await registry.run(commands.upload_roster, upload(text))).result

    assert await process(registry, limit=2) == 2
    assert await process(registry, limit=2) == 2
    row = await registry.read(store.get_roster_import, import_id=uploaded.import_id)
    assert row.finished_at is None
    assert await process(registry, limit=2) == 1
    row = await registry.read(store.get_roster_import, import_id=uploaded.import_id)
    assert row.finished_at is not None
    assert await process(registry, limit=2) == 0
    assert [e.key for e in await registry.outbox()] == codes


async def test_a_refused_row_does_not_undo_its_neighbours(registry: Harness) -> None:
    await register(registry, OTHER)  # already registered: its row will be refused
    first, last = make_credit_code(31), make_credit_code(32)
    text = "\n".join(
        [
            HEADER,
            f"{first},First,pudong,power,2024",
            f"{OTHER},Again,pudong,power,2024",
            f"{last},Last,pudong,power,2024",
        ]
    )
    await registry.run(commands.upload_roster, upload(text))
    ran = await registry.run(commands.register_pending_rows, 10)
    assert [e.key for e in ran.events] == [first, last]
    for code in (first, last):
        assert await registry.read(store.is_rostered, credit_code=code, compliance_year=2024)
    assert (await registry.read(store.get_entity, credit_code=OTHER)).name != "Again"


async def test_a_rejection_after_a_write_inside_a_row_is_undone_alone(
    registry: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row refused after register_entity wrote its entity leaves none of it behind (its
    savepoint), while the rows around it stay registered with their events."""
    doomed = make_credit_code(41)
    record = store.register

    async def register_then_refuse(conn: AsyncConnection, **fields: Any) -> None:
        await record(conn, **fields)
        if fields["credit_code"] == doomed:
            raise Conflict("refused_late", "refused after the write")

    monkeypatch.setattr(store, "register", register_then_refuse)
    first, last = make_credit_code(40), make_credit_code(42)
    text = "\n".join([HEADER, *(f"{code},Co,pudong,power,2024" for code in (first, doomed, last))])
    uploaded = (await registry.run(commands.upload_roster, upload(text))).result
    ran = await registry.run(commands.register_pending_rows, 10)

    assert [e.key for e in ran.events] == [first, last]
    assert await registry.read(store.get_entity, credit_code=doomed) is None
    assert await registry.read(store.get_entity, credit_code=first) is not None
    assert await registry.read(store.get_entity, credit_code=last) is not None
    rows = await registry.read(
        store.list_import_rows,
        import_id=uploaded.import_id,
        status="refused",
        after_line=0,
        limit=10,
    )
    assert [(row.line, row.code) for row in rows] == [(3, "refused_late")]


async def test_an_upload_may_start_with_a_byte_order_mark_and_pad_its_header(
    registry: Harness,
) -> None:
    header = "\ufeff credit_code , name,district,sector,compliance_year"
    text = f"{header}\n{CODE}, Padded ,pudong,x,2024\n"
    await registry.run(commands.upload_roster, upload(text))
    ran = await registry.run(commands.register_pending_rows, 10)
    assert [(e.key, e.payload["name"]) for e in ran.events] == [(CODE, "Padded")]


async def test_uploads_are_registered_in_the_order_they_arrived(
    registry: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = iter([UUID("ffffffff-0000-4000-8000-000000000000"), UUID(int=1)])
    monkeypatch.setattr(commands.uuid, "uuid4", lambda: next(ids))
    earlier, later = make_credit_code(61), make_credit_code(62)
    await registry.run(commands.upload_roster, upload(f"{HEADER}\n{earlier},A,pudong,x,2024"))
    registry.clock.current += timedelta(microseconds=1)
    await registry.run(commands.upload_roster, upload(f"{HEADER}\n{later},B,pudong,x,2024"))
    ran = await registry.run(commands.register_pending_rows, 1)
    assert [event.key for event in ran.events] == [earlier]


async def test_a_row_with_too_few_values_is_refused_alone(registry: Harness) -> None:
    good = make_credit_code(51)
    text = "\n".join([HEADER, f"{CODE},Short Ltd,pudong", f"{good},Good Ltd,pudong,power,2024"])
    uploaded = (await registry.run(commands.upload_roster, upload(text))).result
    ran = await registry.run(commands.register_pending_rows, 10)
    assert [e.key for e in ran.events] == [good]
    rows = await registry.read(
        store.list_import_rows, import_id=uploaded.import_id, status=None, after_line=0, limit=10
    )
    assert [(row.line, row.status, row.code) for row in rows] == [
        (2, "refused", "invalid_row"),
        (3, "registered", None),
    ]


async def test_a_refusal_message_fits_its_column(registry: Harness) -> None:
    text = "\n".join([HEADER, f"{'9' * 2000},Long Code Ltd,pudong,power,2024"])
    uploaded = (await registry.run(commands.upload_roster, upload(text))).result
    await registry.run(commands.register_pending_rows, 10)
    [row] = await registry.read(
        store.list_import_rows, import_id=uploaded.import_id, status=None, after_line=0, limit=10
    )
    assert row.code == "invalid_credit_code"
    column = store.roster_import_rows.c.message.type
    assert isinstance(column, String)
    assert column.length is not None
    assert len(row.message) <= column.length


async def test_an_upload_with_an_oversized_field_is_refused_as_invalid_csv(
    registry: Harness,
) -> None:
    text = f"{HEADER}\n{CODE},{'n' * 200_000},pudong,power,2024\n"
    with pytest.raises(Rejection) as refused:
        await registry.run(commands.upload_roster, upload(text))
    assert refused.value.code == "invalid_csv"
