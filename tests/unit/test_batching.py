"""The worker's batches: handled in one go, then acknowledged, except records fetched before
a rebalance (their offsets are no longer the group's to commit)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from carbon_platform.codec import RawMessage
from carbon_platform.runtime import BatchingService


class Handled:
    def __init__(self) -> None:
        self.batches: list[list[RawMessage]] = []

    async def handle_batch(self, batch: list[RawMessage]) -> None:
        self.batches.append(batch)


class FaustEvent:
    """The parts of a Faust stream event the batching service reads."""

    def __init__(self, app: Any, offset: int, generation_id: int) -> None:
        self.app = app
        self.message = SimpleNamespace(
            topic="report.submitted",
            partition=0,
            offset=offset,
            key=b"k",
            value=b"{}",
            headers=[],
            generation_id=generation_id,
            acked=False,
        )
        self.acks = 0

    def ack(self) -> bool:
        self.acks += 1
        self.message.acked = True
        return True


async def test_records_of_an_earlier_assignment_are_handled_but_not_acknowledged() -> None:
    app = SimpleNamespace(consumer_generation_id=3)
    handled = Handled()
    batching = BatchingService(handled, max_records=10, linger_s=0)  # type: ignore[arg-type]
    before, current = FaustEvent(app, 41, generation_id=2), FaustEvent(app, 0, generation_id=3)

    await batching.handle([before, current])

    assert [raw.offset for raw in handled.batches[0]] == [41, 0]
    assert (before.acks, current.acks) == (0, 1)
    assert before.message.acked  # a stop does not wait for it
