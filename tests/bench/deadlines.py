"""Benchmark: the registry's deadline watcher on many entities (in-memory SQLite): enrolment,
the last reminder to every entity still open, the surrender deadline's pass (every open entity
overdue, its event, the snapshot and the summary in one transaction), an idle check once all is
done, and the gauges from the database. Prints figures; asserts nothing about timing.

    .venv/bin/python tests/bench/deadlines.py [--entities 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from registry import deadlines, store
from registry.domain.credit_code import make_credit_code
from registry.service import SERVICE, WATCHED
from tests.unit.support import DEADLINE, SHANGHAI, harness

DISTRICTS = ("pudong", "minhang", "jinshan", "baoshan", "jiading")


async def timed(what: str, count: int, action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    seconds = time.perf_counter() - started
    rate = f"{count / seconds:10.1f} entities/s" if count else ""
    print(f"{what:<46} {count:>7}  {seconds * 1000:9.1f} ms  {rate}")
    return seconds


async def main(entities: int) -> None:
    async with harness(SERVICE, now=datetime(2025, 6, 20, 10, 0, tzinfo=SHANGHAI)) as registry:
        codes = [make_credit_code(900_000 + n) for n in range(entities)]

        async def enrol() -> None:
            async with registry.context.transaction() as uow:
                for number, code in enumerate(codes):
                    district = DISTRICTS[number % len(DISTRICTS)]
                    await store.register(
                        uow.conn, credit_code=code, name="Bench Ltd", district=district,
                        sector="chemicals", compliance_year=2024, new_entrant=False, at=uow.now,
                    )  # fmt: skip
                    await deadlines.enroll(
                        uow, credit_code=code, name="Bench Ltd", district=district,
                        new_entrant=False,
                    )  # fmt: skip

        await timed("enrolled (one transaction)", entities, enrol)
        # The 14-day reminder is due at enrolment: send it, then time the last call alone.
        await WATCHED.check(registry.context)
        registry.clock.current = DEADLINE - timedelta(hours=2)
        outbox = len(await registry.outbox())
        await timed("2-hour reminder to each open entity", entities,
                    lambda: WATCHED.check(registry.context))  # fmt: skip
        assert len(await registry.outbox()) - outbox == entities
        registry.clock.current = DEADLINE
        outbox = len(await registry.outbox())
        await timed("deadline passed: all overdue + summary", entities,
                    lambda: WATCHED.check(registry.context))  # fmt: skip
        assert len(await registry.outbox()) - outbox == entities + 1
        await timed("a check with nothing to do", 0, lambda: WATCHED.check(registry.context))
        await timed("gauges from the database", entities,
                    lambda: WATCHED.refresh_gauges(registry.context))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=5000)
    asyncio.run(main(parser.parse_args().entities))
