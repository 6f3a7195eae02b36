"""The registry's deadlines on an in-memory database, by a clock the test sets: the surrender
(every entity on the roster) and the opening of accounts (new entrants), their reminders, the
instant each deadline passes, cases and their escalation, completion on time or late, and the
projected shortfall of a district's entities before the surrender."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import delete

from carbon_contracts.events import TradingAccountOpened
from carbon_platform import metrics
from carbon_platform.context import ServiceContext
from registry import commands, deadlines, store
from registry.domain.credit_code import make_credit_code
from registry.schemas import OpenAccount, Registration, RosterUpload, Surrender
from registry.service import WATCHED
from tests.unit.support import (
    DEADLINE,
    POLICY,
    SHANGHAI,
    Harness,
    Published,
    SetClock,
    consumed,
    report_submitted,
    verification_finalised,
)

US = timedelta(microseconds=1)
SLA = POLICY.supervision.case_sla
OPENING_DEADLINE = POLICY.deadlines.accounts_opening  # 2025-04-01T00:00:00+08:00
ONE_DAY_BEFORE = datetime(2025, 6, 29, 17, 0, tzinfo=SHANGHAI)
SEVEN_DAYS_BEFORE = datetime(2025, 6, 23, 17, 0, tzinfo=SHANGHAI)
BEFORE_THE_DEADLINE = datetime(2025, 6, 20, 10, 0, tzinfo=SHANGHAI)
VERIFIED = "24251.551"  # obligation 24252
OBLIGATION = 24252
DONE, OPEN, ELSEWHERE = make_credit_code(31), make_credit_code(32), make_credit_code(33)
NEW, OLD = make_credit_code(34), make_credit_code(35)


# --- set-up -----------------------------------------------------------------------------------


async def rostered(
    registry: Harness, code: str, *, district: str = "pudong", new_entrant: bool = False
) -> None:
    await registry.run(
        commands.register_entity,
        Registration(
            credit_code=code,
            name=f"Entity {code[-4:]}",
            district=district,
            sector="chemicals",
            compliance_year=2024,
            new_entrant=new_entrant,
        ),
    )


async def holding(registry: Harness, code: str, held: dict[int, int], restricted: int = 0) -> None:
    """Allowances seeded by vintage (opening balances), and surrender-only ones for 2024."""
    async with registry.context.transaction() as uow:
        for vintage, amount in held.items():
            await store.move_allowances(
                uow.conn,
                credit_code=code,
                vintage=vintage,
                amount=amount,
                kind="opening_balance",
                reference="test-seed",
                at=uow.now,
            )
        if restricted:
            await store.move_surrender_only(
                uow.conn,
                credit_code=code,
                vintage=2024,
                amount=restricted,
                kind="auction",
                reference="test-auction",
                at=uow.now,
            )


async def ready(
    registry: Harness,
    code: str,
    *,
    district: str = "pudong",
    determined: bool = True,
    held: dict[int, int] | None = None,
    restricted: int = 0,
) -> None:
    """On the roster, its account open, holding its obligation (or `held`); its obligation
    determined (24252) unless told not."""
    await rostered(registry, code, district=district)
    await registry.run(commands.open_account, OpenAccount(credit_code=code))
    await holding(registry, code, {2024: OBLIGATION} if held is None else held, restricted)
    if determined:
        await registry.handle(verification_finalised(code, VERIFIED))


async def surrender(registry: Harness, code: str, allowances: int = OBLIGATION) -> list[str]:
    ran = await registry.run(
        commands.surrender, Surrender(credit_code=code, compliance_year=2024, allowances=allowances)
    )
    return ran.types


async def check_at(registry: Harness, now: datetime) -> list[Published]:
    """One pass of the watcher at `now`: the events it published."""
    before = len(await registry.outbox())
    registry.clock.current = now
    await WATCHED.check(registry.context)
    return (await registry.outbox())[before:]


def of(events: list[Published], kind: str) -> list[Published]:
    return [event for event in events if event.type == kind]


def restarted(registry: Harness) -> ServiceContext:
    """Another instance (or the same one after a restart) over the same database."""
    old = registry.context
    return ServiceContext(
        name=old.name,
        settings=old.settings,
        engine=old.engine,
        inbox=old.inbox,
        outbox=old.outbox,
        clock=SetClock(registry.clock.now()),
        policy=old.policy,
    )


async def get(registry: Harness, path: str, headers: dict[str, str] | None = None) -> Any:
    async with registry.client() as client:
        reply: httpx.Response = await client.get(path, headers=headers or bureau(registry))
    assert reply.status_code == 200, reply.text
    return reply.json()


def bureau(registry: Harness) -> dict[str, str]:
    return registry.token("regulator")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def status(registry: Harness, code: str, obligation: str = "surrender") -> Any:
    return await get(registry, f"/obligations/{code}/{obligation}")


# --- enrolment ----------------------------------------------------------------------------------


async def test_a_roster_upload_binds_each_row_as_a_registration_does(registry: Harness) -> None:
    registry.clock.current = datetime(2025, 3, 1, 10, 0, tzinfo=SHANGHAI)
    text = "\n".join(
        [
            "credit_code,name,district,sector,compliance_year,new_entrant",
            f"{NEW},New Ltd,pudong,chemicals,2024,true",
            f"{OLD},Old Ltd,minhang,steel,2024,",
        ]
    )
    await registry.run(commands.upload_roster, RosterUpload(text=text, uploaded_by="bureau"))
    ran = await registry.run(commands.register_pending_rows, 100)

    assert ran.types == ["entity.registered", "entity.registered"]  # before both deadlines
    listed = await get(registry, "/obligations")
    assert sorted((row["credit_code"], row["obligation"], row["missing"]) for row in listed) == (
        sorted(
            [
                (
                    NEW,
                    "accounts_opening",
                    "registry account not opened; trading account not linked",
                ),
                (NEW, "surrender", deadlines.NOT_DETERMINED),
                (OLD, "surrender", deadlines.NOT_DETERMINED),
            ]
        )
    )


# --- the surrender: what is missing, and the deadline's instant -------------------------------


async def test_the_surrender_says_what_is_still_missing_as_it_goes(registry: Harness) -> None:
    await ready(registry, OPEN, determined=False)
    assert (await status(registry, OPEN))["missing"] == deadlines.NOT_DETERMINED
    await registry.handle(verification_finalised(OPEN, VERIFIED))
    assert (await status(registry, OPEN))["missing"] == "surrendered 0 of 24252 allowances"
    await surrender(registry, OPEN, 10000)
    assert (await status(registry, OPEN))["missing"] == "surrendered 10000 of 24252 allowances"
    await surrender(registry, OPEN, OBLIGATION - 10000)
    done = await status(registry, OPEN)
    assert (done["status"], done["missing"]) == ("done_on_time", None)
    assert [change["change"] for change in done["history"]] == ["enrolled", "done_on_time"]


async def test_an_obligation_of_nothing_is_met_as_it_is_determined(registry: Harness) -> None:
    await ready(registry, OPEN, determined=False)
    registry.clock.current = determined = datetime(2025, 5, 20, 15, 0, tzinfo=SHANGHAI)
    assert await registry.handle(verification_finalised(OPEN, "0.000")) == []

    done = await status(registry, OPEN)
    assert (done["status"], at(done["done_at"]), done["missing"]) == (
        "done_on_time",
        determined,
        None,
    )
    assert of(await check_at(registry, DEADLINE), "surrender.overdue") == []


async def test_a_surrender_completed_before_17_00_is_on_time_and_one_at_17_00_late(
    registry: Harness,
) -> None:
    await ready(registry, DONE)
    await ready(registry, OPEN)
    registry.clock.current = DEADLINE - US  # 16:59:59.999999
    on_time = await registry.run(
        commands.surrender, Surrender(credit_code=DONE, compliance_year=2024, allowances=OBLIGATION)
    )
    assert on_time.types == ["surrender.completed", "preallocation.issued"]
    assert on_time.events[0].payload["on_time"] is True
    registry.clock.current = DEADLINE  # 17:00:00.000000
    late = await registry.run(
        commands.surrender, Surrender(credit_code=OPEN, compliance_year=2024, allowances=OBLIGATION)
    )
    assert late.types == ["surrender.completed", "preallocation.issued", "surrender.done_late"]
    assert late.events[0].payload["on_time"] is False
    done_late = late.events[2]
    assert (done_late.topic, done_late.key) == ("surrender.deadline", OPEN)
    assert at(done_late.payload["done_at"]) == DEADLINE
    assert at(done_late.payload["due_at"]) == DEADLINE

    first, second = await status(registry, DONE), await status(registry, OPEN)
    assert (first["status"], at(first["done_at"])) == ("done_on_time", DEADLINE - US)
    assert (second["status"], at(second["done_at"])) == ("done_late", DEADLINE)


# --- the deadline passes ----------------------------------------------------------------------


async def test_at_17_00_every_open_entity_is_overdue_once_and_the_deadline_summed_up(
    registry: Harness,
) -> None:
    await ready(registry, DONE)
    await ready(registry, OPEN)
    await ready(registry, ELSEWHERE, district="minhang", determined=False)
    registry.clock.current = BEFORE_THE_DEADLINE
    await surrender(registry, DONE)
    assert of(await check_at(registry, DEADLINE - US), "surrender.overdue") == []

    events = await check_at(registry, DEADLINE)

    overdue = of(events, "surrender.overdue")
    assert {(e.key, e.payload["district"], e.payload["missing"]) for e in overdue} == {
        (OPEN, "pudong", "surrendered 0 of 24252 allowances"),
        (ELSEWHERE, "minhang", deadlines.NOT_DETERMINED),
    }
    assert all(at(e.payload["escalates_at"]) == DEADLINE + SLA for e in overdue)
    [passed] = of(events, "surrender.deadline_passed")
    assert passed.topic == "surrender.deadline_passed"
    assert {
        name: passed.payload[name]
        for name in ("obligated", "done_on_time", "overdue", "overdue_by_district")
    } == {
        "obligated": 3,
        "done_on_time": 1,
        "overdue": 2,
        "overdue_by_district": {"pudong": 1, "minhang": 1},
    }
    assert at(passed.payload["passed_at"]) == DEADLINE
    assert (await status(registry, DONE))["status"] == "done_on_time"
    assert (await status(registry, OPEN))["status"] == "overdue"

    assert await check_at(registry, DEADLINE + timedelta(seconds=1)) == []  # nothing more

    snapshot = await get(registry, "/deadlines/surrender")
    assert at(snapshot["passed_at"]) == DEADLINE
    assert snapshot["counts"] == {"open": 0, "overdue": 2, "done_on_time": 1, "done_late": 0}
    assert sorted(
        (row["credit_code"], row["district"], row["missing"]) for row in snapshot["overdue_at_pass"]
    ) == sorted(
        [
            (OPEN, "pudong", "surrendered 0 of 24252 allowances"),
            (ELSEWHERE, "minhang", deadlines.NOT_DETERMINED),
        ]
    )
    pudong = await get(
        registry, "/deadlines/surrender", registry.token("district", district="pudong")
    )
    assert [row["credit_code"] for row in pudong["overdue_at_pass"]] == [OPEN]


# --- reminders --------------------------------------------------------------------------------


async def test_the_one_day_reminder_goes_to_the_open_entity_once_even_after_a_restart(
    registry: Harness,
) -> None:
    await ready(registry, DONE)
    await ready(registry, OPEN)
    registry.clock.current = BEFORE_THE_DEADLINE
    await surrender(registry, DONE)

    events = await check_at(registry, ONE_DAY_BEFORE)  # 06-29 17:00 exactly

    [reminder] = of(events, "surrender.reminder_due")
    assert (reminder.topic, reminder.key) == ("surrender.deadline", OPEN)
    assert reminder.payload["before"] == "P1D"
    assert reminder.payload["missing"] == "surrendered 0 of 24252 allowances"
    assert at(reminder.payload["reminded_at"]) == ONE_DAY_BEFORE
    assert await check_at(registry, ONE_DAY_BEFORE) == []
    before = len(await registry.outbox())
    await WATCHED.check(restarted(registry))
    assert len(await registry.outbox()) == before
    history = (await status(registry, OPEN))["history"]
    assert [(c["change"], c["detail"]) for c in history][-1] == ("reminded", "1 day before")


async def test_one_microsecond_before_the_one_day_reminder_the_seven_day_one_is_due(
    registry: Harness,
) -> None:
    await ready(registry, OPEN)
    [earlier] = of(await check_at(registry, SEVEN_DAYS_BEFORE - US), "surrender.reminder_due")
    assert earlier.payload["before"] == "P14D"

    events = await check_at(registry, ONE_DAY_BEFORE - US)

    [reminder] = of(events, "surrender.reminder_due")
    assert reminder.payload["before"] == "P7D"
    [last] = of(await check_at(registry, ONE_DAY_BEFORE), "surrender.reminder_due")
    assert last.payload["before"] == "P1D"


# --- cases: escalation and closing ------------------------------------------------------------


async def test_a_case_still_open_is_escalated_exactly_when_its_sla_has_passed(
    registry: Harness,
) -> None:
    await ready(registry, OPEN)
    await check_at(registry, DEADLINE)

    assert of(await check_at(registry, DEADLINE + SLA - US), "surrender.case_escalated") == []
    events = await check_at(registry, DEADLINE + SLA)

    [escalated] = of(events, "surrender.case_escalated")
    assert escalated.key == OPEN
    assert at(escalated.payload["opened_at"]) == DEADLINE
    assert at(escalated.payload["escalated_at"]) == DEADLINE + SLA
    assert escalated.payload["missing"] == "surrendered 0 of 24252 allowances"
    assert await check_at(registry, DEADLINE + SLA + US) == []
    [case] = await get(registry, "/districts/pudong/cases?state=escalated")
    assert (case["credit_code"], case["state"]) == (OPEN, "escalated")
    # The Bureau's queue: every district's escalated cases; a district's: its own only.
    assert [c["credit_code"] for c in await get(registry, "/cases")] == [OPEN]
    minhang = registry.token("district", district="minhang")
    assert await get(registry, "/cases", headers=minhang) == []


async def test_a_surrender_done_late_closes_the_case_and_is_published(registry: Harness) -> None:
    await ready(registry, OPEN)
    await check_at(registry, DEADLINE)
    [case] = await get(registry, "/districts/pudong/cases?state=open")
    assert case["credit_code"] == OPEN

    registry.clock.current = late = datetime(2025, 7, 1, 10, 0, tzinfo=SHANGHAI)
    types = await surrender(registry, OPEN)

    assert types == ["surrender.completed", "preallocation.issued", "surrender.done_late"]
    assert await get(registry, "/districts/pudong/cases?state=open") == []
    [closed] = await get(registry, "/districts/pudong/cases?state=closed")
    assert (closed["credit_code"], at(closed["closed_at"])) == (OPEN, late)
    history = (await status(registry, OPEN))["history"]
    assert [change["change"] for change in history] == ["enrolled", "overdue", "done_late"]
    assert of(await check_at(registry, DEADLINE + SLA), "surrender.case_escalated") == []


# --- accounts_opening -------------------------------------------------------------------------


def trading_account(code: str, account_id: str) -> TradingAccountOpened:
    return TradingAccountOpened(
        credit_code=code,
        compliance_year=2024,
        trading_account_id=account_id,
        opened_at=datetime(2025, 3, 3, 9, 0, tzinfo=SHANGHAI),
    )


async def test_only_new_entrants_must_open_both_accounts_by_the_deadline(
    registry: Harness,
) -> None:
    registry.clock.current = datetime(2025, 3, 1, 10, 0, tzinfo=SHANGHAI)
    await rostered(registry, NEW, new_entrant=True)
    await rostered(registry, OLD)
    listed = await get(registry, "/obligations?obligation=accounts_opening")
    assert [(row["credit_code"], row["status"], row["missing"]) for row in listed] == [
        (NEW, "open", "registry account not opened; trading account not linked")
    ]
    surrender_bound = await get(registry, "/obligations?obligation=surrender")
    assert {row["credit_code"] for row in surrender_bound} == {NEW, OLD}

    await registry.run(commands.open_account, OpenAccount(credit_code=NEW))
    assert (await status(registry, NEW, "accounts_opening"))["missing"] == (
        "trading account not linked"
    )
    registry.clock.current = linked = datetime(2025, 3, 10, 14, 0, tzinfo=SHANGHAI)
    assert await registry.handle(trading_account(NEW, "SEEE-0000001")) == []
    done = await status(registry, NEW, "accounts_opening")
    assert (done["status"], at(done["done_at"]), done["missing"]) == ("done_on_time", linked, None)

    await registry.run(commands.open_account, OpenAccount(credit_code=OLD))
    await registry.handle(trading_account(OLD, "SEEE-0000002"))
    async with registry.client() as client:
        reply = await client.get(f"/obligations/{OLD}/accounts_opening", headers=bureau(registry))
    assert (reply.status_code, reply.json()["error"]["code"]) == (404, "not_obligated")


async def test_a_new_entrant_opening_its_last_account_after_the_deadline_is_done_late(
    registry: Harness,
) -> None:
    registry.clock.current = datetime(2025, 3, 1, 10, 0, tzinfo=SHANGHAI)
    await rostered(registry, NEW, new_entrant=True)
    await registry.handle(trading_account(NEW, "SEEE-0000001"))
    assert (await status(registry, NEW, "accounts_opening"))["missing"] == (
        "registry account not opened"
    )
    [overdue] = of(await check_at(registry, OPENING_DEADLINE), "accounts_opening.overdue")
    assert (overdue.key, overdue.payload["missing"]) == (NEW, "registry account not opened")

    registry.clock.current = opened = OPENING_DEADLINE + timedelta(days=2)
    ran = await registry.run(commands.open_account, OpenAccount(credit_code=NEW))

    assert ran.types == ["account.opened", "accounts_opening.done_late"]
    assert at(ran.events[1].payload["done_at"]) == opened
    assert ran.events[0].payload["on_time"] is False


async def test_an_entity_open_when_the_clock_passes_the_deadline_again_is_marked_overdue(
    registry: Harness,
) -> None:
    # A rehearsal clock moved back: the deadline's pass is on record (summed up once), yet an
    # entity enrolled in the rehearsed time before it becomes overdue when the clock passes it.
    [passed] = of(
        await check_at(registry, DEADLINE + timedelta(days=400)), "surrender.deadline_passed"
    )
    assert passed.payload["obligated"] == 0
    registry.clock.current = BEFORE_THE_DEADLINE
    await ready(registry, OPEN)
    assert of(await check_at(registry, DEADLINE - US), "surrender.overdue") == []
    events = await check_at(registry, DEADLINE)
    assert [(event.type, event.key) for event in events] == [("surrender.overdue", OPEN)]
    assert (await status(registry, OPEN))["status"] == "overdue"


async def test_the_accounts_deadline_is_the_instant_2025_04_01_00_00(registry: Harness) -> None:
    # "By 03-31": an account opened at 23:59:59.999999 is on time, one at 00:00:00 late; and
    # the watcher marks nobody overdue one microsecond before the deadline.
    registry.clock.current = datetime(2025, 3, 1, 10, 0, tzinfo=SHANGHAI)
    await rostered(registry, NEW, new_entrant=True)
    await rostered(registry, OLD, new_entrant=True)
    for code, account_id in ((NEW, "SEEE-0000001"), (OLD, "SEEE-0000002")):
        await registry.handle(trading_account(code, account_id))
    just_before = await check_at(registry, OPENING_DEADLINE - US)
    assert {event.type for event in just_before} == {"accounts_opening.reminder_due"}  # 2 hours
    registry.clock.current = OPENING_DEADLINE - US
    await registry.run(commands.open_account, OpenAccount(credit_code=NEW))
    registry.clock.current = OPENING_DEADLINE
    ran = await registry.run(commands.open_account, OpenAccount(credit_code=OLD))
    assert ran.types == ["account.opened", "accounts_opening.done_late"]
    on_time, late = [await status(registry, code, "accounts_opening") for code in (NEW, OLD)]
    assert (on_time["status"], at(on_time["done_at"])) == ("done_on_time", OPENING_DEADLINE - US)
    assert (late["status"], at(late["done_at"])) == ("done_late", OPENING_DEADLINE)


# --- the projected shortfall ------------------------------------------------------------------


async def test_a_district_sees_each_entitys_projected_shortfall_largest_first(
    registry: Harness,
) -> None:
    determined, reported, unknown, covered, elsewhere = (make_credit_code(40 + n) for n in range(5))
    await ready(registry, determined, held={2024: 20000, 2025: 1000}, restricted=500)
    await rostered(registry, reported)
    await holding(registry, reported, {2023: 150, 2024: 50})
    report = uuid4()
    await registry.handle(report_submitted(reported, report, emissions="1000.400"))
    await registry.handle(
        report_submitted(reported, report, emissions="1500.500").model_copy(update={"version": 2})
    )
    # Version 1 delivered again late (another event id): the later version stays.
    await registry.handle(consumed(report_submitted(reported, report, emissions="1000.400")))
    await rostered(registry, unknown)
    await rostered(registry, covered)
    await holding(registry, covered, {2024: 500})
    await registry.handle(report_submitted(covered, uuid4(), emissions="100.000"))
    await ready(registry, elsewhere, district="minhang")

    listed = await get(registry, "/districts/pudong/shortfalls")

    assert [
        (
            row["credit_code"],
            row["held"],
            row["basis"],
            row["basis_source"],
            row["surrendered"],
            row["shortfall"],
        )
        for row in listed
    ] == [
        (determined, 20500, OBLIGATION, "obligation", 0, 3752),
        (reported, 200, 1501, "reported_emissions", 0, 1301),  # 1500.500 rounded half up
        (covered, 500, 100, "reported_emissions", 0, 0),
        (unknown, 0, None, None, 0, None),
    ]
    assert (listed[1]["reported_emissions"], listed[1]["report_version"]) == ("1500.500", 2)

    # A partial surrender draws on what is held: the shortfall stays what it was.
    await surrender(registry, determined, 2000)
    [after] = [
        row
        for row in await get(registry, "/districts/pudong/shortfalls")
        if row["credit_code"] == determined
    ]
    assert (after["held"], after["surrendered"], after["shortfall"]) == (18500, 2000, 3752)


async def test_shortfalls_are_for_the_bureau_and_the_districts_own(registry: Harness) -> None:
    await ready(registry, OPEN)
    pudong = registry.token("district", district="pudong")
    listed = await get(registry, "/districts/pudong/shortfalls", pudong)
    assert [(row["credit_code"], row["shortfall"]) for row in listed] == [(OPEN, 0)]
    async with registry.client() as client:
        other = await client.get(
            "/districts/pudong/shortfalls", headers=registry.token("district", district="minhang")
        )
        entity = await client.get(
            "/districts/pudong/shortfalls", headers=registry.token("entity", credit_code=OPEN)
        )
        unknown = await client.get("/districts/atlantis/shortfalls", headers=bureau(registry))
    assert (other.status_code, other.json()["error"]["code"]) == (403, "forbidden")
    assert entity.status_code == 403
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "unknown_district")
    assert await get(registry, "/districts/minhang/shortfalls") == []


# --- gauges -----------------------------------------------------------------------------------


def gauge(district: str, state: str) -> float | None:
    labels = {"obligation": "surrender", "district": district, "status": state}
    return REGISTRY.get_sample_value("carbon_obligations", labels)


async def test_the_gauges_are_the_databases_figures_and_count_overdue_from_the_instant(
    registry: Harness,
) -> None:
    registry.clock.current = BEFORE_THE_DEADLINE
    await ready(registry, DONE)
    await ready(registry, OPEN)
    await ready(registry, ELSEWHERE, district="jinshan")
    await surrender(registry, DONE)
    await WATCHED.refresh_gauges(registry.context)
    assert [gauge("pudong", s) for s in ("open", "overdue", "done_on_time")] == [1, 0, 1]
    assert [gauge("jinshan", s) for s in ("open", "overdue")] == [1, 0]
    assert gauge("huangpu", "open") == 0  # every district is there, with nobody in it
    # At the deadline, before the watcher has marked anyone, the open ones already count overdue.
    registry.clock.current = DEADLINE
    await WATCHED.refresh_gauges(registry.context)
    assert [gauge("pudong", s) for s in ("open", "overdue", "done_on_time")] == [0, 1, 1]
    assert [gauge("jinshan", s) for s in ("open", "overdue")] == [0, 1]
    seconds = {"obligation": "surrender"}
    assert REGISTRY.get_sample_value("carbon_obligation_deadline_seconds", seconds) == 0


# --- the entities rostered before the upgrade that watches deadlines --------------------------

ZERO, PARTIAL, LATE, KNOWN = (make_credit_code(50 + n) for n in range(4))
ROSTERED = datetime(2025, 3, 1, 10, 0, tzinfo=SHANGHAI)


async def forgotten(registry: Harness, *codes: str) -> None:
    """The database as it was before the migration that added the obligation tables: the
    entities' rows there gone (a plain DELETE), everything else the registry knows kept."""
    tables = store.obligation_tables
    async with registry.context.engine.begin() as conn:
        for table in (tables.status, tables.history, tables.reminders):
            await conn.execute(delete(table).where(table.c.credit_code.in_(codes)))


async def backfilled(registry: Harness, now: datetime) -> Any:
    registry.clock.current = now
    return await registry.run(deadlines.backfill, None)


async def test_the_backfill_enrols_each_rostered_entity_where_its_surrender_stands(
    registry: Harness,
) -> None:
    await rostered(registry, ELSEWHERE, district="minhang")  # not yet determined
    await ready(registry, PARTIAL)
    await ready(registry, DONE)
    await ready(registry, ZERO, determined=False)
    await registry.handle(verification_finalised(ZERO, "0.000"))
    await ready(registry, OPEN)  # enrolled as it was rostered: left as it is
    registry.clock.current = surrendered = datetime(2025, 6, 2, 9, 30, tzinfo=SHANGHAI)
    await surrender(registry, PARTIAL, 10000)
    await surrender(registry, DONE)
    await forgotten(registry, ELSEWHERE, PARTIAL, DONE, ZERO)
    untouched = await status(registry, OPEN)

    ran = await backfilled(registry, BEFORE_THE_DEADLINE)

    assert ran.result == 4
    assert ran.events == []  # nobody is overdue yet, nobody done late
    rows = {code: await status(registry, code) for code in (ELSEWHERE, PARTIAL, DONE, ZERO)}
    assert {
        code: (row["status"], row["district"], row["missing"], row["done_at"])
        for code, row in rows.items()
    } == {
        ELSEWHERE: ("open", "minhang", deadlines.NOT_DETERMINED, None),
        PARTIAL: ("open", "pudong", "surrendered 10000 of 24252 allowances", None),
        DONE: ("done_on_time", "pudong", None, rows[DONE]["done_at"]),
        ZERO: ("done_on_time", "pudong", None, rows[ZERO]["done_at"]),
    }
    assert at(rows[DONE]["done_at"]) == surrendered
    assert at(rows[ZERO]["done_at"]) == BEFORE_THE_DEADLINE  # the instant it was determined is lost
    assert rows[DONE]["name"] == f"Entity {DONE[-4:]}"
    assert [(c["change"], c["detail"]) for c in rows[DONE]["history"]] == [
        ("enrolled", "surrendered 24252 of 24252 allowances"),
        ("done_on_time", None),
    ]
    assert await status(registry, OPEN) == untouched

    again = await backfilled(registry, BEFORE_THE_DEADLINE + timedelta(hours=1))
    assert (again.result, again.events) == (0, [])

    # From then on they are watched as if enrolled when rostered.
    events = await check_at(registry, DEADLINE)
    assert {e.key for e in of(events, "surrender.overdue")} == {ELSEWHERE, PARTIAL, OPEN}
    [passed] = of(events, "surrender.deadline_passed")
    assert (passed.payload["obligated"], passed.payload["done_on_time"]) == (5, 2)


async def test_after_the_deadline_the_backfill_finds_the_late_done_late_and_the_open_overdue(
    registry: Harness,
) -> None:
    await ready(registry, LATE)
    await ready(registry, OPEN)
    registry.clock.current = late = DEADLINE + timedelta(days=1)
    await surrender(registry, LATE)
    await forgotten(registry, LATE, OPEN)
    before = len(await registry.outbox())

    ran = await backfilled(registry, DEADLINE + timedelta(days=3))

    assert ran.result == 2
    done_late, still_open = await status(registry, LATE), await status(registry, OPEN)
    assert (done_late["status"], at(done_late["done_at"]), done_late["missing"]) == (
        "done_late",
        late,
        None,
    )
    assert (still_open["status"], still_open["missing"], still_open["done_at"]) == (
        "overdue",
        "surrendered 0 of 24252 allowances",
        None,
    )
    [published] = of(ran.events, "surrender.done_late")
    assert (published.key, at(published.payload["done_at"])) == (LATE, late)
    # Met already, late: enrolled done late, never overdue first.
    assert {event.key for event in of(ran.events, "surrender.overdue")} == {OPEN}
    assert [c["change"] for c in done_late["history"]] == ["enrolled", "done_late"]
    [case] = await get(registry, "/districts/pudong/cases?state=open")
    assert case["credit_code"] == OPEN

    again = await backfilled(registry, DEADLINE + timedelta(days=4))
    assert (again.result, again.events) == (0, [])
    assert len(await registry.outbox()) == before + len(ran.events)


async def test_the_backfill_binds_new_entrants_to_their_accounts_as_the_roster_did(
    registry: Harness,
) -> None:
    # KNOWN had both accounts from an earlier year when it was rostered a new entrant: never
    # bound to open them (as a registration then would have decided).
    registry.clock.current = datetime(2025, 2, 1, 10, 0, tzinfo=SHANGHAI)
    async with registry.context.transaction() as uow:
        await store.register(
            uow.conn,
            credit_code=KNOWN,
            name="Known Ltd",
            district="pudong",
            sector="steel",
            compliance_year=2023,
            new_entrant=False,
            at=uow.now,
        )
    await registry.run(commands.open_account, OpenAccount(credit_code=KNOWN))
    await registry.handle(trading_account(KNOWN, "SEEE-0000009"))
    registry.clock.current = ROSTERED
    for number, code in enumerate((NEW, LATE, OPEN)):
        await rostered(registry, code, new_entrant=True)
        await registry.handle(trading_account(code, f"SEEE-000000{number}"))
    await rostered(registry, KNOWN, new_entrant=True)
    await rostered(registry, OLD)
    registry.clock.current = opened = datetime(2025, 3, 5, 11, 0, tzinfo=SHANGHAI)
    await registry.run(commands.open_account, OpenAccount(credit_code=NEW))
    registry.clock.current = opened_late = OPENING_DEADLINE + timedelta(days=2)
    await registry.run(commands.open_account, OpenAccount(credit_code=LATE))
    await forgotten(registry, NEW, LATE, OPEN, KNOWN, OLD)

    ran = await backfilled(registry, OPENING_DEADLINE + timedelta(days=14))

    assert ran.result == 5 + 3  # every one bound to surrender; three new entrants to open
    rows = {code: await status(registry, code, "accounts_opening") for code in (NEW, LATE, OPEN)}
    assert {
        code: (row["status"], row["missing"], row["done_at"] and at(row["done_at"]))
        for code, row in rows.items()
    } == {
        NEW: ("done_on_time", None, opened),  # the later of the two: the account, after linking
        LATE: ("done_late", None, opened_late),
        OPEN: ("overdue", "registry account not opened", None),
    }
    assert rows[NEW]["history"][0]["detail"] == (
        "registry account not opened; trading account not linked"  # as it stood when rostered
    )
    [late] = of(ran.events, "accounts_opening.done_late")
    assert (late.key, at(late.payload["done_at"])) == (LATE, opened_late)
    for code in (KNOWN, OLD):
        async with registry.client() as client:
            reply = await client.get(
                f"/obligations/{code}/accounts_opening", headers=bureau(registry)
            )
        assert (reply.status_code, reply.json()["error"]["code"]) == (404, "not_obligated")
        assert (await status(registry, code))["missing"] == deadlines.NOT_DETERMINED

    again = await backfilled(registry, OPENING_DEADLINE + timedelta(days=15))
    assert (again.result, again.events) == (0, [])


async def test_the_watcher_backfills_as_it_starts(registry: Harness) -> None:
    await ready(registry, OPEN)
    await forgotten(registry, OPEN)
    registry.clock.current = BEFORE_THE_DEADLINE
    metrics.OBLIGATIONS.labels("surrender", "pudong", "open").set(0)
    # Polled by the gauge the watcher sets after its first check (the in-memory database is
    # one connection: the test stays off it while the watcher runs).
    watching = asyncio.create_task(WATCHED.watch(registry.context))
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while gauge("pudong", "open") != 1:
            assert asyncio.get_running_loop().time() < deadline, "not backfilled in 5 s"
            await asyncio.sleep(0.01)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    row = await status(registry, OPEN)
    assert (row["status"], row["missing"]) == ("open", "surrendered 0 of 24252 allowances")
