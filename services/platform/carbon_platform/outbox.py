"""Transactional outbox and its relay (Debezium outbox / eventuate-tram pattern).

State changes and the events they cause commit together; the relay publishes committed rows in
id order, marks them published, and wakes at once after a commit instead of waiting for a poll.

Several instances of a service share one outbox: the relay that holds the lease publishes, the
others stand by and take over when it lapses, so each row is sent once and in order. A row the
broker can never take (too large) is parked instead of blocking the rows behind it.

The outbox is also the service's durable log. Each published row keeps the partition and offset
the broker gave it. Before it sends anything after a quiet moment or a failed send, and every
few seconds, the relay checks that the last record it published is still where the broker put
it; when it is not (a new
embedded broker: Tansu keeps records in memory only), every topic whose last record is gone has
its history published again, in order, with the original event ids, before anything newer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError, UnknownError
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from carbon_contracts.catalogue import Topic
from carbon_platform import metrics
from carbon_platform.clock import Clock
from carbon_platform.codec import Headers, Outgoing, record_size
from carbon_platform.db import read_only

log = logging.getLogger(__name__)
LEASE = "relay"
# Errors of the record itself: sending it again can never succeed.
_UNPUBLISHABLE = (MessageSizeTooLargeError, RecordTooLargeError)

REFUSALS_BEFORE_REPAIR = 3
"""UnknownErrors in a row from a partition that holds our records before its topic is created
again (at the relay's backoff, about 0.7 s of refusals)."""


async def add_to_outbox(
    conn: AsyncConnection, outbox: Table, events: Sequence[Outgoing], *, at: datetime
) -> None:
    if not events:
        return
    await conn.execute(
        outbox.insert(),
        [
            {
                "event_id": event.event_id,
                "event_type": event.event_type,
                "topic": event.topic,
                "key": event.key,
                "value": event.value,
                "headers": _dump_headers(event.headers),
                "created_at": at,
            }
            for event in events
        ],
    )


def _dump_headers(headers: Headers) -> str:
    return json.dumps([[name, base64.b64encode(value).decode()] for name, value in headers])


def _load_headers(text: str) -> Headers:
    return [(name, base64.b64decode(value)) for name, value in json.loads(text)]


RecordAt = Callable[[str, int, int], Awaitable[str | None]]
"""The ce_id of the record at (topic, partition, offset) on the broker, or None if none is."""


class OutboxRelay:
    """Publishes pending outbox rows while this instance holds the service's relay lease."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        outbox: Table,
        lease: Table,
        clock: Clock,
        instance: str,
        topics: Mapping[str, Topic],
        record_at: RecordAt,
        ensure_topics: Callable[[Collection[str]], Awaitable[object]],
        batch_size: int = 500,
        idle_poll_s: float = 1.0,
        lease_s: float = 10.0,
        history_check_s: float = 5.0,
        quiet_s: float = 0.25,
        linger_s: float = 0.002,
    ) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._outbox = outbox
        self._lease = lease
        self.producer: AIOKafkaProducer | None = None  # set once connected
        self._clock = clock
        self._instance = instance
        self._topics = topics  # the topics this service owns, by name
        self._record_at = record_at
        # Creates the topics of ours the broker lacks, replacing (emptied) those named.
        self._ensure_topics = ensure_topics
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._lease_s = lease_s
        self._history_check_s = history_check_s
        self._quiet_s = quiet_s
        self._last_send_at = 0.0
        self._linger_s = linger_s
        self._wakeup = asyncio.Event()
        self._lease_until = _EPOCH
        self._next_history_check = 0.0
        self._suspect = True  # check before the first send
        self._recovering = False  # send one by one until a batch goes through whole
        self._refusals: dict[tuple[str, int], int] = {}  # UnknownErrors in a row per partition
        # Marks of published rows, (row id, event_id, topic, partition, offset): the newest sent,
        # and the newest sent before the last history check that found everything in place.
        self._last_sent: Any = None
        self._anchor: Any = None
        self.healthy = False
        self.leader = False
        self.oldest_pending_age = 0.0

    def wake(self) -> None:
        """Called after a commit that added outbox rows."""
        self._wakeup.set()

    async def run(self) -> None:
        backoff = 0.1
        try:
            while True:
                try:
                    busy = await self._step()
                    self.healthy = True
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    metrics.RELAY_ERRORS.inc()
                    self.healthy = False
                    self._suspect = True  # the broker may come back without our history
                    self._recovering = True  # and the rows behind a failed send must wait
                    log.warning("outbox relay failed; retrying in %.1fs: %r", backoff, error)
                    with contextlib.suppress(Exception):  # the backlog grows while it lasts
                        await self.update_gauges()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if not busy:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), timeout=self._idle_poll_s)
                        # A moment for the commits that come with this one to join its batch.
                        await asyncio.sleep(self._linger_s)
                    self._wakeup.clear()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release())

    async def _step(self) -> bool:
        """One pass: hold the lease, check the broker still has our history, publish a batch.
        True when there may be more to publish at once."""
        if not await self._hold_lease():
            await self.update_gauges()
            return False
        rows = await self._pending()
        now = asyncio.get_running_loop().time()
        # A broker that lost our history must get it back before anything new. While sends
        # follow each other closely the broker cannot have gone and come back between them
        # unnoticed (a send to a broker that is gone fails: suspect); after a quiet moment it
        # could have, silently (the producer reconnects): check before sending again.
        quiet = now - self._last_send_at >= self._quiet_s
        if self._suspect or now >= self._next_history_check or (rows and quiet):
            if await self._restore_lost_history():
                rows = await self._pending()
            self._next_history_check = now + self._history_check_s
            self._suspect = False
        return await self.publish(rows) == self._batch_size

    async def _hold_lease(self) -> bool:
        """Take or renew the lease when it is a third spent; another instance takes it only once
        it has lapsed, so one relay at a time publishes."""
        now = datetime.now(UTC)
        if self._lease_until - now > timedelta(seconds=self._lease_s * 2 / 3):
            return True
        lease = self._lease
        async with self._engine.begin() as conn:
            taken = await conn.execute(
                update(lease)
                .where(lease.c.name == LEASE)
                .where((lease.c.holder == self._instance) | (lease.c.expires_at < now))
                .values(holder=self._instance, expires_at=now + timedelta(seconds=self._lease_s))
            )
        leader = taken.rowcount == 1
        if leader and not self.leader:
            log.info("this instance now publishes the outbox (lease %s)", self._instance)
            self._last_sent = self._anchor = None  # another instance published meanwhile
        elif self.leader and not leader:
            log.warning("outbox lease lost to another instance; standing by")
        self.leader = leader
        self._lease_until = now + timedelta(seconds=self._lease_s) if leader else _EPOCH
        return leader

    async def _release(self) -> None:
        if not self.leader:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                update(self._lease)
                .where(self._lease.c.name == LEASE)
                .where(self._lease.c.holder == self._instance)
                .values(expires_at=_EPOCH)
            )
        self.leader = False

    async def _pending(self) -> list[Any]:
        outbox = self._outbox
        async with self._reader.connect() as conn:
            return list(
                await conn.execute(
                    select(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .where(outbox.c.parked_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self._batch_size)
                )
            )

    async def publish(self, rows: Sequence[Any]) -> int:
        """Publish pending rows in order; returns how many rows it took up."""
        if not rows:
            self._set_gauges(pending=0, oldest=None)
            return 0
        # Checked against our lease, so that a relay that took over cannot send the same rows.
        budget = (self._lease_until - datetime.now(UTC)).total_seconds() - self._lease_s / 6
        one_by_one = self._recovering
        sent, parked, failure = await asyncio.wait_for(
            self._send(rows, one_by_one=one_by_one), timeout=max(budget, 0.1)
        )
        now = self._clock.now()
        outbox = self._outbox
        async with self._engine.begin() as conn:
            if sent:
                # The SET clause from the parameter names that are columns (executemany).
                await conn.execute(
                    update(outbox).where(outbox.c.id == bindparam("row_id")),
                    [
                        {"row_id": row_id, "partition": p, "offset": o, "published_at": now}
                        for row_id, (p, o) in sent.items()
                    ],
                )
            for row_id, reason in parked.items():
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id == row_id)
                    .values(parked_at=now, park_reason=reason[:500])
                )
        for row in rows:
            if row.id in sent:
                metrics.EVENTS_PUBLISHED.labels(row.topic, row.event_type).inc()
                self._last_sent = (row.id, row.event_id, row.topic, *sent[row.id])
        if sent:
            self._last_send_at = asyncio.get_running_loop().time()
        if failure is not None:
            row, error = failure
            if isinstance(error, UnknownError):
                await self._repair(row)
            raise error  # what was sent is marked; the rest goes again, after a pause
        self._refusals.clear()
        if one_by_one:
            self._recovering = False
        if parked or len(rows) == self._batch_size:  # there may be more: count them
            await self.update_gauges()
        else:
            self._set_gauges(pending=0, oldest=None)
        return len(rows)

    async def _send(
        self, rows: Sequence[Any], *, one_by_one: bool
    ) -> tuple[dict[int, tuple[int, int]], dict[int, str], tuple[Any, BaseException] | None]:
        """Send rows in order: where each row sent landed (partition, offset) by row id, the ids
        to park with why, and the first row the broker failed to take, with its error.

        Normally all at once: aiokafka keeps one batch in flight per partition, so per-key order
        holds while the broker answers. After a failure (and for history published again), one
        by one until a batch goes through whole: a failed send then stops the rows behind it,
        which a batch in flight cannot do, so the order on the broker is kept."""
        assert self.producer is not None, "the relay runs once its producer has started"
        parked: dict[int, str] = {}
        sent: dict[int, tuple[int, int]] = {}
        deliveries: list[tuple[Any, asyncio.Future[Any]]] = []
        failure: tuple[Any, BaseException] | None = None
        for row in rows:
            headers = _load_headers(row.headers)
            limit = self._topics[row.topic].max_message_bytes if row.topic in self._topics else 0
            size = record_size(row.key, row.value, headers)
            if limit and size > limit:
                parked[row.id] = f"{size} bytes exceed max.message.bytes {limit} of {row.topic}"
                continue
            try:
                delivery = await self.producer.send(
                    row.topic, value=row.value, key=row.key, headers=headers
                )
                if one_by_one:
                    landed = await delivery
                    sent[row.id] = (landed.partition, landed.offset)
                else:
                    deliveries.append((row, delivery))
            except _UNPUBLISHABLE as error:
                parked[row.id] = f"{type(error).__name__}: {error}"
            except Exception as error:
                failure = (row, error)
                break
        results = await asyncio.gather(*(d for _, d in deliveries), return_exceptions=True)
        for (row, _), result in zip(deliveries, results, strict=True):
            if isinstance(result, _UNPUBLISHABLE):
                parked[row.id] = f"{type(result).__name__}: {result}"
                log.error(
                    "outbox row %d parked, never to be published: %s",
                    row.id,
                    parked[row.id],
                    extra={
                        "event_id": row.event_id,
                        "event_type": row.event_type,
                        "topic": row.topic,
                        "reason": parked[row.id],
                    },
                )
            elif isinstance(result, BaseException):
                failure = failure or (row, result)
            else:
                sent[row.id] = (result.partition, result.offset)
        return sent, parked, failure

    async def _restore_lost_history(self) -> bool:
        """If the broker no longer holds what we published, mark the history of every topic of
        ours that lost records for publishing again. True if any was.

        Two marks are checked: the last row sent, and the last one sent before the previous
        check (the anchor). A broker that came back empty while a send was waiting for it takes
        that send without an error (the producer reconnects and delivers), so the last row sent
        can be on the new broker; the anchor, sent to the old one, then is not."""
        if self._last_sent is None:
            self._last_sent = await self._newest_published(None)
            if self._last_sent is None:
                return False  # nothing published yet
        gone = [
            mark
            for mark in (self._last_sent, self._anchor)
            if mark is not None and await self._record_at(*mark[2:]) != mark[1]
        ]
        if not gone:
            self._anchor = self._last_sent
            return False
        _, event_id, topic, partition, offset = gone[0]
        log.warning(
            "an event published, %s, is no longer at %s/%d/%d",
            event_id,
            topic,
            partition,
            offset,
            extra={"event_id": event_id, "topic": topic, "partition": partition, "offset": offset},
        )
        # Everything up to the newest mark that is gone may be lost: check each topic's newest
        # row sent by then.
        boundary = max(mark[0] for mark in gone)
        lost = []
        for name in self._topics:
            newest = await self._newest_published(name, up_to=boundary)
            if newest is not None and await self._record_at(*newest[2:]) != newest[1]:
                lost.append(name)
        if lost:
            await self._ensure_topics(())
            await self._publish_again(lost)
            self._recovering = True
        self._last_sent = self._anchor = None
        return bool(lost)

    async def _repair(self, row: Any) -> None:
        """Tansu takes a send to a topic it does not have yet (one in flight as it came back
        empty), then, once the topic is created, refuses every send to that partition with an
        UnknownError. A partition that refuses a row that way and holds none of the rows we
        published to it has nothing of ours to keep; one that holds ours (the send that came
        first was ours) but refuses REFUSALS_BEFORE_REPAIR sends in a row is as spoilt. Either
        way its topic is created again and its history published again (consumers and
        subscribers dedupe on ce_id). Where ACLs apply a service may not delete topics, and this
        fails."""
        topic = self._topics[row.topic]
        partition = DefaultPartitioner()(row.key, list(range(topic.partitions)), None)
        refusals = self._refusals.get((topic.name, partition), 0) + 1
        self._refusals[(topic.name, partition)] = refusals
        newest = await self._newest_published(topic.name, partition=partition)
        holds_ours = newest is not None and await self._record_at(*newest[2:]) == newest[1]
        if holds_ours and refusals < REFUSALS_BEFORE_REPAIR:
            return  # it may be passing: not yet a topic to throw away
        log.warning(
            "%s/%d refuses every send (%d in a row) and %s: creating %s again",
            topic.name,
            partition,
            refusals,
            "holds our records up to them" if holds_ours else "holds none of our records",
            topic.name,
        )
        self._refusals.pop((topic.name, partition))
        await self._ensure_topics([topic.name])
        await self._publish_again([topic.name])

    async def _newest_published(
        self, topic: str | None, up_to: int | None = None, partition: int | None = None
    ) -> Any:
        """(row id, event_id, topic, partition, offset) of the newest published row that the
        broker should still hold, of one topic (or one partition of it) or of any, and no newer
        than row `up_to`."""
        outbox = self._outbox
        query = (
            select(
                outbox.c.id, outbox.c.event_id, outbox.c.topic, outbox.c.partition, outbox.c.offset
            )
            .where(outbox.c.published_at.is_not(None))
            .where(outbox.c.offset.is_not(None))
            .order_by(outbox.c.id.desc())
            .limit(1)
        )
        if topic is not None:
            query = query.where(outbox.c.topic == topic).where(
                outbox.c.created_at >= self._kept_since(self._topics[topic])
            )
        else:
            query = query.where(outbox.c.topic.in_(list(self._topics)))
        if up_to is not None:
            query = query.where(outbox.c.id <= up_to)
        if partition is not None:
            query = query.where(outbox.c.partition == partition)
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else tuple(row)

    async def _publish_again(self, topics: list[str]) -> None:
        outbox = self._outbox
        async with self._engine.begin() as conn:
            for name in topics:
                again = await conn.execute(
                    update(outbox)
                    .where(outbox.c.topic == name)
                    .where(outbox.c.published_at.is_not(None))
                    .where(outbox.c.parked_at.is_(None))
                    .where(outbox.c.created_at >= self._kept_since(self._topics[name]))
                    .values(published_at=None, partition=None, offset=None)
                )
                log.warning(
                    "the broker no longer holds %s as published: publishing its %d events "
                    "again, in their original order, before anything newer",
                    name,
                    again.rowcount,
                    extra={"topic": name},
                )
                metrics.OUTBOX_REPUBLISHED_TOTAL.labels(name).inc(again.rowcount)

    def _kept_since(self, topic: Topic) -> datetime:
        """Records a topic keeps; older ones the broker may have deleted, and so may we."""
        if topic.retention_ms < 0:
            return _EPOCH
        return self._clock.now() - timedelta(milliseconds=topic.retention_ms)

    async def update_gauges(self) -> None:
        """Pending, oldest pending and parked rows, read from the shared outbox."""
        outbox = self._outbox
        async with self._reader.connect() as conn:
            pending, oldest = (
                await conn.execute(
                    select(func.count(), func.min(outbox.c.created_at))
                    .where(outbox.c.published_at.is_(None))
                    .where(outbox.c.parked_at.is_(None))
                )
            ).one()
            parked = await conn.scalar(select(func.count()).where(outbox.c.parked_at.is_not(None)))
        self._set_gauges(pending=pending, oldest=oldest)
        metrics.OUTBOX_PARKED.set(parked or 0)

    def _set_gauges(self, *, pending: int, oldest: datetime | None) -> None:
        # On the service clock, which wrote created_at (leases alone use the wall clock).
        self.oldest_pending_age = (
            0.0 if oldest is None else max(0.0, (self._clock.now() - oldest).total_seconds())
        )
        metrics.OUTBOX_PENDING.set(pending)
        metrics.OUTBOX_OLDEST_AGE.set(self.oldest_pending_age)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
