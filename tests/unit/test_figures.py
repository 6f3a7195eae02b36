"""The compliance figures (carbon_platform.figures) on an in-memory database: counted from the
tables by the one query that feeds both the gauges and GET /figures."""

from __future__ import annotations

from datetime import datetime

from carbon_platform import metrics
from registry import commands as registry_commands
from registry.figures import FIGURES as REGISTRY_FIGURES
from reporting import commands as reporting_commands
from reporting.figures import FIGURES as REPORTING_FIGURES
from tests.unit.reporting_support import BEFORE_THE_REPORT_DEADLINE, CODE, OTHER, report
from tests.unit.support import SHANGHAI, Harness, entity_registered
from tests.unit.test_registry_commands import surrender, verified


def gauge(metric: object, *labels: str) -> float:
    value: float = metric.labels(*labels)._value.get()  # type: ignore[attr-defined]
    return value


async def test_reports_submitted_count_submitted_reports_not_drafts(reporting: Harness) -> None:
    empty = await REPORTING_FIGURES.refresh_gauges(reporting.context)
    assert [(r.compliance_year, r.count) for r in empty.reports_submitted] == [(2024, 0)]
    assert gauge(metrics.REPORTS_SUBMITTED, "2024") == 0

    for code in (CODE, OTHER):
        await reporting.handle(entity_registered(code))
    reporting.clock.current = BEFORE_THE_REPORT_DEADLINE
    await reporting.run(reporting_commands.submit_report, report(code=CODE))
    reporting.clock.current = datetime(2025, 3, 2, 9, 0, tzinfo=SHANGHAI)
    await reporting.run(
        reporting_commands.submit_report,
        report([{"source": "heat", "activity": "10"}], code=OTHER, draft=True),
    )

    figures = await REPORTING_FIGURES.refresh_gauges(reporting.context)
    assert [(r.compliance_year, r.count) for r in figures.reports_submitted] == [(2024, 1)]
    assert gauge(metrics.REPORTS_SUBMITTED, "2024") == 1


async def test_registry_figures_count_issued_and_surrendered_per_year(registry: Harness) -> None:
    await verified(registry)  # the 2024 allocation issued: 24,252 allowances
    await registry.run(registry_commands.surrender, surrender(24000))  # partial: counted too

    partial = await REGISTRY_FIGURES.refresh_gauges(registry.context)
    issued = {(i.kind, i.compliance_year): i.allowances for i in partial.allowances_issued}
    assert issued == {("allocation", 2024): 24252, ("preallocation", 2025): 0}
    assert [(s.compliance_year, s.allowances, s.offsets) for s in partial.surrendered] == [
        (2024, 24000, 0)
    ]

    await registry.run(registry_commands.surrender, surrender(252))  # completes: pre-allocates
    done = await REGISTRY_FIGURES.refresh_gauges(registry.context)
    issued = {(i.kind, i.compliance_year): i.allowances for i in done.allowances_issued}
    assert issued == {("allocation", 2024): 24252, ("preallocation", 2025): 19401}
    assert [(s.compliance_year, s.allowances, s.offsets) for s in done.surrendered] == [
        (2024, 24252, 0)
    ]
    assert gauge(metrics.ALLOWANCES_ISSUED, "preallocation", "2025") == 19401
    assert gauge(metrics.ALLOWANCES_SURRENDERED, "2024") == 24252
    assert gauge(metrics.OFFSETS_SURRENDERED, "2024") == 0


async def test_figures_are_the_bureaus_to_read(registry: Harness) -> None:
    async with registry.client() as client:
        bureau = await client.get("/figures", headers=registry.token("regulator"))
        entity = await client.get("/figures", headers=registry.token("entity", credit_code=CODE))
    assert bureau.status_code == 200, bureau.text
    assert bureau.json() == (await REGISTRY_FIGURES.read(registry.context)).model_dump()
    assert entity.status_code == 403
