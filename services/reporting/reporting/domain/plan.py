"""The monitoring plan (碳排放监测计划) for the next year, and its versions.

    submitted -> approved
    submitted -> returned -> submitted as a new version -> ...

Each version is decided once, by the Bureau (or the technical centre acting for it): approved,
or returned with a reason. A returned plan is submitted again as a new version; an approved one
is final, and a version awaiting its decision cannot be replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal
from uuid import UUID

from carbon_contracts.errors import Conflict, Invalid
from carbon_contracts.events import MonitoringPlanOutput, MonitoringPlanSource
from carbon_contracts.policy import Policy
from carbon_emissions.calculation import FactorTable
from reporting.domain.report import check_products

Status = Literal["submitted", "approved", "returned"]
STATUSES: tuple[Status, ...] = ("submitted", "approved", "returned")
Decision = Literal["approved", "returned"]
_NAMES = {"fuel": "fuel", "process": "material"}
"""Sources that name what they burn or decompose, and the field that names it."""


@dataclass(frozen=True)
class Plan:
    plan_id: UUID
    credit_code: str
    plan_year: int
    status: Status
    version: int

    def resubmit(self) -> Plan:
        """A new version: only after the latest one was returned."""
        if self.status == "submitted":
            raise Conflict(
                "awaiting_decision",
                f"monitoring plan {self.plan_id}: version {self.version} awaits the Bureau's "
                "decision",
            )
        if self.status == "approved":
            raise Conflict(
                "already_approved",
                f"monitoring plan {self.plan_id}: version {self.version} is approved",
            )
        return replace(self, status="submitted", version=self.version + 1)

    def decide(self, version: int | None, decision: Decision) -> Plan:
        """Approve or return the latest version, which awaits a decision. The decision may name
        the version it was made on (None: the latest)."""
        if version is not None and version != self.version:
            raise Conflict(
                "stale_version",
                f"monitoring plan {self.plan_id}: version {version} is not the latest "
                f"(version {self.version})",
            )
        if self.status != "submitted":
            raise Conflict(
                f"already_{self.status}",
                f"monitoring plan {self.plan_id}: version {self.version} is already {self.status}",
            )
        return replace(self, status=decision)


def plan_year_of(policy: Policy, requested: int) -> int:
    """The cycle takes plans for the one year its policy names (the next year)."""
    if requested != policy.monitoring_plan.year:
        raise Invalid(
            "wrong_plan_year",
            f"the {policy.cycle} cycle takes monitoring plans for {policy.monitoring_plan.year}, "
            f"not {requested}",
        )
    return requested


def check_contents(
    sources: Sequence[MonitoringPlanSource],
    outputs: Sequence[MonitoringPlanOutput],
    table: FactorTable,
) -> None:
    """Each source names what it burns or decomposes (and only then), known to the factor
    table, once; each output product once."""
    seen: set[tuple[str, str | None]] = set()
    for number, source in enumerate(sources, start=1):
        where = f"source {number} ({source.source})"
        field = _NAMES.get(source.source)
        for other in ("fuel", "material"):
            value = getattr(source, other)
            if other != field and value is not None:
                raise Invalid("invalid_source", f"{where} names no {other}, but {value!r} given")
        name: str | None = getattr(source, field) if field else None
        if field is not None:
            known = table.fuels if field == "fuel" else table.processes
            if name is None:
                raise Invalid("invalid_source", f"{where} must name its {field}")
            if name not in known:
                raise Invalid(
                    "invalid_source",
                    f"{where}: unknown {field} {name!r}; factor table {table.version!r} knows "
                    f"{', '.join(sorted(known))}",
                )
        if (source.source, name) in seen:
            raise Invalid("duplicate_source", f"{where} is listed twice")
        seen.add((source.source, name))
    check_products(output.product for output in outputs)
