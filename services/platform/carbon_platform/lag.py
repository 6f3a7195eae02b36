"""Consumer lag: how many records each of the platform's consumer groups has still to take up, per
topic and partition, from the broker's committed offsets and end offsets.

Every instance of every service measures every platform group (`<group_prefix>-<service>`), not
only its own: a stopped service commits nothing, so its lag is reported by the services still
running (aggregate with max, never sum, across instances; they all read the same broker).

Which topics a group consumes: the catalogue does not say, and an OffsetFetch for all of a group's
offsets is not answered by the embedded broker, so each round asks every group for the committed
offsets of every domain topic's partitions (one request per group). A group consumes a topic once
it has committed an offset on any of its partitions, or when it is this instance's own group and
subscribes to the topic. Then every partition of the topic counts; a partition without a committed
offset counts from its log start, as the group (auto_offset_reset earliest) will read it. A topic
a group has never committed on is therefore reported only by that group's own running instances.
Under Kafka ACLs a service sees another group's offsets only with Describe on that group
(deploy/README.md, "Consumer lag").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupAuthorizationFailedError

from carbon_contracts.catalogue import catalogue
from carbon_platform import metrics
from carbon_platform.kafka import client_options, group_id, service_principals
from carbon_platform.settings import Settings

log = logging.getLogger(__name__)

LAG_EVERY_S = 5.0


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    lag: int


def lag_of(committed: int | None, earliest: int, end: int) -> int:
    """Records from where the group resumes to the partition's end. Without a committed offset
    (or with one below the log start, its records deleted) the group resumes at the log start.
    Never negative: the embedded broker reports an end below a committed offset (its end offset
    counts only the first record of the last batch), and a group is never ahead of the log."""
    start = earliest if committed is None or committed < 0 else max(committed, earliest)
    return max(0, end - start)


class LagWatch:
    """Measures the lag of every platform consumer group, every LAG_EVERY_S, into the
    `carbon_consumer_lag` gauge. One admin client (committed offsets) and one group-less consumer
    (log start and end offsets) per instance."""

    def __init__(self, settings: Settings, own_topics: Collection[str] = ()) -> None:
        self._settings = settings
        self._partitions = [
            TopicPartition(topic.name, partition)
            for topic in catalogue().domain_topics()
            for partition in range(topic.partitions)
        ]
        # Per group, the topics it is known to consume; only ever grows (a group that committed
        # on a topic still consumes it after the embedded broker restarts empty).
        self.consumed: dict[str, set[str]] = {
            group_id(settings.group_prefix, service): set() for service in service_principals()
        }
        own = group_id(settings.group_prefix, settings.service)
        if own in self.consumed:
            self.consumed[own] |= set(own_topics) & {tp.topic for tp in self._partitions}
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._coordinators: dict[str, int] = {}
        self._shown: set[tuple[str, str, str]] = set()
        self._failing = False
        self._refused: set[str] = set()

    async def run(self) -> None:
        """Background task: the gauge follows the broker, LAG_EVERY_S behind at most. When the
        broker does not answer, this instance drops its figures (logged once) rather than show
        stale ones: the other instances' figures, or none, are what the dashboard then shows."""
        while True:
            try:
                figures = await asyncio.wait_for(self.measure(), LAG_EVERY_S * 2)
                self.show(figures)
                if self._failing:
                    log.info("consumer lag measured again")
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not self._failing:
                    log.warning("consumer lag not measured (%r); its figures are dropped", error)
                self._failing = True
                self.show([])
                await self.stop()
            await asyncio.sleep(LAG_EVERY_S)

    async def measure(self) -> list[PartitionLag]:
        """One look at the broker: the lag of every partition each group consumes."""
        admin, reader = await self._connected()
        committed = {group: await self._readable(admin, group) for group in self.consumed}
        for group, offsets in committed.items():
            self.consumed[group] |= {tp.topic for tp, offset in offsets.items() if offset >= 0}
        consumed = set().union(*self.consumed.values())
        wanted = [tp for tp in self._partitions if tp.topic in consumed]
        if not wanted:
            return []
        earliest = await reader.beginning_offsets(wanted)
        ends = await reader.end_offsets(wanted)
        return [
            PartitionLag(
                group,
                tp.topic,
                tp.partition,
                lag_of(committed[group].get(tp), earliest[tp], ends[tp]),
            )
            for group, topics in self.consumed.items()
            for tp in wanted
            if tp.topic in topics
        ]

    def show(self, figures: list[PartitionLag]) -> None:
        """The gauge equals these figures: series no longer measured are removed."""
        shown = set()
        for figure in figures:
            labels = (figure.group, figure.topic, str(figure.partition))
            metrics.CONSUMER_LAG.labels(*labels).set(figure.lag)
            shown.add(labels)
        for labels in self._shown - shown:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(*labels)
        self._shown = shown

    async def _readable(
        self, admin: AIOKafkaAdminClient, group: str
    ) -> Mapping[TopicPartition, int]:
        """A group's committed offsets, or none where the broker does not let this service see
        them (Kafka's ACLs: OffsetFetch needs Describe on the group)."""
        try:
            return await self._committed(admin, group)
        except GroupAuthorizationFailedError:
            if group not in self._refused:
                log.info(
                    "not allowed to read the offsets of group %s; its lag is not measured here",
                    group,
                )
                self._refused.add(group)
            return {}

    async def _committed(
        self, admin: AIOKafkaAdminClient, group: str
    ) -> Mapping[TopicPartition, int]:
        if group not in self._coordinators:
            self._coordinators[group] = await admin.find_coordinator(group)
        try:
            found = await admin.list_consumer_group_offsets(
                group, self._coordinators[group], partitions=self._partitions
            )
        except Exception:
            del self._coordinators[group]  # it may have moved: ask again next round
            raise
        return {tp: offset.offset for tp, offset in found.items()}

    async def _connected(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._reader is None:
            await self.stop()
            timeout_ms = int(LAG_EVERY_S * 1000)
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._settings.kafka_bootstrap,
                request_timeout_ms=timeout_ms,
                **client_options(self._settings),
            )
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                enable_auto_commit=False,
                request_timeout_ms=timeout_ms,
                **client_options(self._settings),
            )
            self._admin, self._reader = admin, reader
            await admin.start()
            await reader.start()
        return self._admin, self._reader

    async def stop(self) -> None:
        admin, reader = self._admin, self._reader
        self._admin = self._reader = None
        self._coordinators.clear()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.stop()
