"""`carbon external ...`: stand-ins for the systems outside the platform that write its inbound
topics (the national CCER registry, the carbon inclusion platform, the exchange), so that the
walk-through and the tests run without them. Each command publishes one event exactly as that
system would: validated by the contract model, in CloudEvents binary mode, with the system's
own `ce_source`, on the topic the catalogue gives it. What they date "now" is the services' time:
in a rehearsal, the time `carbon clock set` moved them to."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import typer
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from carbon_contracts.catalogue import catalogue
from carbon_contracts.errors import where_invalid
from carbon_contracts.events import (
    AuctionPaymentConfirmed,
    CcerCancelled,
    ExchangeTransferSettled,
    MarketDayClosed,
    OffsetCancelled,
    Payload,
    Shcercir1Cancelled,
    TradingAccountOpened,
)
from carbon_platform.clock import Clock, aware_time
from carbon_platform.codec import encode
from carbon_platform.kafka import command_client_options

SHANGHAI = ZoneInfo("Asia/Shanghai")
EXCHANGE_CLOSE = time(15, 30)
"""The exchange's trading day ends at 15:30, Shanghai."""

external = typer.Typer(
    help="Stand-ins for the external systems: publish what the CCER registry, the carbon "
    "inclusion platform and the exchange would.",
    no_args_is_help=True,
)

Bootstrap = Annotated[str, typer.Option(envvar="CARBON_KAFKA_BOOTSTRAP")]
CreditCode = Annotated[str, typer.Option(help="the covered entity's unified social credit code")]
Year = Annotated[int, typer.Option(help="the compliance year it is for")]


def publish(payload_of: type[Payload], bootstrap: str, **fields: object) -> None:
    """Validate the fields as the contract says, publish the event and print what was sent."""
    try:
        payload = payload_of.model_validate(fields)
    except ValidationError as error:
        raise typer.BadParameter(where_invalid(error.errors(), whole=payload_of.EVENT)) from None
    topic = catalogue().topic_for_event(payload.EVENT)
    record = encode(payload, source=topic.source, time=_now())
    asyncio.run(_send(bootstrap, record.topic, record.key, record.value, record.headers))
    headers = dict(record.headers)
    typer.echo(
        json.dumps(
            {
                "topic": record.topic,
                "ce_id": headers["ce_id"].decode(),
                "ce_source": headers["ce_source"].decode(),
                "data": json.loads(record.value),
            },
            ensure_ascii=False,
        )
    )


async def _send(
    bootstrap: str, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    # Authenticated as CARBON_KAFKA_* say, like any client (in compose: the system's principal).
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks="all",
        **command_client_options(),
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def _now() -> datetime:
    # The services' clock, following a rehearsal's clock file: what is sent in a walk-through
    # is dated in the time the services live in.
    return Clock.for_commands().now()


def _today() -> date:
    return _now().astimezone(SHANGHAI).date()


def _yuan(text: str) -> Decimal:
    # Parsed here so that the contract's own message says what is wrong with the amount (e.g.
    # more than two decimals), rather than that a string does not match its pattern.
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount in yuan, e.g. 3884965.00") from None


def _cancel(
    kind: type[OffsetCancelled],
    bootstrap: str,
    credit_code: str,
    quantity: int,
    proof_id: str | None,
    project_id: str,
    cancelled_on: datetime | None,
    compliance_year: int,
) -> None:
    on = cancelled_on.date() if cancelled_on else _today()
    publish(
        kind,
        bootstrap,
        credit_code=credit_code,
        compliance_year=compliance_year,
        proof_id=proof_id or f"{kind.OFFSET_TYPE}-{on:%Y%m%d}-{secrets.token_hex(3).upper()}",
        quantity=quantity,
        project_id=project_id,
        cancelled_on=on,
        cancelled_at=_now(),
    )


ProofId = Annotated[str | None, typer.Option(help="the proof's number (default: a new one)")]
CancelledOn = Annotated[
    datetime | None,
    typer.Option(formats=["%Y-%m-%d"], help="the date on the proof (default: today, Shanghai)"),
]
Quantity = Annotated[int, typer.Option(help="tCO2e cancelled, whole units")]


@external.command("ccer-cancel")
def ccer_cancel(
    credit_code: CreditCode,
    quantity: Quantity,
    proof_id: ProofId = None,
    project_id: Annotated[str, typer.Option(help="the CCER project")] = "CCER-STANDIN-0001",
    cancelled_on: CancelledOn = None,
    compliance_year: Year = 2024,
    bootstrap: Bootstrap = "127.0.0.1:9092",
) -> None:
    """As the national CCER registry: CCERs cancelled for the entity (`ccer.cancelled`)."""
    _cancel(
        CcerCancelled,
        bootstrap,
        credit_code,
        quantity,
        proof_id,
        project_id,
        cancelled_on,
        compliance_year,
    )


@external.command("shcercir1-cancel")
def shcercir1_cancel(
    credit_code: CreditCode,
    quantity: Quantity,
    proof_id: ProofId = None,
    project_id: Annotated[str, typer.Option(help="the carbon inclusion project")] = (
        "SHCI-STANDIN-0001"
    ),
    cancelled_on: CancelledOn = None,
    compliance_year: Year = 2024,
    bootstrap: Bootstrap = "127.0.0.1:9092",
) -> None:
    """As the carbon inclusion platform: SHCERCIR1 cancelled, certificate issued.

    Publishes `shcercir1.cancelled`: the entity names the proof when it surrenders."""
    _cancel(
        Shcercir1Cancelled,
        bootstrap,
        credit_code,
        quantity,
        proof_id,
        project_id,
        cancelled_on,
        compliance_year,
    )


@external.command("trading-account")
def trading_account(
    credit_code: CreditCode,
    trading_account_id: Annotated[str, typer.Option(help="the exchange's account number")],
    compliance_year: Year = 2024,
    bootstrap: Bootstrap = "127.0.0.1:9092",
) -> None:
    """As the exchange: the entity's trading account opened (`trading_account.opened`)."""
    publish(
        TradingAccountOpened,
        bootstrap,
        credit_code=credit_code,
        compliance_year=compliance_year,
        trading_account_id=trading_account_id,
        opened_at=_now(),
    )


@external.command("transfer-back")
def transfer_back(
    credit_code: CreditCode,
    trading_account_id: Annotated[str, typer.Option(help="the account they leave")],
    allowances: Annotated[int, typer.Option(help="whole allowances moved")],
    vintage: Annotated[int, typer.Option(help="their vintage")] = 2024,
    transfer_id: Annotated[
        UUID | None, typer.Option(help="the exchange's transfer id (default: a new one)")
    ] = None,
    compliance_year: Year = 2024,
    bootstrap: Bootstrap = "127.0.0.1:9092",
) -> None:
    """As the exchange: allowances moved back from the trading account to the registry.

    Publishes `exchange_transfer.settled` (e.g. after buying). Sent again with the same
    --transfer-id, it is applied once."""
    publish(
        ExchangeTransferSettled,
        bootstrap,
        credit_code=credit_code,
        compliance_year=compliance_year,
        transfer_id=transfer_id or uuid4(),
        trading_account_id=trading_account_id,
        vintage=vintage,
        allowances=allowances,
        settled_at=_now(),
    )


@external.command("market-day")
def market_day(
    instrument: Annotated[str, typer.Option(help="the instrument, e.g. SHEA (allowances)")],
    trading_date: Annotated[
        datetime, typer.Option("--date", formats=["%Y-%m-%d"], help="the trading day")
    ],
    volume: Annotated[int, typer.Option(help="units traded that day")],
    turnover: Annotated[
        Decimal, typer.Option(parser=_yuan, metavar="YUAN", help="their value, to the fen")
    ],
    closed_at: Annotated[
        datetime | None,
        typer.Option(parser=aware_time, metavar="ISO", help="default: the date at 15:30, Shanghai"),
    ] = None,
    bootstrap: Bootstrap = "127.0.0.1:9092",
) -> None:
    """As the exchange: an instrument's trading day closed, with its volume and turnover.

    Publishes `market_day.closed`, keyed by the instrument: an auction's reserve price is
    computed from these days."""
    day = trading_date.date()
    publish(
        MarketDayClosed,
        bootstrap,
        instrument=instrument,
        trading_date=day,
        volume=volume,
        turnover=turnover,
        closed_at=closed_at or datetime.combine(day, EXCHANGE_CLOSE, SHANGHAI),
    )


@external.command("auction-payment")
def auction_payment(
    credit_code: CreditCode,
    auction_id: Annotated[str, typer.Option("--auction", help="e.g. shanghai-2024-1")],
    amount: Annotated[Decimal, typer.Option(parser=_yuan, metavar="YUAN", help="paid, to the fen")],
    compliance_year: Annotated[
        int, typer.Option("--year", "--compliance-year", help="the auction's compliance year")
    ] = 2024,
    payment_id: Annotated[
        str | None, typer.Option(help="the exchange's payment id (default: a new one)")
    ] = None,
    paid_at: Annotated[
        datetime | None,
        typer.Option(parser=aware_time, metavar="ISO", help="default: the services' now"),
    ] = None,
    bootstrap: Bootstrap = "127.0.0.1:9092",
) -> None:
    """As the exchange: the winner paid for allowances won at an auction.

    Publishes `auction_payment.confirmed`. Sent again with the same --payment-id, it is
    applied once."""
    at = paid_at or _now()
    publish(
        AuctionPaymentConfirmed,
        bootstrap,
        credit_code=credit_code,
        compliance_year=compliance_year,
        auction_id=auction_id,
        payment_id=payment_id
        or f"PAY-{at.astimezone(SHANGHAI):%Y%m%d}-{secrets.token_hex(3).upper()}",
        amount=amount,
        paid_at=at,
    )
