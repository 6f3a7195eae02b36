"""The dashboard's compliance figures are exact: after a burst of compliance cycles spread over two
instances of every service, each compliance panel's query (as the dashboard has it), evaluated by
a real Prometheus scraping both instances, equals what the services' APIs say."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from carbon_platform import metrics
from registry.domain.credit_code import make_credit_code
from tests.support import (
    CYCLE_TOPICS,
    REPO,
    Database,
    Platform,
    compliance_cycle,
    cycle_notices,
    prometheus_query,
    running_platform,
    running_prometheus,
    token,
    wait_until,
)

# A stack started, a burst driven and a real Prometheus scraping it: more than the default.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ENTITIES = 24
SEED = 3_300_000
FIGURE_SERVICES = ("reporting", "registry", "notifier")
# The gauges of carbon_platform.figures: a dashboard panel querying one is a compliance figure.
FIGURE_GAUGES = {
    gauge._name
    for gauge in (
        metrics.REPORTS_SUBMITTED,
        metrics.ALLOWANCES_ISSUED,
        metrics.ALLOWANCES_SURRENDERED,
        metrics.OFFSETS_SURRENDERED,
        metrics.NOTIFICATIONS,
    )
}
Series = dict[frozenset[tuple[str, str]], float]


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(
        tmp_path_factory.mktemp("figures"), Database.for_test(), instances=2
    ) as platform:
        yield platform


def compliance_exprs() -> list[str]:
    """Every dashboard query that shows one of the compliance figures."""
    exprs = []
    for path in sorted((REPO / "deploy/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                for target in inner.get("targets", []):
                    if any(name in target.get("expr", "") for name in FIGURE_GAUGES):
                        exprs.append(target["expr"])
    return exprs


def api_figures(urls: list[str]) -> dict[str, Series]:
    """The figures of GET /figures (one instance), as the series of the gauges they feed."""
    bureau = token("regulator")

    def figures(service: str) -> Any:
        reply = httpx.get(f"{urls_of[service]}/figures", headers=bureau, timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()

    urls_of = dict(zip(FIGURE_SERVICES, urls, strict=True))
    reporting, registry, notifier = (figures(service) for service in FIGURE_SERVICES)
    year = "compliance_year"
    return {
        "carbon_reports_submitted": {
            frozenset({(year, str(r[year]))}): r["count"] for r in reporting["reports_submitted"]
        },
        "carbon_allowances_issued": {
            frozenset({("kind", r["kind"]), (year, str(r[year]))}): r["allowances"]
            for r in registry["allowances_issued"]
        },
        "carbon_allowances_surrendered": {
            frozenset({(year, str(r[year]))}): r["allowances"] for r in registry["surrendered"]
        },
        "carbon_offsets_surrendered": {
            frozenset({(year, str(r[year]))}): r["offsets"] for r in registry["surrendered"]
        },
        "carbon_notifications": {
            frozenset({("recipient_type", kind)}): count
            for kind, count in notifier["notifications"].items()
        },
    }


def expected(expr: str, figures: dict[str, Series], shown: Series) -> Series:
    """What the query should show: the API's figures of its gauge, summed over the labels the
    query's series do not keep (none, for `max by (every label)`)."""
    [name] = [name for name in FIGURE_GAUGES if name in expr]
    want: Series = {}
    kept = {label for labels in shown for label, _ in labels} or set()
    for labels, value in figures[name].items():
        key = frozenset((label, v) for label, v in labels if label in kept)
        want[key] = want.get(key, 0) + value
    return want


def shown_by(api: str, expr: str) -> Series:
    return {
        frozenset(series["metric"].items()): float(series["value"][1])
        for series in prometheus_query(api, expr)
    }


def test_the_dashboard_figures_equal_the_apis_after_a_burst_over_two_instances(
    twins: Platform, tmp_path: Path
) -> None:
    exprs = compliance_exprs()
    shown_gauges = {name for name in FIGURE_GAUGES if any(name in expr for expr in exprs)}
    assert shown_gauges == FIGURE_GAUGES, "a compliance figure missing from the dashboard"
    codes = [make_credit_code(SEED + n) for n in range(ENTITIES)]
    turn = itertools.count()

    def url(service: str) -> str:  # every call to the next instance, round robin
        return twins.instances[service][next(turn) % 2]

    async def burst() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            gate = asyncio.Semaphore(8)

            async def one(code: str) -> dict[str, Any]:
                async with gate:
                    return await compliance_cycle(client, url, code)

            return await asyncio.gather(*(one(code) for code in codes))

    scraped = {service: twins.instances[service] for service in FIGURE_SERVICES}
    with running_prometheus(tmp_path, scraped, scrape_interval="1s") as api:
        receipts = asyncio.run(burst())
        assert {receipt["status"] for receipt in receipts} == {"compliant"}

        # Every consumer has had everything: the notifier told each entity of its cycle's events.
        wait_until(
            lambda: (
                cycle_notices(twins.urls["notifier"], set(codes)) == ENTITIES * len(CYCLE_TOPICS)
            ),
            timeout=180,
            what="the notifier to have everything",
            every=1,
        )

        first, second = ([twins.instances[s][n] for s in FIGURE_SERVICES] for n in (0, 1))
        # Deadline notices (by the real clock every entity is late) may still be on their way.
        reads: list[dict[str, Series]] = []

        def settled() -> dict[str, Series] | None:
            reads.append(api_figures(first))
            return reads[-1] if len(reads) > 1 and reads[-2] == reads[-1] else None

        figures = wait_until(settled, timeout=120, what="the figures to settle", every=3)
        # The API's figures are the facts the burst made (fresh databases: nothing else).
        of_2024 = frozenset({("compliance_year", "2024")})
        assert figures["carbon_allowances_surrendered"] == {of_2024: 60 * ENTITIES}
        assert figures["carbon_offsets_surrendered"] == {of_2024: 0}
        preallocated = sum(receipt["preallocation"]["allowances"] for receipt in receipts)
        issued = figures["carbon_allowances_issued"]
        assert issued[frozenset({("kind", "preallocation"), ("compliance_year", "2025")})] == (
            preallocated
        )
        reports = httpx.get(
            f"{twins.urls['reporting']}/reports",
            headers=token("regulator"),
            params={"compliance_year": 2024},
            timeout=10,
        ).json()
        submitted = sum(1 for report in reports if report["status"] != "draft")
        assert submitted == ENTITIES
        assert figures["carbon_reports_submitted"] == {of_2024: submitted}
        for kind, count in figures["carbon_notifications"].items():
            [(_, recipient_type)] = kind
            notes = httpx.get(
                f"{twins.urls['notifier']}/notifications",
                headers=token("regulator"),
                params={"recipient_type": recipient_type, "limit": 1000},
                timeout=10,
            ).json()
            assert len(notes) == count < 1000, recipient_type
        # Either instance says the same.
        assert api_figures(second) == figures

        # Both instances of each service are scraped, and each reports the same figures.
        def both_instances_agree() -> list[str]:
            differ = []
            for name in FIGURE_GAUGES:
                per_instance: dict[str, Series] = {}
                for series in prometheus_query(api, name):
                    labels = dict(series["metric"])
                    instance = labels.pop("instance")
                    labels.pop("job")
                    labels.pop("__name__")
                    per_instance.setdefault(instance, {})[frozenset(labels.items())] = float(
                        series["value"][1]
                    )
                values = list(per_instance.values())
                if len(values) != 2 or values[0] != values[1] or values[0] != figures[name]:
                    differ.append(f"{name}: {per_instance}")
            return differ

        wait_until(
            lambda: not both_instances_agree(),
            timeout=60,
            what="both instances of every service scraped with the API's figures",
        )

        # Each compliance panel's query equals the API.
        mismatches: list[str] = []

        def panels_equal_the_api() -> bool:
            mismatches.clear()
            for expr in exprs:
                shown = shown_by(api, expr)
                want = expected(expr, figures, shown)
                if shown != want:
                    mismatches.append(f"{expr}: shown {shown}, the API says {want}")
            return not mismatches

        try:
            wait_until(panels_equal_the_api, timeout=60, what="the panels to equal the API")
        except AssertionError:
            raise AssertionError("\n".join(mismatches)) from None
        assert api_figures(first) == figures  # nothing moved meanwhile
