"""Column types shared by the services: aware UTC datetimes and exact scaled decimals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from carbon_platform.tables import ScaledDecimal, UtcDateTime

SQLITE = sqlite.dialect()
POSTGRES = postgresql.dialect()
SHANGHAI = timezone(timedelta(hours=8))

offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
aware_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)

# --- UtcDateTime -----------------------------------------------------------------------------


def test_utc_datetime_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        UtcDateTime().process_bind_param(datetime(2025, 6, 30, 17, 0), SQLITE)


def test_utc_datetime_binds_an_aware_datetime_as_utc() -> None:
    deadline = datetime(2025, 6, 30, 17, 0, tzinfo=SHANGHAI)
    bound = UtcDateTime().process_bind_param(deadline, SQLITE)
    assert bound == deadline
    assert bound is not None
    assert bound.tzinfo is UTC
    assert (bound.hour, bound.day) == (9, 30)


def test_utc_datetime_attaches_utc_to_a_naive_result() -> None:
    # SQLite keeps no offset: the stored UTC wall-clock comes back naive.
    result = UtcDateTime().process_result_value(datetime(2025, 6, 30, 9, 0), SQLITE)
    assert result == datetime(2025, 6, 30, 9, 0, tzinfo=UTC)
    assert result is not None
    assert result.tzinfo is UTC


def test_utc_datetime_converts_an_aware_result_to_utc() -> None:
    stored = datetime(2025, 6, 30, 17, 0, tzinfo=SHANGHAI)
    result = UtcDateTime().process_result_value(stored, POSTGRES)
    assert result == stored
    assert result is not None
    assert result.utcoffset() == timedelta(0)
    assert result.hour == 9


def test_utc_datetime_passes_none_through() -> None:
    assert UtcDateTime().process_bind_param(None, SQLITE) is None
    assert UtcDateTime().process_result_value(None, SQLITE) is None


@given(aware_datetimes)
def test_utc_datetime_round_trips_the_instant_through_sqlite(moment: datetime) -> None:
    column = UtcDateTime()
    bound = column.process_bind_param(moment, SQLITE)
    assert bound is not None
    stored = bound.replace(tzinfo=None)  # what SQLite gives back
    result = column.process_result_value(stored, SQLITE)
    assert result == moment
    assert result is not None
    assert result.utcoffset() == timedelta(0)


# --- ScaledDecimal ---------------------------------------------------------------------------


def test_scaled_decimal_stores_tonnes_as_whole_kilograms() -> None:
    column = ScaledDecimal(3)
    bound = column.process_bind_param(Decimal("24251.551"), SQLITE)
    assert bound == 24251551
    assert type(bound) is int


def test_scaled_decimal_reads_back_with_the_fixed_scale() -> None:
    column = ScaledDecimal(3)
    result = column.process_result_value(24251551, SQLITE)
    assert result == Decimal("24251.551")
    assert str(result) == "24251.551"
    assert str(column.process_result_value(5000, SQLITE)) == "5.000"
    assert str(column.process_result_value(0, SQLITE)) == "0.000"


@pytest.mark.parametrize("text", ["24251.551", "0.000", "5", "2880.0", "0.001", "1.2340"])
def test_scaled_decimal_round_trips(text: str) -> None:
    column = ScaledDecimal(3)
    result = column.process_result_value(column.process_bind_param(Decimal(text), SQLITE), SQLITE)
    assert result == Decimal(text)
    assert result is not None
    assert result.as_tuple().exponent == -3


@pytest.mark.parametrize("text", ["0.0001", "24251.5515", "1.2345", "0.00000001"])
def test_scaled_decimal_refuses_more_decimals_than_its_scale(text: str) -> None:
    with pytest.raises(ValueError, match="more than 3 decimals"):
        ScaledDecimal(3).process_bind_param(Decimal(text), SQLITE)


def test_scaled_decimal_defaults_to_three_decimals_and_honours_another_scale() -> None:
    assert ScaledDecimal().scale == 3
    cents = ScaledDecimal(2)
    assert cents.process_bind_param(Decimal("12.34"), SQLITE) == 1234
    assert str(cents.process_result_value(1234, SQLITE)) == "12.34"
    with pytest.raises(ValueError):
        cents.process_bind_param(Decimal("12.345"), SQLITE)


def test_scaled_decimal_passes_none_through() -> None:
    assert ScaledDecimal(3).process_bind_param(None, SQLITE) is None
    assert ScaledDecimal(3).process_result_value(None, SQLITE) is None


@given(
    st.decimals(
        min_value=Decimal("-999999999999.999"),
        max_value=Decimal("999999999999.999"),
        places=3,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_scaled_decimal_round_trips_any_value_with_three_places(value: Decimal) -> None:
    column = ScaledDecimal(3)
    bound = column.process_bind_param(value, SQLITE)
    assert isinstance(bound, int)
    assert -(2**63) <= bound < 2**63  # fits BIGINT
    result = column.process_result_value(bound, SQLITE)
    assert result == value
    assert result is not None
    assert result.as_tuple().exponent == -3


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=1, max_value=9),
)
def test_scaled_decimal_refuses_any_fourth_significant_decimal(whole: int, digit: int) -> None:
    value = Decimal(whole) + Decimal(digit).scaleb(-4)
    with pytest.raises(ValueError):
        ScaledDecimal(3).process_bind_param(value, SQLITE)
