"""Reporting's compliance figures, from its database: reports submitted per compliance year
(carbon_platform.figures: the gauges and GET /figures)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.policy import Policy
from carbon_platform import metrics
from carbon_platform.figures import Figures
from reporting.store import reports


class YearCount(BaseModel):
    compliance_year: int
    count: int


class ReportingFigures(BaseModel):
    reports_submitted: list[YearCount]  # first submissions; a draft is not submitted


async def compute(conn: AsyncConnection, policy: Policy) -> ReportingFigures:
    counts = {policy.compliance_year: 0}  # the policy's year shows 0 before the first report
    rows = await conn.execute(
        select(reports.c.compliance_year, func.count())
        .where(reports.c.status != "draft")
        .group_by(reports.c.compliance_year)
    )
    counts |= {year: count for year, count in rows}
    return ReportingFigures(
        reports_submitted=[YearCount(compliance_year=y, count=n) for y, n in sorted(counts.items())]
    )


def show(figures: ReportingFigures) -> None:
    for row in figures.reports_submitted:
        metrics.REPORTS_SUBMITTED.labels(str(row.compliance_year)).set(row.count)


FIGURES = Figures(ReportingFigures, compute, show)
