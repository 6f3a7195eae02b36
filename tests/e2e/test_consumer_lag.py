"""Consumer lag on the stack as `carbon up` runs it, scraped by a real Prometheus with the shipped
rules: a frozen notifier's lag rises on the other services' /metrics, CarbonConsumerFallingBehind
fires, and once the notifier runs again its lag falls back to 0 and the alert resolves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from registry.domain.credit_code import make_credit_code
from tests.support import (
    CYCLE_TOPICS,
    REPO,
    Database,
    Platform,
    compliance_cycle,
    metric,
    prometheus_query,
    running_platform,
    running_prometheus,
    service_pids,
    wait_until,
)

# The stack's start, the shipped alert's 2m window and the stack's stop take longer than the
# suite's default 300 s on a loaded machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DATABASE = Database.for_test()
ALERT = "CarbonConsumerFallingBehind"
THRESHOLD = 100  # the rule's: records behind
# Cycles run while the notifier is frozen: each publishes one event to each of CYCLE_TOPICS, all
# of which the notifier consumes. Enough that even the embedded broker's end offsets (short by
# all but the first record of each partition's last batch) show more than the threshold.
CYCLES = 2 * THRESHOLD // len(CYCLE_TOPICS)


def group_lag(url: str, group: str) -> float | None:
    """The group's lag summed over its partitions on one instance's /metrics; None while that
    instance reports no partition of the group."""
    body = httpx.get(f"{url}/metrics", timeout=5).text
    if f'carbon_consumer_lag{{group="{group}"' not in body:
        return None
    return metric(body, "carbon_consumer_lag", group=group)


def cycles(platform: Platform, seeds: range) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(
                *(
                    compliance_cycle(client, platform.urls.__getitem__, make_credit_code(seed))
                    for seed in seeds
                )
            )

    asyncio.run(run())


def panel_expr() -> str:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/carbon-overview.json").read_text())
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Consumer lag by group"]
    expr: str = panel["targets"][0]["expr"]
    return expr


def firing(api: str, group: str) -> bool:
    found = prometheus_query(api, f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}')
    return any(alert["metric"].get("group") == group for alert in found)


def test_a_frozen_consumer_s_lag_rises_fires_the_alert_and_falls_once_it_runs(
    tmp_path: Path,
) -> None:
    group = f"{os.environ.get('CARBON_GROUP_PREFIX', 'carbon')}-notifier"
    (tmp_path / "stack").mkdir()
    (tmp_path / "prometheus").mkdir()
    with running_platform(tmp_path / "stack", DATABASE) as platform:
        registry = platform.urls["registry"]
        with running_prometheus(
            tmp_path / "prometheus", platform.instances, scrape_interval="1s"
        ) as api:
            # The notifier consumes and commits on its topics: the registry learns they are the
            # notifier group's from those commits, and reports them caught up.
            cycles(platform, range(5_100_000, 5_100_001))
            wait_until(
                lambda: group_lag(registry, group) == 0,
                timeout=90,
                what=f"the registry to report {group} caught up",
            )
            # The dashboard's panel, every service chosen, shows the group (at 0: caught up).
            shown = wait_until(
                lambda: prometheus_query(api, panel_expr().replace("$service", ".*")),
                timeout=60,
                what="the panel's query to return data",
            )
            assert group in {series["metric"]["group"] for series in shown}

            pids = service_pids(platform.var_dir, "notifier")
            assert pids
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)  # frozen: neither exits nor is restarted
            try:
                cycles(platform, range(5_100_001, 5_100_001 + CYCLES))
                # Every service reports the same figure for the group (they all ask the broker).
                urls = [platform.urls[name] for name in ("registry", "reporting", "verification")]

                def risen_alike() -> float | None:
                    figures = {group_lag(url, group) for url in urls}
                    (lag,) = figures if len(figures) == 1 else (None,)
                    return lag if lag is not None and lag > THRESHOLD else None

                lag = wait_until(
                    risen_alike,
                    timeout=90,
                    what=f"{group}'s lag to pass {THRESHOLD} alike on the other services' /metrics",
                )
                # The shipped rule: above the threshold, not falling, for 2m.
                wait_until(
                    lambda: firing(api, group),
                    timeout=240,
                    what=f"{ALERT} to fire for {group}",
                    every=2,
                )
                assert (group_lag(registry, group) or 0) >= lag  # frozen: nothing consumed
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)

            wait_until(
                lambda: group_lag(registry, group) == 0,
                timeout=120,
                what=f"{group}'s lag to fall back to 0",
            )
            wait_until(
                lambda: not firing(api, group),
                timeout=60,
                what=f"{ALERT} to resolve",
                every=2,
            )
