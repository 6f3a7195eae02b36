"""The auction's pure rules: the reserve price from a known price series, the checks on a bid,
and the uniform-price clearing (with properties that hold for any bids)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.errors import Conflict, Invalid
from registry.domain.auction import Bid, MarketDay, check_bid, clear, rank, reserve_price
from tests.unit.support import POLICY, SHANGHAI

AUCTION = POLICY.auction("shanghai-2024-1")
OPENS = datetime(2025, 6, 30, 9, 30, tzinfo=SHANGHAI)
CLOSES = datetime(2025, 6, 30, 11, 30, tzinfo=SHANGHAI)

# The walk-through's series: three days in the window, one on each side of it.
SERIES = [
    MarketDay(date(2024, 11, 29), 90000, Decimal("9000000.00")),  # before the window
    MarketDay(date(2024, 12, 2), 120000, Decimal("9246000.00")),
    MarketDay(date(2025, 1, 6), 0, Decimal("0.00")),  # no trades: no price
    MarketDay(date(2025, 3, 14), 80000, Decimal("6120800.00")),
    MarketDay(date(2025, 5, 30), 50500, Decimal("3884965.00")),  # the window's last day
    MarketDay(date(2025, 6, 2), 70000, Decimal("1.00")),  # after it
]


def test_the_reserve_is_the_multiplier_times_the_volume_weighted_average_price() -> None:
    # 19,251,765.00 / 250,500 = 76.853353...; x 1.2 = 92.224023...; ceiling to the fen: 92.23.
    reserve = reserve_price(AUCTION, SERIES, "ceiling")
    assert reserve.trading_days == 3
    assert reserve.volume == 250500
    assert reserve.turnover == Decimal("19251765.00")
    assert reserve.price == Decimal("92.23")


@pytest.mark.parametrize(
    ("rounding", "price"),
    [("ceiling", "92.23"), ("floor", "92.22"), ("half_up", "92.22"), ("half_even", "92.22")],
)
def test_the_reserve_is_rounded_to_the_fen_by_the_policys_rule(rounding: str, price: str) -> None:
    assert reserve_price(AUCTION, SERIES, rounding).price == Decimal(price)  # type: ignore[arg-type]


def test_an_exact_half_fen_rounds_by_the_rule() -> None:
    day = [MarketDay(date(2025, 1, 2), 2, Decimal("20.01"))]  # 1.2 x 10.005 = 12.006
    assert reserve_price(AUCTION, day, "half_up").price == Decimal("12.01")
    half = [MarketDay(date(2025, 1, 2), 12, Decimal("125.05"))]  # 1.2 x 125.05 / 12 = 12.505
    assert reserve_price(AUCTION, half, "half_up").price == Decimal("12.51")
    assert reserve_price(AUCTION, half, "half_even").price == Decimal("12.50")


def test_no_trade_in_the_window_gives_no_reserve() -> None:
    outside = [SERIES[0], SERIES[2], SERIES[5]]
    with pytest.raises(Conflict) as refused:
        reserve_price(AUCTION, outside, "ceiling")
    assert refused.value.code == "no_reference_prices"


# --- bids -------------------------------------------------------------------------------------


def bid_at(at: datetime, price: str = "95.00", quantity: int = 1000, others: int = 0) -> None:
    check_bid(
        AUCTION,
        reserve=Decimal("92.23"),
        price=Decimal(price),
        quantity=quantity,
        others=others,
        at=at,
    )


def test_bids_are_taken_from_the_opening_instant_to_just_before_the_close() -> None:
    bid_at(OPENS)
    bid_at(CLOSES - timedelta(microseconds=1))
    for at, code in [
        (OPENS - timedelta(microseconds=1), "bidding_not_open"),
        (CLOSES, "bidding_closed"),  # 11:30:00.000 is late
    ]:
        with pytest.raises(Conflict) as refused:
            bid_at(at)
        assert refused.value.code == code


def test_a_bid_at_the_reserve_is_valid_and_a_fen_below_is_not() -> None:
    bid_at(OPENS, price="92.23")
    with pytest.raises(Invalid) as refused:
        bid_at(OPENS, price="92.22")
    assert refused.value.code == "below_reserve"


def test_a_bidders_bids_together_stay_within_the_cap() -> None:
    bid_at(OPENS, quantity=100000)
    bid_at(OPENS, quantity=40000, others=60000)
    with pytest.raises(Invalid) as refused:
        bid_at(OPENS, quantity=40001, others=60000)
    assert refused.value.code == "over_bidder_cap"


# --- clearing ---------------------------------------------------------------------------------


def bid(number: int, code: str, price: str, quantity: int, minute: int = 0) -> Bid:
    return Bid(
        f"bid-{number:03}", code, Decimal(price), quantity, OPENS + timedelta(minutes=minute)
    )


def test_the_walk_throughs_auction_clears_at_the_lowest_accepted_bid() -> None:
    bids = [
        bid(1, "B1", "98.00", 100000),
        bid(2, "B2", "96.50", 100000),
        bid(3, "CC", "95.00", 5000),
        bid(4, "B3", "94.00", 100000),
        bid(5, "B4", "93.50", 100000),
        bid(6, "B5", "93.00", 100000),
        bid(7, "CC", "92.50", 1000),
    ]
    result = clear(500000, bids)
    assert result.price == Decimal("93.00")
    assert result.sold == 500000
    assert [fill.filled for fill in result.fills] == [
        100000, 100000, 5000, 100000, 100000, 95000, 0,
    ]  # fmt: skip
    assert {code: sum(f.filled for f in fills) for code, fills in result.won.items()} == {
        "B1": 100000, "B2": 100000, "CC": 5000, "B3": 100000, "B4": 100000, "B5": 95000,
    }  # fmt: skip


def test_at_one_price_the_earlier_bid_ranks_first() -> None:
    late, early = bid(1, "A", "95.00", 10, minute=5), bid(2, "B", "95.00", 10, minute=1)
    assert rank([late, early]) == [early, late]
    result = clear(15, [late, early])
    assert [(f.bid.credit_code, f.filled) for f in result.fills] == [("B", 10), ("A", 5)]


def test_under_subscription_sells_what_was_bid_at_the_lowest_bid() -> None:
    result = clear(500000, [bid(1, "A", "99.00", 1000), bid(2, "B", "92.23", 2000)])
    assert (result.sold, result.price) == (3000, Decimal("92.23"))


def test_no_bids_no_sale() -> None:
    result = clear(500000, [])
    assert (result.sold, result.price, result.won) == (0, None, {})


prices = st.integers(min_value=9223, max_value=12000).map(lambda fen: Decimal(fen) / 100)


@st.composite
def auctions(draw: st.DrawFn) -> tuple[int, int, list[Bid]]:
    volume = draw(st.integers(min_value=1, max_value=5000))
    cap = draw(st.integers(min_value=1, max_value=3000))
    bids: list[Bid] = []
    for bidder in range(draw(st.integers(min_value=0, max_value=8))):
        left = cap
        for _ in range(draw(st.integers(min_value=1, max_value=3))):
            if left == 0:
                break
            quantity = draw(st.integers(min_value=1, max_value=left))
            left -= quantity
            minute = draw(st.integers(min_value=0, max_value=119))
            bids.append(bid(len(bids), f"E{bidder}", str(draw(prices)), quantity, minute))
    return volume, cap, bids


@given(auctions())
def test_clearing_properties(case: tuple[int, int, list[Bid]]) -> None:
    volume, cap, bids = case
    result = clear(volume, bids)
    # Volume never exceeded; under-subscribed, everything bid is sold.
    assert result.sold == sum(fill.filled for fill in result.fills) <= volume
    assert result.sold == min(volume, sum(b.quantity for b in bids))
    # No sale exactly when nothing was bid; otherwise the price is the lowest accepted bid.
    assert (result.price is None) == (result.sold == 0)
    accepted = [fill for fill in result.fills if fill.filled]
    for fill in accepted:
        assert result.price is not None and fill.bid.price >= result.price >= Decimal("92.23")
        assert fill.filled <= fill.bid.quantity
    if accepted:
        assert result.price == min(fill.bid.price for fill in accepted)
    # At most one bid is partly filled, and every better-ranked bid is filled whole.
    partly = [fill for fill in result.fills if 0 < fill.filled < fill.bid.quantity]
    assert len(partly) <= 1
    for earlier, later in pairwise(result.fills):
        if later.filled:
            assert earlier.filled == earlier.bid.quantity
    # Caps respected: no winner gets more than it bid, nor more than the cap.
    for code, fills in result.won.items():
        assert sum(f.filled for f in fills) <= min(
            cap, sum(b.quantity for b in bids if b.credit_code == code)
        )
    # Run twice, the same result.
    assert clear(volume, list(reversed(bids))) == result
