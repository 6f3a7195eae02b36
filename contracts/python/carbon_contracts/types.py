"""Value types shared by the event payloads.

Quantities: allowances and offsets are whole units (int); emissions are decimals serialised as
strings with a fixed scale of three (kilogram precision), never floats.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
)

EMISSIONS_SCALE = 3
_EMISSIONS_QUANTUM = Decimal(1).scaleb(-EMISSIONS_SCALE)
EMISSIONS_PATTERN = r"^(0|[1-9][0-9]{0,11})\.[0-9]{3}$"
DECIMAL_PATTERN = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,9})?$"
CREDIT_CODE_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$"
IDENTIFIER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
INSTRUMENT_PATTERN = r"^[A-Z][A-Z0-9]{1,15}$"
YUAN_SCALE = 2
_YUAN_QUANTUM = Decimal(1).scaleb(-YUAN_SCALE)
YUAN_PATTERN = r"^(0|[1-9][0-9]{0,14})\.[0-9]{2}$"


def _decimal(value: Any, pattern: str, what: str) -> Decimal:
    # On the wire a decimal is a string only: a JSON number (integer, float, exponent) could
    # have been rounded by whoever wrote it, and the published schemas say "string".
    if isinstance(value, (bool, int, float)):
        raise ValueError(f'{what} must be a decimal string such as "12.5", not a number')
    if isinstance(value, str):
        if not re.fullmatch(pattern, value):
            raise ValueError(f"{what} {value!r} does not match {pattern}")
        try:
            value = Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes this
            raise ValueError(f"{what} {value!r} is not a decimal") from exc
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a non-negative decimal")
    return value


def _wire(amount: Decimal, text: str, pattern: str, what: str) -> Decimal:
    # Decimal and int inputs skip the string pattern in _decimal. Check the serialised form too,
    # or a computed value (e.g. a fuel factor with 27 decimals) would pass the model yet produce a
    # payload that the published schema, and this very model when decoding, reject.
    if not re.fullmatch(pattern, text):
        raise ValueError(f"{what} would serialise as {text!r}, which does not match {pattern}")
    return amount


def _format_emissions(value: Decimal) -> str:
    return f"{value:.{EMISSIONS_SCALE}f}"


def _format_decimal(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _emissions(value: Any) -> Decimal:
    amount = _decimal(value, EMISSIONS_PATTERN, "emissions")
    quantized = amount.quantize(_EMISSIONS_QUANTUM)
    if quantized != amount:
        raise ValueError(f"emissions {amount} have more than {EMISSIONS_SCALE} decimals")
    return _wire(quantized, _format_emissions(quantized), EMISSIONS_PATTERN, "emissions")


def _plain_decimal(value: Any) -> Decimal:
    amount = _decimal(value, DECIMAL_PATTERN, "quantity")
    return _wire(amount, _format_decimal(amount), DECIMAL_PATTERN, "quantity")


TonnesCO2 = Annotated[
    Decimal,
    BeforeValidator(_emissions),
    PlainSerializer(_format_emissions, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": EMISSIONS_PATTERN,
            "description": "tCO2e as a decimal string with exactly three decimals",
        }
    ),
]
"""Emissions in tonnes of CO2 equivalent, exact to three decimals."""

DecimalString = Annotated[
    Decimal,
    BeforeValidator(_plain_decimal),
    PlainSerializer(_format_decimal, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN}),
]
"""A non-negative decimal quantity (activity data, factors, ratios) as a string."""


def _format_yuan(value: Decimal) -> str:
    return f"{value:.{YUAN_SCALE}f}"


def _yuan(value: Any) -> Decimal:
    # In: at most two decimals ("45", "45.6", "45.60"); out: always exactly two.
    amount = _decimal(value, r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,2})?$", "amount in yuan")
    quantized = amount.quantize(_YUAN_QUANTUM)
    if quantized != amount:
        raise ValueError(f"amount in yuan {amount} has more than {YUAN_SCALE} decimals (fen)")
    return _wire(quantized, _format_yuan(quantized), YUAN_PATTERN, "amount in yuan")


Yuan = Annotated[
    Decimal,
    BeforeValidator(_yuan),
    PlainSerializer(_format_yuan, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": YUAN_PATTERN,
            "description": "yuan (CNY) as a decimal string with exactly two decimals (fen)",
        }
    ),
]
"""An amount of money or a price per allowance in yuan, exact to the fen."""

CreditCode = Annotated[
    str,
    Field(
        pattern=CREDIT_CODE_PATTERN,
        description="18-character unified social credit code (GB 32100-2015); the Kafka key",
    ),
]
Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
WholeNumber = Annotated[int, Strict()]
"""A JSON integer only: never a boolean, a float (1.0, 1e3) or a string ("1")."""
Allowances = Annotated[WholeNumber, Field(ge=0, description="whole allowances (1 = 1 tCO2e)")]
ComplianceYear = Annotated[WholeNumber, Field(ge=2013, le=2100)]
Flag = Annotated[bool, Strict()]
"""JSON true or false only: never 1, 0 or "true"."""


def _aware(value: Any) -> Any:
    if getattr(value, "tzinfo", None) is None:
        raise ValueError("datetime must carry a UTC offset")
    return value


AwareCheck = AfterValidator(_aware)
