"""`carbon external ...`: stand-ins for the systems outside the platform that write its inbound
topics (the national CCER registry, the carbon inclusion platform, the exchange), so that the
walk-through and the tests run without them. Each command publishes one event exactly as that
system would: validated by the contract model, in CloudEvents binary mode, with the system's
own `ce_source`, on the topic the catalogue gives it."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, date, datetime
from typing import Annotated
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import typer
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from carbon_contracts.catalogue import catalogue
from carbon_contracts.errors import where_invalid
from carbon_contracts.events import (
    CcerCancelled,
    ExchangeTransferSettled,
    OffsetCancelled,
    Payload,
    Shcercir1Cancelled,
    TradingAccountOpened,
)
from carbon_platform.codec import encode
from carbon_platform.kafka import command_client_options

SHANGHAI = ZoneInfo("Asia/Shanghai")

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
        raise typer.BadParameter(where_invalid(error.errors())) from None
    topic = catalogue().topic_for_event(payload.EVENT)
    record = encode(payload, source=topic.source, time=datetime.now(UTC))
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


def _today() -> date:
    return datetime.now(SHANGHAI).date()


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
        cancelled_at=datetime.now(UTC),
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
        opened_at=datetime.now(UTC),
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
        settled_at=datetime.now(UTC),
    )
