"""Paid auctions of allowances (有偿竞价发放): the exchange's daily prices, the Bureau's
announcement with its reserve price, sealed bids in the window, the clearing at the close, and
settlement on the exchange's payment confirmation into surrender-only holdings (or cancellation
of an award left unpaid)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter

from carbon_contracts.errors import Conflict, Forbidden, NotFound
from carbon_contracts.events import (
    AuctionAnnounced,
    AuctionAwardCancelled,
    AuctionCleared,
    AuctionPaymentConfirmed,
    AuctionSettled,
    AuctionWon,
    FilledBid,
    MarketDayClosed,
)
from carbon_contracts.policy import Auction
from carbon_platform.access import BIDS, ENTITY, allowed
from carbon_platform.auth import Principal
from carbon_platform.codec import Event
from carbon_platform.context import Context, Handler, ServiceContext, UnitOfWork
from carbon_platform.http import refusals
from registry import store
from registry.domain import auction as rules
from registry.domain.credit_code import checked_credit_code
from registry.schemas import (
    AuctionResult,
    AuctionView,
    AwardView,
    BidBody,
    BidChange,
    BidRequest,
    BidView,
    ReserveView,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["auctions"])

CHECK_EVERY_S = 1.0  # how soon after its close an auction clears (and an unpaid award lapses)


# --- inbound: the exchange's daily summaries and payments --------------------------------------


async def on_market_day_closed(uow: UnitOfWork, event: Event[Any]) -> None:
    """Keep the exchange's summary of a trading day, once: the same day again changes nothing;
    the same day with other figures is refused (a reserve may already rest on the first)."""
    day: MarketDayClosed = event.payload
    known = await store.get_market_day(
        uow.conn, instrument=day.instrument, trading_date=day.trading_date
    )
    if known is not None:
        if (known.volume, known.turnover, known.closed_at) == (
            day.volume,
            day.turnover,
            day.closed_at,
        ):
            return
        raise Conflict(
            "market_day_conflict",
            f"{day.instrument} {day.trading_date} was received before with other figures "
            f"({known.volume} traded for {known.turnover})",
        )
    await store.add_market_day(
        uow.conn,
        instrument=day.instrument,
        trading_date=day.trading_date,
        volume=day.volume,
        turnover=day.turnover,
        closed_at=day.closed_at,
        event_id=event.id,
        received_at=uow.now,
    )


async def on_payment_confirmed(uow: UnitOfWork, event: Event[Any]) -> None:
    """The exchange received a winner's payment: credit the award as surrender-only allowances
    of the auction's compliance year (`auction.settled`), once per payment id. A payment for no
    award, of another amount, after the payment deadline or for a cancelled award is refused
    (dead letter: the exchange has money to return)."""
    paid: AuctionPaymentConfirmed = event.payload
    code, auction_id = paid.credit_code, paid.auction_id
    earlier = await store.get_award_by_payment(uow.conn, payment_id=paid.payment_id)
    if earlier is not None:
        if (earlier.auction_id, earlier.credit_code, earlier.amount_due, earlier.paid_at) == (
            auction_id,
            code,
            paid.amount,
            paid.paid_at,
        ):
            return
        raise Conflict(
            "payment_conflict", f"payment {paid.payment_id} was applied before with other content"
        )
    auction = uow.policy.auction(auction_id)
    if paid.compliance_year != auction.compliance_year:
        raise Conflict(
            "wrong_compliance_year",
            f"auction {auction_id} is for {auction.compliance_year}, the payment says "
            f"{paid.compliance_year}",
        )
    award = await store.get_award(uow.conn, auction_id=auction_id, credit_code=code, lock=True)
    if award is None:
        raise NotFound("no_award", f"{code} won nothing at auction {auction_id}")
    if award.status != "awarded":
        raise Conflict(
            f"award_{award.status}",
            f"the award of {code} at {auction_id} is {award.status}; payment {paid.payment_id} "
            "was not applied",
        )
    if paid.amount != award.amount_due:
        raise Conflict(
            "payment_amount_mismatch",
            f"{code} owes {award.amount_due:.2f} yuan for auction {auction_id}, "
            f"not {paid.amount:.2f}",
        )
    if paid.paid_at >= auction.payment_due:
        raise Conflict(
            "paid_too_late",
            f"paid at {paid.paid_at.isoformat()}, at or after the payment deadline "
            f"{auction.payment_due.isoformat()}",
        )
    await store.close_award(
        uow.conn,
        auction_id=auction_id,
        credit_code=code,
        status="settled",
        at=uow.now,
        payment_id=paid.payment_id,
        paid_at=paid.paid_at,
    )
    await store.move_surrender_only(
        uow.conn,
        credit_code=code,
        vintage=auction.compliance_year,
        amount=award.allowances,
        kind="auction",
        reference=auction_id,
        at=uow.now,
    )
    uow.record(
        AuctionSettled(
            credit_code=code,
            compliance_year=auction.compliance_year,
            auction_id=auction_id,
            payment_id=paid.payment_id,
            allowances=award.allowances,
            price=award.price,
            amount=award.amount_due,
            use=auction.use,
            settled_at=uow.now,
        )
    )


HANDLERS: dict[str, dict[str, Handler]] = {
    "market_day.closed": {"market_day.closed": on_market_day_closed},
    "auction_payment.confirmed": {"auction_payment.confirmed": on_payment_confirmed},
}


# --- the Bureau announces ---------------------------------------------------------------------


async def announce(uow: UnitOfWork, command: tuple[str, str]) -> AuctionView:
    """Announce an auction of the policy (`auction.announced`), once: after its reference window
    has ended (the reserve needs all of it) and before bidding opens."""
    auction_id, announced_by = command
    auction = uow.policy.auction(auction_id)
    if await store.get_auction(uow.conn, auction_id=auction_id) is not None:
        raise Conflict("already_announced", f"auction {auction_id} was announced already")
    window = auction.reserve
    window_end = _midnight_after(window.reference_to, uow.policy.timezone)
    if uow.now < window_end:
        raise Conflict(
            "reference_window_open",
            f"the reference window runs to {window.reference_to}: announce from "
            f"{window_end.isoformat()}",
        )
    if uow.now >= auction.opens_at:
        raise Conflict(
            "bidding_already_open",
            f"bidding in {auction_id} opened at {auction.opens_at.isoformat()}: "
            "an auction is announced before it opens",
        )
    days = await store.list_market_days(
        uow.conn,
        instrument=window.instrument,
        first=window.reference_from,
        last=window.reference_to,
    )
    reserve = rules.reserve_price(
        auction,
        [rules.MarketDay(row.trading_date, row.volume, row.turnover) for row in days],
        uow.policy.rounding.reserve_price,
    )
    await store.add_auction(
        uow.conn,
        auction_id=auction_id,
        compliance_year=auction.compliance_year,
        volume=auction.volume,
        reserve_price=reserve.price,
        reference_trading_days=reserve.trading_days,
        reference_volume=reserve.volume,
        reference_turnover=reserve.turnover,
        announced_by=announced_by,
        announced_at=uow.now,
    )
    uow.record(
        AuctionAnnounced(
            policy=uow.policy.cycle,
            compliance_year=auction.compliance_year,
            auction_id=auction_id,
            volume=auction.volume,
            opens_at=auction.opens_at,
            closes_at=auction.closes_at,
            bidders=auction.bidders,
            bidder_cap=auction.bidder_cap,
            use=auction.use,
            instrument=window.instrument,
            reference_from=window.reference_from,
            reference_to=window.reference_to,
            reference_trading_days=reserve.trading_days,
            reference_volume=reserve.volume,
            reference_turnover=reserve.turnover,
            multiplier=window.multiplier,
            reserve_price=reserve.price,
            payment_due=auction.payment_due,
            announced_at=uow.now,
        )
    )
    return await _view(uow.conn, auction)


def _midnight_after(day: Any, timezone: str) -> datetime:
    """The first instant after a date in the policy's time zone."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), ZoneInfo(timezone))


# --- entities bid -----------------------------------------------------------------------------


async def _bidding(uow: UnitOfWork, auction_id: str, code: str) -> tuple[Auction, Any]:
    """The announced auction, locked shared against its clearing, and the bidder checked
    eligible: covered for the auction's year, with an open registry account."""
    auction = uow.policy.auction(auction_id)
    announced = await store.get_auction(uow.conn, auction_id=auction_id, lock="share")
    if announced is None:
        raise Conflict("not_announced", f"auction {auction_id} has not been announced")
    if announced.status != "announced":
        raise Conflict("bidding_closed", f"auction {auction_id} has closed and cleared")
    await store.known_entity(uow.conn, credit_code=code)
    year = auction.compliance_year
    if not await store.is_rostered(uow.conn, credit_code=code, compliance_year=year):
        raise Forbidden("not_eligible", f"{code} is not a covered entity for {year}")
    if await store.get_account(uow.conn, credit_code=code) is None:
        raise Forbidden("not_eligible", f"{code} has no open allowance account")
    return auction, announced


async def place_bid(uow: UnitOfWork, command: BidRequest) -> BidView:
    """A sealed bid: in the window, at or above the reserve, whole allowances, and within the
    bidder's cap with its other live bids (checked atomically, whatever runs at once)."""
    code = checked_credit_code(command.credit_code)
    auction, announced = await _bidding(uow, command.auction_id, code)
    rules.check_bid(
        auction,
        reserve=announced.reserve_price,
        price=command.price,
        quantity=command.quantity,
        others=0,
        at=uow.now,
    )
    await store.commit_to_cap(
        uow.conn,
        auction_id=auction.id,
        credit_code=code,
        change=command.quantity,
        cap=auction.bidder_cap,
    )
    bid_id = str(uuid.uuid4())
    await store.add_bid(
        uow.conn,
        bid_id=bid_id,
        auction_id=auction.id,
        credit_code=code,
        price=command.price,
        quantity=command.quantity,
        placed_at=uow.now,
    )
    return _bid_view(await store.get_bid(uow.conn, auction_id=auction.id, bid_id=bid_id))


async def change_bid(uow: UnitOfWork, command: BidChange) -> BidView:
    """Change a live bid's price and quantity (it then ranks from now) or, with quantity 0,
    withdraw it; in the window only."""
    code = checked_credit_code(command.credit_code)
    auction, announced = await _bidding(uow, command.auction_id, code)
    bid = await store.get_bid(uow.conn, auction_id=auction.id, bid_id=command.bid_id)
    if bid is None or bid.credit_code != code:
        raise NotFound("unknown_bid", f"{code} has no bid {command.bid_id} at {auction.id}")
    if bid.status != "live":
        raise Conflict("bid_withdrawn", f"bid {command.bid_id} was withdrawn")
    if command.withdraw:
        rules.check_window(auction, uow.now)
        values: dict[str, Any] = {"status": "withdrawn"}
        change = -bid.quantity
    else:
        assert command.price is not None and command.quantity is not None
        rules.check_bid(
            auction,
            reserve=announced.reserve_price,
            price=command.price,
            quantity=command.quantity,
            others=0,
            at=uow.now,
        )
        values = {"price": command.price, "quantity": command.quantity, "placed_at": uow.now}
        change = command.quantity - bid.quantity
    await store.commit_to_cap(
        uow.conn, auction_id=auction.id, credit_code=code, change=change, cap=auction.bidder_cap
    )
    await store.change_bid(uow.conn, bid_id=bid.bid_id, **values)
    return _bid_view(await store.get_bid(uow.conn, auction_id=auction.id, bid_id=bid.bid_id))


# --- the close --------------------------------------------------------------------------------


async def clear_auction(uow: UnitOfWork, auction_id: str) -> AuctionView:
    """Clear a closed auction once (`auction.cleared`, and `auction.won` per winner); run again,
    or on another instance at the same moment, it changes nothing and shows the result."""
    auction = uow.policy.auction(auction_id)
    announced = await store.get_auction(uow.conn, auction_id=auction_id, lock="update")
    if announced is None:
        raise Conflict("not_announced", f"auction {auction_id} has not been announced")
    if announced.status == "cleared":
        return await _view(uow.conn, auction)
    if uow.now < auction.closes_at:
        raise Conflict(
            "bidding_open", f"bidding in {auction_id} closes at {auction.closes_at.isoformat()}"
        )
    live = [
        rules.Bid(row.bid_id, row.credit_code, row.price, row.quantity, row.placed_at)
        for row in await store.list_bids(uow.conn, auction_id=auction_id)
        if row.status == "live"
    ]
    result = rules.clear(auction.volume, live)
    if not await store.mark_cleared(
        uow.conn, auction_id=auction_id, price=result.price, sold=result.sold, at=uow.now
    ):
        return await _view(uow.conn, auction)  # another run cleared it meanwhile
    await store.set_filled(
        uow.conn, fills=[{"bid": fill.bid.bid_id, "filled_": fill.filled} for fill in result.fills]
    )
    for code, fills in result.won.items():
        assert result.price is not None
        allowances = sum(fill.filled for fill in fills)
        amount_due = result.price * allowances
        await store.add_award(
            uow.conn,
            auction_id=auction_id,
            credit_code=code,
            allowances=allowances,
            price=result.price,
            amount_due=amount_due,
        )
        uow.record(
            AuctionWon(
                credit_code=code,
                compliance_year=auction.compliance_year,
                auction_id=auction_id,
                allowances=allowances,
                price=result.price,
                amount_due=amount_due,
                payment_due=auction.payment_due,
                use=auction.use,
                bids=[
                    FilledBid(
                        bid_id=uuid.UUID(fill.bid.bid_id),
                        price=fill.bid.price,
                        quantity=fill.bid.quantity,
                        filled=fill.filled,
                    )
                    for fill in fills
                ],
                won_at=uow.now,
            )
        )
    uow.record(
        AuctionCleared(
            policy=uow.policy.cycle,
            compliance_year=auction.compliance_year,
            auction_id=auction_id,
            volume=auction.volume,
            reserve_price=announced.reserve_price,
            clearing_price=result.price,
            sold=result.sold,
            **await store.tally_bids(uow.conn, auction_id=auction_id),
            winners=len(result.won),
            cleared_at=uow.now,
        )
    )
    return await _view(uow.conn, auction)


async def cancel_unpaid(uow: UnitOfWork, auction_id: str) -> int:
    """From the payment deadline on, cancel every award still unpaid
    (`auction.award_cancelled`); returns how many."""
    auction = uow.policy.auction(auction_id)
    if uow.now < auction.payment_due:
        return 0
    cancelled = 0
    for award in await store.list_awards(uow.conn, auction_id=auction_id, status="awarded"):
        if not await store.close_award(
            uow.conn,
            auction_id=auction_id,
            credit_code=award.credit_code,
            status="cancelled",
            at=uow.now,
        ):
            continue
        cancelled += 1
        uow.record(
            AuctionAwardCancelled(
                credit_code=award.credit_code,
                compliance_year=auction.compliance_year,
                auction_id=auction_id,
                allowances=award.allowances,
                amount_due=award.amount_due,
                payment_due=auction.payment_due,
                reason="unpaid",
                cancelled_at=uow.now,
            )
        )
    return cancelled


async def close_auctions_on_time(context: ServiceContext) -> None:
    """Clears each announced auction once its bidding has closed and cancels unpaid awards once
    payment is due, by the services' clock, on whichever instance gets there first."""
    while True:
        try:
            now = context.clock.now()
            async with context.reader.connect() as conn:
                announced = await store.list_auctions(conn)
                unpaid = {row.auction_id for row in await store.list_awards(conn, status="awarded")}
            for row in announced:
                auction = context.policy.auction(row.auction_id)
                if row.status == "announced" and now >= auction.closes_at:
                    await context.execute(clear_auction, row.auction_id)
                elif row.auction_id in unpaid and now >= auction.payment_due:
                    await context.execute(cancel_unpaid, row.auction_id)
        except Exception as error:  # the database away: try again at the next tick
            log.warning("auction close check failed: %r", error)
        await asyncio.sleep(CHECK_EVERY_S)


# --- views ------------------------------------------------------------------------------------


async def _view(conn: Any, auction: Auction) -> AuctionView:
    row = await store.get_auction(conn, auction_id=auction.id)
    result = None
    if row is not None and row.status == "cleared":
        result = AuctionResult(
            clearing_price=row.clearing_price,
            sold=row.sold,
            **await store.tally_bids(conn, auction_id=auction.id),
            winners=len(await store.list_awards(conn, auction_id=auction.id)),
            cleared_at=row.cleared_at,
        )
    return AuctionView(
        auction_id=auction.id,
        compliance_year=auction.compliance_year,
        status="planned" if row is None else row.status,
        volume=auction.volume,
        opens_at=auction.opens_at,
        closes_at=auction.closes_at,
        bidders=auction.bidders,
        bidder_cap=auction.bidder_cap,
        use=auction.use,
        payment_due=auction.payment_due,
        reserve=ReserveView(
            instrument=auction.reserve.instrument,
            reference_from=auction.reserve.reference_from,
            reference_to=auction.reserve.reference_to,
            multiplier=auction.reserve.multiplier,
            trading_days=row.reference_trading_days if row else None,
            volume=row.reference_volume if row else None,
            turnover=row.reference_turnover if row else None,
            price=row.reserve_price if row else None,
        ),
        announced_at=row.announced_at if row else None,
        result=result,
    )


def _bid_view(row: Any) -> BidView:
    return BidView(
        bid_id=row.bid_id,
        auction_id=row.auction_id,
        credit_code=row.credit_code,
        price=row.price,
        quantity=row.quantity,
        placed_at=row.placed_at,
        status=row.status,
        filled=row.filled,
    )


def _award_view(row: Any) -> AwardView:
    return AwardView(
        auction_id=row.auction_id,
        credit_code=row.credit_code,
        allowances=row.allowances,
        price=row.price,
        amount_due=row.amount_due,
        status=row.status,
        payment_id=row.payment_id,
        paid_at=row.paid_at,
        closed_at=row.closed_at,
    )


# --- routes -----------------------------------------------------------------------------------

Bureau = Annotated[Principal, allowed(ENTITY, "allocate")]
Reader = Annotated[Principal, allowed(ENTITY, "read")]
Bidder = Annotated[Principal, allowed(ENTITY, "bid")]
BidsReader = Annotated[Principal, allowed(BIDS, "read")]


@router.get("/auctions", responses=refusals(403), response_model=list[AuctionView])
async def list_auctions(context: Context, _: Reader) -> list[AuctionView]:
    """The policy's auctions: announced or not, and each one's result once cleared."""
    async with context.reader.connect() as conn:
        return [await _view(conn, auction) for auction in context.policy.auctions]


@router.get("/auctions/{auction_id}", responses=refusals(403, 404), response_model=AuctionView)
async def get_auction(auction_id: str, context: Context, _: Reader) -> AuctionView:
    """One auction: its terms, the reserve price once announced, the aggregate result once
    cleared (never anyone's bids)."""
    auction = context.policy.auction(auction_id)
    async with context.reader.connect() as conn:
        return await _view(conn, auction)


@router.post(
    "/auctions/{auction_id}/announce", responses=refusals(403, 404, 409), response_model=AuctionView
)
async def announce_auction(auction_id: str, context: Context, principal: Bureau) -> AuctionView:
    """The Bureau announces the auction (`auction.announced`): the reserve price is computed
    now from the exchange's daily summaries of the reference window and fixed."""
    return await context.execute(announce, (auction_id, principal.subject))


@router.post(
    "/auctions/{auction_id}/clear", responses=refusals(403, 404, 409), response_model=AuctionView
)
async def clear(auction_id: str, context: Context, _: Bureau) -> AuctionView:
    """Clear the auction now that bidding has closed. The registry does it by itself within a
    second of the close; this runs the same clearing, once, and shows the result."""
    return await context.execute(clear_auction, auction_id)


@router.post(
    "/auctions/{auction_id}/bids",
    status_code=201,
    responses=refusals(403, 404, 409, 422),
    response_model=BidView,
)
async def bid(auction_id: str, body: BidBody, context: Context, principal: Bidder) -> BidView:
    """A covered entity places a sealed bid (price per allowance in yuan, whole allowances)."""
    code = _own_code(principal)
    return await context.execute(
        place_bid, BidRequest(auction_id=auction_id, credit_code=code, **body.model_dump())
    )


@router.put(
    "/auctions/{auction_id}/bids/{bid_id}",
    responses=refusals(403, 404, 409, 422),
    response_model=BidView,
)
async def change(
    auction_id: str, bid_id: str, body: BidBody, context: Context, principal: Bidder
) -> BidView:
    """Change a live bid; it then ranks from the time of the change."""
    command = BidChange(
        auction_id=auction_id, bid_id=bid_id, credit_code=_own_code(principal), **body.model_dump()
    )
    return await context.execute(change_bid, command)


@router.delete(
    "/auctions/{auction_id}/bids/{bid_id}",
    responses=refusals(403, 404, 409),
    response_model=BidView,
)
async def withdraw(auction_id: str, bid_id: str, context: Context, principal: Bidder) -> BidView:
    """Withdraw a live bid while bidding is open."""
    command = BidChange(
        auction_id=auction_id, bid_id=bid_id, credit_code=_own_code(principal), withdraw=True
    )
    return await context.execute(change_bid, command)


@router.get(
    "/auctions/{auction_id}/bids", responses=refusals(403, 404, 409), response_model=list[BidView]
)
async def bids(auction_id: str, context: Context, principal: BidsReader) -> list[BidView]:
    """Bids are sealed: an entity sees its own; the Bureau sees all once the auction has cleared;
    a district sees none."""
    auction = context.policy.auction(auction_id)
    own = BIDS.scope(principal, "read").credit_code
    async with context.reader.connect() as conn:
        if own is None:  # the Bureau
            row = await store.get_auction(conn, auction_id=auction.id)
            if row is None or row.status != "cleared":
                raise Conflict("bids_sealed", "bids are sealed until the auction has cleared")
        rows = await store.list_bids(conn, auction_id=auction.id, credit_code=own)
    return [_bid_view(row) for row in rows]


@router.get(
    "/auctions/{auction_id}/awards", responses=refusals(403, 404), response_model=list[AwardView]
)
async def awards(auction_id: str, context: Context, principal: BidsReader) -> list[AwardView]:
    """What each winner won and whether it paid: the Bureau sees all, an entity its own."""
    auction = context.policy.auction(auction_id)
    own = BIDS.scope(principal, "read").credit_code
    async with context.reader.connect() as conn:
        rows = await store.list_awards(conn, auction_id=auction.id, credit_code=own)
    return [_award_view(row) for row in rows]


def _own_code(principal: Principal) -> str:
    if principal.role != "entity" or not principal.credit_code:
        raise Forbidden("forbidden", "only a covered entity bids, for itself")
    return principal.credit_code
