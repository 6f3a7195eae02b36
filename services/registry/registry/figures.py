"""The registry's compliance figures, from its database: allowances issued by kind and
allowances and offsets surrendered, per compliance year (carbon_platform.figures: the gauges and
GET /figures)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.policy import Policy
from carbon_platform import metrics
from carbon_platform.figures import Figures
from registry.store import allocations, obligations


class Issued(BaseModel):
    kind: str
    compliance_year: int
    allowances: int


class Surrendered(BaseModel):
    compliance_year: int
    allowances: int
    offsets: int


class RegistryFigures(BaseModel):
    allowances_issued: list[Issued]  # credited to accounts, by kind and the year they are for
    surrendered: list[Surrendered]  # towards the year's obligations


async def compute(conn: AsyncConnection, policy: Policy) -> RegistryFigures:
    year = policy.compliance_year
    # What the policy's cycle issues shows 0 before the first issue: the year's allocation,
    # and next year's pre-allocation (issued with each completed surrender).
    issued = {("allocation", year): 0, ("preallocation", year + 1): 0}
    rows = await conn.execute(
        select(
            allocations.c.kind, allocations.c.compliance_year, func.sum(allocations.c.allowances)
        ).group_by(allocations.c.kind, allocations.c.compliance_year)
    )
    issued |= {(kind, at): int(total) for kind, at, total in rows}
    surrendered = {year: (0, 0)}
    offsets = obligations.c.offsets_surrendered
    rows = await conn.execute(
        select(
            obligations.c.compliance_year,
            func.sum(obligations.c.surrendered - offsets),
            func.sum(offsets),
        ).group_by(obligations.c.compliance_year)
    )
    surrendered |= {at: (int(allowances), int(used)) for at, allowances, used in rows}
    return RegistryFigures(
        allowances_issued=[
            Issued(kind=kind, compliance_year=at, allowances=total)
            for (kind, at), total in sorted(issued.items())
        ],
        surrendered=[
            Surrendered(compliance_year=at, allowances=allowances, offsets=used)
            for at, (allowances, used) in sorted(surrendered.items())
        ],
    )


def show(figures: RegistryFigures) -> None:
    for issued in figures.allowances_issued:
        metrics.ALLOWANCES_ISSUED.labels(issued.kind, str(issued.compliance_year)).set(
            issued.allowances
        )
    for row in figures.surrendered:
        metrics.ALLOWANCES_SURRENDERED.labels(str(row.compliance_year)).set(row.allowances)
        metrics.OFFSETS_SURRENDERED.labels(str(row.compliance_year)).set(row.offsets)


FIGURES = Figures(RegistryFigures, compute, show)
