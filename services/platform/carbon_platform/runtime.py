"""Runs one service process: migrations, then a Faust worker that also serves the HTTP API,
relays the outbox and probes the broker, all on one event loop (so a commit can wake the relay
at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Collection, Iterator, Sequence
from typing import Any, cast

import faust
import uvicorn
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI
from faust.transport.drivers import aiokafka as aiokafka_driver
from mode import Service

from carbon_contracts.catalogue import catalogue
from carbon_contracts.policy import load_policy
from carbon_platform import metrics
from carbon_platform.broker import create_topics
from carbon_platform.clock import Clock
from carbon_platform.codec import RawMessage
from carbon_platform.consumer import LETTER_ID, EventConsumer
from carbon_platform.context import Handler, ServiceContext, ServiceDefinition
from carbon_platform.db import make_engine
from carbon_platform.dlq import dead_letter_router, parked_router
from carbon_platform.http import create_api
from carbon_platform.kafka import client_options, faust_credentials
from carbon_platform.lag import LagWatch
from carbon_platform.logs import configure_logging
from carbon_platform.migrations import migrate
from carbon_platform.outbox import OutboxRelay
from carbon_platform.settings import Settings
from carbon_platform.tracing import configure_tracing

log = logging.getLogger(__name__)


def load_settings(definition: ServiceDefinition) -> Settings:
    settings = Settings(service=definition.name)
    if not settings.http_port:
        settings = settings.model_copy(update={"http_port": definition.port})
    return settings


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust 0.15.3 hard-codes fetch_max_wait_ms=1500 (no setting), and a broker that holds
        # a fetch for its whole wait (Tansu does, on multi-partition fetches) then delays every
        # event by up to 1.5 s. aiokafka 0.14.0 reads this attribute when the consumer starts.
        # Both versions are pinned; tests/integration/test_runtime.py fails if this stops working.
        consumer._fetch_max_wait_ms = cast(CarbonApp, self.app).fetch_max_wait_ms
        return consumer


class _RebalanceListener(aiokafka_driver.ConsumerRebalanceListener):
    async def on_partitions_assigned(self, assigned: Any) -> None:
        # Faust tells a record fetched under an earlier assignment by the group's generation,
        # but a broker that came back empty starts its generations again: a generation can
        # repeat, and a record of the old broker would pass for one of the new. Each assignment
        # of this process gets a number of its own instead.
        app = self._thread.app
        app.consumer_generation_id += 1
        await self._thread.on_partitions_assigned(
            aiokafka_driver.ensure_TPset(assigned), app.consumer_generation_id
        )


class _Consumer(aiokafka_driver.Consumer):
    RebalanceListener = _RebalanceListener

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
        broker_credentials=faust_credentials(settings),
        # Authoritative state lives in the database, never only in a Faust table.
        store="memory://",
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        topic_replication_factor=catalogue().replication_factor,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=catalogue().max_message_bytes,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        broker_max_poll_records=settings.kafka_max_poll_records,
        stream_buffer_maxsize=settings.kafka_max_poll_records * 4,
        producer_acks=-1,
    )


class BatchingService(Service):
    """Hands the worker's records to the consumer a batch at a time.

    The agent takes records off the stream without acknowledging them; this service takes up
    what has arrived (waiting a few milliseconds for more), handles the batch in one transaction
    and only then acknowledges it, so Faust never commits an offset past an unhandled record,
    nor one of an assignment it has since lost.
    """

    def __init__(
        self, consumer: EventConsumer, *, max_records: int, linger_s: float, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._consumer = consumer
        self._max = max_records
        self._linger_s = linger_s
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_records * 2)

    @Service.task
    async def _drain(self) -> None:
        while not self.should_stop:
            batch = [await self.queue.get()]
            deadline = asyncio.get_running_loop().time() + self._linger_s
            while len(batch) < self._max:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            await self.handle(batch)

    async def handle(self, batch: list[Any]) -> None:
        """One batch of the agent's events, in one transaction, then acknowledged."""
        await self._consumer.handle_batch([_raw(event.message) for event in batch])
        for event in batch:
            # A record fetched under an earlier assignment is not acknowledged: Faust forgot
            # its partition's offsets at the rebalance, so this one would be committed as if it
            # were the first, and a broker that came back empty numbers its records from 0
            # again (the group would then skip them). Whoever owns the partition now gets the
            # record again, and the inbox takes it once.
            if event.message.generation_id == event.app.consumer_generation_id:
                event.ack()
            else:
                event.message.acked = True  # done with, so a stop does not wait for it


def subscribe(app: faust.App, batching: BatchingService, topics: list[str]) -> None:
    """One agent over all the service's topics: per-partition order is kept, and every record
    goes through the consumer, which never lets an exception reach Faust."""

    @app.agent(app.topic(*topics), name="consume")
    async def consume(stream: Any) -> None:
        async for event in stream.noack().events():
            await batching.queue.put(event)


def _raw(message: Any) -> RawMessage:
    return RawMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=_header_list(message.headers),
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
        config = uvicorn.Config(
            api,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            # Longer than clients' and proxies' idle timeouts: a client must never send a request
            # on a connection the server is closing (uvicorn's default is 5 s).
            timeout_keep_alive=75,
        )
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


class BrokerProbe:
    """Asks the broker for its metadata every few seconds: proof that it is there (readiness,
    `carbon_broker_up`); a broker that does not answer in time is down for this instance. Also
    reads single records for the relay, which checks the broker still holds what it published."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AIOKafkaConsumer | None = None
        self.up = False

    async def run(self) -> None:
        interval = self._settings.broker_probe_interval_s
        while True:
            try:
                await asyncio.wait_for(self._ask(), self._settings.broker_probe_timeout_s)
                self._set(True)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.up or self._client is None:
                    log.warning("broker probe failed: %r", error)
                self._set(False)
                await self._close()
            await asyncio.sleep(interval)

    def _set(self, up: bool) -> None:
        if up and not self.up:
            log.info("broker reachable at %s", self._settings.kafka_bootstrap)
        self.up = up
        metrics.BROKER_UP.set(float(up))

    async def _ask(self) -> None:
        client = await self._connected()
        await client.topics()  # a metadata round trip

    async def _connected(self) -> AIOKafkaConsumer:
        if self._client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                enable_auto_commit=False,
                fetch_max_wait_ms=100,
                max_partition_fetch_bytes=catalogue().max_message_bytes,
                request_timeout_ms=int(self._settings.broker_probe_timeout_s * 1000),
                **client_options(self._settings),
            )
            try:
                await client.start()
            except BaseException:
                await client.stop()
                raise
            self._client = client
        return self._client

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.stop()

    async def record_at(self, topic: str, partition: int, offset: int) -> str | None:
        """The outbox id of the record the broker holds at this position (its ce_id, or a dead
        letter's `dlq_letter_id`), or None when it holds none there (a new broker, a topic
        created again) or does not answer in time."""
        client = await self._connected()
        if topic not in await client.topics():  # a new broker may not have the topic at all
            return None
        tp = TopicPartition(topic, partition)
        client.assign([tp])
        client.seek(tp, offset)
        wait_ms = int(self._settings.broker_probe_timeout_s * 1000)
        found = await client.getmany(tp, timeout_ms=wait_ms, max_records=1)
        for record in found.get(tp, []):
            if record.offset == offset:
                headers = dict(record.headers)
                # The outbox row's id: a dead letter's own, else the event's ce_id.
                identity = headers.get(LETTER_ID) or headers.get("ce_id", b"")
                return identity.decode(errors="replace")
        return None

    async def stop(self) -> None:
        await self._close()


class SideService(Service):
    """The relay, the broker probe and the service's background tasks, each retried on failure,
    beside the worker."""

    def __init__(self, starters: Sequence[Any], on_stop: Sequence[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._starters = starters
        self._stoppers = on_stop

    async def on_started(self) -> None:
        for starter in self._starters:
            self.add_future(_forever(starter))

    async def on_stop(self) -> None:
        for stopper in self._stoppers:
            with contextlib.suppress(Exception):
                await stopper()


async def _forever(run: Any) -> None:
    """Run a side task; should it end in error, run it again after a pause."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it in 1s", getattr(run, "__qualname__", run))
            await asyncio.sleep(1)


class ServiceWorker(faust.Worker):
    """Faust's worker, remembering when the app has started consuming."""

    started_up = False

    def __init__(self, *services: Any, **options: Any) -> None:
        super().__init__(*services, **options)
        # No terminal spinner: its cursor codes would start the log's first line, and every line
        # of a service's output is a JSON log line.
        self.spinner = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self.started_up = True
        log.info("worker ready")


def run_service(definition: ServiceDefinition) -> None:
    # uvloop: the event loop in C, for the worker, the API and the relay alike.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    settings = load_settings(definition)
    configure_logging(definition.name, level=settings.log_level, fmt=settings.log_format)
    configure_tracing(definition.name, settings.instance, settings.tracing_exporter)
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
        inbox=definition.tables.inbox,
        outbox=definition.tables.outbox,
        clock=clock,
        policy=policy,
    )
    app = make_faust_app(settings)
    handlers: dict[str, Handler] = {}
    for by_type in definition.handlers.values():
        handlers.update(by_type)
    consumer = EventConsumer(context, handlers)
    batching = BatchingService(
        consumer,
        max_records=settings.kafka_max_poll_records,
        linger_s=settings.consume_linger_ms / 1000,
    )
    if definition.handlers:
        subscribe(app, batching, list(definition.handlers))

    owned = {topic.name: topic for topic in catalogue().owned_by(definition.name)}
    probe = BrokerProbe(settings)
    lag = LagWatch(settings, own_topics=list(definition.handlers))

    async def ensure_owned_topics(replace: Collection[str] = ()) -> list[str]:
        return await create_topics(
            settings.kafka_bootstrap,
            catalogue(),
            only=list(owned.values()),
            attempts=1,
            replace=replace,
            **client_options(settings),
        )

    relay = OutboxRelay(
        engine=engine,
        outbox=definition.tables.outbox,
        lease=definition.tables.outbox_lease,
        clock=clock,
        instance=settings.instance,
        topics=owned,
        record_at=probe.record_at,
        ensure_topics=ensure_owned_topics,
        lease_s=settings.outbox_lease_s,
    )
    context.relay = relay

    async def run_relay() -> None:
        relay.producer = await _started_producer(settings)
        await relay.run()

    async def stop_relay() -> None:
        if relay.producer is not None:
            await relay.producer.stop()

    async def stream_checks() -> dict[str, bool]:
        return {
            "broker": probe.up,
            # Started and consuming; a group rebalance is not an outage of this instance.
            "worker": worker.started_up,
            "handlers": not consumer.transient_failure,
            # A standby's outbox is its leader's business; a leader's must not stall.
            "outbox": relay.healthy
            and (not relay.leader or relay.oldest_pending_age < settings.outbox_stall_s),
        }

    api = create_api(
        definition,
        context,
        [
            dead_letter_router(settings=settings, service=definition.name, consumer=consumer),
            parked_router(context),
        ],
    )
    api.state.readiness_checks.append(stream_checks)
    http = HttpService(api, host=settings.http_host, port=settings.http_port)
    side = SideService(
        [
            probe.run,
            run_relay,
            lag.run,
            *(lambda task=task: task(context) for task in definition.background),
        ],
        [probe.stop, stop_relay, lag.stop],
    )
    log.info(
        "%s (instance %s) listening on http://%s:%d (kafka %s)",
        definition.name,
        settings.instance,
        settings.http_host,
        settings.http_port,
        settings.kafka_bootstrap,
    )
    worker = ServiceWorker(
        app,
        batching,
        http,
        side,
        loglevel=settings.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    metrics.WORKER_READY.set_function(lambda: float(worker.started_up and probe.up))
    metrics.RELAY_LEADER.set_function(lambda: float(relay.leader))
    wait_for_broker(settings.kafka_bootstrap)
    worker.execute_from_commandline()


async def _started_producer(settings: Settings) -> AIOKafkaProducer:
    backoff = 0.2
    while True:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            # Tansu rejects idempotent producers; consumers dedupe through their inboxes.
            enable_idempotence=False,
            acks="all",
            linger_ms=1,
            max_request_size=catalogue().max_message_bytes,
            # Within the outbox lease: a send that hangs fails before another instance can take
            # over and send the same rows.
            request_timeout_ms=int(settings.outbox_lease_s * 1000 / 3),
            **client_options(settings),
        )
        try:
            await producer.start()
            return producer
        except Exception as error:
            log.warning("broker not reachable for the relay (%r); retrying", error)
            await producer.stop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


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
