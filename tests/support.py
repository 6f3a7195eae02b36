"""Test harness: the real embedded broker, real databases, service processes, and a subscriber
that knows only the published contracts."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from carbon_contracts.catalogue import catalogue
from carbon_contracts.events import EVENT_MODELS, Payload, ReportLine, ReportSubmitted
from carbon_contracts.resources import contract_path
from carbon_platform.auth import Role, issue_token
from carbon_platform.broker import create_topics, read_to_end, start_tansu, stop_process
from carbon_platform.codec import Outgoing, encode
from carbon_platform.context import ServiceDefinition
from carbon_platform.migrations import migrate
from carbon_platform.settings import Settings
from registry.domain.credit_code import make_credit_code

REPO = Path(__file__).resolve().parents[1]
JWT_SECRET = "test-secret-" + "x" * 32


EXAMPLE_FILES = sorted(contract_path("events").glob("*/examples/*.json"))
STORY = "pudong-chemicals-2024.json"
"""The example every event type of one entity's cycle shares (contracts/README.md)."""


def load_example(path: Path) -> Payload:
    event = path.parent.parent.name
    return EVENT_MODELS[event].model_validate(json.loads(path.read_text(encoding="utf-8")))


def example(event: str) -> Payload:
    """The event's example from the shared story, else its first example."""
    paths = [p for p in EXAMPLE_FILES if p.parent.parent.name == event]
    return load_example(next((p for p in paths if p.name == STORY), paths[0]))


LISTEN_PORTS = range(20_000, 32_000)
"""Where tests let servers listen: below Linux's ephemeral range (32768-60999), so that no
outgoing connection takes a port between the check and the bind, and no probe of a port nobody
listens on yet can meet itself (a TCP self-connect)."""


def free_port() -> int:
    while not _is_free(port := random.choice(LISTEN_PORTS)):
        pass
    return port


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str, every: float = 0.1
) -> Any:
    """Poll with a deadline (never a bare sleep); returns the first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class Broker:
    """An embedded Tansu broker that a test may stop and start again on the same port (it comes
    back empty, as the embedded broker does), with the catalogue's topics."""

    log_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, topics: bool = True) -> Broker:
        self.process = start_tansu(self.port, self.log_dir / "broker.log")
        if topics:
            asyncio.run(create_topics(self.bootstrap, catalogue()))
        return self

    def kill(self) -> None:
        """SIGKILL: the broker vanishes with everything it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@contextmanager
def embedded_broker(log_dir: Path) -> Iterator[str]:
    """A fresh in-memory Tansu broker with the catalogue's topics."""
    broker = Broker(log_dir).start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@dataclass
class Database:
    """Where a test's services keep their state: PostgreSQL schemas when
    CARBON_TEST_DATABASE_URL is set (CI), SQLite files otherwise."""

    url: str | None
    schema_prefix: str

    @classmethod
    def for_test(cls) -> Database:
        return cls(
            url=os.environ.get("CARBON_TEST_DATABASE_URL"),
            schema_prefix=f"t{uuid.uuid4().hex[:10]}_",
        )

    def env(self, service: str) -> dict[str, str]:
        if not self.url:
            return {}
        return {
            "CARBON_DATABASE_URL": self.url,
            "CARBON_DATABASE_SCHEMA": f"{self.schema_prefix}{service}",
        }

    def query(self, var_dir: Path, service: str, sql: str, **params: Any) -> list[Any]:
        """Rows of a service's own database (tests may read it; services never do)."""

        async def rows() -> list[Any]:
            if self.url:
                schema = f"{self.schema_prefix}{service}"
                engine = create_async_engine(
                    self.url, connect_args={"server_settings": {"search_path": schema}}
                )
            else:
                engine = create_async_engine(f"sqlite+aiosqlite:///{var_dir / service}.db")
            try:
                async with engine.connect() as conn:
                    return list(await conn.execute(text(sql), params))
            finally:
                await engine.dispose()

        return asyncio.run(rows())

    def drop(self, services: list[str]) -> None:
        if self.url:
            asyncio.run(self._drop(services))

    async def _drop(self, services: list[str]) -> None:
        engine = create_async_engine(self.url or "")
        async with engine.begin() as conn:
            for service in services:
                await conn.execute(
                    text(f'DROP SCHEMA IF EXISTS "{self.schema_prefix}{service}" CASCADE')
                )
        await engine.dispose()


@asynccontextmanager
async def migrated_schema(
    service: ServiceDefinition, var_dir: Path, **settings: Any
) -> AsyncIterator[Settings]:
    """A service's own schema on the test database (PostgreSQL when CARBON_TEST_DATABASE_URL is
    set, else an SQLite file in `var_dir`), migrated as the service does at start; its settings,
    with any `settings` given; dropped afterwards."""
    database = Database.for_test()
    configured = Settings(
        service=service.name,
        jwt_secret=SecretStr(JWT_SECRET),
        var_dir=var_dir,
        database_url=database.url,
        database_schema=f"{database.schema_prefix}{service.name}",
        **settings,
    )
    await asyncio.to_thread(
        migrate,
        url=configured.resolved_database_url(),
        schema=configured.resolved_schema(),
        migrations_dir=service.migrations_dir,
    )
    try:
        yield configured
    finally:
        await asyncio.to_thread(database.drop, [service.name])


def metric(body: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in a /metrics body matching the labels."""
    total = 0.0
    for line in body.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name != name:
            continue
        if all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
            total += float(value)
    return total


@dataclass
class ServiceProcess:
    """One service as `python -m <service>`, as it runs in production."""

    name: str
    bootstrap: str
    var_dir: Path
    database: Database
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    instance: str = ""  # a second instance of the service on the same database and broker

    @property
    def log_path(self) -> Path:
        return self.var_dir / f"{self.name}{'-' + self.instance if self.instance else ''}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.var_dir / f'{self.name}.db'}"

    @property
    def schema(self) -> str | None:
        return f"{self.database.schema_prefix}{self.name}" if self.database.url else None

    def start(self, *, wait: bool = True) -> ServiceProcess:
        env = {
            **os.environ,
            "CARBON_KAFKA_BOOTSTRAP": self.bootstrap,
            "CARBON_VAR_DIR": str(self.var_dir),
            "CARBON_HTTP_PORT": str(self.port),
            "CARBON_JWT_SECRET": JWT_SECRET,
            "CARBON_LOG_FORMAT": "json",
            **self.database.env(self.name),
            **({"CARBON_INSTANCE_ID": self.instance} if self.instance else {}),
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.name], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health/ready", timeout=1) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=timeout, what=f"{self.name} ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final offset commit."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching the labels, read from /metrics."""
        return metric(httpx.get(f"{self.url}/metrics", timeout=5).text, name, **labels)

    def scalar(self, sql: str) -> Any:
        """Read the service's own database directly (tests may; services never do)."""

        async def query() -> Any:
            connect_args = {"server_settings": {"search_path": self.schema}} if self.schema else {}
            engine = create_async_engine(self.database_url, connect_args=connect_args)
            try:
                async with engine.connect() as conn:
                    return (await conn.execute(text(sql))).scalar()
            finally:
                await engine.dispose()

        return asyncio.run(query())


def token(
    role: str,
    *,
    credit_code: str | None = None,
    agency: str | None = None,
    district: str | None = None,
) -> dict[str, str]:
    """Authorization header with a token signed like the services' own."""

    settings = Settings(jwt_secret=SecretStr(JWT_SECRET))
    value = issue_token(
        settings,
        role=cast(Role, role),
        subject=f"test-{role}",
        now=datetime.now(UTC),
        credit_code=credit_code,
        agency=agency,
        district=district,
    )
    return {"Authorization": f"Bearer {value}"}


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def json(self) -> Any:
        return json.loads(self.value or b"null")


def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Everything on a topic right now, from the beginning, without joining a group."""

    async def read() -> list[Record]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p) for p in range(catalogue().topic(topic).partitions)
            ]
            found = await read_to_end(consumer, partitions)
        finally:
            await consumer.stop()
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers))
            for m in sorted(found, key=lambda m: (m.partition, m.offset))
        ]

    return asyncio.run(read())


def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
) -> None:
    """Records written straight to a topic, as another system (or a forger) would."""

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=False,
            acks="all",
            max_request_size=16 * 1024 * 1024,  # outsiders may write what the broker takes
        )
        await producer.start()
        try:
            for key, value, headers in records:
                await producer.send_and_wait(topic, value=value, key=key, headers=headers)
        finally:
            await producer.stop()

    asyncio.run(send())


PORTS = {"reporting": 8001, "verification": 8002, "registry": 8003, "notifier": 8004}


@dataclass
class Platform:
    """The whole stack as `carbon up` runs it, on free ports."""

    bootstrap: str
    urls: dict[str, str]  # the first instance of each service
    process: subprocess.Popen[bytes]
    output: Path
    instances: dict[str, list[str]]  # every instance of each service
    var_dir: Path


def _port_offset(instances: int = 1) -> int:
    """An offset that moves all four service ports (of every instance) onto free ones."""
    while True:
        offset = free_port() - min(PORTS.values())
        ports = [port + offset + 10 * n for port in PORTS.values() for n in range(instances)]
        if max(ports) < LISTEN_PORTS.stop and all(_is_free(port) for port in ports):
            return offset


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def running_platform(
    var_dir: Path, database: Database, *, instances: int = 1
) -> Iterator[Platform]:
    """`carbon up` with its own broker, as a user starts it; Ctrl-C (SIGINT) at the end, which
    must stop everything cleanly. With `instances`, that many of each service."""
    kafka_port, offset = free_port(), _port_offset(instances)
    env = {**os.environ, "CARBON_JWT_SECRET": JWT_SECRET}
    env.pop("CARBON_KAFKA_BOOTSTRAP", None)
    command = [
        sys.executable, "-m", "carbon_platform.cli", "up", "--kafka-port", str(kafka_port),
        "--port-offset", str(offset), "--var-dir", str(var_dir), "--ready-timeout", "150",
        "--instances", str(instances),
    ]  # fmt: skip
    if database.url:
        env["CARBON_DATABASE_URL"] = database.url
        command += ["--schema-prefix", database.schema_prefix]
    output = var_dir / "carbon-up.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )

    def up() -> bool:
        if process.poll() is not None:
            logs = "\n".join(p.read_text()[-3000:] for p in sorted(var_dir.rglob("*.log")))
            raise AssertionError(f"carbon up exited: {output.read_text()}\n{logs}")
        return b"Ctrl-C stops everything" in output.read_bytes()

    urls = {name: f"http://127.0.0.1:{port + offset}" for name, port in PORTS.items()}
    every = {
        name: [f"http://127.0.0.1:{port + offset + 10 * n}" for n in range(instances)]
        for name, port in PORTS.items()
    }
    try:
        wait_until(up, timeout=180, what="carbon up", every=0.5)
        yield Platform(f"127.0.0.1:{kafka_port}", urls, process, output, every, var_dir)
    finally:
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        database.drop(list(PORTS))


@contextmanager
def running_service(
    name: str, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, ServiceProcess]]:
    """One service on its own fresh broker and database: (bootstrap, service)."""
    database = Database.for_test()
    with embedded_broker(tmp_path) as bootstrap:
        service = ServiceProcess(name, bootstrap, tmp_path, database, extra_env or {}).start()
        try:
            yield bootstrap, service
        finally:
            service.stop()
            database.drop([name])


def report_event(seed: int) -> Outgoing:
    """A valid `report.submitted` (1000 GJ of heat: 60.000 t) of entity number `seed`, as the
    reporting service would publish it."""
    payload = ReportSubmitted(
        credit_code=make_credit_code(seed),
        compliance_year=2024,
        report_id=uuid.uuid4(),
        factor_table="shanghai-default-2024.1",
        lines=[
            ReportLine(
                source="heat",
                activity=Decimal(1000),
                unit="GJ",
                factor=Decimal("0.06"),
                emissions=Decimal("60.000"),
            )
        ],
        total_emissions=Decimal("60.000"),
        submitted_at=datetime.now(UTC),
    )
    return encode(payload, source="/carbon/reporting", time=datetime.now(UTC))


@contextmanager
def running_prometheus(
    tmp_path: Path,
    targets: Mapping[str, str | list[str]],
    *,
    scrape_interval: str | None = None,
    alertmanager: str | None = None,
) -> Iterator[str]:
    """A real Prometheus with deploy/prometheus as shipped (config and alert rules), its jobs
    pointed at `targets` (job -> the URL of a service instance, or a list of them, each scraped
    as its own instance) in place of the shipped service discovery; yields its API base URL.
    The deployed intervals unless `scrape_interval` speeds scraping and evaluation up. Alerts
    go to the Alertmanager at the URL `alertmanager`, else nowhere."""
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    config.pop("alerting", None)  # the shipped one names the compose Alertmanager
    if alertmanager:
        manager = {"static_configs": [{"targets": [alertmanager.split("//")[-1]]}]}
        config["alerting"] = {"alertmanagers": [manager]}
    if scrape_interval:
        config["global"].update(
            scrape_interval=scrape_interval,
            scrape_timeout=scrape_interval,
            evaluation_interval=scrape_interval,
        )
    config["rule_files"] = [str(REPO / "deploy/prometheus/alerts.yml")]
    config["scrape_configs"] = [
        {
            **{key: value for key, value in job.items() if not key.endswith("_sd_configs")},
            "static_configs": [{"targets": _scrape_targets(targets[job["job_name"]])}],
        }
        for job in config["scrape_configs"]
        if job["job_name"] in targets
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        process.terminate()
        process.wait(20)


def _scrape_targets(urls: str | list[str]) -> list[str]:
    """host:port of each service URL, as a static_configs target."""
    return [
        url.split("//", 1)[1].split("/", 1)[0]
        for url in ([urls] if isinstance(urls, str) else urls)
    ]


def prometheus_query(api: str, promql: str) -> list[dict[str, Any]]:
    """An instant query's result; empty while Prometheus is not answering yet."""
    try:
        reply = httpx.get(f"{api}/query", params={"query": promql}, timeout=2)
    except httpx.TransportError:
        return []
    if reply.status_code != 200:  # 503 while Prometheus is still starting
        return []
    result: list[dict[str, Any]] = reply.json()["data"]["result"]
    return result


async def compliance_cycle(
    client: httpx.AsyncClient, url: Callable[[str], str], code: str, *, district: str = "pudong"
) -> dict[str, Any]:
    """One entity through the cycle over HTTP, as in the README walk (CYCLE_COMMANDS commands):
    register, open the account, the Bureau imports the 60 allowances it holds from before,
    report 60.000 t, assign the lot's agency, record the site visit, approve with the verified
    lines (recomputed: 60.000 t), finalise without re-verification, surrender 60. (The year's
    allocation waits for verification to close for every entity: a test of one entity's cycle
    surrenders what it held.) `url(service)` chooses the instance to call each time. Steps that
    wait on another service's events (reporting learns the roster, verification opens the case,
    the registry records the final figure) are retried until that event has been handled.
    Returns the surrender reply."""
    regulator, entity = token("regulator"), token("entity", credit_code=code)
    verifier = token("verifier", agency=CYCLE_AGENCY)

    async def until(request: Callable[[], Any], done: Callable[[httpx.Response], bool]) -> Any:
        # By the clock, not a count of tries: after a broker loss every consumer reads its topics
        # again from the start (the inbox skips what it had), which takes a loaded machine well
        # over a minute; an event that never arrives still fails the cycle.
        deadline = time.monotonic() + 180
        while True:
            reply = await request()
            if done(reply):
                return reply
            if time.monotonic() > deadline:
                raise AssertionError(f"{code}: {reply.status_code} {reply.text}")
            await asyncio.sleep(0.1)

    def created(reply: httpx.Response) -> bool:
        assert reply.status_code in (201, 404, 409), reply.text
        return reply.status_code == 201

    async def ok(service: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
        reply = await client.post(f"{url(service)}{path}", headers=headers, json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()

    registration = {
        "credit_code": code,
        "name": "Cycle Ltd",
        "district": district,
        "sector": "chemicals",
        "compliance_year": 2024,
    }
    reply = await client.post(f"{url('registry')}/entities", headers=regulator, json=registration)
    assert reply.status_code == 201, reply.text
    reply = await client.post(f"{url('registry')}/entities/{code}/account", headers=entity)
    assert reply.status_code == 201, reply.text
    reply = await client.post(
        f"{url('registry')}/opening-balances",
        headers={**regulator, "content-type": "text/csv"},
        content=f"credit_code,compliance_year,held\n{code},2024,60\n",
    )
    assert reply.status_code == 200 and reply.json()["applied"] == 1, reply.text
    lines = [{"source": "heat", "activity": "1000"}]
    report = {"compliance_year": 2024, "lines": lines}
    await until(
        lambda: client.post(f"{url('reporting')}/reports", headers=entity, json=report), created
    )
    cases = await until(
        lambda: client.get(f"{url('verification')}/cases", headers=entity),
        lambda reply: bool(reply.json()),
    )
    case = f"/cases/{cases.json()[0]['case_id']}"

    def assigned(reply: httpx.Response) -> bool:
        # Verification joins the roster when assigning: retried until entity.registered is there.
        unknown = reply.status_code == 409 and reply.json()["error"]["code"] == "entity_unknown"
        assert reply.status_code == 200 or unknown, reply.text
        return reply.status_code == 200

    assignment = {"agency_id": CYCLE_AGENCY}
    await until(
        lambda: client.post(
            f"{url('verification')}{case}/assign", headers=regulator, json=assignment
        ),
        assigned,
    )
    visit = {"visited_on": "2025-04-20", "findings": "meters and invoices agree"}
    await ok("verification", f"{case}/site-visit", verifier, visit)
    await ok("verification", f"{case}/approve", verifier, {"lines": lines})
    await ok("verification", f"{case}/finalise", regulator)
    surrendered = await until(
        lambda: client.post(
            f"{url('registry')}/entities/{code}/surrenders",
            headers=entity,
            json={"compliance_year": 2024, "allowances": 60},
        ),
        created,
    )
    result: dict[str, Any] = surrendered.json()
    return result


CYCLE_AGENCY = "sh-verify-01"
"""The agency of the policy's tender lot for chemicals, the sector compliance_cycle registers."""
CYCLE_COMMANDS = 10
"""Commands one compliance_cycle sends (retries of a step that waits on an event not counted)."""
CYCLE_TOPICS = (
    "entity.registered",
    "account.opened",
    "report.submitted",
    "verification.assigned",
    "verification.approved",
    "verification.finalised",
    "surrender.completed",
    "preallocation.issued",
)
"""The topics one compliance_cycle publishes one event each to."""


def cycle_notices(notifier: str, codes: Collection[str]) -> int:
    """How many of their cycles' events (CYCLE_TOPICS, not the deadline notices: by the real
    clock every entity is also overdue) the notifier has told these entities of."""
    told = 0
    for event_type in CYCLE_TOPICS:
        notes = httpx.get(
            f"{notifier}/notifications",
            headers=token("regulator"),
            params={"recipient_type": "entity", "event_type": event_type, "limit": 1000},
            timeout=10,
        ).json()
        told += sum(1 for note in notes if note["credit_code"] in codes)
    return told


def service_pids(var_dir: Path, service: str) -> list[int]:
    """The processes of a service that `carbon up` started with this var dir."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        running = [arg for arg in cmdline if arg]
        if running[-2:] == [b"-m", service.encode()] and (
            f"CARBON_VAR_DIR={var_dir}".encode() in environ
        ):
            pids.append(int(proc.name))
    return pids


def broker_pid(bootstrap: str) -> int:
    """The embedded broker listening at `bootstrap`."""
    wanted = f"tcp://{bootstrap}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"broker" in cmdline and wanted in cmdline:
                return int(proc.name)
    raise AssertionError(f"no broker process listens at {bootstrap}")
