"""Benchmark: a paid auction on the registry's commands (in-memory SQLite): sealed bids placed
one transaction each, then the clearing in one transaction (every award and its event written
to the outbox), and the pure clearing rule on a larger book. Prints figures; asserts nothing
about timing.

    .venv/bin/python tests/bench/auction.py [--bidders 2000] [--book 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from carbon_contracts.events import MarketDayClosed
from registry import auction, store
from registry.domain import auction as rules
from registry.domain.credit_code import make_credit_code
from registry.schemas import BidRequest
from registry.service import SERVICE
from tests.unit.support import SHANGHAI, harness

AUCTION = "shanghai-2024-1"
OPENS = datetime(2025, 6, 30, 9, 30, tzinfo=SHANGHAI)


async def on_the_registry(bidders: int) -> None:
    async with harness(SERVICE, now=datetime(2025, 6, 20, tzinfo=SHANGHAI)) as registry:
        codes = [make_credit_code(700_000 + n) for n in range(bidders)]
        async with registry.context.transaction() as uow:
            for code in codes:
                await store.register(
                    uow.conn, credit_code=code, name="Bench Ltd", district="pudong",
                    sector="chemicals", compliance_year=2024, new_entrant=False, at=uow.now,
                )  # fmt: skip
                await store.open_account(
                    uow.conn, account_id=f"SHEA-{code}", credit_code=code, at=uow.now
                )
        await registry.handle(
            MarketDayClosed(
                instrument="SHEA",
                trading_date=date(2025, 5, 30),
                volume=1000,
                turnover=Decimal("80000.00"),
                closed_at=datetime(2025, 5, 30, 15, 30, tzinfo=SHANGHAI),
            )
        )
        await registry.run(auction.announce, (AUCTION, "bench"))
        prices = random.Random(8)
        started = time.perf_counter()
        for number, code in enumerate(codes):
            registry.clock.current = OPENS + timedelta(milliseconds=number)
            price = Decimal(prices.randint(9600, 12000)) / 100
            await registry.run(
                auction.place_bid,
                BidRequest(auction_id=AUCTION, credit_code=code, price=price, quantity=1000),
            )
        placed = time.perf_counter() - started
        registry.clock.current = datetime(2025, 6, 30, 11, 30, tzinfo=SHANGHAI)
        started = time.perf_counter()
        ran = await registry.run(auction.clear_auction, AUCTION)
        cleared = time.perf_counter() - started
        result = ran.result.result
        assert result is not None
        print(
            f"bids placed (one transaction each)      {bidders:>7}  {bidders / placed:9.1f} bids/s"
        )
        print(
            f"clearing (one transaction)              {bidders:>7} bids  {cleared * 1000:9.1f} ms"
            f"  {result.winners} winners, {len(ran.events)} events, sold {result.sold}"
            f" at {result.clearing_price}"
        )


def pure_clearing(book: int) -> None:
    prices = random.Random(9)
    bids = [
        rules.Bid(f"{n:08}", f"E{n % 5000}", Decimal(prices.randint(9223, 12000)) / 100,
                  prices.randint(1, 5000), OPENS + timedelta(microseconds=n))
        for n in range(book)
    ]  # fmt: skip
    started = time.perf_counter()
    result = rules.clear(500_000, bids)
    took = time.perf_counter() - started
    print(
        f"clearing rule alone                     {book:>7} bids  {took * 1000:9.1f} ms"
        f"  sold {result.sold} at {result.price}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bidders", type=int, default=2000)
    parser.add_argument("--book", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(on_the_registry(args.bidders))
    pure_clearing(args.book)


if __name__ == "__main__":
    main()
