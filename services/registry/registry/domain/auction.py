"""Paid auctions (有偿竞价发放): the reserve price from the exchange's daily summaries, the checks
on a sealed bid, and the uniform-price clearing. Pure: numbers from the policy file, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction

from carbon_contracts.errors import Conflict, Invalid
from carbon_contracts.policy import Auction, Rounding

FEN = 100  # prices are exact to the fen, 0.01 yuan


@dataclass(frozen=True)
class MarketDay:
    """One trading day of the instrument as the exchange summarised it."""

    trading_date: date
    volume: int
    turnover: Decimal


@dataclass(frozen=True)
class Reserve:
    """The reserve price and the figures it comes from."""

    trading_days: int
    volume: int
    turnover: Decimal
    price: Decimal


def reserve_price(auction: Auction, days: Sequence[MarketDay], rounding: Rounding) -> Reserve:
    """multiplier x (turnover / volume) over the reference window's trading days (both dates
    included; days without trades carry no price), computed exactly and then rounded to the fen
    by the policy's rule. No trade in the window: no reserve, so no auction."""
    window = auction.reserve
    traded = [
        day
        for day in days
        if window.reference_from <= day.trading_date <= window.reference_to and day.volume > 0
    ]
    if not traded:
        raise Conflict(
            "no_reference_prices",
            f"no {window.instrument} trades between {window.reference_from} and "
            f"{window.reference_to}: the reserve price cannot be computed",
        )
    volume = sum(day.volume for day in traded)
    turnover = sum((day.turnover for day in traded), Decimal(0))
    exact = Fraction(window.multiplier) * Fraction(turnover) / volume
    fen = _round(exact * FEN, rounding)
    return Reserve(trading_days=len(traded), volume=volume, turnover=turnover, price=_yuan(fen))


def _round(value: Fraction, rule: Rounding) -> int:
    """A non-negative exact value to a whole number by a policy rounding rule."""
    if rule == "floor":
        return value.numerator // value.denominator
    if rule == "ceiling":
        return -(-value.numerator // value.denominator)
    if rule == "half_up":
        return int((value + Fraction(1, 2)).numerator // (value + Fraction(1, 2)).denominator)
    return round(value)  # half_even: Python rounds a Fraction half to even


def _yuan(fen: int) -> Decimal:
    return (Decimal(fen) / FEN).quantize(Decimal("0.01"))


def check_window(auction: Auction, at: datetime) -> None:
    """Bids are taken from `opens_at` and refused from `closes_at` on (an exclusive instant)."""
    if at < auction.opens_at:
        raise Conflict(
            "bidding_not_open", f"bidding in {auction.id} opens at {auction.opens_at.isoformat()}"
        )
    if at >= auction.closes_at:
        raise Conflict(
            "bidding_closed", f"bidding in {auction.id} closed at {auction.closes_at.isoformat()}"
        )


def check_bid(
    auction: Auction, *, reserve: Decimal, price: Decimal, quantity: int, others: int, at: datetime
) -> None:
    """A sealed bid (new or changed) at instant `at`: in the window, whole allowances, not below
    the reserve, and within the bidder's cap with its other live bids (`others` allowances)."""
    check_window(auction, at)
    if quantity <= 0:
        raise Invalid("invalid_quantity", "a bid is for a positive whole number of allowances")
    if price < reserve:
        raise Invalid(
            "below_reserve", f"price {price:.2f} is below the reserve price of {reserve:.2f}"
        )
    if others + quantity > auction.bidder_cap:
        raise Invalid(
            "over_bidder_cap",
            f"{quantity} allowances with the {others} already bid exceed the cap of "
            f"{auction.bidder_cap} per bidder",
        )


@dataclass(frozen=True)
class Bid:
    bid_id: str
    credit_code: str
    price: Decimal
    quantity: int
    placed_at: datetime


@dataclass(frozen=True)
class Fill:
    bid: Bid
    filled: int


@dataclass(frozen=True)
class Clearing:
    """The result: every bid in rank order with what it got, and the uniform price (None when
    nothing was sold)."""

    fills: list[Fill]
    price: Decimal | None
    sold: int

    @property
    def won(self) -> dict[str, list[Fill]]:
        """Each winner's filled bids, in rank order."""
        winners: dict[str, list[Fill]] = {}
        for fill in self.fills:
            if fill.filled:
                winners.setdefault(fill.bid.credit_code, []).append(fill)
        return winners


def rank(bids: Sequence[Bid]) -> list[Bid]:
    """Best price first; at one price the earlier bid (a changed bid counts from its change);
    the bid id settles a tie of the same instant so that every run ranks alike."""
    return sorted(bids, key=lambda bid: (-bid.price, bid.placed_at, bid.bid_id))


def clear(volume: int, bids: Sequence[Bid]) -> Clearing:
    """Uniform-price clearing: the ranked bids take the volume in turn, the marginal bid takes
    what is left (a partial fill), and every winner pays the lowest accepted price. Fewer bids
    than the volume: all of them are filled and the rest is not sold. No bids: no sale."""
    left = volume
    fills: list[Fill] = []
    for bid in rank(bids):
        taken = min(bid.quantity, left)
        fills.append(Fill(bid=bid, filled=taken))
        left -= taken
    accepted = [fill.bid.price for fill in fills if fill.filled]
    return Clearing(fills=fills, price=min(accepted) if accepted else None, sold=volume - left)
