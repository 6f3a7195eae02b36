"""Builders shared by the reporting service's tests: the roster entry it learns, its commands'
messages, the instants around its deadlines, and a read of everything a refusal must leave
unchanged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import pytest

from carbon_contracts.errors import Rejection
from carbon_contracts.events import (
    MonitoringPlanOutput,
    MonitoringPlanSource,
    ProductionOutput,
    VerificationReturned,
)
from carbon_platform.context import UnitOfWork
from registry.domain.credit_code import make_credit_code
from reporting import store
from reporting.schemas import ActivityInput, SubmitPlan, SubmitReport
from tests.unit.support import POLICY, SHANGHAI, Harness

M = TypeVar("M")

CODE = make_credit_code(1)
OTHER = make_credit_code(2)
AGENCY = "sh-verify-01"

REPORT_DEADLINE = POLICY.deadlines.report
"""2025-04-01T00:00:00+08:00: "by 2025-03-31", late from this instant."""
PLAN_DEADLINE = POLICY.deadlines.monitoring_plan
"""2025-01-16T00:00:00+08:00: "by 2025-01-15"."""
BEFORE_THE_REPORT_DEADLINE = datetime(2025, 3, 20, 16, 45, tzinfo=SHANGHAI)
BEFORE_THE_PLAN_DEADLINE = datetime(2025, 1, 10, 14, 30, tzinfo=SHANGHAI)

README_LINES: list[dict[str, Any]] = [
    {"source": "electricity", "activity": "2450.8"},
    {"source": "heat", "activity": "48000"},
    {"source": "fuel", "fuel": "natural_gas", "activity": "512.36"},
]
"""24251.551 tCO2: 10293.360 + 2880.000 + 11078.191."""
LIMESTONE = {"source": "process", "material": "limestone", "activity": "9000"}
"""3960.000 tCO2 at 0.440 t per tonne of carbonate."""
OUTPUTS = [{"product": "ethylene_glycol", "unit": "t", "quantity": "182000"}]
PLAN_SOURCES: list[dict[str, Any]] = [
    {"source": "electricity", "monitoring": "meter", "factor": "default"},
    {"source": "heat", "monitoring": "invoice", "factor": "default"},
    {
        "source": "fuel",
        "fuel": "natural_gas",
        "monitoring": "meter",
        "factor": "default",
        "description": "boilers 1-3, gas meter GM-01",
    },
]
PLAN_OUTPUTS = [{"product": "ethylene_glycol", "unit": "t"}]


def report(
    lines: list[dict[str, Any]] = README_LINES,
    code: str = CODE,
    year: int = 2024,
    *,
    outputs: list[dict[str, Any]] | None = None,
    draft: bool = False,
) -> SubmitReport:
    return SubmitReport(
        credit_code=code,
        compliance_year=year,
        lines=[ActivityInput.model_validate(line) for line in lines],
        outputs=[ProductionOutput.model_validate(output) for output in outputs or []],
        draft=draft,
        submitted_by=f"entity-{code}",
    )


def plan(
    sources: list[dict[str, Any]] = PLAN_SOURCES,
    code: str = CODE,
    *,
    plan_year: int = 2025,
    outputs: list[dict[str, Any]] = PLAN_OUTPUTS,
) -> SubmitPlan:
    return SubmitPlan(
        credit_code=code,
        plan_year=plan_year,
        sources=[MonitoringPlanSource.model_validate(source) for source in sources],
        outputs=[MonitoringPlanOutput.model_validate(output) for output in outputs],
        submitted_by=f"entity-{code}",
    )


def verification_returned(
    report_id: UUID, version: int = 1, *, code: str = CODE, reason: str = "diesel missing"
) -> VerificationReturned:
    return VerificationReturned(
        credit_code=code,
        compliance_year=2024,
        case_id=UUID("e2d4f6a8-1b3c-4d5e-8f7a-9b0c1d2e3f4a"),
        report_id=report_id,
        report_version=version,
        agency_id=AGENCY,
        reason=reason,
        returned_at=datetime(2025, 4, 18, 15, 0, tzinfo=SHANGHAI),
    )


@dataclass(frozen=True)
class Snapshot:
    """Everything of the reporting service a refused command must leave as it was."""

    reports: list[tuple[Any, ...]]
    versions: list[tuple[Any, ...]]
    plans: list[tuple[Any, ...]]
    plan_versions: list[tuple[Any, ...]]
    determinations: list[tuple[Any, ...]]
    roster: list[tuple[Any, ...]]
    trail: int
    outbox: int


async def snapshot(service: Harness) -> Snapshot:
    async def rows(conn: Any, table: Any) -> list[tuple[Any, ...]]:
        return sorted(
            (tuple(row) for row in await conn.execute(table.select())),
            key=repr,
        )

    async with service.context.engine.connect() as conn:
        return Snapshot(
            reports=await rows(conn, store.reports),
            versions=await rows(conn, store.report_versions),
            plans=await rows(conn, store.monitoring_plans),
            plan_versions=await rows(conn, store.monitoring_plan_versions),
            determinations=await rows(conn, store.determinations),
            roster=await rows(conn, store.roster),
            trail=len(await rows(conn, store.transitions)),
            outbox=len(await rows(conn, service.context.outbox)),
        )


async def refused(
    service: Harness,
    command: Callable[[UnitOfWork, M], Awaitable[Any]],
    message: M,
    error: type[Rejection],
    code: str,
) -> Rejection:
    """Run a command that must be refused with `error` and `code`, and check it changed
    nothing: no row, no audit step, no event."""
    before = await snapshot(service)
    with pytest.raises(error) as caught:
        await service.run(command, message)
    assert caught.value.code == code, caught.value.message
    assert await snapshot(service) == before
    return caught.value
