"""Auction bids under concurrency, on the real database (PostgreSQL when
CARBON_TEST_DATABASE_URL is set, else an SQLite file): one bidder's bids racing for its cap, and
bids racing the clearing at the close. The cap is never passed, and every bid that was accepted
is in the clearing; a bid that loses the race is refused, never lost."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from carbon_contracts.events import MarketDayClosed
from carbon_platform.context import ServiceContext
from registry import auction, store
from registry.schemas import BidRequest
from tests.integration.test_ledger_concurrency import CODE, context, outcome, seed
from tests.unit.support import SHANGHAI, SetClock, consumed

pytestmark = pytest.mark.integration
__all__ = ["context"]  # the fixture, shared with the ledger's races

AUCTION = "shanghai-2024-1"
CLOSES = datetime(2025, 6, 30, 11, 30, tzinfo=SHANGHAI)


def at(context: ServiceContext, clock: SetClock) -> ServiceContext:
    """The same service on the same database, on a clock the test sets."""
    return ServiceContext(
        name=context.name,
        settings=context.settings,
        engine=context.engine,
        inbox=context.inbox,
        outbox=context.outbox,
        clock=clock,
        policy=context.policy,
    )


async def announced(context: ServiceContext) -> None:
    await seed(context, held=0)
    day = MarketDayClosed(
        instrument="SHEA",
        trading_date=datetime(2025, 5, 30).date(),
        volume=1000,
        turnover=Decimal("80000.00"),
        closed_at=datetime(2025, 5, 30, 15, 30, tzinfo=SHANGHAI),
    )  # reserve 1.2 x 80.00 = 96.00
    async with context.transaction() as uow:
        await auction.on_market_day_closed(uow, consumed(day))
    await at(context, SetClock(datetime(2025, 6, 20, tzinfo=SHANGHAI))).execute(
        auction.announce, (AUCTION, "bureau")
    )


def bid(quantity: int, price: str = "96.00") -> BidRequest:
    return BidRequest(auction_id=AUCTION, credit_code=CODE, price=Decimal(price), quantity=quantity)


async def live_bids(context: ServiceContext) -> tuple[int, int]:
    async with context.engine.connect() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.coalesce(func.sum(store.auction_bids.c.quantity), 0))
                .where(store.auction_bids.c.auction_id == AUCTION)
                .where(store.auction_bids.c.status == "live")
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_one_bidders_concurrent_bids_never_pass_its_cap(context: ServiceContext) -> None:
    await announced(context)
    bidding = at(context, SetClock(CLOSES - timedelta(minutes=30)))
    outcomes = Counter(
        await asyncio.gather(
            *(outcome(bidding.execute(auction.place_bid, bid(3000))) for _ in range(40))
        )
    )
    assert outcomes == {"done": 33, "over_bidder_cap": 7}  # 33 x 3000 = 99000 <= 100000
    assert await live_bids(context) == (33, 99000)
    async with context.engine.connect() as conn:
        committed = await conn.scalar(select(store.auction_bidders.c.committed))
    assert committed == 99000


async def test_bids_racing_the_clearing_are_either_cleared_or_refused(
    context: ServiceContext,
) -> None:
    await announced(context)
    # Eight bidding loops run until they are refused. Once 40 bids are in, the clock reaches the
    # close and the clearing starts, while bids dated just before it are still under way.
    clock = SetClock(CLOSES - timedelta(milliseconds=1))
    bidding = at(context, clock)
    forty_in = asyncio.Event()
    outcomes: Counter[str] = Counter()

    async def keep_bidding() -> None:
        while True:
            result = await outcome(bidding.execute(auction.place_bid, bid(100)))
            outcomes[result] += 1
            if outcomes["done"] >= 40:
                forty_in.set()
            if result != "done":
                return

    async def clear_amid_bids() -> Any:
        await forty_in.wait()
        clock.current = CLOSES
        return await bidding.execute(auction.clear_auction, AUCTION)

    *_, view, again = await asyncio.gather(
        *(keep_bidding() for _ in range(8)), clear_amid_bids(), clear_amid_bids()
    )
    assert again == view  # the second clearing found the first one's result
    assert outcomes["bidding_closed"] == 8 and set(outcomes) == {"done", "bidding_closed"}
    assert view.result is not None
    # Every accepted bid is in the one clearing, filled; none was accepted after it.
    assert view.result.bids == outcomes["done"] == (await live_bids(context))[0]
    assert view.result.sold == 100 * outcomes["done"]
    async with context.engine.connect() as conn:
        unfilled = await conn.scalar(
            select(func.count())
            .select_from(store.auction_bids)
            .where(store.auction_bids.c.filled.is_(None))
        )
        clearings = await conn.scalar(
            select(func.count())
            .select_from(context.outbox)
            .where(context.outbox.c.event_type == "auction.cleared")
        )
    assert (unfilled, clearings) == (0, 1)
