"""The reporting system's obligations with deadlines: every entity on the cycle's roster owes its
monitoring plan (by deadlines.monitoring_plan) and its report, online and on paper (by
deadlines.report). Each deadline is an exclusive instant; reminders come at the policy's
instants before it, once each, even across a restart; the pass at the deadline marks who has not
met it overdue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prometheus_client import REGISTRY
from sqlalchemy import delete, select

from carbon_contracts.policy import ReportRules
from carbon_platform import metrics
from carbon_platform.context import ServiceContext
from carbon_platform.db import make_engine
from carbon_platform.settings import Settings
from registry.domain.credit_code import make_credit_code
from reporting import commands, store
from reporting.schemas import DecidePlan, RecordPaperCopy, ReturnReport
from reporting.service import SERVICE, WATCHED
from tests.unit.reporting_support import (
    BEFORE_THE_PLAN_DEADLINE,
    BEFORE_THE_REPORT_DEADLINE,
    CODE,
    OTHER,
    PLAN_DEADLINE,
    REPORT_DEADLINE,
    plan,
    report,
)
from tests.unit.support import (
    JWT_SECRET,
    POLICY,
    SHANGHAI,
    Harness,
    Published,
    SetClock,
    entity_registered,
)

THIRD = make_credit_code(3)
MICROSECOND = timedelta(microseconds=1)
NO_PLAN = "no 2025 monitoring plan submitted"
NO_REPORT = "2024 emissions report not submitted; paper copy not received"
NO_PAPER_COPY = "report submitted, paper copy not received"


# --- helpers ----------------------------------------------------------------------------------


async def rostered(service: Harness, *codes: str, at: datetime = BEFORE_THE_PLAN_DEADLINE) -> None:
    """Put the entities on the 2024 roster at `at` (CODE and THIRD in Pudong, the rest in
    Minhang)."""
    service.clock.current = at
    for code in codes:
        district = "pudong" if code in (CODE, THIRD) else "minhang"
        await service.handle(entity_registered(code, district=district))


async def obligation(service: Harness, code: str, name: str) -> Any:
    status = store.obligation_tables.status

    async def row(conn: Any) -> Any:
        query = select(status).where(status.c.credit_code == code, status.c.obligation == name)
        return (await conn.execute(query)).one()

    return await service.read(row)


async def history(service: Harness, code: str, name: str) -> list[tuple[str, datetime]]:
    table = store.obligation_tables.history

    async def rows(conn: Any) -> list[Any]:
        query = (
            select(table.c.change, table.c.at)
            .where(table.c.credit_code == code, table.c.obligation == name)
            .order_by(table.c.id)
        )
        return list(await conn.execute(query))

    return [(row.change, row.at) for row in await service.read(rows)]


async def watch(service: Harness, at: datetime, name: str) -> list[Published]:
    """One pass of the service's watcher at `at`: the events it published about `name`."""
    service.clock.current = at
    before = len(await service.outbox())
    await WATCHED.check(service.context)
    return [e for e in (await service.outbox())[before:] if e.type.startswith(f"{name}.")]


async def submit_report(service: Harness, code: str, at: datetime) -> UUID:
    service.clock.current = at
    ran = await service.run(commands.submit_report, report(code=code))
    return ran.result.report_id


async def record_paper_copy(service: Harness, report_id: UUID, at: datetime) -> list[str]:
    service.clock.current = at
    ran = await service.run(
        commands.record_paper_copy,
        RecordPaperCopy(
            report_id=report_id,
            received_on=at.astimezone(SHANGHAI).date(),
            delivery="post",
            recorded_by="bureau-clerk",
        ),
    )
    return ran.types


async def submit_plan(service: Harness, code: str, at: datetime) -> Any:
    service.clock.current = at
    return await service.run(commands.submit_plan, plan(code=code))


@asynccontextmanager
async def reporting_on(database: Path, now: datetime) -> AsyncIterator[Harness]:
    """The reporting service on a database file: a second one over the same file is the
    service after a restart (nothing but the database carries over)."""
    settings = Settings(
        service=SERVICE.name, jwt_secret=JWT_SECRET, database_url=f"sqlite+aiosqlite:///{database}"
    )
    engine = make_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(SERVICE.metadata.create_all)  # only the tables not there yet
    clock = SetClock(now)
    context = ServiceContext(
        name=SERVICE.name,
        settings=settings,
        engine=engine,
        inbox=SERVICE.tables.inbox,
        outbox=SERVICE.tables.outbox,
        clock=clock,
        policy=POLICY,
    )
    try:
        yield Harness(SERVICE, context, clock)
    finally:
        await engine.dispose()


# --- enrolment --------------------------------------------------------------------------------


async def test_a_rostered_entity_owes_its_plan_and_its_report(reporting: Harness) -> None:
    reporting.clock.current = BEFORE_THE_PLAN_DEADLINE
    assert await reporting.handle(entity_registered(CODE)) == []  # open: nothing to publish

    plan_row = await obligation(reporting, CODE, "monitoring_plan")
    report_row = await obligation(reporting, CODE, "report")
    assert (plan_row.status, plan_row.due_at, plan_row.missing) == ("open", PLAN_DEADLINE, NO_PLAN)
    assert (report_row.status, report_row.due_at, report_row.missing) == (
        "open",
        REPORT_DEADLINE,
        NO_REPORT,
    )
    assert (report_row.name, report_row.district, report_row.compliance_year) == (
        "示例化工",
        "pudong",
        2024,
    )
    # Another year's roster is not this cycle's: nobody is bound by its deadlines here.
    await reporting.handle(entity_registered(OTHER, year=2025))
    async with reporting.client() as client:
        answer = await client.get("/obligations", headers=reporting.token("regulator"))
    assert answer.status_code == 200
    assert [(o["credit_code"], o["obligation"]) for o in answer.json()] == [
        (CODE, "monitoring_plan"),
        (CODE, "report"),
    ]


async def test_without_a_paper_copy_the_report_owes_the_online_submission_only(
    reporting: Harness,
) -> None:
    reporting.context.policy = POLICY.model_copy(update={"report": ReportRules(paper_copy=False)})
    await rostered(reporting, CODE)
    assert (await obligation(reporting, CODE, "report")).missing == (
        "2024 emissions report not submitted"
    )

    await submit_report(reporting, CODE, BEFORE_THE_REPORT_DEADLINE)
    row = await obligation(reporting, CODE, "report")
    assert (row.status, row.done_at, row.missing) == (
        "done_on_time",
        BEFORE_THE_REPORT_DEADLINE,
        None,
    )


async def test_an_entity_rostered_after_the_report_deadline_is_overdue_at_once(
    reporting: Harness,
) -> None:
    reporting.clock.current = REPORT_DEADLINE + timedelta(days=3)
    published = await reporting.handle(entity_registered(CODE))
    by_type = {event.type: event.event.payload for event in published}
    assert set(by_type) == {"monitoring_plan.overdue", "report.overdue"}
    assert by_type["report.overdue"].missing == NO_REPORT
    assert by_type["monitoring_plan.overdue"].missing == NO_PLAN
    assert (await obligation(reporting, CODE, "report")).status == "overdue"


# --- the report -------------------------------------------------------------------------------


async def test_a_paper_copy_recorded_a_microsecond_before_the_deadline_is_on_time(
    reporting: Harness,
) -> None:
    await rostered(reporting, CODE)
    report_id = await submit_report(reporting, CODE, BEFORE_THE_REPORT_DEADLINE)
    row = await obligation(reporting, CODE, "report")
    assert (row.status, row.missing) == ("open", NO_PAPER_COPY)

    last_instant = datetime(2025, 3, 31, 23, 59, 59, 999999, tzinfo=SHANGHAI)
    assert last_instant == REPORT_DEADLINE - MICROSECOND
    assert await record_paper_copy(reporting, report_id, last_instant) == [
        "report.paper_copy_received"
    ]
    row = await obligation(reporting, CODE, "report")
    assert (row.status, row.done_at, row.missing) == ("done_on_time", last_instant, None)

    # The pass at the deadline finds it done: nobody overdue.
    [passed] = await watch(reporting, REPORT_DEADLINE, "report")
    assert passed.type == "report.deadline_passed"
    assert (passed.payload["obligated"], passed.payload["done_on_time"]) == (1, 1)
    assert passed.payload["overdue"] == 0

    # A report returned for correction afterwards does not reopen the obligation.
    reporting.clock.current = REPORT_DEADLINE + timedelta(days=10)
    await reporting.run(
        commands.return_report,
        ReturnReport(report_id=report_id, reason="diesel missing", returned_by="bureau"),
    )
    assert (await obligation(reporting, CODE, "report")).status == "done_on_time"
    assert await watch(reporting, REPORT_DEADLINE + timedelta(days=10), "report") == []


async def test_a_paper_copy_recorded_at_the_deadline_makes_the_report_done_late(
    reporting: Harness,
) -> None:
    await rostered(reporting, CODE)
    report_id = await submit_report(reporting, CODE, BEFORE_THE_REPORT_DEADLINE)

    types = await record_paper_copy(reporting, report_id, REPORT_DEADLINE)
    assert types == ["report.paper_copy_received", "report.done_late"]
    [late] = [e for e in await reporting.outbox() if e.type == "report.done_late"]
    assert (late.topic, late.key) == ("report.deadline", CODE)
    assert late.headers["ce_source"] == "/carbon/reporting"
    assert (late.event.payload.done_at, late.event.payload.due_at) == (
        REPORT_DEADLINE,
        REPORT_DEADLINE,
    )
    assert late.payload["district"] == "pudong"
    row = await obligation(reporting, CODE, "report")
    assert (row.status, row.done_at) == ("done_late", REPORT_DEADLINE)
    assert [change for change, _ in await history(reporting, CODE, "report")] == [
        "enrolled",
        "done_late",
    ]


async def test_the_pass_at_the_report_deadline_marks_who_has_not_reported_overdue(
    reporting: Harness,
) -> None:
    await rostered(reporting, CODE, OTHER, THIRD)
    await submit_report(reporting, OTHER, BEFORE_THE_REPORT_DEADLINE)  # no paper copy
    done = await submit_report(reporting, THIRD, BEFORE_THE_REPORT_DEADLINE)
    await record_paper_copy(reporting, done, BEFORE_THE_REPORT_DEADLINE + timedelta(hours=1))

    # One microsecond before, nobody is overdue yet (the last reminder goes out instead).
    before = await watch(reporting, REPORT_DEADLINE - MICROSECOND, "report")
    assert {e.type for e in before} == {"report.reminder_due"}
    assert (await obligation(reporting, CODE, "report")).status == "open"

    passed = await watch(reporting, REPORT_DEADLINE, "report")
    overdue = {e.key: e.event.payload for e in passed if e.type == "report.overdue"}
    assert {code: payload.missing for code, payload in overdue.items()} == {
        CODE: NO_REPORT,
        OTHER: NO_PAPER_COPY,
    }
    assert overdue[CODE].escalates_at == REPORT_DEADLINE + POLICY.supervision.case_sla
    [summary] = [e for e in passed if e.type == "report.deadline_passed"]
    assert summary.topic == "report.deadline_passed"
    assert {
        name: summary.payload[name]
        for name in ("obligated", "done_on_time", "overdue", "overdue_by_district")
    } == {
        "obligated": 3,
        "done_on_time": 1,
        "overdue": 2,
        "overdue_by_district": {"pudong": 1, "minhang": 1},
    }
    for code, missing in ((CODE, NO_REPORT), (OTHER, NO_PAPER_COPY)):
        row = await obligation(reporting, code, "report")
        assert (row.status, row.missing, row.case_opened_at) == (
            "overdue",
            missing,
            REPORT_DEADLINE,
        )
    assert (await obligation(reporting, THIRD, "report")).status == "done_on_time"

    # Passed once: a second look changes nothing.
    assert await watch(reporting, REPORT_DEADLINE + timedelta(seconds=1), "report") == []
    async with reporting.client() as client:
        answer = await client.get("/deadlines/report", headers=reporting.token("regulator"))
    assert answer.status_code == 200
    assert [(o["credit_code"], o["missing"]) for o in answer.json()["overdue_at_pass"]] == sorted(
        [(CODE, NO_REPORT), (OTHER, NO_PAPER_COPY)]
    )


# --- the monitoring plan ----------------------------------------------------------------------


async def test_the_monitoring_plan_deadline_is_an_exact_instant(reporting: Harness) -> None:
    await rostered(reporting, CODE, OTHER, THIRD)
    last_instant = datetime(2025, 1, 15, 23, 59, 59, 999999, tzinfo=SHANGHAI)
    assert last_instant == PLAN_DEADLINE - MICROSECOND

    on_time = await submit_plan(reporting, CODE, last_instant)
    assert on_time.types == ["monitoring_plan.submitted"]
    row = await obligation(reporting, CODE, "monitoring_plan")
    assert (row.status, row.done_at, row.missing) == ("done_on_time", last_instant, None)

    # At the deadline itself, before the watcher has looked: done late.
    late = await submit_plan(reporting, THIRD, PLAN_DEADLINE)
    assert late.types == ["monitoring_plan.submitted", "monitoring_plan.done_late"]
    assert late.events[1].event.payload.done_at == PLAN_DEADLINE
    assert (await obligation(reporting, THIRD, "monitoring_plan")).status == "done_late"

    passed = await watch(reporting, PLAN_DEADLINE, "monitoring_plan")
    [overdue] = [e for e in passed if e.type == "monitoring_plan.overdue"]
    assert (overdue.key, overdue.event.payload.missing) == (OTHER, NO_PLAN)
    [summary] = [e for e in passed if e.type == "monitoring_plan.deadline_passed"]
    assert (summary.payload["obligated"], summary.payload["done_on_time"]) == (3, 1)
    assert summary.payload["overdue"] == 2  # OTHER, and THIRD who had not met it before

    # OTHER submits later: done late, its case closed; a return does not reopen it.
    submitted = await submit_plan(reporting, OTHER, PLAN_DEADLINE + timedelta(days=2))
    assert submitted.types == ["monitoring_plan.submitted", "monitoring_plan.done_late"]
    await reporting.run(
        commands.decide_plan,
        DecidePlan(
            plan_id=submitted.result.plan_id,
            decision="returned",
            reason="no meter for boiler 3",
            decided_by="bureau",
        ),
    )
    assert [change for change, _ in await history(reporting, OTHER, "monitoring_plan")] == [
        "enrolled",
        "overdue",
        "done_late",
    ]
    row = await obligation(reporting, OTHER, "monitoring_plan")
    assert (row.status, row.done_at) == ("done_late", PLAN_DEADLINE + timedelta(days=2))


# --- reminders --------------------------------------------------------------------------------


async def test_reminders_come_at_their_instants_once_each_even_across_a_restart(
    tmp_path: Path,
) -> None:
    database = tmp_path / "reporting.db"
    fourteen, seven, one = (REPORT_DEADLINE - timedelta(days=days) for days in (14, 7, 1))
    assert (fourteen, one) == (
        datetime(2025, 3, 18, tzinfo=SHANGHAI),
        datetime(2025, 3, 31, tzinfo=SHANGHAI),
    )

    def reminded(events: list[Published]) -> dict[str, tuple[timedelta, str]]:
        assert {e.type for e in events} <= {"report.reminder_due"}
        return {e.key: (e.event.payload.before, e.event.payload.missing) for e in events}

    async with reporting_on(database, BEFORE_THE_PLAN_DEADLINE) as service:
        await rostered(service, CODE, OTHER)
        assert await watch(service, fourteen - MICROSECOND, "report") == []
        assert reminded(await watch(service, fourteen, "report")) == {
            CODE: (timedelta(days=14), NO_REPORT),
            OTHER: (timedelta(days=14), NO_REPORT),
        }
        assert await watch(service, fourteen, "report") == []  # once

    async with reporting_on(database, fourteen + timedelta(hours=1)) as service:  # restarted
        assert await watch(service, fourteen + timedelta(hours=1), "report") == []
        assert await watch(service, seven - MICROSECOND, "report") == []
        assert reminded(await watch(service, seven, "report")) == {
            CODE: (timedelta(days=7), NO_REPORT),
            OTHER: (timedelta(days=7), NO_REPORT),
        }
        await submit_report(service, OTHER, seven + timedelta(days=2))
        assert await watch(service, one - MICROSECOND, "report") == []
        assert reminded(await watch(service, one, "report")) == {
            CODE: (timedelta(days=1), NO_REPORT),
            OTHER: (timedelta(days=1), NO_PAPER_COPY),
        }

    async with reporting_on(database, one + MICROSECOND) as service:  # restarted again
        assert await watch(service, one + MICROSECOND, "report") == []
        [report_id] = [
            row.report_id for row in await service.read(store.list_reports, credit_code=OTHER)
        ]
        await record_paper_copy(service, UUID(report_id), one + timedelta(hours=1))
        # The last call (2 hours before) goes to the one still open only.
        last_call = await watch(service, REPORT_DEADLINE - timedelta(hours=2), "report")
        assert reminded(last_call) == {CODE: (timedelta(hours=2), NO_REPORT)}
        assert [change for change, _ in await history(service, CODE, "report")] == [
            "enrolled",
            "reminded",
            "reminded",
            "reminded",
            "reminded",
        ]
        assert [change for change, _ in await history(service, OTHER, "report")] == [
            "enrolled",
            "reminded",
            "reminded",
            "reminded",
            "done_on_time",
        ]


# --- entities rostered before the deadlines were watched (an upgrade in mid-cycle) -----------

FOURTH, FIFTH = make_credit_code(4), make_credit_code(5)
NO_REPORT_ONLINE = "2024 emissions report not submitted"


async def before_the_upgrade(service: Harness, *codes: str) -> None:
    """The database as it was before migration 0004 added the obligation tables: the entities'
    rows there gone (a plain DELETE), everything else reporting knows kept."""
    tables = store.obligation_tables
    async with service.context.engine.begin() as conn:
        for table in (tables.status, tables.history, tables.reminders):
            await conn.execute(delete(table).where(table.c.credit_code.in_(codes)))


async def backfilled(service: Harness, now: datetime) -> Any:
    """The backfill the watcher runs as it starts, at `now`."""
    service.clock.current = now
    return await service.run(commands.backfill, None)


async def standings(service: Harness) -> dict[tuple[str, str], tuple[str, str | None, Any]]:
    """Every obligation row: (credit code, obligation) -> (status, missing, done_at)."""
    status = store.obligation_tables.status

    async def rows(conn: Any) -> list[Any]:
        return list(await conn.execute(select(status)))

    return {
        (row.credit_code, row.obligation): (row.status, row.missing, row.done_at)
        for row in await service.read(rows)
    }


async def test_the_backfill_enrols_the_entities_rostered_before_the_upgrade_where_they_stand(
    reporting: Harness,
) -> None:
    await rostered(reporting, CODE, OTHER, THIRD, FOURTH, FIFTH)
    await reporting.handle(entity_registered(make_credit_code(6), year=2025))  # not this cycle
    plan_at = BEFORE_THE_PLAN_DEADLINE + timedelta(hours=1)
    await submit_plan(reporting, CODE, plan_at)
    report_id = await submit_report(reporting, CODE, plan_at + timedelta(days=1))
    paper_at = plan_at + timedelta(days=2)
    await record_paper_copy(reporting, report_id, paper_at)
    await submit_report(reporting, OTHER, plan_at + timedelta(days=2))  # no paper copy yet
    reporting.clock.current = plan_at
    await reporting.run(commands.submit_report, report(code=FOURTH, draft=True))  # counts nil
    await before_the_upgrade(reporting, CODE, OTHER, THIRD, FOURTH)  # FIFTH: enrolled since
    upgraded = PLAN_DEADLINE - timedelta(days=2)
    published = len(await reporting.outbox())

    ran = await backfilled(reporting, upgraded)
    assert (ran.result, ran.events) == (8, [])  # four entities, two obligations each
    assert await standings(reporting) == {
        (CODE, "monitoring_plan"): ("done_on_time", None, plan_at),
        (CODE, "report"): ("done_on_time", None, paper_at),
        (OTHER, "monitoring_plan"): ("open", NO_PLAN, None),
        (OTHER, "report"): ("open", NO_PAPER_COPY, None),
        (THIRD, "monitoring_plan"): ("open", NO_PLAN, None),
        (THIRD, "report"): ("open", NO_REPORT, None),
        (FOURTH, "monitoring_plan"): ("open", NO_PLAN, None),
        (FOURTH, "report"): ("open", NO_REPORT, None),
        (FIFTH, "monitoring_plan"): ("open", NO_PLAN, None),
        (FIFTH, "report"): ("open", NO_REPORT, None),
    }
    row = await obligation(reporting, OTHER, "report")
    assert (row.name, row.district, row.due_at) == ("示例化工", "minhang", REPORT_DEADLINE)
    assert await history(reporting, CODE, "report") == [
        ("enrolled", upgraded),
        ("done_on_time", paper_at),
    ]
    assert await history(reporting, FIFTH, "report") == [("enrolled", BEFORE_THE_PLAN_DEADLINE)]

    # Run again (the next start): everyone is enrolled, nothing changes, nothing is published.
    again = await backfilled(reporting, upgraded + timedelta(hours=1))
    assert (again.result, again.events) == (0, [])
    assert len(await reporting.outbox()) == published
    assert await history(reporting, CODE, "report") == [
        ("enrolled", upgraded),
        ("done_on_time", paper_at),
    ]

    # The backfilled are watched as the others: at the deadline the plan is overdue for four.
    passed = await watch(reporting, PLAN_DEADLINE, "monitoring_plan")
    overdue = {e.key: e.payload["missing"] for e in passed if e.type == "monitoring_plan.overdue"}
    assert overdue == {code: NO_PLAN for code in (OTHER, THIRD, FOURTH, FIFTH)}
    [summary] = [e for e in passed if e.type == "monitoring_plan.deadline_passed"]
    assert (summary.payload["obligated"], summary.payload["done_on_time"]) == (5, 1)


async def test_the_backfill_asks_for_no_paper_copy_when_the_policy_does_not(
    reporting: Harness,
) -> None:
    reporting.context.policy = POLICY.model_copy(update={"report": ReportRules(paper_copy=False)})
    await rostered(reporting, CODE, OTHER)
    await submit_report(reporting, CODE, BEFORE_THE_REPORT_DEADLINE)
    await before_the_upgrade(reporting, CODE, OTHER)

    ran = await backfilled(reporting, BEFORE_THE_REPORT_DEADLINE + timedelta(days=1))
    assert ran.result == 4
    assert {e.type for e in ran.events} == {"monitoring_plan.overdue"}  # its deadline passed
    standing = await standings(reporting)
    assert standing[(CODE, "report")] == ("done_on_time", None, BEFORE_THE_REPORT_DEADLINE)
    assert standing[(OTHER, "report")] == ("open", NO_REPORT_ONLINE, None)


async def test_after_the_deadline_the_backfill_enrols_those_still_open_overdue(
    reporting: Harness,
) -> None:
    await rostered(reporting, CODE, OTHER)
    await submit_report(reporting, OTHER, BEFORE_THE_REPORT_DEADLINE)  # no paper copy
    await before_the_upgrade(reporting, CODE, OTHER)
    upgraded = REPORT_DEADLINE + timedelta(days=2)

    ran = await backfilled(reporting, upgraded)
    assert ran.result == 4
    assert sorted((e.type, e.key, e.payload["missing"]) for e in ran.events) == sorted(
        [
            ("monitoring_plan.overdue", CODE, NO_PLAN),
            ("monitoring_plan.overdue", OTHER, NO_PLAN),
            ("report.overdue", CODE, NO_REPORT),
            ("report.overdue", OTHER, NO_PAPER_COPY),
        ]
    )
    for code, missing in ((CODE, NO_REPORT), (OTHER, NO_PAPER_COPY)):
        row = await obligation(reporting, code, "report")
        assert (row.status, row.missing, row.done_at) == ("overdue", missing, None)
        assert (row.case_opened_at, row.escalates_at) == (
            upgraded,
            upgraded + POLICY.supervision.case_sla,
        )
    assert (await backfilled(reporting, upgraded)).result == 0

    # The watcher's first pass after the backfill counts them (and marks nobody twice).
    passed = await watch(reporting, upgraded, "report")
    assert [e.type for e in passed] == ["report.deadline_passed"]
    assert (passed[0].payload["obligated"], passed[0].payload["overdue"]) == (2, 2)


async def test_an_entity_that_met_its_report_after_the_deadline_is_backfilled_done_late(
    reporting: Harness,
) -> None:
    await rostered(reporting, CODE)
    report_id = await submit_report(reporting, CODE, BEFORE_THE_REPORT_DEADLINE)
    paper_at = REPORT_DEADLINE + timedelta(days=1, hours=3)
    await record_paper_copy(reporting, report_id, paper_at)
    await before_the_upgrade(reporting, CODE)

    ran = await backfilled(reporting, REPORT_DEADLINE + timedelta(days=3))
    assert ran.result == 2
    assert await standings(reporting) == {
        (CODE, "monitoring_plan"): ("overdue", NO_PLAN, None),
        (CODE, "report"): ("done_late", None, paper_at),
    }
    assert sorted(e.type for e in ran.events) == ["monitoring_plan.overdue", "report.done_late"]
    [late] = [e for e in ran.events if e.type == "report.done_late"]
    assert (late.key, late.event.payload.done_at) == (CODE, paper_at)
    assert await history(reporting, CODE, "report") == [
        ("enrolled", REPORT_DEADLINE + timedelta(days=3)),
        ("done_late", paper_at),
    ]
    again = await backfilled(reporting, REPORT_DEADLINE + timedelta(days=4))
    assert (again.result, again.events) == (0, [])


async def test_an_entity_that_met_its_plan_on_time_is_never_overdue_after_the_deadline(
    reporting: Harness,
) -> None:
    await rostered(reporting, CODE, OTHER)
    await submit_plan(reporting, CODE, BEFORE_THE_PLAN_DEADLINE)
    await before_the_upgrade(reporting, CODE, OTHER)
    upgraded = PLAN_DEADLINE + timedelta(days=20)

    ran = await backfilled(reporting, upgraded)
    plan_events = [(e.type, e.key) for e in ran.events if e.type.startswith("monitoring_plan.")]
    assert plan_events == [("monitoring_plan.overdue", OTHER)]  # not CODE, who met it
    row = await obligation(reporting, CODE, "monitoring_plan")
    assert (row.status, row.done_at, row.case_opened_at) == (
        "done_on_time",
        BEFORE_THE_PLAN_DEADLINE,
        None,
    )
    assert await history(reporting, CODE, "monitoring_plan") == [
        ("enrolled", upgraded),
        ("done_on_time", BEFORE_THE_PLAN_DEADLINE),
    ]
    # Nor is it a case in its district's queue.
    async with reporting.client() as client:
        answer = await client.get(
            "/districts/pudong/cases?state=all", headers=reporting.token("regulator")
        )
    assert answer.status_code == 200
    assert answer.json() == []


def report_gauge(district: str, state: str) -> float | None:
    labels = {"obligation": "report", "district": district, "status": state}
    return REGISTRY.get_sample_value("carbon_obligations", labels)


async def test_the_watcher_backfills_as_it_starts_before_its_first_pass(
    reporting: Harness,
) -> None:
    assert WATCHED.backfill is commands.backfill
    await rostered(reporting, CODE, OTHER)
    await before_the_upgrade(reporting, CODE, OTHER)
    reporting.clock.current = REPORT_DEADLINE + timedelta(days=2)
    metrics.OBLIGATIONS.labels("report", "pudong", "overdue").set(0)
    # Polled by the gauge the watcher sets after its first pass (the in-memory database is one
    # connection: the test stays off it while the watcher runs).
    watching = asyncio.create_task(WATCHED.watch(reporting.context))
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while report_gauge("pudong", "overdue") != 1:
            assert asyncio.get_running_loop().time() < deadline, "not backfilled in 5 s"
            await asyncio.sleep(0.01)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert report_gauge("minhang", "overdue") == 1
    # Enrolled before the pass: the deadline's summary counts them.
    [summary] = [e for e in await reporting.outbox() if e.type == "report.deadline_passed"]
    assert (summary.payload["obligated"], summary.payload["overdue"]) == (2, 2)
