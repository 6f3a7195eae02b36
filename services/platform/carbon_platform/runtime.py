"""Runs one service process: migrations, then a Faust worker that also serves the HTTP API and
relays the outbox, all on one event loop (so a commit can wake the relay at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import faust
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from faust.transport.drivers import aiokafka as aiokafka_driver
from mode import Service

from carbon_contracts.catalogue import catalogue
from carbon_contracts.policy import load_policy
from carbon_platform import metrics
from carbon_platform.clock import Clock
from carbon_platform.codec import RawMessage
from carbon_platform.consumer import EventConsumer
from carbon_platform.context import Handler, ServiceContext, ServiceDefinition
from carbon_platform.db import make_engine
from carbon_platform.dlq import dead_letter_router
from carbon_platform.http import create_api
from carbon_platform.logs import configure_logging
from carbon_platform.migrations import migrate
from carbon_platform.outbox import OutboxRelay
from carbon_platform.settings import Settings

log = logging.getLogger(__name__)


def load_settings(definition: ServiceDefinition) -> Settings:
    settings = Settings(service=definition.name)
    if not settings.http_port:
        settings = settings.model_copy(update={"http_port": definition.port})
    return settings


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes fetch_max_wait_ms=1500. A broker that holds a fetch for its whole
        # wait (Tansu does, on multi-partition fetches) then delays every event by up to 1.5s.
        consumer._fetch_max_wait_ms = cast(CarbonApp, self.app).fetch_max_wait_ms
        return consumer


class _Consumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(aiokafka_driver.Transport):
    Consumer = _Consumer


class CarbonApp(faust.App):
    """Faust's app with the consumer's fetch wait under our control."""

    def __init__(self, app_id: str, *, fetch_max_wait_ms: int, **options: Any) -> None:
        super().__init__(app_id, **options)
        self.fetch_max_wait_ms = fetch_max_wait_ms

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def make_faust_app(settings: Settings) -> faust.App:
    brokers = [f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")]
    app_id = f"{settings.group_prefix}-{settings.service}"
    return CarbonApp(
        app_id,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        # Faust keeps a little local state; under var/, not in the working directory.
        datadir=str(settings.var_dir / f"{app_id}-data"),
        broker=brokers,
        # Authoritative state lives in the database, never only in a Faust table.
        store="memory://",
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        topic_replication_factor=catalogue().replication_factor,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        broker_max_poll_records=settings.kafka_max_poll_records,
        producer_acks=-1,
    )


def subscribe(app: faust.App, consumer: EventConsumer, topics: list[str]) -> None:
    """One agent over all the service's topics: per-partition order is kept, and every record
    goes through the consumer, which never lets an exception reach Faust."""

    @app.agent(app.topic(*topics), name="consume")
    async def consume(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            await consumer.handle(
                RawMessage(
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=message.key,
                    value=message.value,
                    headers=_header_list(message.headers),
                )
            )


def _header_list(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(name, value or b"") for name, value in items]


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The Faust worker owns the process signals and stops this server itself.
        yield


class HttpService(Service):
    def __init__(self, api: FastAPI, *, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        config = uvicorn.Config(api, host=host, port=port, log_config=None, access_log=False)
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("HTTP server stopped while starting")
            await asyncio.sleep(0.02)

    async def on_stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


class RelayService(Service):
    def __init__(self, relay_factory: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._relay_factory = relay_factory
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None

    @Service.task
    async def _run(self) -> None:
        self.producer, self.relay = await self._relay_factory()
        await self.relay.run()

    async def on_stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


class ServiceWorker(faust.Worker):
    """Faust's worker, remembering when the app has joined its group and is processing."""

    started_up = False

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self.started_up = True
        log.info("worker ready")

    @property
    def processing(self) -> bool:
        return self.started_up and not self.app.rebalancing


def run_service(definition: ServiceDefinition) -> None:
    settings = load_settings(definition)
    configure_logging(definition.name, level=settings.log_level, fmt=settings.log_format)
    policy = load_policy(settings.policy_file)
    migrate(
        url=settings.resolved_database_url(),
        schema=settings.resolved_schema(),
        migrations_dir=definition.migrations_dir,
    )
    engine = make_engine(settings)
    clock = Clock.from_env()
    context = ServiceContext(
        name=definition.name,
        settings=settings,
        engine=engine,
        inbox=definition.inbox,
        outbox=definition.outbox,
        clock=clock,
        policy=policy,
    )
    app = make_faust_app(settings)
    handlers: dict[str, Handler] = {}
    for by_type in definition.handlers.values():
        handlers.update(by_type)
    consumer = EventConsumer(context, handlers)
    if definition.handlers:
        subscribe(app, consumer, list(definition.handlers))

    async def start_relay() -> tuple[AIOKafkaProducer, OutboxRelay]:
        backoff = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                # Tansu rejects idempotent producers; consumers dedupe through their inboxes.
                enable_idempotence=False,
                acks="all",
                linger_ms=1,
            )
            try:
                await producer.start()
            except Exception as error:
                log.warning("broker not reachable for the relay (%s); retrying", error)
                await producer.stop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            relay = OutboxRelay(
                engine=engine, outbox=definition.outbox, producer=producer, clock=clock
            )
            context.relay = relay
            return producer, relay

    relay_service = RelayService(start_relay)

    async def stream_checks() -> dict[str, bool]:
        relay = relay_service.relay
        return {
            "broker": relay is not None and relay.healthy,
            "worker": worker.processing,
            "handlers": not consumer.transient_failure,
            "outbox": relay is not None and relay.oldest_pending_age < settings.outbox_stall_s,
        }

    api = create_api(definition, context)
    api.state.readiness_checks.append(stream_checks)
    api.include_router(
        dead_letter_router(
            bootstrap=settings.kafka_bootstrap, service=definition.name, consumer=consumer
        )
    )
    http = HttpService(api, host=settings.http_host, port=settings.http_port)
    log.info(
        "%s listening on http://%s:%d (kafka %s)",
        definition.name,
        settings.http_host,
        settings.http_port,
        settings.kafka_bootstrap,
    )
    worker = ServiceWorker(
        app,
        http,
        relay_service,
        loglevel=settings.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    metrics.WORKER_READY.set_function(lambda: float(worker.processing))
    wait_for_broker(settings.kafka_bootstrap)
    worker.execute_from_commandline()


def wait_for_broker(bootstrap: str) -> None:
    """Block until a bootstrap server accepts connections, instead of crash-looping."""
    servers = [server.strip().rpartition(":") for server in bootstrap.split(",")]
    backoff = 0.2
    while True:
        for host, _, port in servers:
            try:
                with socket.create_connection((host, int(port)), timeout=2):
                    return
            except OSError:
                pass
        log.warning("no Kafka broker reachable at %s; retrying in %.1fs", bootstrap, backoff)
        time.sleep(backoff)
        backoff = min(backoff * 2, 10.0)
