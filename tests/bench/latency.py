"""Benchmark: time from an HTTP command to its event on the topic, from a report to the
verification case it opens downstream, and how fast one worker drains a backlog. Starts its own
embedded stack (`carbon up`) on free ports and prints figures; asserts nothing about timing.

    .venv/bin/python tests/bench/latency.py [--entities 100] [--events 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from carbon_contracts.catalogue import catalogue
from registry.domain.credit_code import make_credit_code
from tests.support import Database, report_event, running_platform, token


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[max(0, round(len(ms) * 0.95) - 1)]
    return (
        f"{name:<44} n={len(ms):<4} p50={statistics.median(ms):7.1f} ms  "
        f"p95={p95:7.1f} ms  max={ms[-1]:7.1f} ms"
    )


async def arrivals(bootstrap: str, topic: str, keys: set[bytes], out: dict[bytes, float]) -> None:
    # A short fetch wait, so the listener itself adds next to nothing to the figures.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(catalogue().topic(topic).partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    try:
        while not keys <= out.keys():
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for message in batch:
                    if message.key in keys:
                        out.setdefault(message.key, time.perf_counter())
    finally:
        await consumer.stop()


async def measure(bootstrap: str, urls: dict[str, str], count: int, events: int) -> None:
    codes = [make_credit_code(900_000 + i) for i in range(count)]
    keys = {code.encode() for code in codes}
    registered: dict[bytes, float] = {}
    listener = asyncio.create_task(arrivals(bootstrap, "entity.registered", keys, registered))
    await asyncio.sleep(1)  # the listener is positioned at the end of the topic
    sent: dict[bytes, float] = {}
    http: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for code in codes:
            started = time.perf_counter()
            reply = await client.post(
                f"{urls['registry']}/entities",
                headers=token("regulator"),
                json={
                    "credit_code": code,
                    "name": "Bench Ltd",
                    "district": "pudong",
                    "sector": "chemicals",
                    "compliance_year": 2024,
                },
            )
            http.append(time.perf_counter() - started)
            reply.raise_for_status()
            sent[code.encode()] = started
        await asyncio.wait_for(listener, timeout=60)
        print(summary("POST /entities (HTTP round trip)", http))
        print(
            summary(
                "POST /entities -> entity.registered on topic",
                [registered[k] - sent[k] for k in keys],
            )
        )

        # Downstream: report -> report.submitted -> verification opens the case.
        report_sent: dict[str, float] = {}
        case_seen: dict[str, float] = {}
        reported_keys = {code.encode() for code in codes[: min(count, 30)]}
        submitted: dict[bytes, float] = {}
        report_listener = asyncio.create_task(
            arrivals(bootstrap, "report.submitted", reported_keys, submitted)
        )
        await asyncio.sleep(1)
        for code in codes[: min(count, 30)]:
            entity = token("entity", credit_code=code)
            body = {"compliance_year": 2024, "lines": [{"source": "heat", "activity": "1000"}]}
            for _ in range(200):  # reporting may not have seen entity.registered yet
                reply = await client.post(f"{urls['reporting']}/reports", headers=entity, json=body)
                if reply.status_code != 404:
                    break
                await asyncio.sleep(0.05)
            reply.raise_for_status()
            report_sent[code] = time.perf_counter()
            while True:
                cases = (await client.get(f"{urls['verification']}/cases", headers=entity)).json()
                if cases:
                    case_seen[code] = time.perf_counter()
                    break
                await asyncio.sleep(0.005)
        await asyncio.wait_for(report_listener, timeout=60)
        print(
            summary(
                "POST /reports reply -> report.submitted on topic",
                [submitted[c.encode()] - report_sent[c] for c in report_sent],
            )
        )
        print(
            summary(
                "report.submitted on topic -> case queryable",
                [case_seen[c] - submitted[c.encode()] for c in report_sent],
            )
        )
        print(
            summary(
                "POST /reports reply -> case opened",
                [case_seen[c] - report_sent[c] for c in report_sent],
            )
        )
    await consumption_rate(bootstrap, urls["verification"], events)


async def consumption_rate(bootstrap: str, verification: str, count: int) -> None:
    """Events per second through one worker (decode, inbox, handler, commit, per event), with
    the whole backlog on the topic before the clock starts."""
    events = [report_event(800_000 + i) for i in range(count)]

    async def processed(client: httpx.AsyncClient) -> float:
        body = (await client.get(f"{verification}/metrics")).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("carbon_events_consumed_total{") and "report.submitted" in line
        )

    async with httpx.AsyncClient(timeout=10) as client:
        before = await processed(client)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
        await producer.start()
        started = time.perf_counter()
        for event in events:
            await producer.send(event.topic, event.value, key=event.key, headers=event.headers)
        await producer.flush()
        await producer.stop()
        while (done := await processed(client) - before) < count:
            if time.perf_counter() - started > 300:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    print(
        f"{'produce N report.submitted -> all processed':<44} n={int(done):<4} "
        f"{elapsed:7.1f} s   {done / elapsed:7.1f} events/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000, help="for the consumption rate")
    args = parser.parse_args()
    started = time.perf_counter()
    var_dir = Path(tempfile.mkdtemp(prefix="carbon-bench-"))
    with running_platform(var_dir, Database(url=None, schema_prefix="")) as platform:
        ready_after = time.perf_counter() - started
        print(f"{'carbon up: start to all four services ready':<44} {ready_after:.1f} s")
        asyncio.run(measure(platform.bootstrap, platform.urls, args.entities, args.events))


if __name__ == "__main__":
    main()
