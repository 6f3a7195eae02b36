"""Benchmark: a whole compliance season. N covered entities go through the cycle over HTTP with
C concurrent entity flows: one roster CSV upload registers them all, one opening-balances CSV
gives each the allowances it held from before, then each opens its account, reports, is
assigned and verified, and surrenders; the season ends when every service has
consumed every event. Then, in the same run, how fast one worker drains a backlog and what the
broker alone takes. Starts its own embedded stack (`carbon up`) on free ports and prints figures;
asserts nothing about timing.

    .venv/bin/python tests/bench/season.py [--entities 2000] [--concurrency 32] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from carbon_contracts.catalogue import catalogue
from registry.domain.credit_code import make_credit_code
from tests.support import Database, metric, report_event, running_platform, token

WIDTH = 52
"""Label column of the printed figures."""
YEAR = 2024
AGENCY = "sh-verify-01"
"""The agency of the policy's tender lot for chemicals, the sector every bench entity is in."""
DISTRICTS = ("pudong", "minhang", "xuhui", "jingan", "baoshan", "jiading", "songjiang")
REPORT = {"compliance_year": YEAR, "lines": [{"source": "heat", "activity": "1000"}]}
SITE_VISIT = {"visited_on": "2025-04-20", "findings": "meters and invoices agree"}
ENTITY_SEED, DRAIN_SEED = 5_000_000, 6_000_000
EVENTS_PER_ENTITY = 8
"""entity.registered, account.opened, report.submitted, verification.assigned,
verification.approved, verification.finalised, surrender.completed, preallocation.issued (the
year's allocation waits for verification to close: every bench entity surrenders the allowances
the Bureau imported as held from before)"""
WATCHED = (
    "account.opened",
    "report.submitted",
    "verification.assigned",
    "verification.approved",
    "verification.finalised",
    "surrender.completed",
)
"""Topics whose events follow an HTTP command directly: commit -> event on the topic."""
CONSUMES = {
    "reporting": ("entity.registered",),
    "verification": ("entity.registered", "report.submitted"),
    "registry": ("verification.finalised",),
}
"""The topics each service (but the notifier, which takes them all) consumes one event of per
entity in a season."""
STAGES = (
    "queued",
    "account",
    "report",
    "case",
    "assign",
    "visit",
    "approve",
    "finalise",
    "surrender",
    "done",
)
RAW_TOPIC = "bench.raw"


class StepError(Exception):
    """An HTTP step answered something the cycle does not allow; already printed."""


def line(label: str, text: str) -> None:
    print(f"{label:<{WIDTH}} {text}", flush=True)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(len(sorted_values) * q) - 1)]


def spread(samples: Iterable[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return "no samples"
    return (
        f"p50={statistics.median(ms):8.1f} ms  p95={percentile(ms, 0.95):8.1f} ms  "
        f"p99={percentile(ms, 0.99):8.1f} ms  max={ms[-1]:8.1f} ms"
    )


# --- /metrics -------------------------------------------------------------------------------


def metric_by(body: str, name: str, label: str, **labels: str) -> dict[str, float]:
    """A metric's samples summed per value of one label."""
    out: dict[str, float] = defaultdict(float)
    for text in body.splitlines():
        if not text.startswith(name + "{"):
            continue
        series, _, value = text.rpartition(" ")
        label_text = series.partition("{")[2]
        if not all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
            continue
        marker = f'{label}="'
        if marker in label_text:
            out[label_text.split(marker, 1)[1].split('"', 1)[0]] += float(value)
    return dict(out)


@dataclass(frozen=True)
class Scrape:
    """One read of every service's /metrics."""

    bodies: dict[str, str]

    def consumed(self, service: str) -> float:
        """Events the service took from its topic(s), whatever the outcome, but for copies of
        events it had already taken (outcome "duplicate": a record published again)."""
        filters = [{"topic": topic} for topic in CONSUMES.get(service, ())] or [{}]
        return sum(
            value
            for labels in filters
            for outcome, value in metric_by(
                self.bodies[service], "carbon_events_consumed_total", "outcome", **labels
            ).items()
            if outcome != "duplicate"
        )

    def outcomes(self, service: str) -> dict[str, float]:
        return metric_by(self.bodies[service], "carbon_events_consumed_total", "outcome")

    def republished(self, service: str) -> float:
        return metric(self.bodies[service], "carbon_outbox_republished_total")

    def pending(self, service: str) -> float:
        return metric(self.bodies[service], "carbon_outbox_pending")

    def cpu(self, service: str) -> float:
        return metric(self.bodies[service], "process_cpu_seconds_total")

    def started(self, service: str) -> float:
        return metric(self.bodies[service], "process_start_time_seconds")


CARBON_UP_OUTPUT: list[Path] = []
"""Where `carbon up` writes what it says (a service that died and was restarted, say)."""


async def scrape(client: httpx.AsyncClient, urls: dict[str, str]) -> Scrape:
    async def one(service: str, url: str) -> str:
        try:
            reply = await client.get(f"{url}/metrics")
        except httpx.HTTPError as error:
            said = CARBON_UP_OUTPUT[0].read_text()[-1500:] if CARBON_UP_OUTPUT else ""
            print(
                f"ERROR GET {url}/metrics ({service}): {type(error).__name__}: {error}\n"
                f"  carbon up said:\n{said}",
                flush=True,
            )
            raise StepError(f"/metrics of {service}") from error
        if reply.status_code != 200:
            print(f"ERROR GET {url}/metrics ({service}): HTTP {reply.status_code}: {reply.text}")
            raise StepError(f"/metrics of {service}")
        return reply.text

    bodies = await asyncio.gather(*(one(name, url) for name, url in urls.items()))
    return Scrape(dict(zip(urls, bodies, strict=True)))


# --- the season -----------------------------------------------------------------------------


@dataclass
class Season:
    """Everything measured, and where each entity is (for a report if it gets stuck)."""

    urls: dict[str, str]
    codes: list[str]
    phase: str = "starting"
    stage: dict[str, str] = field(default_factory=dict)
    import_id: str | None = None
    baseline: Scrape | None = None
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    retries: Counter[str] = field(default_factory=Counter)
    committed: dict[str, dict[bytes, float]] = field(
        default_factory=lambda: {topic: {} for topic in WATCHED}
    )
    arrived: dict[str, dict[bytes, float]] = field(
        default_factory=lambda: {topic: {} for topic in WATCHED}
    )

    async def call(
        self,
        client: httpx.AsyncClient,
        step: str,
        code: str,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        expect: int,
        json: Any = None,
        params: dict[str, str] | None = None,
        retry_on: frozenset[tuple[int, str]] = frozenset(),
        until: Callable[[httpx.Response], bool] | None = None,
    ) -> tuple[httpx.Response, float]:
        """One HTTP step; retried (with a short, growing sleep) while the reply says the
        platform has not caught up yet. Returns the reply and when it arrived."""
        delay = 0.02
        while True:
            started = time.perf_counter()
            try:
                reply = await client.request(method, url, headers=headers, json=json, params=params)
            except httpx.HTTPError as error:
                print(f"ERROR {step} for {code}: {type(error).__name__}: {error}", flush=True)
                raise StepError(step) from error
            ended = time.perf_counter()
            if reply.status_code == expect and (until is None or until(reply)):
                self.samples[step].append((started, ended))
                return reply, ended
            if (reply.status_code == expect and until is not None) or (
                reply.status_code,
                error_code(reply),
            ) in retry_on:
                self.retries[step] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.25)
                continue
            print(
                f"ERROR {step} for {code}: HTTP {reply.status_code} (expected {expect})\n"
                f"  {method} {url} {params or ''}\n  reply: {reply.text[:2000]}",
                flush=True,
            )
            raise StepError(step)


def error_code(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def roster_csv(codes: list[str]) -> str:
    rows = ["credit_code,name,district,sector,compliance_year,new_entrant"]
    for i, code in enumerate(codes):
        district = DISTRICTS[i % len(DISTRICTS)]
        new_entrant = "true" if i % 10 == 0 else "false"
        rows.append(f"{code},Bench Chemicals {i} Co Ltd,{district},chemicals,{YEAR},{new_entrant}")
    return "\n".join(rows) + "\n"


async def register_roster(client: httpx.AsyncClient, season: Season) -> tuple[float, float]:
    """One CSV upload of the whole roster; returns (upload round trip, upload -> import done)."""
    registry, bureau = season.urls["registry"], token("regulator")
    body = roster_csv(season.codes).encode()
    season.phase = "registration"
    started = time.perf_counter()
    reply = await client.post(
        f"{registry}/roster/imports",
        headers={**bureau, "content-type": "text/csv"},
        content=body,
    )
    uploaded = time.perf_counter() - started
    if reply.status_code != 202:
        print(f"ERROR POST /roster/imports: HTTP {reply.status_code}\n  reply: {reply.text[:2000]}")
        raise StepError("roster upload")
    season.import_id = import_id = reply.json()["import_id"]
    while True:
        reply = await client.get(f"{registry}/roster/imports/{import_id}", headers=bureau)
        if reply.status_code != 200:
            print(f"ERROR GET /roster/imports/{import_id}: HTTP {reply.status_code}: {reply.text}")
            raise StepError("roster import status")
        status = reply.json()
        if status["status"] == "done":
            break
        await asyncio.sleep(0.1)
    finished = time.perf_counter() - started
    if status["registered"] != len(season.codes):
        refused = await client.get(
            f"{registry}/roster/imports/{import_id}/rows",
            headers=bureau,
            params={"status": "refused", "limit": "5"},
        )
        print(
            f"ERROR roster import {import_id}: {status}\n  first refused rows: {refused.text}",
            flush=True,
        )
        raise StepError("roster import")
    return uploaded, finished


async def import_opening_balances(client: httpx.AsyncClient, season: Season) -> None:
    """One CSV of what each entity holds from before: the 60 allowances its surrender needs."""
    rows = ["credit_code,compliance_year,held", *(f"{code},{YEAR},60" for code in season.codes)]
    season.phase = "opening balances"
    reply = await client.post(
        f"{season.urls['registry']}/opening-balances",
        headers={**token("regulator"), "content-type": "text/csv"},
        content=("\n".join(rows) + "\n").encode(),
        timeout=600,
    )
    if reply.status_code != 200 or reply.json()["applied"] != len(season.codes):
        print(f"ERROR POST /opening-balances: HTTP {reply.status_code}: {reply.text[:2000]}")
        raise StepError("opening balances")


async def entity_flow(
    client: httpx.AsyncClient,
    season: Season,
    gate: asyncio.Semaphore,
    code: str,
    entity: dict[str, str],
    bureau: dict[str, str],
    verifier: dict[str, str],
) -> None:
    """One entity's cycle after registration, as its users would click through it."""
    urls, key = season.urls, code.encode()
    async with gate:
        season.stage[code] = "account"
        _, at = await season.call(
            client,
            "POST /entities/{code}/account",
            code,
            "POST",
            f"{urls['registry']}/entities/{code}/account",
            headers=entity,
            expect=201,
        )
        season.committed["account.opened"][key] = at

        season.stage[code] = "report"
        reply, at = await season.call(
            client,
            "POST /reports",
            code,
            "POST",
            f"{urls['reporting']}/reports",
            headers=entity,
            json=REPORT,
            expect=201,
            # reporting has not consumed entity.registered yet
            retry_on=frozenset({(404, "unknown_entity")}),
        )
        season.committed["report.submitted"][key] = at
        total = str(reply.json()["total_emissions"])

        season.stage[code] = "case"
        reply, _ = await season.call(
            client,
            "GET /cases?credit_code=",
            code,
            "GET",
            f"{urls['verification']}/cases",
            headers=bureau,
            params={"credit_code": code},
            expect=200,
            until=lambda r: bool(r.json()),  # verification has not consumed the report yet
        )
        case_id = reply.json()[0]["case_id"]

        season.stage[code] = "assign"
        _, at = await season.call(
            client,
            "POST /cases/{id}/assign",
            code,
            "POST",
            f"{urls['verification']}/cases/{case_id}/assign",
            headers=bureau,
            json={"agency_id": AGENCY},
            expect=200,
            # verification has not consumed entity.registered (it checks the lot on the roster)
            retry_on=frozenset({(409, "entity_unknown")}),
        )
        season.committed["verification.assigned"][key] = at

        season.stage[code] = "visit"
        await season.call(
            client,
            "POST /cases/{id}/site-visit",
            code,
            "POST",
            f"{urls['verification']}/cases/{case_id}/site-visit",
            headers=verifier,
            json=SITE_VISIT,
            expect=200,
        )

        season.stage[code] = "approve"
        _, at = await season.call(
            client,
            "POST /cases/{id}/approve",
            code,
            "POST",
            f"{urls['verification']}/cases/{case_id}/approve",
            headers=verifier,
            json={"lines": REPORT["lines"]},  # verified as reported: recomputed, same total
            expect=200,
        )
        season.committed["verification.approved"][key] = at

        season.stage[code] = "finalise"
        _, at = await season.call(
            client,
            "POST /cases/{id}/finalise",
            code,
            "POST",
            f"{urls['verification']}/cases/{case_id}/finalise",
            headers=bureau,
            expect=200,
        )
        season.committed["verification.finalised"][key] = at

        season.stage[code] = "surrender"
        obligation = int(Decimal(total).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        reply, at = await season.call(
            client,
            "POST /entities/{code}/surrenders",
            code,
            "POST",
            f"{urls['registry']}/entities/{code}/surrenders",
            headers=entity,
            json={"compliance_year": YEAR, "allowances": obligation},
            expect=201,
            # the registry has not consumed verification.finalised (no allocation) yet
            retry_on=frozenset({(404, "no_obligation"), (409, "insufficient_holdings")}),
        )
        receipt = reply.json()
        if receipt.get("status") != "compliant" or not receipt.get("preallocation"):
            print(f"ERROR surrender for {code}: not compliant with a pre-allocation: {receipt}")
            raise StepError("surrender")
        season.committed["surrender.completed"][key] = at
        season.stage[code] = "done"


async def listen(bootstrap: str, out: dict[str, dict[bytes, float]], ready: asyncio.Event) -> None:
    """First arrival time of each key on the watched topics, positioned at their ends first."""
    # A short fetch wait, so the listener itself adds next to nothing to the figures.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in out
            for p in range(catalogue().topic(topic).partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        ready.set()
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for tp, messages in batches.items():
                seen = out[tp.topic]
                for message in messages:
                    if message.key is not None:
                        seen.setdefault(message.key, now)
    finally:
        await consumer.stop()


def season_done(season: Season, now: Scrape, n: int) -> bool:
    base = season.baseline
    assert base is not None
    return (
        now.consumed("notifier") - base.consumed("notifier") >= EVENTS_PER_ENTITY * n
        and all(
            now.consumed(s) - base.consumed(s) >= n * len(topics) for s, topics in CONSUMES.items()
        )
        and all(now.pending(s) == 0 for s in season.urls)
    )


async def run_season(
    client: httpx.AsyncClient, bootstrap: str, season: Season, concurrency: int
) -> tuple[float, Scrape]:
    """The season: returns its wall time and the metrics at its end."""
    n, urls = len(season.codes), season.urls
    bureau, verifier = token("regulator"), token("verifier", agency=AGENCY)
    entity_tokens = {code: token("entity", credit_code=code) for code in season.codes}
    season.stage = dict.fromkeys(season.codes, "queued")

    ready = asyncio.Event()
    listener = asyncio.create_task(listen(bootstrap, season.arrived, ready))
    await asyncio.wait_for(ready.wait(), timeout=60)
    season.baseline = await scrape(client, urls)
    cpu_client = time.process_time()

    started = time.perf_counter()
    upload_rtt, registration = await register_roster(client, season)
    await import_opening_balances(client, season)

    season.phase = "entity flows"
    gate = asyncio.Semaphore(concurrency)
    tasks = [
        asyncio.create_task(
            entity_flow(client, season, gate, code, entity_tokens[code], bureau, verifier)
        )
        for code in season.codes
    ]
    try:
        finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in finished:
            if (error := task.exception()) is not None:
                raise error
    finally:
        for task in tasks:
            task.cancel()
    flows_done = time.perf_counter() - started

    season.phase = "waiting until every service has consumed everything"
    while True:
        end = await scrape(client, urls)
        if season_done(season, end, n):
            break
        await asyncio.sleep(0.1)
    wall = time.perf_counter() - started
    cpu_client = time.process_time() - cpu_client

    # Everything was consumed downstream, so the listener has (or is about to have) it all.
    for _ in range(200):  # 10 s at most
        if all(len(season.arrived[t]) >= len(season.committed[t]) for t in WATCHED):
            break
        await asyncio.sleep(0.05)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)

    report_season(season, wall, flows_done, upload_rtt, registration, end, cpu_client)
    return wall, end


def report_season(
    season: Season,
    wall: float,
    flows_done: float,
    upload_rtt: float,
    registration: float,
    end: Scrape,
    cpu_client: float,
) -> None:
    n = len(season.codes)
    events = EVENTS_PER_ENTITY * n
    base = season.baseline
    assert base is not None
    print()
    line("season wall time (CSV upload -> all consumed)", f"{wall:8.1f} s")
    line("  of which: CSV upload -> last surrender reply", f"{flows_done:8.1f} s")
    line(
        f"domain events end to end ({EVENTS_PER_ENTITY}*N / wall)",
        f"n={events:<7} {events / wall:9.1f} events/s",
    )
    line("registration (CSV upload -> import done)", f"n={n:<7} {n / registration:9.1f} rows/s")
    line("  POST /roster/imports (HTTP round trip)", f"{upload_rtt * 1000:8.1f} ms")

    print("\nHTTP steps (round trip of the successful request; rate over the step's span)")
    for step, samples in season.samples.items():
        span = max(e for _, e in samples) - min(s for s, _ in samples)
        rate = len(samples) / span if span > 0 else float("nan")
        retries = f"  retries={season.retries[step]}" if season.retries[step] else ""
        line(
            f"  {step}",
            f"n={len(samples):<7} {rate:8.1f}/s  {spread(e - s for s, e in samples)}{retries}",
        )

    print("\nHTTP reply (commit) -> event on its topic (first arrival per key)")
    overall: list[float] = []
    for topic in WATCHED:
        sent, seen = season.committed[topic], season.arrived[topic]
        lags = [seen[key] - at for key, at in sent.items() if key in seen]
        overall += lags
        missing = len(sent) - len(lags)
        ahead = sum(1 for lag in lags if lag < 0)
        note = f"  missing={missing}" if missing else ""
        note += f"  before reply={ahead}" if ahead else ""
        line(f"  -> {topic}", f"n={len(lags):<7} {spread(lags)}{note}")
    line(f"  -> all {len(WATCHED)} topics", f"n={len(overall):<7} {spread(overall)}")

    print("\nCPU per domain event (process_cpu_seconds_total over the season)")
    total = 0.0
    for service in season.urls:
        cpu = end.cpu(service) - base.cpu(service)
        total += cpu
        restarted = end.started(service) != base.started(service)
        note = "  RESTARTED during the season: counters reset" if restarted else ""
        line(f"  {service}", f"{cpu:8.2f} s  {cpu * 1000 / events:7.3f} ms/event{note}")
    line("  total (four services)", f"{total:8.2f} s  {total * 1000 / events:7.3f} ms/event")
    line("  bench client (this process, not in the total)", f"{cpu_client:8.2f} s")

    for service in season.urls:
        again = end.republished(service) - base.republished(service)
        if again:
            line(f"  NOTE {service} outbox republished (lost history)", f"{int(again)} events")
        outcomes = {
            k: v - base.outcomes(service).get(k, 0) for k, v in end.outcomes(service).items()
        }
        odd = {k: int(v) for k, v in outcomes.items() if k != "processed" and v}
        if odd:
            line(f"  NOTE {service} consumed with outcomes", str(odd))


# --- backlog drain and broker ceiling -------------------------------------------------------


async def drain_rate(client: httpx.AsyncClient, bootstrap: str, season: Season, count: int) -> None:
    """How fast one worker (verification) drains a backlog of report.submitted."""
    season.phase = f"backlog drain ({count} report.submitted)"
    verification = {"verification": season.urls["verification"]}
    events = [report_event(DRAIN_SEED + i) for i in range(count)]
    before = (await scrape(client, verification)).consumed("verification")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=1
    )
    await producer.start()
    try:
        started = time.perf_counter()
        sent = [
            await producer.send(event.topic, event.value, key=event.key, headers=event.headers)
            for event in events
        ]
        await producer.flush()
        failed = [
            e
            for e in await asyncio.gather(*sent, return_exceptions=True)
            if isinstance(e, BaseException)
        ]
    finally:
        await producer.stop()
    produced = time.perf_counter() - started
    if failed:
        print(f"ERROR producing the backlog: {len(failed)} sends failed, first: {failed[0]!r}")
        raise StepError("backlog produce")
    clock = time.perf_counter()
    at_clock = (await scrape(client, verification)).consumed("verification") - before
    done = at_clock
    while done < count:
        await asyncio.sleep(0.05)
        done = (await scrape(client, verification)).consumed("verification") - before
    drained = time.perf_counter() - clock
    print("\nBacklog drain by one worker (verification, report.submitted)")
    line(
        "  produce M report.submitted (send all, flush)",
        f"n={count:<7} {produced:8.2f} s  (verification took {int(at_clock)} meanwhile)",
    )
    line(
        "  backlog on the topic -> all consumed",
        f"n={int(count - at_clock):<7} {drained:8.2f} s  "
        f"{(count - at_clock) / drained:9.1f} events/s",
    )
    line(
        "  first send -> all consumed",
        f"n={count:<7} {produced + drained:8.2f} s  {count / (produced + drained):9.1f} events/s",
    )


async def wait_quiet(
    client: httpx.AsyncClient, season: Season, notifier_target: float, limit: float = 300
) -> None:
    """Let the notifier finish the backlog too, so the broker figures have the CPUs alone."""
    season.phase = "notifier catching up on the backlog"
    base = season.baseline
    assert base is not None
    started = time.perf_counter()
    notifier = {"notifier": season.urls["notifier"]}
    while time.perf_counter() - started < limit:
        now = await scrape(client, notifier)
        if now.consumed("notifier") - base.consumed("notifier") >= notifier_target:
            line(
                "  notifier caught up on the backlog after",
                f"{time.perf_counter() - started:8.2f} s",
            )
            return
        await asyncio.sleep(0.1)
    line("  NOTE notifier still behind after", f"{limit:.0f} s; broker figures may be disturbed")


async def broker_ceiling(bootstrap: str, season: Season, count: int) -> float:
    """aiokafka alone against the same broker: produce and consume records of a
    report.submitted's size on a scratch topic. Returns the produce rate."""
    season.phase = f"raw broker ceiling ({count} records on {RAW_TOPIC})"
    partitions = 6
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=RAW_TOPIC, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()
    sample = report_event(DRAIN_SEED - 1)
    size = len(sample.value) + sum(len(k) + len(v) for k, v in sample.headers)
    keys = [f"RAW{i:015d}".encode() for i in range(count)]  # 18 bytes, like a credit code

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=1
    )
    await producer.start()
    try:
        for _ in range(60):  # the new topic's metadata, before the clock
            if await producer.partitions_for(RAW_TOPIC):
                break
            await asyncio.sleep(0.5)
        started = time.perf_counter()
        sent = [
            await producer.send(RAW_TOPIC, sample.value, key=key, headers=sample.headers)
            for key in keys
        ]
        await producer.flush()
        produced = time.perf_counter() - started
        failed = [
            e
            for e in await asyncio.gather(*sent, return_exceptions=True)
            if isinstance(e, BaseException)
        ]
    finally:
        await producer.stop()
    if failed:
        print(f"ERROR raw produce: {len(failed)} sends failed, first: {failed[0]!r}")
        raise StepError("raw produce")

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(RAW_TOPIC, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        received, idle = 0, 0
        while received < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            received += sum(len(messages) for messages in batches.values())
            idle = 0 if batches else idle + 1
            if idle >= 30:
                print(f"ERROR raw consume: stuck at {received}/{count} records for 30 s")
                raise StepError("raw consume")
        consumed = time.perf_counter() - started
    finally:
        await consumer.stop()

    print(f"\nRaw broker ceiling (aiokafka alone, {RAW_TOPIC}, {partitions} partitions)")
    line("  record size (value + headers, key 18 B)", f"{size} B")
    line(
        "  produce (send all, flush; acks=all)",
        f"n={count:<7} {produced:8.2f} s  {count / produced:9.1f} records/s",
    )
    line(
        "  consume from the beginning (no group)",
        f"n={received:<7} {consumed:8.2f} s  {received / consumed:9.1f} records/s",
    )
    return count / produced


# --- running it -----------------------------------------------------------------------------


async def progress(season: Season, every: float = 30) -> None:
    """A line on stderr now and then, so a long run shows where it is."""
    started = time.perf_counter()
    while True:
        await asyncio.sleep(every)
        stages = Counter(season.stage.values())
        where = ", ".join(f"{s}={stages[s]}" for s in STAGES if stages[s])
        consumed = ""
        with contextlib.suppress(Exception):
            async with httpx.AsyncClient(timeout=5) as client:
                now = await scrape(client, season.urls)
            consumed = "; consumed " + ", ".join(
                f"{name} {int(now.consumed(name))} (outbox {int(now.pending(name))})"
                for name in season.urls
            )
        print(
            f"[{time.perf_counter() - started:6.0f} s] {season.phase}; {where}{consumed}",
            file=sys.stderr,
            flush=True,
        )


async def pending_report(season: Season) -> None:
    """What is still pending, printed on a timeout or an error."""
    print(f"\nPENDING in phase: {season.phase}", flush=True)
    if season.stage:
        stages = Counter(season.stage.values())
        line("  entities per step", ", ".join(f"{s}={stages[s]}" for s in STAGES if stages[s]))
    base, n = season.baseline, len(season.codes)
    async with httpx.AsyncClient(timeout=10) as client:
        if season.import_id:
            reply = await client.get(
                f"{season.urls['registry']}/roster/imports/{season.import_id}",
                headers=token("regulator"),
            )
            line("  roster import", reply.text[:300])
        scrapes: dict[str, Scrape] = {}
        for service, url in season.urls.items():
            with contextlib.suppress(StepError):
                scrapes[service] = await scrape(client, {service: url})
    for service, now in scrapes.items():
        consumed = now.consumed(service) - (base.consumed(service) if base else 0)
        topics = CONSUMES.get(service)
        wanted = n * len(topics) if topics else EVENTS_PER_ENTITY * n
        line(
            f"  {service}",
            f"consumed {int(consumed)}/{wanted} ({', '.join(topics or ['all topics'])}), "
            f"outcomes {now.outcomes(service)}, outbox pending {int(now.pending(service))}",
        )
        if again := now.republished(service):
            line("", f"  outbox republished (broker said to have lost history): {int(again)}")


async def measure(
    bootstrap: str, urls: dict[str, str], args: argparse.Namespace, season: Season
) -> None:
    pool = httpx.Limits(
        max_connections=args.concurrency + 8, max_keepalive_connections=args.concurrency + 8
    )
    async with httpx.AsyncClient(timeout=60, limits=pool) as client:
        wall, _ = await run_season(client, bootstrap, season, args.concurrency)
        await drain_rate(client, bootstrap, season, args.drain_events)
        await wait_quiet(client, season, EVENTS_PER_ENTITY * len(season.codes) + args.drain_events)
    raw_rate = await broker_ceiling(bootstrap, season, args.raw_records)
    season_rate = EVENTS_PER_ENTITY * len(season.codes) / wall
    print()
    line(
        "season domain events/s ÷ raw produce records/s",
        f"{season_rate:.1f} / {raw_rate:.1f} = {100 * season_rate / raw_rate:.2f} %",
    )
    season.phase = "finished"


async def watchdog(season: Season, stall: float, every: float = 5) -> None:
    """Returns once the platform has made no progress for `stall` seconds: no HTTP step
    succeeded and no service consumed a new event (copies of old ones do not count)."""
    last: Any = None
    since = time.perf_counter()
    while True:
        await asyncio.sleep(every)
        now = time.perf_counter()
        if season.phase.startswith(("starting", "raw", "finished")):
            last, since = None, now
            continue
        consumed: Any = None
        with contextlib.suppress(Exception):
            async with httpx.AsyncClient(timeout=5) as client:
                scraped = await scrape(client, season.urls)
            consumed = tuple(scraped.consumed(name) for name in season.urls)
        signature = (season.phase, sum(len(v) for v in season.samples.values()), consumed)
        if signature != last:
            last, since = signature, now
        elif now - since >= stall:
            return


async def run(bootstrap: str, urls: dict[str, str], args: argparse.Namespace) -> int:
    codes = [make_credit_code(ENTITY_SEED + i) for i in range(args.entities)]
    season = Season(urls=urls, codes=codes)
    work = asyncio.create_task(measure(bootstrap, urls, args, season))
    ticker = asyncio.create_task(progress(season))
    dog = asyncio.create_task(watchdog(season, args.stall))
    finished, _ = await asyncio.wait(
        {work, dog}, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
    )
    for task in (ticker, dog, work):
        task.cancel()
    await asyncio.gather(ticker, dog, work, return_exceptions=True)
    if work in finished:
        try:
            work.result()
            return 0
        except StepError as error:
            print(f"\nSTOPPED: step {error} failed (see the error above)", flush=True)
        except Exception:
            print("\nSTOPPED: unexpected error", flush=True)
            traceback.print_exc()
    elif dog in finished:
        print(
            f"\nSTALLED: no HTTP step succeeded and no service consumed a new event for "
            f"{args.stall:.0f} s",
            flush=True,
        )
    else:
        print(f"\nTIMEOUT: --timeout {args.timeout:.0f} s reached", flush=True)
    await pending_report(season)
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entities", type=int, default=2000, help="covered entities N")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent entity flows C")
    parser.add_argument("--drain-events", type=int, default=5000, help="backlog M to drain")
    parser.add_argument("--raw-records", type=int, default=50000, help="records R, broker alone")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--timeout", type=float, default=1800, help="for the whole measurement")
    parser.add_argument(
        "--stall", type=float, default=180, help="give up after this long without any progress"
    )
    args = parser.parse_args()
    if args.postgres:
        os.environ.setdefault(
            "CARBON_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        )
        database = Database.for_test()
    else:
        database = Database(url=None, schema_prefix="")
    var_dir = Path(tempfile.mkdtemp(prefix="carbon-season-"))
    line("entities N", str(args.entities))
    line("concurrent entity flows C", str(args.concurrency))
    line("database", "postgresql" if database.url else "sqlite")
    line("CPUs", str(os.cpu_count()))
    line("load average (1, 5, 15 min) at the start", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    line("var dir (logs under log/)", str(var_dir))
    started = time.perf_counter()
    with running_platform(var_dir, database) as platform:
        CARBON_UP_OUTPUT.append(platform.output)
        line(
            "carbon up: start to all four services ready", f"{time.perf_counter() - started:8.1f} s"
        )
        code = asyncio.run(run(platform.bootstrap, platform.urls, args))
    sys.exit(code)


if __name__ == "__main__":
    main()
