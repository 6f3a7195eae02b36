"""Paid auctions run through the registry's handlers, commands and API on a real (in-memory
SQLite) database: the announcement, sealed bids and their refusals, the clearing (once), the
settlement into surrender-only holdings, and those holdings refused in a transfer and accepted
in the year's surrender."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from carbon_contracts.errors import Conflict, Forbidden, Invalid, NotFound
from carbon_contracts.events import AuctionPaymentConfirmed, MarketDayClosed
from registry import auction, commands, ledger, store
from registry.domain.credit_code import make_credit_code
from registry.schemas import BidChange, BidRequest
from tests.unit.support import SHANGHAI, Harness
from tests.unit.test_registry_ledger import (
    CODE,
    entity,
    handler_refused_without_change,
    surrender,
    trading_account_opened,
    transfer,
)

AUCTION = "shanghai-2024-1"
ANNOUNCE_AT = datetime(2025, 6, 20, 10, tzinfo=SHANGHAI)
OPENS = datetime(2025, 6, 30, 9, 30, tzinfo=SHANGHAI)
CLOSES = datetime(2025, 6, 30, 11, 30, tzinfo=SHANGHAI)
BIDDERS = [make_credit_code(80 + n) for n in range(5)]
DAYS = [
    (date(2024, 12, 2), 120000, "9246000.00"),
    (date(2025, 3, 14), 80000, "6120800.00"),
    (date(2025, 5, 30), 50500, "3884965.00"),
    (date(2025, 6, 2), 70000, "1.00"),  # after the reference window: not counted
]


def market_day(day: date, volume: int, turnover: str) -> MarketDayClosed:
    return MarketDayClosed(
        instrument="SHEA",
        trading_date=day,
        volume=volume,
        turnover=Decimal(turnover),
        closed_at=datetime.combine(day, datetime.min.time(), SHANGHAI) + timedelta(hours=15),
    )


def payment(code: str = CODE, amount: str = "465000.00", payment_id: str = "PAY-1") -> Any:
    return AuctionPaymentConfirmed(
        credit_code=code,
        compliance_year=2024,
        auction_id=AUCTION,
        payment_id=payment_id,
        amount=Decimal(amount),
        paid_at=datetime(2025, 7, 1, 10, tzinfo=SHANGHAI),
    )


async def announced(registry: Harness) -> None:
    for day in DAYS:
        await registry.handle(market_day(*day))
    registry.clock.current = ANNOUNCE_AT
    await registry.run(auction.announce, (AUCTION, "bureau"))


async def place(registry: Harness, code: str, price: str, quantity: int) -> Any:
    return (
        await registry.run(
            auction.place_bid,
            BidRequest(
                auction_id=AUCTION, credit_code=code, price=Decimal(price), quantity=quantity
            ),
        )
    ).result


async def bidders(registry: Harness) -> None:
    await entity(registry, held={2024: 23052})
    for code in BIDDERS:
        await entity(registry, code, verified=None, held={})


async def cleared(registry: Harness) -> Any:
    """The walk-through's auction: six bidders, the last accepted one partly filled."""
    await bidders(registry)
    await announced(registry)
    registry.clock.current = OPENS
    for code, price, quantity in [
        (BIDDERS[0], "98.00", 100000),
        (BIDDERS[1], "96.50", 100000),
        (CODE, "95.00", 5000),
        (BIDDERS[2], "94.00", 100000),
        (BIDDERS[3], "93.50", 100000),
        (BIDDERS[4], "93.00", 100000),
        (CODE, "92.50", 1000),
    ]:
        await place(registry, code, price, quantity)
    registry.clock.current = CLOSES
    return await registry.run(auction.clear_auction, AUCTION)


async def test_the_announcement_fixes_the_reserve_from_the_reference_window(
    registry: Harness,
) -> None:
    for day in DAYS:
        await registry.handle(market_day(*day))
    registry.clock.current = datetime(2025, 5, 30, 23, 59, 59, 999999, tzinfo=SHANGHAI)
    with pytest.raises(Conflict) as refused:
        await registry.run(auction.announce, (AUCTION, "bureau"))
    assert refused.value.code == "reference_window_open"
    registry.clock.current = datetime(2025, 5, 31, tzinfo=SHANGHAI)  # the window has ended
    ran = await registry.run(auction.announce, (AUCTION, "bureau"))
    assert ran.result.reserve.price == Decimal("92.23")
    assert ran.types == ["auction.announced"]
    event = ran.events[0].payload
    assert (event["reserve_price"], event["reference_volume"], event["reference_turnover"]) == (
        "92.23",
        250500,
        "19251765.00",
    )
    assert ran.events[0].key == "shanghai-2024"
    with pytest.raises(Conflict) as again:
        await registry.run(auction.announce, (AUCTION, "bureau"))
    assert again.value.code == "already_announced"


async def test_an_auction_is_announced_before_it_opens_and_only_with_prices(
    registry: Harness,
) -> None:
    registry.clock.current = ANNOUNCE_AT
    with pytest.raises(Conflict) as no_prices:
        await registry.run(auction.announce, (AUCTION, "bureau"))
    assert no_prices.value.code == "no_reference_prices"
    await registry.handle(market_day(*DAYS[0]))
    registry.clock.current = OPENS
    with pytest.raises(Conflict) as late:
        await registry.run(auction.announce, (AUCTION, "bureau"))
    assert late.value.code == "bidding_already_open"
    with pytest.raises(NotFound) as unknown:
        await registry.run(auction.announce, ("shanghai-2024-9", "bureau"))
    assert unknown.value.code == "unknown_auction"


async def test_a_market_day_applies_once_and_another_version_is_refused(
    registry: Harness,
) -> None:
    await registry.handle(market_day(*DAYS[0]))
    await registry.handle(market_day(*DAYS[0]))  # the same again: nothing changes
    assert len(await registry.read(store.list_market_days, instrument="SHEA",
                                   first=date(2024, 1, 1), last=date(2026, 1, 1))) == 1  # fmt: skip
    await handler_refused_without_change(
        registry, market_day(DAYS[0][0], 120001, "9246000.00"), Conflict, "market_day_conflict"
    )


async def test_bids_are_refused_below_the_reserve_over_the_cap_outside_the_window_and_from_an_entity_not_covered(  # noqa: E501
    registry: Harness,
) -> None:
    await bidders(registry)
    await announced(registry)
    registry.clock.current = OPENS - timedelta(microseconds=1)
    with pytest.raises(Conflict) as early:
        await place(registry, CODE, "95.00", 1000)
    assert early.value.code == "bidding_not_open"
    registry.clock.current = OPENS
    with pytest.raises(Invalid) as low:
        await place(registry, CODE, "92.22", 1000)
    assert low.value.code == "below_reserve"
    await place(registry, CODE, "92.23", 60000)  # at the reserve: valid
    with pytest.raises(Invalid) as over:
        await place(registry, CODE, "99.00", 40001)  # 60000 + 40001 > 100000
    assert over.value.code == "over_bidder_cap"
    await place(registry, CODE, "99.00", 40000)  # exactly the cap
    # Not covered: known to the registry (e.g. from an earlier year) but not on the 2024 roster.
    outsider = make_credit_code(99)
    async with registry.context.transaction() as uow:
        await uow.conn.execute(
            store.entities.insert().values(
                credit_code=outsider,
                name="上海外部公司",
                district="pudong",
                sector="chemicals",
                registered_at=uow.now,
            )
        )
    with pytest.raises(Forbidden) as not_covered:
        await place(registry, outsider, "99.00", 10)
    assert not_covered.value.code == "not_eligible"
    no_account = make_credit_code(98)
    await entity(registry, no_account, account=False, verified=None, held={})
    with pytest.raises(Forbidden) as closed_account:
        await place(registry, no_account, "99.00", 10)
    assert closed_account.value.code == "not_eligible"
    registry.clock.current = CLOSES  # 11:30:00.000 is late
    with pytest.raises(Conflict) as late:
        await place(registry, BIDDERS[0], "99.00", 10)
    assert late.value.code == "bidding_closed"
    bids = await registry.read(store.list_bids, auction_id=AUCTION)
    assert sorted((row.credit_code, row.price, row.quantity) for row in bids) == [
        (CODE, Decimal("92.23"), 60000),
        (CODE, Decimal("99.00"), 40000),
    ]


async def test_a_changed_bid_ranks_from_its_change_and_a_withdrawn_one_frees_the_cap(
    registry: Harness,
) -> None:
    await bidders(registry)
    await announced(registry)
    registry.clock.current = OPENS
    first = await place(registry, CODE, "95.00", 100000)
    registry.clock.current = OPENS + timedelta(minutes=5)
    other = await place(registry, BIDDERS[0], "95.00", 100000)
    registry.clock.current = OPENS + timedelta(minutes=10)
    changed = (
        await registry.run(
            auction.change_bid,
            BidChange(
                auction_id=AUCTION,
                bid_id=first.bid_id,
                credit_code=CODE,
                price=Decimal("95.00"),
                quantity=90000,
            ),
        )
    ).result
    assert changed.placed_at == OPENS + timedelta(minutes=10)
    with pytest.raises(NotFound):  # another's bid: not found for this bidder
        await registry.run(
            auction.change_bid,
            BidChange(auction_id=AUCTION, bid_id=other.bid_id, credit_code=CODE, withdraw=True),
        )
    withdrawn = (
        await registry.run(
            auction.change_bid,
            BidChange(auction_id=AUCTION, bid_id=first.bid_id, credit_code=CODE, withdraw=True),
        )
    ).result
    assert withdrawn.status == "withdrawn"
    await place(registry, CODE, "94.00", 100000)  # the cap is free again
    registry.clock.current = CLOSES
    result = (await registry.run(auction.clear_auction, AUCTION)).result.result
    assert result is not None
    assert (result.sold, result.clearing_price) == (200000, Decimal("94.00"))


async def test_the_clearing_runs_once_and_publishes_the_result_and_each_award(
    registry: Harness,
) -> None:
    ran = await cleared(registry)
    result = ran.result.result
    assert (result.clearing_price, result.sold, result.bids, result.bidders, result.winners) == (
        Decimal("93.00"),
        500000,
        7,
        6,
        6,
    )
    assert ran.types.count("auction.won") == 6 and ran.types[-1] == "auction.cleared"
    won = {e.payload["credit_code"]: e.payload for e in ran.events if e.type == "auction.won"}
    assert won[CODE]["allowances"] == 5000 and won[CODE]["amount_due"] == "465000.00"
    assert won[BIDDERS[4]]["allowances"] == 95000  # the marginal bid, partly filled
    assert [b["filled"] for b in won[BIDDERS[4]]["bids"]] == [95000]
    again = await registry.run(auction.clear_auction, AUCTION)
    assert again.events == [] and again.result == ran.result
    outbox = await registry.outbox()
    assert [e.type for e in outbox].count("auction.cleared") == 1
    awards = await registry.read(store.list_awards, auction_id=AUCTION)
    assert sum(row.allowances for row in awards) == 500000


async def test_the_clearing_waits_for_the_close(registry: Harness) -> None:
    await bidders(registry)
    await announced(registry)
    registry.clock.current = CLOSES - timedelta(microseconds=1)
    with pytest.raises(Conflict) as refused:
        await registry.run(auction.clear_auction, AUCTION)
    assert refused.value.code == "bidding_open"


async def test_payment_credits_surrender_only_allowances_once(registry: Harness) -> None:
    await cleared(registry)
    await handler_refused_without_change(
        registry, payment(amount="464999.99"), Conflict, "payment_amount_mismatch"
    )
    other_year = payment().model_copy(update={"compliance_year": 2023})
    await handler_refused_without_change(registry, other_year, Conflict, "wrong_compliance_year")
    events = await registry.handle(payment())
    assert [e.type for e in events] == ["auction.settled"]
    assert events[0].payload["allowances"] == 5000
    assert await registry.handle(payment()) == []  # the same payment again: nothing more
    assert await registry.read(store.get_surrender_only, credit_code=CODE) == {2024: 5000}
    assert await registry.read(store.get_holdings, credit_code=CODE) == {2024: 23052}
    await handler_refused_without_change(
        registry, payment(payment_id="PAY-2"), Conflict, "award_settled"
    )
    await handler_refused_without_change(
        registry, payment(code=make_credit_code(97), payment_id="PAY-3"), NotFound, "no_award"
    )
    reconciliation = await ledger.reconcile(registry.context)
    assert reconciliation.balanced, reconciliation.differences
    assert reconciliation.allowances_held == reconciliation.journal_allowances


async def test_auctioned_allowances_are_refused_in_a_transfer_and_used_in_the_surrender(
    registry: Harness,
) -> None:
    await cleared(registry)
    await registry.handle(payment())
    await registry.handle(trading_account_opened())
    await registry.run(ledger.transfer_out, transfer(23052))  # the tradable ones may go
    with pytest.raises(Conflict) as refused:
        await registry.run(ledger.transfer_out, transfer(1))
    assert refused.value.code == "surrender_only"
    assert await registry.read(store.get_surrender_only, credit_code=CODE) == {2024: 5000}
    done = (await registry.run(commands.surrender, surrender(5000))).result
    assert (done.surrender_only_drawn, done.drawn_from, done.surrendered) == (5000, [], 5000)
    assert await registry.read(store.get_surrender_only, credit_code=CODE) == {2024: 0}
    reconciliation = await ledger.reconcile(registry.context)
    assert reconciliation.balanced, reconciliation.differences


async def test_an_award_left_unpaid_is_cancelled_at_the_payment_deadline(
    registry: Harness,
) -> None:
    await cleared(registry)
    await registry.handle(payment())
    due = datetime(2025, 7, 3, tzinfo=SHANGHAI)
    registry.clock.current = due - timedelta(microseconds=1)
    assert (await registry.run(auction.cancel_unpaid, AUCTION)).result == 0
    registry.clock.current = due
    ran = await registry.run(auction.cancel_unpaid, AUCTION)
    assert ran.result == 5 and ran.types == ["auction.award_cancelled"] * 5
    awards = {row.credit_code: row.status for row in
              await registry.read(store.list_awards, auction_id=AUCTION)}  # fmt: skip
    assert awards[CODE] == "settled" and awards[BIDDERS[0]] == "cancelled"
    late = AuctionPaymentConfirmed(
        credit_code=BIDDERS[0],
        compliance_year=2024,
        auction_id=AUCTION,
        payment_id="PAY-9",
        amount=Decimal("9300000.00"),
        paid_at=due,
    )
    await handler_refused_without_change(registry, late, Conflict, "award_cancelled")
    assert (await registry.run(auction.cancel_unpaid, AUCTION)).types == []


async def test_bids_are_sealed_in_the_api(registry: Harness) -> None:
    await bidders(registry)
    await announced(registry)
    registry.clock.current = OPENS
    async with registry.client() as client:
        own = registry.token("entity", credit_code=CODE)
        placed = await client.post(
            f"/auctions/{AUCTION}/bids", json={"price": "95.5", "quantity": 5000}, headers=own
        )
        assert placed.status_code == 201, placed.text
        assert placed.json()["price"] == "95.50"
        other = registry.token("entity", credit_code=BIDDERS[0])
        assert (await client.get(f"/auctions/{AUCTION}/bids", headers=other)).json() == []
        mine = await client.get(f"/auctions/{AUCTION}/bids", headers=own)
        assert [b["quantity"] for b in mine.json()] == [5000]
        bureau = registry.token("regulator")
        sealed = await client.get(f"/auctions/{AUCTION}/bids", headers=bureau)
        assert sealed.status_code == 409 and sealed.json()["error"]["code"] == "bids_sealed"
        district = registry.token("district", district="pudong")
        assert (await client.get(f"/auctions/{AUCTION}/bids", headers=district)).status_code == 403
        fractional = await client.post(
            f"/auctions/{AUCTION}/bids", json={"price": "95.555", "quantity": 1}, headers=own
        )
        assert fractional.status_code == 422, fractional.text
        by_bureau = await client.post(
            f"/auctions/{AUCTION}/bids", json={"price": "95.00", "quantity": 1}, headers=bureau
        )
        assert by_bureau.status_code == 403
        view = await client.get(f"/auctions/{AUCTION}", headers=district)
        assert view.json()["reserve"]["price"] == "92.23" and view.json()["result"] is None
        registry.clock.current = CLOSES
        cleared_now = await client.post(f"/auctions/{AUCTION}/clear", headers=bureau)
        assert cleared_now.status_code == 200, cleared_now.text
        assert cleared_now.json()["result"]["clearing_price"] == "95.50"
        everyone = await client.get(f"/auctions/{AUCTION}/bids", headers=bureau)
        assert [b["filled"] for b in everyone.json()] == [5000]
