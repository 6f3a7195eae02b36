"""Benchmark: does the embedded broker's end offset (ListOffsets latest, what consumer lag is
measured against) trail the records a consumer can already fetch, by how many and for how long?

Starts its own embedded Tansu broker and writes to it in producer batches of several sizes; after
each acknowledged batch it checks that the batch's last record is fetchable and polls the end
offset every few milliseconds until it counts that record or the wait runs out. Prints figures;
asserts nothing.

    .venv/bin/python tests/bench/end_offsets.py [--records 300] [--wait-ms 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import embedded_broker

TOPIC = "report.submitted"
BATCH_SIZES = (1, 5, 50)


async def write_batch(producer: AIOKafkaProducer, tp: TopicPartition, size: int) -> int:
    """`size` records in one producer batch; returns the offset after the last one."""
    sent = [await producer.send(tp.topic, b"x" * 100, partition=tp.partition) for _ in range(size)]
    offsets = [(await future).offset for future in sent]
    return max(offsets) + 1


async def fetchable(reader: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bool:
    """Whether a consumer can fetch the record at `offset` now."""
    reader.seek(tp, offset)
    found = await reader.getmany(tp, timeout_ms=1000, max_records=1)
    return any(record.offset == offset for record in found.get(tp, []))


async def trail(
    reader: AIOKafkaConsumer, tp: TopicPartition, true_end: int, wait_s: float
) -> tuple[int, float | None]:
    """(records the reported end trails by right away, seconds until it stops trailing or None
    when it still trails after `wait_s`)."""
    started = time.perf_counter()
    first = true_end - (await reader.end_offsets([tp]))[tp]
    behind = first
    while behind > 0 and time.perf_counter() - started < wait_s:
        await asyncio.sleep(0.01)
        behind = true_end - (await reader.end_offsets([tp]))[tp]
    return first, (time.perf_counter() - started if behind <= 0 else None)


async def measure(bootstrap: str, records: int, wait_s: float) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=5
    )
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await reader.start()
    try:
        print(f"{'batch':>5} {'batches':>7} {'fetchable':>9} {'trail now (min/median/max)':>27} "
              f"{'caught up':>9} {'after a later write':>19}")  # fmt: skip
        for partition, size in enumerate(BATCH_SIZES):
            tp = TopicPartition(TOPIC, partition)
            reader.assign([tp])
            trails, caught, readable = [], [], 0
            for _ in range(max(1, records // size)):
                true_end = await write_batch(producer, tp, size)
                readable += await fetchable(reader, tp, true_end - 1)
                behind, after = await trail(reader, tp, true_end, wait_s)
                trails.append(behind)
                caught.append(after)
            # One more record: does the previous batch then count in full?
            true_end = await write_batch(producer, tp, 1)
            later = true_end - (await reader.end_offsets([tp]))[tp]
            done = [c for c in caught if c is not None]
            print(
                f"{size:>5} {len(trails):>7} {readable:>9} "
                f"{min(trails):>9} / {statistics.median(trails):>5} / {max(trails):>5}  "
                f"{len(done):>4}/{len(caught):<4} {'trails ' + str(later):>19}"
            )
    finally:
        await reader.stop()
        await producer.stop()
    print(
        f"\ntrail now: records the end offset is short of the fetchable end right after the "
        f"batch was acknowledged.\ncaught up: batches whose end offset counted every record "
        f"within {wait_s:.1f}s.\nafter a later write: the trail right after one more record."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300, help="records per batch size")
    parser.add_argument("--wait-ms", type=int, default=2000, help="how long to watch a trail")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, embedded_broker(Path(tmp)) as bootstrap:
        asyncio.run(measure(bootstrap, args.records, args.wait_ms / 1000))


if __name__ == "__main__":
    main()
