"""Every panel of every dashboard shows data: a live stack, through a broker that vanishes
(history republished), compliance cycles and a record nobody can read (a dead letter), scraped
by a real Prometheus with the shipped config; each panel's every query, with the dashboard's
variables filled in as Grafana would, returns at least one series."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.domain.credit_code import make_credit_code
from tests.support import (
    REPO,
    Database,
    Platform,
    broker_pid,
    compliance_cycle,
    produce,
    prometheus_query,
    running_platform,
    running_prometheus,
    wait_until,
)

# A stack started, a burst driven and a real Prometheus scraping it: more than the default.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
DASHBOARDS = sorted((REPO / "deploy/grafana/dashboards").glob("*.json"))
SEED = 3_400_000
# Grafana's own variables, as an instant query "now" gets them (the scrape here is every 1s).
BUILT_IN = {"__rate_interval": "1m", "__interval": "15s", "__range": "10m", "__range_s": "600"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("panels"), Database.for_test()) as up:
        yield up


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def variable_values(api: str, dashboard: dict[str, Any]) -> dict[str, str]:
    """A value for each of the dashboard's variables: All (Grafana's regex of every value) where
    the variable offers it, else the first value its query finds now."""
    values = dict(BUILT_IN)
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        if variable.get("includeAll"):
            values[name] = variable.get("allValue") or ".*"
            continue
        if variable["type"] == "custom":
            values[name] = variable["query"].split(",")[0].strip()
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        found = LABEL_VALUES.fullmatch(query.strip())
        assert found, f"{name}: a variable query this test does not know: {query}"
        metric, label = found.groups()
        params = {"match[]": metric} if metric else {}
        options = httpx.get(f"{api}/label/{label}/values", params=params, timeout=5).json()
        assert options["data"], f"{name}: {query} finds no value"
        values[name] = sorted(options["data"])[0]
    return values


def substituted(expr: str, values: dict[str, str]) -> str:
    def value(found: re.Match[str]) -> str:
        name = next(group for group in found.groups() if group)
        assert name in values, f"undefined variable {name} in {expr}"
        return values[name]

    return VARIABLE.sub(value, expr)


def empty_panels(api: str) -> list[str]:
    """`dashboard / panel / refId: query` for each query that returns no series (or fails)."""
    empty = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        values = variable_values(api, dashboard)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if "expr" not in target:
                    continue
                expr = substituted(target["expr"], values)
                if not prometheus_query(api, expr):
                    empty.append(f"{path.name} / {panel['title']} / {target['refId']}: {expr}")
    return empty


def cycles(platform: Platform, seeds: range) -> None:
    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    compliance_cycle(client, platform.urls.__getitem__, make_credit_code(seed))
                    for seed in seeds
                )
            )

    assert {receipt["status"] for receipt in asyncio.run(run())} == {"compliant"}


def test_every_panel_of_every_dashboard_returns_data(platform: Platform, tmp_path: Path) -> None:
    assert DASHBOARDS
    with running_prometheus(tmp_path, platform.urls, scrape_interval="1s") as api:
        wait_until(
            lambda: len(prometheus_query(api, "up == 1")) == len(platform.urls),
            timeout=60,
            what="every service scraped",
        )
        # The broker vanishes with everything it held: each service publishes its history (the
        # deadline summaries its watcher published at start) again, and the stack recovers.
        os.kill(broker_pid(platform.bootstrap), signal.SIGKILL)
        wait_until(
            lambda: prometheus_query(api, "carbon_outbox_republished_total > 0"),
            timeout=120,
            what="history republished onto the new broker",
            every=0.5,
        )
        failing: dict[str, Any] = {}

        def ready() -> bool:
            failing.clear()
            for name, url in platform.urls.items():
                reply = httpx.get(f"{url}/health/ready", timeout=5)
                if reply.status_code != 200:
                    failing[name] = reply.json().get("checks")
            return not failing

        try:
            wait_until(ready, timeout=180, what="every service ready again", every=0.5)
        except AssertionError as late:
            raise AssertionError(f"{late}; still failing: {failing}") from None
        cycles(platform, range(SEED, SEED + 2))

        # A record nobody can read, on a topic three services consume: a dead letter each.
        produce(platform.bootstrap, "report.submitted", [(b"x", b"not an event", [])])
        wait_until(
            lambda: prometheus_query(api, "carbon_dead_letters_total"),
            timeout=60,
            what="a dead letter counted",
        )

        empty: list[str] = []

        def all_show_data() -> bool:
            empty[:] = empty_panels(api)
            return not empty

        try:
            wait_until(all_show_data, timeout=90, what="every panel to show data", every=2)
        except AssertionError:
            raise AssertionError(
                f"{len(empty)} dashboard queries return no data:\n" + "\n".join(empty)
            ) from None
