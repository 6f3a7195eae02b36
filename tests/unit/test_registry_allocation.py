"""The registry's allocation on a real (in-memory) database: nothing issued at the final
figure, previews once verification closes, the Bureau's batch approval, issuance into open
accounts (or waiting for one), the true-up against pre-allocation, opening balances imported
from CSV, and new entrants' account opening against the policy's date."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.errors import Conflict, Invalid, NotFound, Rejection
from carbon_contracts.events import ProductionOutput, VerificationClosed
from carbon_contracts.policy import HistoricalEmissions, Policy
from carbon_contracts.resources import contract_path
from carbon_platform.context import ServiceContext
from carbon_platform.db import make_engine
from carbon_platform.migrations import migrate
from carbon_platform.settings import Settings
from registry import allocation, commands, store
from registry.domain.credit_code import make_credit_code
from registry.schemas import Approval, OpenAccount, OpeningBalancesUpload, Registration
from registry.service import SERVICE
from tests.support import Database
from tests.unit.support import (
    IN_THE_CYCLE,
    JWT_SECRET,
    POLICY,
    SHANGHAI,
    Harness,
    SetClock,
    harness,
    verification_finalised,
)

CODE = "91310115MA1K4C8N0W"  # the contract examples' entity (pudong, chemicals)
POWER = make_credit_code(701)
STEEL = make_credit_code(702)
OTHER = make_credit_code(703)
HEADER = "credit_code,compliance_year,verified_emissions,preallocated,held"
OPENS = POLICY.deadlines.accounts_opening  # 2025-04-01T00:00:00+08:00


@pytest.fixture
async def registry(tmp_path: Any) -> AsyncIterator[Harness]:
    """The registry on an in-memory SQLite database, or, when CARBON_TEST_DATABASE_URL is set, on
    a PostgreSQL schema its migrations built: the same suite on every store."""
    if not os.environ.get("CARBON_TEST_DATABASE_URL"):
        async with harness(SERVICE) as service:
            yield service
        return
    database = Database.for_test()
    settings = Settings(
        service="registry",
        jwt_secret=JWT_SECRET,
        var_dir=tmp_path,
        database_url=database.url,
        database_schema=f"{database.schema_prefix}registry",
    )
    await asyncio.to_thread(
        migrate,
        url=settings.resolved_database_url(),
        schema=settings.resolved_schema(),
        migrations_dir=SERVICE.migrations_dir,
    )
    engine = make_engine(settings)
    clock = SetClock(IN_THE_CYCLE)
    context = ServiceContext(
        name="registry",
        settings=settings,
        engine=engine,
        inbox=store.messaging.inbox,
        outbox=store.messaging.outbox,
        clock=clock,
        policy=POLICY,
    )
    try:
        yield Harness(SERVICE, context, clock)
    finally:
        await engine.dispose()
        await asyncio.to_thread(database.drop, ["registry"])


# --- steps ------------------------------------------------------------------------------------


async def register(
    registry: Harness,
    code: str = CODE,
    *,
    sector: str = "chemicals",
    district: str = "pudong",
    new_entrant: bool = False,
    account: bool = True,
) -> None:
    await registry.run(
        commands.register_entity,
        Registration(
            credit_code=code,
            name=f"Entity {code[-4:]}",
            district=district,
            sector=sector,
            compliance_year=2024,
            new_entrant=new_entrant,
        ),
    )
    if account:
        await open_account(registry, code)


async def open_account(registry: Harness, code: str = CODE) -> list[Any]:
    return (await registry.run(commands.open_account, OpenAccount(credit_code=code))).events


async def finalise(
    registry: Harness,
    code: str = CODE,
    verified: str = "24251.551",
    outputs: list[tuple[str, str, str]] | None = None,
) -> list[Any]:
    final = verification_finalised(code, verified).model_copy(
        update={
            "outputs": [
                ProductionOutput(product=product, unit=unit, quantity=Decimal(quantity))
                for product, unit, quantity in outputs or []
            ]
        }
    )
    return await registry.handle(final)


def closure(year: int = 2024, policy: str = "shanghai-2024", cases: int = 1) -> VerificationClosed:
    return VerificationClosed(
        policy=policy,
        compliance_year=year,
        cases=cases,
        total_verified_emissions=Decimal("24251.551"),
        closed_at=datetime(2025, 6, 2, 10, 0, tzinfo=SHANGHAI),
    )


async def close(registry: Harness) -> list[Any]:
    return await registry.handle(closure())


async def approve(registry: Harness, codes: list[str] | None = None) -> Any:
    command = Approval(compliance_year=2024, credit_codes=codes, approved_by="regulator-user")
    return await registry.run(allocation.approve, command)


async def import_csv(registry: Harness, *lines: str, header: str = HEADER) -> Any:
    text = "\n".join([header, *lines]) + "\n"
    upload = OpeningBalancesUpload(text=text, imported_by="regulator-user")
    return (await registry.run(allocation.import_opening_balances, upload)).result


async def preallocate(registry: Harness, code: str, allowances: int) -> None:
    """The 2024 pre-allocation as this registry issues it (with the 2023 surrender)."""
    async with registry.context.transaction() as uow:
        await store.issue_allowances(
            uow.conn,
            credit_code=code,
            compliance_year=2024,
            kind="preallocation",
            method="preallocation",
            basis_emissions=Decimal("1875.000"),
            allowances=allowances,
            reference="preallocation-2024",
            at=uow.now,
        )


async def holdings(registry: Harness, code: str = CODE) -> dict[int, int]:
    return await registry.read(store.get_holdings, credit_code=code)


async def preview(registry: Harness, code: str = CODE) -> Any:
    return await registry.read(store.get_preview, credit_code=code, compliance_year=2024)


async def table(registry: Harness, name: Table) -> list[Any]:
    async def rows(conn: AsyncConnection) -> list[Any]:
        return list(await conn.execute(select(name)))

    return await registry.read(rows)


async def journal(registry: Harness, code: str = CODE) -> list[tuple[int, str, int]]:
    return [
        (row.vintage, row.kind, row.amount)
        for row in await table(registry, store.journal)
        if row.credit_code == code
    ]


async def snapshot(registry: Harness) -> dict[str, Any]:
    """Every table an allocation step writes, and the outbox: a refusal leaves all as it was."""
    tables = (
        store.allocation_previews,
        store.allocation_batches,
        store.allocations,
        store.holdings,
        store.journal,
        store.opening_balances,
        store.verification_closures,
        store.obligations,
        store.accounts,
    )
    state: dict[str, Any] = {t.name: sorted(map(tuple, await table(registry, t))) for t in tables}
    state["outbox"] = [event.event.id for event in await registry.outbox()]
    return state


def plan(decline: str) -> Policy:
    """The policy with the chemicals sector's decline factor changed."""
    sectors = {
        **POLICY.allocation.sectors,
        "chemicals": HistoricalEmissions(method="historical_emissions", decline=Decimal(decline)),
    }
    allocation_plan = POLICY.allocation.model_copy(update={"sectors": sectors})
    return POLICY.model_copy(update={"allocation": allocation_plan})


# --- the final figure: an obligation, no allowances -------------------------------------------


async def test_the_final_figure_records_the_obligation_and_its_outputs_and_issues_nothing(
    registry: Harness,
) -> None:
    await register(registry, POWER, sector="power")
    events = await finalise(registry, POWER, "58000.000", [("electricity", "MWh", "100000")])

    assert events == []
    due = await registry.read(store.get_obligation, credit_code=POWER, compliance_year=2024)
    assert (due.verified_emissions, due.obligation) == (Decimal("58000.000"), 58000)
    assert json.loads(due.outputs) == [
        {"product": "electricity", "unit": "MWh", "quantity": "100000"}
    ]
    assert await holdings(registry, POWER) == {}
    assert await preview(registry, POWER) is None  # verification is still open
    assert await table(registry, store.allocations) == []


# --- previews once verification closes -----------------------------------------------------


async def test_the_closure_previews_every_final_figure_by_its_sectors_method(
    registry: Harness,
) -> None:
    await register(registry, CODE)
    await register(registry, POWER, sector="power", district="jinshan")
    await register(registry, STEEL, sector="steel", district="baoshan")
    await finalise(registry, CODE)
    await finalise(registry, POWER, "58000.000", [("electricity", "MWh", "100000")])
    await finalise(registry, STEEL, "20000.000", [("crude_steel", "t", "10000")])

    assert await close(registry) == []  # previews publish nothing: the Bureau approves first

    rows = {row.credit_code: row for row in await registry.read(store.list_previews)}
    assert {code: (row.status, row.method, row.final_allocation) for code, row in rows.items()} == {
        CODE: ("previewed", "historical_emissions", 23767),  # 24251.551 x 0.98
        POWER: ("previewed", "benchmark", 58100),  # 100000 MWh x 0.581
        STEEL: ("previewed", "historical_intensity", 18130),  # 10000 t x 1.85 x 0.98
    }
    assert json.loads(rows[CODE].parameters) == {"base_2024": "24251.551", "decline": "0.98"}
    assert json.loads(rows[POWER].parameters) == {
        "output": "100000",
        "benchmark": "0.581",
        "load_factor": "1",
        "cooling": "1",
    }
    assert all(row.preallocated == 0 and row.batch_id is None for row in rows.values())
    [closed] = await table(registry, store.verification_closures)
    assert (closed.compliance_year, closed.cases) == (2024, 1)
    assert await holdings(registry, CODE) == {}


async def test_a_final_figure_after_the_closure_is_previewed_at_once(registry: Harness) -> None:
    await register(registry)
    await close(registry)
    assert await preview(registry) is None
    assert await finalise(registry) == []
    row = await preview(registry)
    assert (row.status, row.final_allocation) == ("previewed", 23767)


async def test_a_second_closure_of_the_year_is_refused_and_changes_nothing(
    registry: Harness,
) -> None:
    await register(registry)
    await finalise(registry)
    await close(registry)
    before = await snapshot(registry)
    with pytest.raises(Conflict) as refused:
        await close(registry)
    assert refused.value.code == "already_closed"
    assert await snapshot(registry) == before


@pytest.mark.parametrize(
    "closed", [closure(year=2023), closure(policy="shanghai-2023")], ids=["year", "policy"]
)
async def test_a_closure_of_another_cycle_is_refused(
    registry: Harness, closed: VerificationClosed
) -> None:
    await register(registry)
    await finalise(registry)
    with pytest.raises(Invalid) as refused:
        await registry.handle(closed)
    assert refused.value.code == "no_policy"
    assert await table(registry, store.verification_closures) == []
    assert await preview(registry) is None


async def test_a_figure_the_plan_cannot_allocate_waits_with_its_reason_and_holds_up_nobody(
    registry: Harness,
) -> None:
    await register(registry, CODE)
    await register(registry, POWER, sector="power")
    await finalise(registry, CODE)
    await finalise(registry, POWER, "58000.000", [("electricity", "GWh", "100")])  # not MWh
    await close(registry)

    assert await preview(registry, POWER) is None
    assert (await preview(registry, CODE)).status == "previewed"
    async with registry.context.reader.connect() as conn:
        year = await allocation.allocation_year(conn, registry.context.policy, 2024)
    assert [(u.credit_code, u.code) for u in year.unpreviewed] == [(POWER, "missing_output")]
    assert "electricity in MWh" in year.unpreviewed[0].message

    # Nothing changes until the plan does: then the Bureau has the missing preview computed.
    again = await registry.run(allocation.preview_missing, 2024)
    assert (again.result.computed, [u.code for u in again.result.unpreviewed]) == (
        0,
        ["missing_output"],
    )
    power = POLICY.allocation.sectors["power"].model_copy(update={"unit": "GWh"})
    registry.context.policy = POLICY.model_copy(
        update={
            "allocation": POLICY.allocation.model_copy(
                update={"sectors": {**POLICY.allocation.sectors, "power": power}}
            )
        }
    )
    ran = await registry.run(allocation.preview_missing, 2024)
    assert (ran.result.computed, ran.result.unpreviewed, ran.events) == (1, [], [])
    assert (await preview(registry, POWER)).final_allocation == 58  # 100 GWh x 0.581


async def test_previews_before_the_closure_are_refused(registry: Harness) -> None:
    with pytest.raises(Conflict) as refused:
        await registry.run(allocation.preview_missing, 2024)
    assert refused.value.code == "verification_open"


# --- approval and issuance --------------------------------------------------------------------


async def test_approving_before_verification_closes_is_refused_and_changes_nothing(
    registry: Harness,
) -> None:
    await register(registry)
    await finalise(registry)
    before = await snapshot(registry)
    with pytest.raises(Conflict) as refused:
        await approve(registry)
    assert (refused.value.code, refused.value.status) == ("verification_open", 409)
    assert await snapshot(registry) == before


async def test_approval_issues_the_contract_examples_allocation_into_the_open_account(
    registry: Harness,
) -> None:
    """contracts/events/allocation.issued/examples/pudong-chemicals-2024.json: base years
    2022 and 2023 and the 2024 pre-allocation imported, 2024 from verification."""
    await register(registry)
    imported = await import_csv(
        registry, f"{CODE},2022,25100,,", f"{CODE},2023,24800.000,,", f"{CODE},2024,,19840,19840"
    )
    assert (imported.applied, imported.refused) == (3, 0)
    assert await holdings(registry) == {2024: 19840}
    await finalise(registry)
    await close(registry)

    ran = await approve(registry)

    [issued] = ran.events
    example = json.loads(
        contract_path("events/allocation.issued/examples/pudong-chemicals-2024.json").read_text()
    )
    batch = ran.result
    assert issued.payload == {
        **example,
        "issued_at": registry.clock.now().isoformat(),
        "batch_id": batch.batch_id,
    }
    assert (issued.topic, issued.key) == ("allocation.issued", CODE)
    assert await holdings(registry) == {2024: 24223}
    assert await journal(registry) == [(2024, "opening_balance", 19840), (2024, "allocation", 4383)]
    assert (
        batch.entities,
        batch.final_allocation,
        batch.issued,
        batch.waiting_for_account,
        batch.approved_by,
        batch.event_ids,
    ) == (1, 24223, 1, 0, "regulator-user", [issued.event.id])
    [line] = batch.lines
    assert (line.status, line.topped_up, line.clawed_back, line.owed, line.difference) == (
        "issued",
        4383,
        0,
        0,
        4383,
    )
    row = await preview(registry)
    assert (row.status, row.batch_id, row.issued_at) == (
        "issued",
        batch.batch_id,
        registry.clock.now(),
    )
    [stored] = await table(registry, store.allocation_batches)
    assert (stored.batch_id, stored.entities, stored.final_allocation) == (batch.batch_id, 1, 24223)
    allocated = await registry.read(
        store.get_allocation, credit_code=CODE, compliance_year=2024, kind="allocation"
    )
    assert (allocated.method, allocated.allowances) == ("historical_emissions", 4383)


async def test_an_approved_allocation_waits_for_the_account_and_is_issued_when_it_opens(
    registry: Harness,
) -> None:
    await register(registry, account=False)
    await finalise(registry)
    await close(registry)

    ran = await approve(registry)

    assert ran.events == []
    assert (ran.result.issued, ran.result.waiting_for_account) == (0, 1)
    assert ran.result.lines[0].waiting_for_account is True
    assert (await preview(registry)).status == "approved"
    assert await holdings(registry) == {}
    async with registry.client() as client:
        status = await client.get(f"/entities/{CODE}", headers=registry.token("regulator"))
    assert status.json()["compliance"][0]["allocation"] == {
        "status": "approved",
        "final_allocation": 23767,
        "preallocated": 0,
        "topped_up": 0,
        "clawed_back": 0,
        "owed": 0,
        "issued_at": None,
    }

    registry.clock.current += timedelta(days=3)
    opened = await open_account(registry)

    assert [event.type for event in opened] == ["account.opened", "allocation.issued"]
    issued = opened[1]
    assert issued.payload["batch_id"] == ran.result.batch_id
    assert (issued.payload["allowances"], issued.payload["issued_at"]) == (
        23767,
        registry.clock.now().isoformat(),
    )
    assert await holdings(registry) == {2024: 23767}
    row = await preview(registry)
    assert (row.status, row.topped_up, row.issued_at) == ("issued", 23767, registry.clock.now())


async def test_a_preallocation_above_the_final_allocation_is_clawed_back_from_holdings(
    registry: Harness,
) -> None:
    await register(registry)
    await preallocate(registry, CODE, 1500)
    await finalise(registry, verified="1000.000")  # final 980
    await close(registry)
    assert ((await preview(registry)).preallocated, (await preview(registry)).final_allocation) == (
        1500,
        980,
    )

    [issued] = (await approve(registry)).events

    assert {
        k: issued.payload[k] for k in ("preallocated", "allowances", "clawed_back", "owed")
    } == {
        "preallocated": 1500,
        "allowances": 0,
        "clawed_back": 520,
        "owed": 0,
    }
    assert await holdings(registry) == {2024: 980}
    assert await journal(registry) == [(2024, "preallocation", 1500), (2024, "clawback", -520)]
    allocated = await registry.read(
        store.get_allocation, credit_code=CODE, compliance_year=2024, kind="allocation"
    )
    assert allocated.allowances == 0  # issued, nothing topped up


async def test_what_was_sold_of_an_excess_preallocation_is_recorded_as_owed(
    registry: Harness,
) -> None:
    await register(registry)
    await preallocate(registry, CODE, 1500)
    async with registry.context.transaction() as uow:  # sold on the exchange: 200 still held
        await store.move_allowances(
            uow.conn,
            credit_code=CODE,
            vintage=2024,
            amount=-1300,
            kind="transfer_out",
            reference="sold",
            at=uow.now,
        )
    await finalise(registry, verified="1000.000")
    await close(registry)

    [issued] = (await approve(registry)).events

    assert (issued.payload["clawed_back"], issued.payload["owed"]) == (200, 320)
    assert await holdings(registry) == {2024: 0}
    row = await preview(registry)
    assert (row.topped_up, row.clawed_back, row.owed) == (0, 200, 320)
    async with registry.client() as client:
        status = await client.get(f"/entities/{CODE}", headers=registry.token("regulator"))
    assert status.json()["compliance"][0]["allocation"]["owed"] == 320


async def test_an_imported_preallocation_is_trued_up_like_the_registrys_own(
    registry: Harness,
) -> None:
    await register(registry)
    await import_csv(registry, f"{CODE},2024,,30000,5000")  # 25000 of it sold
    await finalise(registry)  # final 23767: 6233 below it, of which 5000 still held
    await close(registry)
    [issued] = (await approve(registry)).events
    assert (issued.payload["clawed_back"], issued.payload["owed"]) == (5000, 1233)
    assert await holdings(registry) == {2024: 0}


async def test_the_bureau_approves_the_entities_it_names_and_no_others(registry: Harness) -> None:
    for code in (CODE, POWER, OTHER):
        await register(registry, code)
        await finalise(registry, code)
    await close(registry)

    first = await approve(registry, [POWER.lower(), POWER])  # normalised, once
    assert [line.credit_code for line in first.result.lines] == [POWER]
    assert [event.key for event in first.events] == [POWER]
    assert (await preview(registry, CODE)).status == "previewed"

    rest = await approve(registry)  # every one still previewed
    assert sorted(line.credit_code for line in rest.result.lines) == sorted([CODE, OTHER])
    assert rest.result.batch_id != first.result.batch_id
    assert len(await table(registry, store.allocation_batches)) == 2


async def test_approving_what_is_not_previewed_is_refused_and_changes_nothing(
    registry: Harness,
) -> None:
    await register(registry, CODE)
    await register(registry, POWER)
    await finalise(registry, CODE)
    await close(registry)
    await approve(registry, [CODE])
    before = await snapshot(registry)

    with pytest.raises(Conflict) as named:
        await approve(registry, [CODE, POWER])
    assert (named.value.code, named.value.status) == ("not_previewed", 409)
    assert f"{CODE} (issued)" in named.value.message
    assert f"{POWER} (no preview)" in named.value.message
    with pytest.raises(Conflict) as nothing:
        await approve(registry)
    assert nothing.value.code == "nothing_to_approve"
    with pytest.raises(Invalid) as bad:
        await approve(registry, ["91310115MA1K4C8N0X"])
    assert bad.value.code == "invalid_credit_code"
    with pytest.raises(Invalid) as other_year:
        await registry.run(
            allocation.approve,
            Approval(compliance_year=2023, credit_codes=None, approved_by="regulator-user"),
        )
    assert other_year.value.code == "no_policy"
    assert await snapshot(registry) == before


async def test_an_issuance_refused_midway_undoes_the_whole_batch(
    registry: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(registry, CODE)
    await register(registry, POWER)
    for code in (CODE, POWER):
        await finalise(registry, code)
    await close(registry)
    before = await snapshot(registry)
    issue = store.mark_issued

    async def refuse_the_second(conn: AsyncConnection, **fields: Any) -> None:
        await issue(conn, **fields)
        if fields["credit_code"] == max(CODE, POWER):
            raise Conflict("refused_late", "refused after the first was issued")

    monkeypatch.setattr(store, "mark_issued", refuse_the_second)
    with pytest.raises(Rejection):
        await approve(registry)
    assert await snapshot(registry) == before


@pytest.mark.skipif(
    not os.environ.get("CARBON_TEST_DATABASE_URL"),
    reason="concurrent transactions need PostgreSQL (in-memory SQLite has one connection)",
)
async def test_an_approval_racing_the_accounts_opening_issues_each_allocation_once(
    registry: Harness,
) -> None:
    codes = [make_credit_code(800 + seed) for seed in range(24)]
    for code in codes:
        await register(registry, code, account=False)
        await finalise(registry, code, "1000.000")
    await close(registry)
    command = Approval(compliance_year=2024, credit_codes=None, approved_by="regulator-user")
    execute = registry.context.execute

    outcomes = await asyncio.gather(
        *(execute(commands.open_account, OpenAccount(credit_code=code)) for code in codes[::2]),
        execute(allocation.approve, command),
        *(execute(commands.open_account, OpenAccount(credit_code=code)) for code in codes[1::2]),
        return_exceptions=True,
    )

    assert not [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    issued = [event.key for event in await registry.outbox() if event.type == "allocation.issued"]
    assert sorted(issued) == sorted(codes)  # each once, whichever transaction issued it
    for code in codes:
        assert (await preview(registry, code)).status == "issued"
        assert await holdings(registry, code) == {2024: 980}


# --- opening balances -------------------------------------------------------------------------


async def test_an_opening_balances_import_applies_each_row_alone_and_reports_the_refused(
    registry: Harness,
) -> None:
    await register(registry, CODE)
    await register(registry, POWER)
    await register(registry, STEEL)
    await preallocate(registry, STEEL, 100)
    unknown = make_credit_code(799)
    report = await import_csv(
        registry,
        f"{CODE},2022,25100,,",  # 2: applied
        f"{CODE},2024,,19840,19000",  # 3: applied, 19000 credited
        f"{CODE},2022,25000,,",  # 4: twice for the same year
        "91310115MA1K4C8N0X,2023,1,,",  # 5: check character
        f"{unknown},2023,1,,",  # 6: not registered
        f"{POWER},24,1,,",  # 7: not a year
        f"{POWER},2023,1.2345,,",  # 8: four decimals
        f"{POWER},2023,-1,,",  # 9: negative
        f"{POWER},2024,,1.5,",  # 10: not whole
        f"{POWER},2024,,,-3",  # 11: negative
        f"{POWER},2023,,100,",  # 12: pre-allocation of an earlier year
        f"{POWER},2024,5000,,",  # 13: this year's emissions come from verification
        f"{POWER},2025,,100,",  # 14: after the policy's year
        f"{POWER},2023,,,",  # 15: nothing
        f"{POWER},2023,1,,,9",  # 16: a value too many
        f"{POWER},2023",  # 17: values too few
        f"{STEEL},2024,,90,",  # 18: this registry pre-allocated it
        f"{STEEL},2024,,,80",  # 19: applied (held only)
        f"{POWER},2023,1e3,,",  # 20: exponent
        f"{POWER},2012,1,,",  # 21: before the scheme
    )

    assert (report.rows, report.applied, report.refused) == (20, 3, 17)
    assert [(r.line, r.code) for r in report.refusals] == [
        (4, "already_imported"),
        (5, "invalid_credit_code"),
        (6, "unknown_entity"),
        (7, "invalid_row"),
        (8, "invalid_row"),
        (9, "invalid_row"),
        (10, "invalid_row"),
        (11, "invalid_row"),
        (12, "wrong_year"),
        (13, "wrong_year"),
        (14, "wrong_year"),
        (15, "invalid_row"),
        (16, "invalid_row"),
        (17, "invalid_row"),
        (18, "already_preallocated"),
        (20, "invalid_row"),
        (21, "invalid_row"),
    ]
    assert report.refusals[1].credit_code == "91310115MA1K4C8N0X"
    assert all(r.message for r in report.refusals)
    balances = {
        (row.credit_code, row.compliance_year): (
            row.verified_emissions,
            row.preallocated,
            row.held,
            row.import_id,
        )
        for row in await table(registry, store.opening_balances)
    }
    assert balances == {
        (CODE, 2022): (Decimal("25100.000"), None, None, report.import_id),
        (CODE, 2024): (None, 19840, 19000, report.import_id),
        (STEEL, 2024): (None, None, 80, report.import_id),
    }
    assert await holdings(registry, CODE) == {2024: 19000}
    assert await journal(registry, CODE) == [(2024, "opening_balance", 19000)]
    assert await holdings(registry, STEEL) == {2024: 180}
    assert await holdings(registry, POWER) == {}
    # An import publishes nothing: opening balances are the registry's own starting point.
    assert {e.type for e in await registry.outbox()} == {"entity.registered", "account.opened"}


async def test_an_opening_balance_is_imported_once(registry: Harness) -> None:
    await register(registry)
    first = await import_csv(registry, f"{CODE},2024,,19840,19840")
    again = await import_csv(registry, f"{CODE},2024,,19840,19840")
    assert (first.applied, again.applied, again.refused) == (1, 0, 1)
    assert again.refusals[0].code == "already_imported"
    assert await holdings(registry) == {2024: 19840}
    assert len(await table(registry, store.opening_balances)) == 1


async def test_a_base_year_imported_after_the_preview_computes_it_again(registry: Harness) -> None:
    await register(registry)
    await finalise(registry)
    await close(registry)
    assert (await preview(registry)).final_allocation == 23767
    registry.clock.current += timedelta(hours=1)
    await import_csv(
        registry, f"{CODE},2022,25100,,", f"{CODE},2023,24800,,", f"{CODE},2024,,19840,19840"
    )
    row = await preview(registry)
    assert (row.status, row.final_allocation, row.preallocated, row.computed_at) == (
        "previewed",
        24223,
        19840,
        registry.clock.now(),
    )


@pytest.mark.parametrize(("account", "status"), [(True, "issued"), (False, "approved")])
async def test_an_approved_or_issued_allocation_refuses_opening_balances(
    registry: Harness, account: bool, status: str
) -> None:
    await register(registry, account=account)
    await finalise(registry)
    await close(registry)
    await approve(registry)
    before = await snapshot(registry)
    report = await import_csv(registry, f"{CODE},2024,,19840,19840", f"{CODE},2022,25100,,")
    code = "already_issued" if status == "issued" else "allocation_approved"
    assert [(r.line, r.code) for r in report.refusals] == [(2, code), (3, code)]
    assert await snapshot(registry) == before


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "missing: credit_code, compliance_year"),
        ("credit_code,verified_emissions\n", "missing: compliance_year"),
        (f"{HEADER},colour\nX,2024,,,,red\n", "unknown: colour"),
        ("credit_code,compliance_year,held,held\nX,2024,1,1\n", "repeated: held"),
        ("credit_code,compliance_year\nX,2024\n", "at least one of"),
        (f"{HEADER}\n", "no rows"),
        (f"{HEADER}\n\n\n", "no rows"),
        (f'{HEADER}\n{CODE},2022,"25100,,\n', "readable CSV"),
    ],
)
async def test_an_unsound_file_is_refused_whole(registry: Harness, text: str, reason: str) -> None:
    await register(registry)
    before = await snapshot(registry)
    upload = OpeningBalancesUpload(text=text, imported_by="regulator-user")
    with pytest.raises(Invalid) as refused:
        await registry.run(allocation.import_opening_balances, upload)
    assert refused.value.code == "invalid_csv"
    assert reason in refused.value.message
    assert await snapshot(registry) == before


async def test_a_file_of_too_many_rows_is_refused_whole(
    registry: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(registry)
    monkeypatch.setattr(allocation, "OPENING_MAX_ROWS", 2)
    before = await snapshot(registry)
    with pytest.raises(Invalid) as refused:
        await import_csv(registry, f"{CODE},2022,1,,", f"{CODE},2023,1,,", f"{CODE},2024,,1,1")
    assert (refused.value.code, "more than 2 rows" in refused.value.message) == (
        "invalid_csv",
        True,
    )
    assert await snapshot(registry) == before


async def test_a_file_may_start_with_a_byte_order_mark_and_name_some_value_columns(
    registry: Harness,
) -> None:
    await register(registry)
    report = await import_csv(
        registry,
        f" {CODE} , 2023 , 24800.5 ",
        header="\ufeffcredit_code, compliance_year ,verified_emissions",
    )
    assert (report.applied, report.refused) == (1, 0)
    [row] = await table(registry, store.opening_balances)
    assert (row.compliance_year, row.verified_emissions) == (2023, Decimal("24800.500"))


# --- accounts: new entrants against the policy's date ---------------------------------------


@pytest.mark.parametrize(
    ("at", "on_time"),
    [
        (datetime(2025, 3, 31, 23, 59, 59, 999000, tzinfo=SHANGHAI), True),
        (OPENS - timedelta(microseconds=1), True),
        (datetime(2025, 4, 1, 0, 0, 0, tzinfo=SHANGHAI), False),
        (OPENS + timedelta(days=10), False),
    ],
)
async def test_a_new_entrants_account_is_on_time_strictly_before_the_policys_date(
    registry: Harness, at: datetime, on_time: bool
) -> None:
    assert datetime(2025, 4, 1, 0, 0, 0, tzinfo=SHANGHAI) == OPENS
    await register(registry, new_entrant=True, account=False)
    registry.clock.current = at
    [opened] = await open_account(registry)
    assert opened.payload["on_time"] is on_time
    account = await registry.read(store.get_account, credit_code=CODE)
    assert account.on_time is on_time


async def test_an_entity_covered_before_has_no_opening_date_to_meet(registry: Harness) -> None:
    await register(registry, new_entrant=False, account=False)
    registry.clock.current = OPENS + timedelta(days=30)
    [opened] = await open_account(registry)
    assert opened.payload["on_time"] is None
    assert (await registry.read(store.get_account, credit_code=CODE)).on_time is None


# --- the API ----------------------------------------------------------------------------------


async def test_the_bureau_approves_over_http_and_others_may_not(registry: Harness) -> None:
    await register(registry)
    await finalise(registry)
    await close(registry)
    async with registry.client() as client:
        entity = await client.post(
            "/allocations/2024/approve",
            headers=registry.token("entity", credit_code=CODE),
            json={},
        )
        bureau = await client.post(
            "/allocations/2024/approve", headers=registry.token("regulator"), json={}
        )
        again = await client.post("/allocations/2024/approve", headers=registry.token("regulator"))
    assert entity.status_code == 403
    assert bureau.status_code == 200, bureau.text
    body = bureau.json()
    assert (body["entities"], body["issued"], body["final_allocation"]) == (1, 1, 23767)
    assert body["lines"][0]["parameters"] == {"base_2024": "24251.551", "decline": "0.98"}
    assert (again.status_code, again.json()["error"]["code"]) == (409, "nothing_to_approve")


async def test_the_years_allocations_are_listed_within_the_callers_scope(
    registry: Harness,
) -> None:
    await register(registry, CODE, district="pudong")
    await register(registry, POWER, sector="power", district="jinshan")
    await finalise(registry, CODE)
    await finalise(registry, POWER, "58000.000", [("electricity", "MWh", "100000")])
    await close(registry)
    await approve(registry, [POWER])
    async with registry.client() as client:
        bureau = await client.get("/allocations/2024", headers=registry.token("regulator"))
        district = await client.get(
            "/allocations/2024", headers=registry.token("district", district="pudong")
        )
        entity = await client.get(
            "/allocations/2024", headers=registry.token("entity", credit_code=POWER)
        )
        other_year = await client.get("/allocations/2023", headers=registry.token("regulator"))
    assert bureau.status_code == 200, bureau.text
    listed = bureau.json()
    assert [line["credit_code"] for line in listed["allocations"]] == sorted([CODE, POWER])
    assert listed["totals"] == {
        "entities": 2,
        "final_allocation": 23767 + 58100,
        "preallocated": 0,
        "topped_up": 58100,
        "clawed_back": 0,
        "owed": 0,
        "by_status": {"previewed": 1, "approved": 0, "issued": 1},
    }
    closed_at = datetime.fromisoformat(listed["verification_closed_at"])
    assert closed_at == datetime(2025, 6, 2, 10, 0, tzinfo=SHANGHAI)
    assert listed["unpreviewed"] == []
    assert [line["credit_code"] for line in district.json()["allocations"]] == [CODE]
    assert [line["credit_code"] for line in entity.json()["allocations"]] == [POWER]
    assert (other_year.status_code, other_year.json()["error"]["code"]) == (422, "no_policy")


async def test_one_entitys_allocation_is_read_by_it_its_district_and_the_bureau(
    registry: Harness,
) -> None:
    await register(registry, CODE, district="pudong")
    await register(registry, POWER, district="jinshan")
    await finalise(registry, CODE)
    await close(registry)
    path = f"/entities/{CODE}/allocations/2024"
    async with registry.client() as client:
        own = await client.get(path, headers=registry.token("entity", credit_code=CODE))
        district = await client.get(path, headers=registry.token("district", district="pudong"))
        other = await client.get(path, headers=registry.token("district", district="jinshan"))
        another = await client.get(path, headers=registry.token("entity", credit_code=POWER))
        none = await client.get(
            f"/entities/{POWER}/allocations/2024", headers=registry.token("regulator")
        )
    assert (own.status_code, own.json()["status"], own.json()["final_allocation"]) == (
        200,
        "previewed",
        23767,
    )
    assert district.status_code == 200
    assert (other.status_code, another.status_code) == (403, 403)
    assert (none.status_code, none.json()["error"]["code"]) == (404, "no_allocation")


async def test_opening_balances_over_http(registry: Harness) -> None:
    await register(registry)
    bureau = registry.token("regulator")
    csv_type = {"Content-Type": "text/csv; charset=utf-8"}
    async with registry.client() as client:
        applied = await client.post(
            "/opening-balances",
            headers=bureau | csv_type,
            content=f"{HEADER}\n{CODE},2024,,19840,19840\n{CODE},2023,x,,\n".encode(),
        )
        as_json = await client.post("/opening-balances", headers=bureau, json={"rows": []})
        latin = await client.post(
            "/opening-balances",
            headers=bureau | csv_type,
            content=f"{HEADER}\n{CODE},2023,1,,\n# caf\xe9\n".encode("latin-1"),
        )
        entity = await client.post(
            "/opening-balances",
            headers=registry.token("entity", credit_code=CODE) | csv_type,
            content=f"{HEADER}\n{CODE},2023,1,,\n".encode(),
        )
    assert applied.status_code == 200, applied.text
    body = applied.json()
    assert (body["rows"], body["applied"], body["refused"]) == (2, 1, 1)
    assert body["refusals"][0]["line"] == 3
    assert body["refusals"][0]["code"] == "invalid_row"
    assert body["refusals"][0]["credit_code"] == CODE
    assert as_json.status_code == 415
    assert (latin.status_code, latin.json()["error"]["code"]) == (422, "invalid_csv")
    assert entity.status_code == 403
    assert await holdings(registry) == {2024: 19840}


# --- the existing flows, through the allocation -------------------------------------------------


async def test_a_plan_with_another_decline_factor_allocates_by_it(registry: Harness) -> None:
    registry.context.policy = plan("0.90")
    await register(registry)
    await finalise(registry, verified="1000.500")
    await close(registry)
    [issued] = (await approve(registry)).events
    assert issued.payload["final_allocation"] == 900  # 900.45
    assert issued.payload["parameters"]["decline"] == "0.9"


async def test_a_refused_final_figure_is_not_previewed_after_the_closure(
    registry: Harness,
) -> None:
    await close(registry)
    with pytest.raises(NotFound):
        await finalise(registry, OTHER)
    assert await table(registry, store.allocation_previews) == []


def test_the_handlers_are_the_allocations() -> None:
    from registry.service import SERVICE

    assert SERVICE.handlers["verification.finalised"] == {
        "verification.finalised": allocation.on_verification_finalised
    }
    assert SERVICE.handlers["verification.closed"] == {
        "verification.closed": allocation.on_verification_closed
    }
    assert "verification.approved" not in SERVICE.handlers
