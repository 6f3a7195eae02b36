"""The emissions calculation engine, with the shanghai-2024 factor table."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.policy import default_policy_path, load_policy
from carbon_contracts.types import EMISSIONS_PATTERN, EMISSIONS_SCALE
from carbon_emissions.calculation import (
    SOURCES,
    ActivityLine,
    Calculation,
    CalculationError,
    FactorTable,
    UnitFactor,
    calculate,
    fuel_factor,
)

POLICY = load_policy(default_policy_path())
TABLE = FactorTable.from_policy(POLICY)


def line(source: str, activity: str, fuel: str | None = None) -> ActivityLine:
    return ActivityLine(source, Decimal(activity), fuel)  # type: ignore[arg-type]


def test_the_table_is_the_policy_version() -> None:
    assert TABLE.version == POLICY.factor_table == "shanghai-default-2024.1"
    assert tuple(sorted(TABLE.fuels)) == ("diesel", "fuel_oil", "natural_gas", "raw_coal")


def test_shanghai_default_electricity() -> None:
    result = calculate([line("electricity", "1")], TABLE)
    (only,) = result.lines
    assert (only.unit, only.factor, only.emissions) == ("10^4 kWh", Decimal("4.2"), Decimal("4.2"))
    assert str(only.emissions) == "4.200"
    assert str(result.total) == "4.200"


def test_shanghai_default_heat() -> None:
    result = calculate([line("heat", "1000")], TABLE)
    assert result.lines[0].unit == "GJ"
    assert str(result.total) == "60.000"


def test_natural_gas_factor_from_the_policy_numbers() -> None:
    # 389.31 GJ/10^4 Nm3 x 15.3 tC/TJ x 0.99 x 44/12 / 1000 = 21.62188809 exactly.
    expected = Decimal("389.31") * Decimal("15.3") * Decimal("0.99") * 44 / 12 / 1000
    assert expected == Decimal("21.62188809")
    factor, unit = TABLE.factor_for(line("fuel", "1", "natural_gas"))
    assert unit == "10^4 Nm3"
    assert factor == Decimal("21.62188809")
    assert str(factor) == "21.621888090"


def test_other_fuel_factors_are_rounded_to_nine_decimals() -> None:
    # 42.652 x 20.2 x 0.98 x 44/12 / 1000 = 3.09590963733...
    assert TABLE.fuels["diesel"] == UnitFactor(Decimal("3.095909637"), "t")
    for unit_factor in TABLE.fuels.values():
        assert unit_factor.factor.as_tuple().exponent == -9


def test_fuel_factor_rounds_half_up_at_the_ninth_decimal() -> None:
    assert fuel_factor(Decimal(1), Decimal(1), Decimal(1)) == Decimal("0.003666667")
    assert fuel_factor(Decimal(3), Decimal(1), Decimal(1)) == Decimal("0.011")


def test_natural_gas_line() -> None:
    result = calculate([line("fuel", "1.5", "natural_gas")], TABLE)
    # 1.5 x 21.62188809 = 32.432832135 -> 32.433
    assert result.lines[0].emissions == Decimal("32.433")
    assert result.lines[0].fuel == "natural_gas"


def test_total_is_the_sum_of_the_lines() -> None:
    lines = [
        line("electricity", "12.3456"),
        line("heat", "250.5"),
        line("fuel", "3.25", "natural_gas"),
        line("fuel", "100", "diesel"),
        line("fuel", "0", "raw_coal"),
    ]
    result = calculate(lines, TABLE)
    assert result == Calculation(
        factor_table="shanghai-default-2024.1",
        lines=result.lines,
        total=Decimal("446.744"),
    )
    assert [str(calculated.emissions) for calculated in result.lines] == [
        "51.852",  # 51.85152
        "15.030",
        "70.271",  # 70.2711362925
        "309.591",  # 309.5909637
        "0.000",
    ]
    assert result.total == sum(calculated.emissions for calculated in result.lines)


def test_rounding_is_half_up_at_the_third_decimal() -> None:
    # 0.175 GJ x 0.06 = 0.0105 exactly: half up gives 0.011 (half even and truncation: 0.010).
    assert calculate([line("heat", "0.175")], TABLE).total == Decimal("0.011")
    # 0.0625 x 4.2 = 0.2625 exactly: half up gives 0.263 (half even: 0.262).
    assert calculate([line("electricity", "0.0625")], TABLE).total == Decimal("0.263")
    # just below the half rounds down: 0.174 x 0.06 = 0.01044
    assert calculate([line("heat", "0.174")], TABLE).total == Decimal("0.010")


def test_each_line_is_rounded_before_the_total() -> None:
    # Each line is 0.0105 -> 0.011; the total is 0.022, not round(0.021) = 0.021.
    result = calculate([line("heat", "0.175"), line("heat", "0.175")], TABLE)
    assert result.total == Decimal("0.022")


def test_large_activity_is_exact() -> None:
    result = calculate([line("fuel", "9999999999.999999999", "natural_gas")], TABLE)
    # 9999999999.999999999 x 21.62188809 = 216218880899.99999997837811191
    assert str(result.total) == "216218880900.000"
    assert calculate([line("heat", "999999999999.999999999")], TABLE).total == Decimal(
        "60000000000.000"
    )


def test_integer_activity_is_accepted() -> None:
    assert ActivityLine("heat", 5).activity == Decimal(5)  # type: ignore[arg-type]


def test_negative_zero_activity_is_zero() -> None:
    result = calculate([line("heat", "-0")], TABLE)
    assert str(result.total) == "0.000"


# --- errors ----------------------------------------------------------------------------------


def test_unknown_fuel_lists_the_known_ones() -> None:
    with pytest.raises(CalculationError) as raised:
        calculate([line("heat", "1"), line("fuel", "1", "coke")], TABLE)
    assert str(raised.value) == (
        "line 2: unknown fuel 'coke': factor table 'shanghai-default-2024.1' knows "
        "diesel, fuel_oil, natural_gas, raw_coal"
    )


@pytest.mark.parametrize(("source", "article"), [("electricity", "an"), ("heat", "a")])
def test_a_fuel_given_for_electricity_or_heat(source: str, article: str) -> None:
    with pytest.raises(
        CalculationError,
        match=f"^{article} {source} line names no fuel, but fuel 'natural_gas' was given$",
    ):
        line(source, "1", "natural_gas")


@pytest.mark.parametrize("fuel", [None, ""])
def test_a_fuel_line_without_its_fuel(fuel: str | None) -> None:
    with pytest.raises(CalculationError, match="a fuel line must name its fuel"):
        line("fuel", "1", fuel)


def test_unknown_source() -> None:
    with pytest.raises(CalculationError, match="unknown source 'waste': expected one of fuel"):
        line("waste", "1")


def test_negative_activity() -> None:
    with pytest.raises(
        CalculationError, match=re.escape("activity of the heat line -1.5 is negative")
    ):
        line("heat", "-1.5")
    with pytest.raises(CalculationError, match="activity of the 'diesel' fuel line -2 is negative"):
        line("fuel", "-2", "diesel")


def test_no_lines() -> None:
    with pytest.raises(CalculationError, match="no activity lines"):
        calculate([], TABLE)


def test_more_than_nine_decimals() -> None:
    with pytest.raises(CalculationError, match=re.escape("1.0000000001 has more than 9 decimals")):
        line("electricity", "1.0000000001")
    # trailing zeros are not decimals of the value
    assert line("electricity", "1.00000000000").activity == 1


@pytest.mark.parametrize("activity", ["1000000000000", "1E+15"])
def test_activity_of_ten_to_the_twelve_or_more(activity: str) -> None:
    with pytest.raises(CalculationError, match="activity must be below 10\\^12"):
        line("heat", activity)


@pytest.mark.parametrize(
    ("activity", "message"),
    [
        (1.5, "must be a Decimal, not float"),
        ("1.5", "must be a Decimal, not str"),
        (True, "must be a Decimal, not bool"),
        (Decimal("NaN"), "is not a finite number"),
        (Decimal("Infinity"), "is not a finite number"),
    ],
)
def test_activity_must_be_a_finite_decimal(activity: object, message: str) -> None:
    with pytest.raises(CalculationError, match=message):
        ActivityLine("heat", activity)  # type: ignore[arg-type]


def test_a_total_beyond_the_contract_is_refused() -> None:
    # Each line fits (6 x 10^10 t), their sum does not.
    big = [line("heat", "999999999999")] * 20
    with pytest.raises(
        CalculationError, match=re.escape("total emissions 1199999999998.800 t do not fit")
    ):
        calculate(big, TABLE)
    with pytest.raises(CalculationError, match="must be below 10\\^12 t"):
        calculate([line("fuel", "999999999999", "natural_gas")], TABLE)


def test_a_table_with_a_bad_factor_is_refused() -> None:
    with pytest.raises(
        CalculationError, match=re.escape("fuel 'x' factor 0.0000000001 has more than 9")
    ):
        FactorTable(
            "v1",
            UnitFactor(Decimal(1), "MWh"),
            UnitFactor(Decimal(1), "GJ"),
            {"x": UnitFactor(Decimal("0.0000000001"), "t")},
        )
    with pytest.raises(CalculationError, match="factor table 'v1': heat has no unit"):
        FactorTable("v1", UnitFactor(Decimal(1), "MWh"), UnitFactor(Decimal(1), ""), {})


def test_a_table_without_fuels_says_so() -> None:
    table = FactorTable("v1", UnitFactor(Decimal(1), "MWh"), UnitFactor(Decimal(1), "GJ"), {})
    with pytest.raises(CalculationError, match="knows no fuels"):
        calculate([line("fuel", "1", "diesel")], table)


def test_lines_and_table_are_immutable() -> None:
    with pytest.raises(AttributeError):
        line("heat", "1").activity = Decimal(2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        TABLE.fuels["coke"] = UnitFactor(Decimal(1), "t")  # type: ignore[index]


# --- properties ----------------------------------------------------------------------------

_activities = st.decimals(
    min_value=0,
    max_value=Decimal("999999999.999999999"),
    places=9,
    allow_nan=False,
    allow_infinity=False,
)


@st.composite
def activity_lines(draw: st.DrawFn) -> ActivityLine:
    source = draw(st.sampled_from(SOURCES))
    fuel = draw(st.sampled_from(sorted(TABLE.fuels))) if source == "fuel" else None
    material = draw(st.sampled_from(sorted(TABLE.processes))) if source == "process" else None
    return ActivityLine(source, draw(_activities), fuel, material)


def _half_up(value: Fraction) -> Fraction:
    scale = 10**EMISSIONS_SCALE
    return Fraction(math.floor(value * scale + Fraction(1, 2)), scale)


@given(st.lists(activity_lines(), min_size=1, max_size=8))
def test_total_is_the_sum_of_lines_each_with_three_decimals(lines: list[ActivityLine]) -> None:
    # Activities below 10^9 keep 8 lines' total within the contract (each below 2.2 x 10^10 t).
    result = calculate(lines, TABLE)
    assert result.total == sum(calculated.emissions for calculated in result.lines)
    assert result.total.as_tuple().exponent == -EMISSIONS_SCALE
    for activity_line, calculated in zip(lines, result.lines, strict=True):
        assert calculated.emissions.as_tuple().exponent == -EMISSIONS_SCALE
        exact = Fraction(activity_line.activity) * Fraction(calculated.factor)
        assert Fraction(calculated.emissions) == _half_up(exact)


@given(activity_lines())
def test_emissions_fit_the_contract_pattern(activity_line: ActivityLine) -> None:
    result = calculate([activity_line], TABLE)
    formatted = f"{result.total:.{EMISSIONS_SCALE}f}"
    assert Decimal(formatted) == result.total
    assert str(result.total) == formatted
    assert re.fullmatch(EMISSIONS_PATTERN, formatted)


def test_a_process_line_is_material_decomposed_times_its_policy_factor() -> None:
    # 1,200 t of limestone at the policy's 0.440 tCO2/t: 528 t.
    result = calculate([ActivityLine("process", Decimal("1200"), material="limestone")], TABLE)
    (calculated,) = result.lines
    assert (calculated.material, calculated.unit, calculated.factor) == (
        "limestone",
        "t",
        Decimal("0.440"),
    )
    assert result.total == Decimal("528.000")


def test_a_process_line_names_a_material_the_table_knows() -> None:
    with pytest.raises(CalculationError, match="a process line must name its material"):
        ActivityLine("process", Decimal(1))
    with pytest.raises(CalculationError, match="unknown material 'gypsum': factor table"):
        calculate([ActivityLine("process", Decimal(1), material="gypsum")], TABLE)
    with pytest.raises(CalculationError, match="a heat line names no material"):
        ActivityLine("heat", Decimal(1), material="limestone")
