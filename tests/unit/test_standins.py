"""`carbon external`: what the exchange's stand-ins send, and what they refuse to send.

The broker client is replaced by a list of what would have been sent, read back as a subscriber
reads it; the commands' publishing through Kafka is covered end to end (tests/e2e)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from carbon_contracts.events import AuctionPaymentConfirmed, MarketDayClosed, Payload
from carbon_platform import standins
from carbon_platform.cli import app
from carbon_platform.codec import Event, RawMessage, decode

SHANGHAI = ZoneInfo("Asia/Shanghai")
CODE = "91310115MA1K4C8N0W"

runner = CliRunner(env={"COLUMNS": "300"})  # an error on one line, however long


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Event[Payload]]:
    """What the commands send, decoded; their clock is the one of a stack in tmp_path."""
    monkeypatch.setenv("CARBON_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("CARBON_CLOCK_FILE", raising=False)
    monkeypatch.delenv("CARBON_CLOCK_START", raising=False)
    events: list[Event[Payload]] = []

    async def send(
        bootstrap: str,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> None:
        events.append(decode(RawMessage(topic, 0, 0, key, value, headers)))

    monkeypatch.setattr(standins, "_send", send)
    return events


def external(*arguments: str) -> str:
    result = runner.invoke(app, ["external", *arguments])
    assert result.exit_code == 0, result.output
    return result.output


MARKET_DAY = ("market-day", "--instrument", "SHEA", "--date", "2025-05-30")


def test_a_market_day_closes_at_the_exchanges_close(sent: list[Event[Payload]]) -> None:
    external(*MARKET_DAY, "--volume", "50500", "--turnover", "3884965")
    [event] = sent
    assert event.type == "market_day.closed"
    assert event.source == "/external/exchange"
    assert event.subject == "SHEA"  # keyed by the instrument
    assert event.payload == MarketDayClosed(
        instrument="SHEA",
        trading_date=datetime(2025, 5, 30).date(),
        volume=50500,
        turnover=Decimal("3884965.00"),
        closed_at=datetime(2025, 5, 30, 15, 30, tzinfo=SHANGHAI),
    )


def test_a_market_day_may_close_at_another_time(sent: list[Event[Payload]]) -> None:
    external(
        *MARKET_DAY,
        *("--volume", "0", "--turnover", "0", "--closed-at", "2025-05-30T15:00+08:00"),
    )
    [event] = sent
    assert isinstance(event.payload, MarketDayClosed)
    assert event.payload.closed_at == datetime(2025, 5, 30, 15, 0, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (
            ("--volume", "50500", "--turnover", "3884965.001"),
            "turnover: Value error, amount in yuan 3884965.001 has more than 2 decimals (fen)",
        ),
        (
            ("--volume", "0", "--turnover", "3884965.00"),
            "market_day.closed: Value error, volume and turnover are both zero or both positive",
        ),
        (("--volume", "50500", "--turnover", "a lot"), "'a lot' is not an amount in yuan"),
        (("--volume", "-1", "--turnover", "0"), "volume: Input should be greater than or equal"),
        (
            ("--volume", "1", "--turnover", "1", "--closed-at", "2025-05-30T15:30"),
            "'2025-05-30T15:30' has no UTC offset",
        ),
    ],
)
def test_a_bad_market_day_is_refused_before_anything_is_sent(
    sent: list[Event[Payload]], arguments: tuple[str, ...], reason: str
) -> None:
    result = runner.invoke(app, ["external", *MARKET_DAY, *arguments])
    assert result.exit_code == 2
    assert reason in result.output
    assert sent == []


def test_an_auction_payment_is_dated_in_the_rehearsed_time(
    sent: list[Event[Payload]], tmp_path: Path
) -> None:
    rehearsed = runner.invoke(app, ["clock", "set", "2025-07-01T10:00+08:00"])
    assert rehearsed.exit_code == 0, rehearsed.output
    external(
        "auction-payment",
        *("--credit-code", CODE, "--auction", "shanghai-2024-1", "--amount", "465000.00"),
    )
    [event] = sent
    payment = event.payload
    assert isinstance(payment, AuctionPaymentConfirmed)
    assert (event.type, event.subject) == ("auction_payment.confirmed", CODE)
    assert (payment.auction_id, payment.amount, payment.compliance_year) == (
        "shanghai-2024-1",
        Decimal("465000.00"),
        2024,
    )
    assert re.fullmatch(r"PAY-20250701-[0-9A-F]{6}", payment.payment_id)
    started = datetime(2025, 7, 1, 10, 0, tzinfo=SHANGHAI)
    for at in (payment.paid_at, event.time):  # the CloudEvents time too
        assert 0 <= (at - started).total_seconds() < 5


def test_an_auction_payment_may_name_its_id_time_and_year(sent: list[Event[Payload]]) -> None:
    external(
        "auction-payment",
        *("--credit-code", CODE, "--auction", "shanghai-2024-1", "--amount", "465000"),
        *("--year", "2024", "--payment-id", "PAY-20250701-0001"),
        *("--paid-at", "2025-07-01T10:00:00+08:00"),
    )
    assert sent[0].payload == AuctionPaymentConfirmed(
        credit_code=CODE,
        compliance_year=2024,
        auction_id="shanghai-2024-1",
        payment_id="PAY-20250701-0001",
        amount=Decimal("465000.00"),
        paid_at=datetime(2025, 7, 1, 10, 0, tzinfo=SHANGHAI),
    )


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (("--amount", "465000.005"), "amount: Value error, amount in yuan 465000.005 has more"),
        (("--amount", "1", "--payment-id", "PAY 1"), "payment_id: String should match pattern"),
        (("--amount", "1", "--paid-at", "2025-07-01"), "'2025-07-01' has no UTC offset"),
    ],
)
def test_a_bad_auction_payment_is_refused_before_anything_is_sent(
    sent: list[Event[Payload]], arguments: tuple[str, ...], reason: str
) -> None:
    result = runner.invoke(
        app,
        ["external", "auction-payment", "--credit-code", CODE, "--auction", "s-1", *arguments],
    )
    assert result.exit_code == 2
    assert reason in result.output
    assert sent == []
