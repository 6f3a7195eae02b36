"""Obligations with deadlines, watched per entity by the service that owns them.

An entity bound by an obligation (the reporting system's monitoring plan and report, the
registry's account opening and surrender) is enrolled with what is still missing. Before the
deadline it is reminded, by the policy's schedule, while the obligation is open; at the deadline
every entity still open becomes overdue (one event each and one summary), which opens a case in
its district's queue; a case still open when its SLA passes is escalated to the Bureau; a later
completion is recorded as done late and closes the case. Each of these happens once, on
whichever instance gets there first, and survives restarts: the database says what was done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import (
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from carbon_contracts.errors import Forbidden, NotFound
from carbon_contracts.events import EVENT_MODELS, OBLIGATIONS
from carbon_contracts.policy import Policy
from carbon_platform import metrics
from carbon_platform.access import OBLIGATION, SUPERVISION, Owner, allowed
from carbon_platform.auth import Principal
from carbon_platform.context import Command, Context, ServiceContext, UnitOfWork
from carbon_platform.db import Upsert
from carbon_platform.http import refusals
from carbon_platform.tables import UtcDateTime

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
GAUGES_EVERY_S = 5.0
Status = Literal["open", "overdue", "done_on_time", "done_late"]
STATUSES: tuple[str, ...] = ("open", "overdue", "done_on_time", "done_late")
DONE = ("done_on_time", "done_late")
# What happened to one entity's obligation, in its history.
CHANGES = ("enrolled", "reminded", "overdue", "escalated", "done_on_time", "done_late")


# --- tables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObligationTables:
    status: Table  # one row per entity and obligation: where it stands now, and its case
    history: Table  # every change of that row, in order
    passes: Table  # each deadline once passed: the summary at that instant
    overdue_at_pass: Table  # who was overdue at that instant (the snapshot)
    reminders: Table  # each reminder sent, once


def obligation_tables(metadata: MetaData) -> ObligationTables:
    """The tables of the obligations a service owns, on its metadata (and in its migrations:
    carbon_platform.migrations.create_obligation_tables_v1)."""
    key = (
        Column("credit_code", String(18), primary_key=True),
        Column("compliance_year", Integer, primary_key=True),
        Column("obligation", String(32), primary_key=True),
    )
    status = Table(
        "obligation_status",
        metadata,
        *(column._copy() for column in key),
        Column("name", String(200), nullable=False),
        Column("district", String(64), nullable=False),
        Column("status", String(16), nullable=False),
        Column("due_at", UtcDateTime(), nullable=False),
        Column("missing", String(500), nullable=True),  # None once done
        Column("done_at", UtcDateTime(), nullable=True),
        Column("case_opened_at", UtcDateTime(), nullable=True),  # became overdue
        Column("escalates_at", UtcDateTime(), nullable=True),
        Column("escalated_at", UtcDateTime(), nullable=True),
        Column("updated_at", UtcDateTime(), nullable=False),
        CheckConstraint(f"status IN {STATUSES}", name="ck_obligation_status"),
        CheckConstraint(
            f"(status IN {DONE}) = (done_at IS NOT NULL)", name="ck_obligation_done_at"
        ),
        Index("ix_obligation_status_deadline", "compliance_year", "obligation", "status"),
        Index("ix_obligation_status_district", "district", "obligation"),
    )
    history = Table(
        "obligation_history",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("credit_code", String(18), nullable=False),
        Column("compliance_year", Integer, nullable=False),
        Column("obligation", String(32), nullable=False),
        Column("change", String(16), nullable=False),
        Column("at", UtcDateTime(), nullable=False),
        Column("detail", String(500), nullable=True),
        CheckConstraint(f"change IN {CHANGES}", name="ck_obligation_history_change"),
        Index("ix_obligation_history_entity", "credit_code", "compliance_year", "obligation"),
    )
    passes = Table(
        "deadline_passes",
        metadata,
        Column("compliance_year", Integer, primary_key=True),
        Column("obligation", String(32), primary_key=True),
        Column("due_at", UtcDateTime(), nullable=False),
        Column("passed_at", UtcDateTime(), nullable=False),
        Column("obligated", Integer, nullable=False),
        Column("done_on_time", Integer, nullable=False),
        Column("overdue", Integer, nullable=False),
    )
    overdue_at_pass = Table(
        "deadline_overdue",
        metadata,
        Column("compliance_year", Integer, primary_key=True),
        Column("obligation", String(32), primary_key=True),
        Column("credit_code", String(18), primary_key=True),
        Column("district", String(64), nullable=False),
        Column("missing", String(500), nullable=True),
    )
    reminders = Table(
        "obligation_reminders",
        metadata,
        *(column._copy() for column in key),
        Column("seconds_before", Integer, primary_key=True),  # which reminder of the policy
        Column("sent_at", UtcDateTime(), nullable=False),
    )
    return ObligationTables(status, history, passes, overdue_at_pass, reminders)


# --- pure rules -------------------------------------------------------------------------------


def status_at(row: Any, now: datetime) -> str:
    """Where an obligation stands at `now`: an open one is overdue from its deadline on, even
    before the watcher has marked it (the deadline is an instant, not a job's run)."""
    if row.status == "open" and now >= row.due_at:
        return "overdue"
    return str(row.status)


def reminder_due(policy: Policy, due_at: datetime, now: datetime) -> timedelta | None:
    """The policy's reminder due at `now` (how long before the deadline), if any: the closest
    one to the deadline whose time has come. An earlier one not sent by then is not sent late."""
    if now >= due_at:
        return None
    come = [before for before in policy.supervision.reminders_before if now >= due_at - before]
    return min(come) if come else None


# --- commands: what the owning service calls inside its own units of work -------------------


async def enroll(
    uow: UnitOfWork,
    tables: ObligationTables,
    *,
    credit_code: str,
    obligation: str,
    name: str,
    district: str,
    missing: str,
    done_at: datetime | None = None,
) -> bool:
    """Bind the entity by the obligation of the policy's year (once; again changes nothing).
    An entity enrolled after its deadline is overdue at once, unless `done_at` says it had met
    the obligation then (a backfill): it is enrolled done, on time or late (published), never
    overdue first. True if newly enrolled."""
    due_at = uow.policy.due_at(obligation)
    overdue = done_at is None and uow.now >= due_at
    status = "overdue" if overdue else "open"
    if done_at is not None:
        status = "done_on_time" if done_at < due_at else "done_late"
    values = {
        "credit_code": credit_code,
        "compliance_year": uow.policy.compliance_year,
        "obligation": obligation,
        "name": name,
        "district": district,
        "status": status,
        "due_at": due_at,
        "missing": None if done_at else missing,
        "done_at": done_at,
        "updated_at": uow.now,
    }
    if overdue:
        values |= {"case_opened_at": uow.now, "escalates_at": _escalates_at(uow.policy, uow.now)}
    result = await uow.conn.execute(_enroll(tables).on(uow.conn), values)
    if result.rowcount == 0:
        return False
    await _history(uow, tables, [values], "enrolled", detail=missing)
    if overdue:
        await _history(uow, tables, [values], "overdue", detail=missing)
        _record(uow, "overdue", values, missing=missing, escalates_at=values["escalates_at"])
    if done_at is not None:
        await _history(uow, tables, [values], status, at=done_at)
        if status == "done_late":
            _record(uow, "done_late", values, done_at=done_at)
    return True


async def enroll_found(
    uow: UnitOfWork,
    tables: ObligationTables,
    row: Any,
    *,
    obligation: str,
    missing: str,
    done_at: datetime | None,
) -> bool:
    """Enrol one entity a backfill found (`row` has its credit_code, name and district): bound
    by what it still lacks or, met already, enrolled done at `done_at` (on time, or late and
    published), never overdue first. False when another instance enrolled it meanwhile."""
    return await enroll(
        uow,
        tables,
        credit_code=row.credit_code,
        obligation=obligation,
        name=row.name,
        district=row.district,
        missing=missing,
        done_at=done_at,
    )


async def still_missing(
    uow: UnitOfWork, tables: ObligationTables, *, credit_code: str, obligation: str, missing: str
) -> None:
    """What the entity has still to do changed (e.g. its report is in, the paper copy is not):
    the next reminder and its district's queue say so."""
    await uow.conn.execute(
        update(tables.status)
        .where(*_key(tables, credit_code, uow.policy.compliance_year, obligation))
        .where(tables.status.c.status.in_(("open", "overdue")))
        .values(missing=missing, updated_at=uow.now)
    )


async def complete(
    uow: UnitOfWork, tables: ObligationTables, *, credit_code: str, obligation: str, at: datetime
) -> str | None:
    """The entity met the obligation at `at`: done on time iff before the deadline, else done
    late (published, and its case closed). The first completion counts; None if the entity is
    not bound by it or has already met it."""
    year = uow.policy.compliance_year
    row = (
        await uow.conn.execute(
            select(tables.status)
            .where(*_key(tables, credit_code, year, obligation))
            .with_for_update()
        )
    ).first()
    if row is None or row.status in DONE:
        return None
    status = "done_on_time" if at < row.due_at else "done_late"
    await uow.conn.execute(
        update(tables.status)
        .where(*_key(tables, credit_code, year, obligation))
        .values(status=status, done_at=at, missing=None, updated_at=uow.now)
    )
    values = row._asdict()
    await _history(uow, tables, [values], status, at=at)
    if status == "done_late":
        _record(uow, "done_late", values, done_at=at)
    return status


# --- the watcher: deadlines, reminders and escalations on time -------------------------------


@dataclass(frozen=True)
class Watched:
    """The obligations one service owns, with what it takes to watch and show them."""

    tables: ObligationTables
    obligations: tuple[str, ...]
    # Enrols, with what they have done so far, the entities bound before this service watched
    # its obligations (an upgrade in the middle of a cycle); run at each start, a no-op once all
    # are enrolled. Returns how many it enrolled.
    backfill: Command[None, int] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.obligations) - set(OBLIGATIONS)
        if unknown:
            raise ValueError(f"unknown obligations {sorted(unknown)}")

    async def watch(self, context: ServiceContext) -> None:
        """Background task: act on every deadline, reminder and escalation as its time comes,
        and keep the obligation gauges equal to the database."""
        gauges_at = 0.0
        loop = asyncio.get_running_loop()
        backfilled = self.backfill is None
        while True:
            try:
                if not backfilled and self.backfill is not None:
                    if enrolled := await context.execute(self.backfill, None):
                        log.info("enrolled %d entities bound before the watch began", enrolled)
                    backfilled = True
                await self.check(context)
                if loop.time() >= gauges_at:
                    await self.refresh_gauges(context)
                    gauges_at = loop.time() + GAUGES_EVERY_S
            except Exception as error:  # the database away: try again at the next tick
                log.warning("deadline check failed: %r", error)
            await asyncio.sleep(CHECK_EVERY_S)

    async def check(self, context: ServiceContext) -> None:
        """One look at every owned obligation, by the services' clock. It writes only when
        there is something to do."""
        for obligation in self.obligations:
            now = context.clock.now()
            due_at = context.policy.due_at(obligation)
            if now < due_at:
                if reminder_due(context.policy, due_at, now) is not None:
                    await context.execute(self._remind, obligation)
                continue
            passed, to_mark, to_escalate = await self._pending(context, obligation, now)
            if not passed:
                await context.execute(self._pass_deadline, obligation)
            elif to_mark:
                await context.execute(self._mark_overdue, obligation)
            if to_escalate:
                await context.execute(self._escalate, obligation)

    async def _pending(
        self, context: ServiceContext, obligation: str, now: datetime
    ) -> tuple[bool, bool, bool]:
        """Whether the deadline's pass is recorded, and whether any entity is still to be marked
        overdue (one enrolled open, e.g. the rehearsal clock moved back and on again) or its
        case escalated."""
        tables, year = self.tables, context.policy.compliance_year
        status = tables.status
        mine = (status.c.compliance_year == year, status.c.obligation == obligation)
        async with context.reader.connect() as conn:
            passed = (
                await conn.execute(
                    select(tables.passes.c.obligation).where(
                        tables.passes.c.compliance_year == year,
                        tables.passes.c.obligation == obligation,
                    )
                )
            ).first()
            to_mark = (
                await conn.execute(
                    select(status.c.credit_code)
                    .where(*mine, status.c.status == "open", status.c.due_at <= now)
                    .limit(1)
                )
            ).first()
            to_escalate = (
                await conn.execute(
                    select(status.c.credit_code)
                    .where(
                        *mine,
                        status.c.status == "overdue",
                        status.c.escalated_at.is_(None),
                        status.c.escalates_at <= now,
                    )
                    .limit(1)
                )
            ).first()
        return passed is not None, to_mark is not None, to_escalate is not None

    async def _pass_deadline(self, uow: UnitOfWork, obligation: str) -> None:
        """Mark every entity still open overdue, remember who was overdue at the instant, and
        publish each and the summary: once (the pass row's key refuses a second)."""
        tables, year = self.tables, uow.policy.compliance_year
        due_at = uow.policy.due_at(obligation)
        try:
            async with uow.conn.begin_nested():
                await uow.conn.execute(
                    insert(tables.passes).values(
                        compliance_year=year,
                        obligation=obligation,
                        due_at=due_at,
                        passed_at=uow.now,
                        obligated=0,
                        done_on_time=0,
                        overdue=0,
                    )
                )
        except IntegrityError:  # another instance passed it first
            return
        await self._mark_overdue(uow, obligation)
        rows = (
            await uow.conn.execute(
                select(tables.status).where(
                    tables.status.c.compliance_year == year,
                    tables.status.c.obligation == obligation,
                )
            )
        ).all()
        # Overdue at the instant: every entity that had not met it before the deadline, also
        # one that met it late between the deadline and this pass.
        late = [row for row in rows if row.status != "done_on_time"]
        if late:
            await uow.conn.execute(
                insert(tables.overdue_at_pass),
                [
                    {
                        "compliance_year": year,
                        "obligation": obligation,
                        "credit_code": row.credit_code,
                        "district": row.district,
                        "missing": row.missing,
                    }
                    for row in late
                ],
            )
        on_time = sum(row.status == "done_on_time" for row in rows)
        await uow.conn.execute(
            update(tables.passes)
            .where(
                tables.passes.c.compliance_year == year, tables.passes.c.obligation == obligation
            )
            .values(obligated=len(rows), done_on_time=on_time, overdue=len(late))
        )
        uow.record(
            EVENT_MODELS[f"{obligation}.deadline_passed"].model_validate(
                {
                    "policy": uow.policy.cycle,
                    "compliance_year": year,
                    "obligation": obligation,
                    "due_at": due_at,
                    "obligated": len(rows),
                    "done_on_time": on_time,
                    "overdue": len(late),
                    "overdue_by_district": dict(Counter(row.district for row in late)),
                    "passed_at": uow.now,
                }
            )
        )

    async def _mark_overdue(self, uow: UnitOfWork, obligation: str) -> None:
        """Every entity still open at the deadline becomes overdue: its case opens at the
        deadline, and it is published."""
        tables, year = self.tables, uow.policy.compliance_year
        due_at = uow.policy.due_at(obligation)
        escalates_at = _escalates_at(uow.policy, due_at)
        became = (
            await uow.conn.execute(
                update(tables.status)
                .where(
                    tables.status.c.compliance_year == year,
                    tables.status.c.obligation == obligation,
                    tables.status.c.status == "open",
                    tables.status.c.due_at <= uow.now,
                )
                .values(
                    status="overdue",
                    case_opened_at=due_at,
                    escalates_at=escalates_at,
                    updated_at=uow.now,
                )
                .returning(*tables.status.c)
            )
        ).all()
        values = [row._asdict() for row in became]
        await _history(uow, tables, values, "overdue", at=due_at)
        for row in values:
            _record(uow, "overdue", row, missing=row["missing"], escalates_at=escalates_at)

    async def _remind(self, uow: UnitOfWork, obligation: str) -> None:
        """Remind each entity whose obligation is still open, once per reminder of the policy."""
        tables, year = self.tables, uow.policy.compliance_year
        due_at = uow.policy.due_at(obligation)
        before = reminder_due(uow.policy, due_at, uow.now)
        if before is None:
            return
        seconds = int(before.total_seconds())
        sent = tables.reminders
        rows = (
            await uow.conn.execute(
                select(tables.status).where(
                    tables.status.c.compliance_year == year,
                    tables.status.c.obligation == obligation,
                    tables.status.c.status == "open",
                    ~exists().where(
                        sent.c.credit_code == tables.status.c.credit_code,
                        sent.c.compliance_year == year,
                        sent.c.obligation == obligation,
                        sent.c.seconds_before <= seconds,
                    ),
                )
            )
        ).all()
        for row in rows:
            first = await uow.conn.execute(
                _reminder(tables).on(uow.conn),
                {
                    "credit_code": row.credit_code,
                    "compliance_year": year,
                    "obligation": obligation,
                    "seconds_before": seconds,
                    "sent_at": uow.now,
                },
            )
            if first.rowcount == 0:  # another instance sent it meanwhile
                continue
            values = row._asdict()
            await _history(uow, tables, [values], "reminded", detail=f"{_span(before)} before")
            _record(
                uow,
                "reminder_due",
                values,
                before=before,
                missing=row.missing,
                reminded_at=uow.now,
            )

    async def _escalate(self, uow: UnitOfWork, obligation: str) -> None:
        """Hand to the Bureau each case still open when its SLA passed, once."""
        tables = self.tables
        rows = (
            await uow.conn.execute(
                update(tables.status)
                .where(
                    tables.status.c.compliance_year == uow.policy.compliance_year,
                    tables.status.c.obligation == obligation,
                    tables.status.c.status == "overdue",
                    tables.status.c.escalated_at.is_(None),
                    tables.status.c.escalates_at <= uow.now,
                )
                .values(escalated_at=uow.now, updated_at=uow.now)
                .returning(*tables.status.c)
            )
        ).all()
        values = [row._asdict() for row in rows]
        await _history(uow, tables, values, "escalated")
        for row in values:
            _record(
                uow,
                "case_escalated",
                row,
                missing=row["missing"],
                opened_at=row["case_opened_at"],
                escalated_at=uow.now,
            )

    async def refresh_gauges(self, context: ServiceContext) -> None:
        """The gauges from the database: every instance shows the same, true figures."""
        status = self.tables.status
        async with context.reader.connect() as conn:
            counts = (
                await conn.execute(
                    select(status.c.obligation, status.c.district, status.c.status, func.count())
                    .where(status.c.compliance_year == context.policy.compliance_year)
                    .group_by(status.c.obligation, status.c.district, status.c.status)
                )
            ).all()
            escalated = (
                await conn.execute(
                    select(status.c.obligation, status.c.district, func.count())
                    .where(
                        status.c.compliance_year == context.policy.compliance_year,
                        status.c.status == "overdue",
                        status.c.escalated_at.is_not(None),
                    )
                    .group_by(status.c.obligation, status.c.district)
                )
            ).all()
        now = context.clock.now()
        figures = {
            (o, d, s): 0
            for o in self.obligations
            for d in context.policy.districts
            for s in STATUSES
        }
        for obligation, district, state, count in counts:
            figures[(obligation, district, state)] = count
        # The watcher marks overdue within a second of the deadline; the gauge never waits.
        for obligation in self.obligations:
            if now >= context.policy.due_at(obligation):
                for district in context.policy.districts:
                    figures[(obligation, district, "overdue")] += figures[
                        (obligation, district, "open")
                    ]
                    figures[(obligation, district, "open")] = 0
        for (obligation, district, state), count in figures.items():
            metrics.OBLIGATIONS.labels(obligation, district, state).set(count)
        cases = {(o, d): 0 for o in self.obligations for d in context.policy.districts}
        for obligation, district, count in escalated:
            cases[(obligation, district)] = count
        for (obligation, district), count in cases.items():
            metrics.CASES_ESCALATED.labels(obligation, district).set(count)
        for obligation in self.obligations:
            left = (context.policy.due_at(obligation) - now).total_seconds()
            metrics.DEADLINE_SECONDS.labels(obligation).set(left)

    def router(self) -> APIRouter:
        return _router(self)


def _span(duration: timedelta) -> str:
    """'14 days', '2 hours': how a reminder names itself in the history."""
    seconds = int(duration.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _escalates_at(policy: Policy, opened_at: datetime) -> datetime:
    return opened_at + policy.supervision.case_sla


def _key(tables: ObligationTables, credit_code: str, year: int, obligation: str) -> list[Any]:
    return [
        tables.status.c.credit_code == credit_code,
        tables.status.c.compliance_year == year,
        tables.status.c.obligation == obligation,
    ]


def _enroll(tables: ObligationTables) -> Upsert:
    return _upsert(tables.status)


def _reminder(tables: ObligationTables) -> Upsert:
    return _upsert(tables.reminders)


_UPSERTS: dict[str, Upsert] = {}


def _upsert(table: Table) -> Upsert:
    # Built once per table (and dialect): the insert that does nothing when the key exists.
    if table.name not in _UPSERTS:
        _UPSERTS[table.name] = Upsert(lambda insert_: insert_(table).on_conflict_do_nothing())
    return _UPSERTS[table.name]


async def _history(
    uow: UnitOfWork,
    tables: ObligationTables,
    rows: Sequence[dict[str, Any]],
    change: str,
    *,
    at: datetime | None = None,
    detail: str | None = None,
) -> None:
    if not rows:
        return
    await uow.conn.execute(
        insert(tables.history),
        [
            {
                "credit_code": row["credit_code"],
                "compliance_year": row["compliance_year"],
                "obligation": row["obligation"],
                "change": change,
                "at": at or uow.now,
                "detail": detail,
            }
            for row in rows
        ],
    )


def _record(uow: UnitOfWork, kind: str, row: dict[str, Any], **fields: Any) -> None:
    obligation = row["obligation"]
    uow.record(
        EVENT_MODELS[f"{obligation}.{kind}"].model_validate(
            {
                "credit_code": row["credit_code"],
                "compliance_year": row["compliance_year"],
                "policy": uow.policy.cycle,
                "obligation": obligation,
                "district": row["district"],
                "due_at": row["due_at"],
                **fields,
            }
        )
    )


# --- views ------------------------------------------------------------------------------------


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ObligationView(_View):
    credit_code: str
    name: str
    district: str
    compliance_year: int
    obligation: str
    status: Status
    due_at: AwareDatetime
    missing: str | None
    done_at: AwareDatetime | None


class Change(_View):
    change: str
    at: AwareDatetime
    detail: str | None


class ObligationHistory(ObligationView):
    history: list[Change]


class CaseView(_View):
    credit_code: str
    name: str
    district: str
    obligation: str
    state: Literal["open", "escalated", "closed"]
    opened_at: AwareDatetime
    escalates_at: AwareDatetime
    escalated_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    missing: str | None


class OverdueAtPass(_View):
    credit_code: str
    district: str
    missing: str | None


class DeadlineView(_View):
    obligation: str
    compliance_year: int
    due_at: AwareDatetime
    reminders_before: list[timedelta]
    passed_at: AwareDatetime | None
    counts: dict[str, int] = {}
    overdue_at_pass: list[OverdueAtPass] | None = None


def _view(row: Any, now: datetime) -> ObligationView:
    return ObligationView(
        credit_code=row.credit_code,
        name=row.name,
        district=row.district,
        compliance_year=row.compliance_year,
        obligation=row.obligation,
        status=status_at(row, now),
        due_at=row.due_at,
        missing=row.missing,
        done_at=row.done_at,
    )


def _case(row: Any, policy: Policy) -> CaseView:
    opened = row.case_opened_at or row.due_at  # not yet marked: open from its deadline
    closed = row.done_at if row.status in DONE else None
    return CaseView(
        credit_code=row.credit_code,
        name=row.name,
        district=row.district,
        obligation=row.obligation,
        state="closed" if closed else ("escalated" if row.escalated_at else "open"),
        opened_at=opened,
        escalates_at=row.escalates_at or _escalates_at(policy, opened),
        escalated_at=row.escalated_at,
        closed_at=closed,
        missing=row.missing,
    )


CaseState = Literal["open", "escalated", "closed", "all"]
ObligationReader = Annotated[Principal, allowed(OBLIGATION, "read")]
SupervisionReader = Annotated[Principal, allowed(SUPERVISION, "read")]


def _router(watched: Watched) -> APIRouter:
    router = APIRouter(tags=["obligations"])
    tables, owned = watched.tables, watched.obligations
    status = tables.status

    def _obligation(name: str | None) -> None:
        if name is not None and name not in owned:
            raise NotFound("unknown_obligation", f"this service watches {', '.join(owned)}")

    @router.get("/obligations", responses=refusals(403, 404), response_model=list[ObligationView])
    async def list_obligations(
        context: Context,
        principal: ObligationReader,
        obligation: str | None = None,
        status_: Annotated[Status | None, Query(alias="status")] = None,
        district: str | None = None,
    ) -> list[ObligationView]:
        """Each entity's status per obligation this service owns (open, overdue, done on time,
        done late): the Bureau sees all, a district its entities, an entity its own."""
        _obligation(obligation)
        scope = OBLIGATION.scope(principal, "read")
        query = select(status).where(status.c.compliance_year == context.policy.compliance_year)
        for column, value in (
            (status.c.obligation, obligation),
            (status.c.district, scope.district or district),
            (status.c.credit_code, scope.credit_code),
        ):
            if value is not None:
                query = query.where(column == value)
        if scope.district and district and district != scope.district:
            return []
        now = context.clock.now()
        async with context.reader.connect() as conn:
            rows = (await conn.execute(query.order_by(status.c.credit_code))).all()
        views = [_view(row, now) for row in rows]
        return [view for view in views if status_ is None or view.status == status_]

    @router.get(
        "/obligations/{credit_code}/{obligation}",
        responses=refusals(403, 404),
        response_model=ObligationHistory,
    )
    async def obligation_history(
        credit_code: str, obligation: str, context: Context, principal: ObligationReader
    ) -> ObligationHistory:
        """One entity's obligation and everything that happened to it, in order."""
        _obligation(obligation)
        OBLIGATION.check_entity(principal, "read", credit_code)
        year = context.policy.compliance_year
        async with context.reader.connect() as conn:
            row = (
                await conn.execute(
                    select(status).where(*_key(tables, credit_code, year, obligation))
                )
            ).first()
            if row is None:
                raise NotFound("not_obligated", f"{credit_code} is not bound by {obligation}")
            OBLIGATION.check(
                principal, "read", Owner(credit_code=credit_code, district=row.district)
            )
            changes = (
                await conn.execute(
                    select(tables.history)
                    .where(
                        tables.history.c.credit_code == credit_code,
                        tables.history.c.compliance_year == year,
                        tables.history.c.obligation == obligation,
                    )
                    .order_by(tables.history.c.id)
                )
            ).all()
        view = _view(row, context.clock.now())
        return ObligationHistory(
            **view.model_dump(),
            history=[Change(change=c.change, at=c.at, detail=c.detail) for c in changes],
        )

    @router.get("/deadlines", responses=refusals(403), response_model=list[DeadlineView])
    async def deadlines(context: Context, principal: SupervisionReader) -> list[DeadlineView]:
        """Each deadline this service watches: when, whether it has passed, and where its
        entities stand now (a district: its own)."""
        return [await _deadline(context, principal, name, snapshot=False) for name in owned]

    @router.get(
        "/deadlines/{obligation}", responses=refusals(403, 404), response_model=DeadlineView
    )
    async def deadline(
        obligation: str, context: Context, principal: SupervisionReader
    ) -> DeadlineView:
        """One deadline, with who was overdue at the instant it passed (a district: its own)."""
        _obligation(obligation)
        return await _deadline(context, principal, obligation, snapshot=True)

    async def _deadline(
        context: ServiceContext, principal: Principal, obligation: str, *, snapshot: bool
    ) -> DeadlineView:
        scope = SUPERVISION.scope(principal, "read")
        year = context.policy.compliance_year
        query = select(status).where(
            status.c.compliance_year == year, status.c.obligation == obligation
        )
        if scope.district:
            query = query.where(status.c.district == scope.district)
        now = context.clock.now()
        async with context.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
            passed = (
                await conn.execute(
                    select(tables.passes).where(
                        tables.passes.c.compliance_year == year,
                        tables.passes.c.obligation == obligation,
                    )
                )
            ).first()
            overdue = None
            if snapshot and passed is not None:
                at_pass = tables.overdue_at_pass
                listed = select(at_pass).where(
                    at_pass.c.compliance_year == year, at_pass.c.obligation == obligation
                )
                if scope.district:
                    listed = listed.where(at_pass.c.district == scope.district)
                overdue = [
                    OverdueAtPass(credit_code=r.credit_code, district=r.district, missing=r.missing)
                    for r in (await conn.execute(listed.order_by(at_pass.c.credit_code))).all()
                ]
        counts = Counter(status_at(row, now) for row in rows)
        return DeadlineView(
            obligation=obligation,
            compliance_year=year,
            due_at=context.policy.due_at(obligation),
            reminders_before=sorted(context.policy.supervision.reminders_before, reverse=True),
            passed_at=passed.passed_at if passed else None,
            counts={state: counts.get(state, 0) for state in STATUSES},
            overdue_at_pass=overdue,
        )

    @router.get(
        "/districts/{district}/cases", responses=refusals(403, 404), response_model=list[CaseView]
    )
    async def district_cases(
        district: str, context: Context, principal: SupervisionReader, state: CaseState = "open"
    ) -> list[CaseView]:
        """The district's queue: an entity that missed a deadline is a case from that instant,
        escalated to the Bureau when the policy's SLA passes, closed when the entity acts
        (`state=open` lists those not yet escalated; `escalated`, `closed` or `all`)."""
        context.policy.ensure_district(district)
        if not SUPERVISION.allows(principal, "read", Owner(district=district)):
            raise Forbidden("forbidden", "a district bureau sees its own district's cases")
        return await _cases(context, district, state)

    @router.get("/cases", responses=refusals(403), response_model=list[CaseView])
    async def cases(
        context: Context, principal: SupervisionReader, state: CaseState = "escalated"
    ) -> list[CaseView]:
        """Every district's cases for the Bureau (by default those escalated to it), a
        district's own for a district bureau."""
        return await _cases(context, SUPERVISION.scope(principal, "read").district, state)

    async def _cases(context: ServiceContext, district: str | None, state: str) -> list[CaseView]:
        query = select(status).where(
            status.c.compliance_year == context.policy.compliance_year,
            status.c.due_at <= context.clock.now(),
            status.c.status != "done_on_time",
        )
        if district is not None:
            query = query.where(status.c.district == district)
        async with context.reader.connect() as conn:
            rows = (
                await conn.execute(
                    query.order_by(status.c.due_at, status.c.district, status.c.credit_code)
                )
            ).all()
        views = [_case(row, context.policy) for row in rows]
        return [case for case in views if state in ("all", case.state)]

    return router
