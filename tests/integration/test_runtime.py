"""A service's runtime against the real embedded broker: the consumer's fetch wait, and what an
instance says when its broker goes away (readiness, metrics, the deployed alert, its logs)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from pydantic import SecretStr

from carbon_platform.runtime import make_faust_app
from carbon_platform.settings import Settings
from tests.support import (
    JWT_SECRET,
    Broker,
    Database,
    ServiceProcess,
    prometheus_query,
    running_prometheus,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_the_consumer_waits_at_the_broker_no_longer_than_the_setting(tmp_path: Path) -> None:
    # Faust 0.15.3 hard-codes a 1.5 s fetch wait; runtime overrides a private attribute that
    # aiokafka 0.14.0 reads when the consumer starts. If either package changes that, this fails.
    broker = Broker(tmp_path).start()
    settings = Settings(
        service="verification",
        jwt_secret=SecretStr(JWT_SECRET),
        kafka_bootstrap=broker.bootstrap,
        kafka_fetch_max_wait_ms=77,
        var_dir=tmp_path,
    )

    async def fetch_wait_of_the_started_consumer() -> int:
        app = make_faust_app(settings)
        thread = cast(Any, app.consumer)._thread
        consumer = thread._create_worker_consumer(app.transport)
        await consumer.start()
        try:
            return int(consumer._fetcher._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    try:
        assert asyncio.run(fetch_wait_of_the_started_consumer()) == 77
    finally:
        broker.stop()


def readiness(service: ServiceProcess) -> tuple[int, dict[str, bool]]:
    try:
        reply = httpx.get(f"{service.url}/health/ready", timeout=5)
    except httpx.TransportError:
        return 0, {}
    return reply.status_code, reply.json().get("checks", {})


def log_lines(service: ServiceProcess) -> int:
    return len(service.log_path.read_bytes().splitlines())


def test_a_lost_broker_is_seen_within_30s_and_the_logs_stay_quiet(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    database = Database.for_test()
    service = ServiceProcess("registry", broker.bootstrap, tmp_path, database).start()
    try:
        # Prometheus as deployed: 5 s scrapes and evaluations, the shipped alert rules.
        with running_prometheus(tmp_path, {"registry": service.url}) as api:
            wait_until(
                lambda: prometheus_query(api, "carbon_broker_up == 1"),
                timeout=60,
                what="Prometheus to see the broker up",
            )
            before = log_lines(service)
            broker.kill()
            lost = time.monotonic()

            # The broker's own check turns within 30 s. Another may turn first: the outbox relay
            # of a service that has published (the registry sums up each deadline passed at its
            # start) finds the broker gone when it checks its history there.
            _, checks = wait_until(
                lambda: (
                    (answer := readiness(service))[0] == 503
                    and answer[1].get("broker") is False
                    and answer
                ),
                timeout=30,
                what="readiness to turn on the broker check",
            )
            assert checks["broker"] is False, checks
            assert service.metric("carbon_broker_up") == 0
            assert service.metric("carbon_worker_ready") == 0
            wait_until(
                lambda: prometheus_query(
                    api, 'ALERTS{alertname="CarbonBrokerUnreachable", alertstate="firing"}'
                ),
                timeout=max(0.0, 30 - (time.monotonic() - lost)),
                what="the CarbonBrokerUnreachable alert to fire within 30s of the loss",
            )

            # A minute of outage: the retries go on, the log says so a few times, not per retry.
            time.sleep(max(0.0, 60 - (time.monotonic() - lost)))
            outage_lines = log_lines(service) - before
            assert outage_lines < 60, service.log_tail(80)
            assert readiness(service)[0] == 503

            broker.start()
            wait_until(lambda: readiness(service)[0] == 200, timeout=90, what="ready again after")
            assert service.metric("carbon_broker_up") == 1
    finally:
        service.stop()
        broker.stop()
        database.drop(["registry"])
