"""The allocation plan of the shanghai-2024 policy, method by method, and the true-up against the
year's pre-allocation (registry/domain/allocation.py: pure)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.errors import Invalid
from carbon_contracts.events import AllocationIssued
from carbon_contracts.policy import (
    Benchmark,
    HistoricalEmissions,
    HistoricalIntensity,
    Policy,
    default_policy_path,
    load_policy,
)
from carbon_contracts.resources import contract_path
from registry.domain.allocation import (
    Computed,
    Output,
    TrueUp,
    compute,
    parameter_text,
    true_up,
)

POLICY = load_policy(default_policy_path())
YEAR = POLICY.compliance_year


def allocate(
    sector: str,
    verified: str = "24251.551",
    *,
    outputs: tuple[Output, ...] = (),
    base: dict[int, str] | None = None,
    policy: Policy = POLICY,
) -> Computed:
    return compute(
        policy,
        sector=sector,
        compliance_year=YEAR,
        verified_emissions=Decimal(verified),
        outputs=outputs,
        base_figures={year: Decimal(figure) for year, figure in (base or {}).items()},
    )


def with_sector(sector: str, plan: Any, *, rounding: str | None = None) -> Policy:
    """The policy with `sector` allocated by `plan` (and another allocation rounding rule)."""
    allocation = POLICY.allocation.model_copy(
        update={"sectors": {**POLICY.allocation.sectors, sector: plan}}
    )
    update: dict[str, Any] = {"allocation": allocation}
    if rounding:
        update["rounding"] = POLICY.rounding.model_copy(update={"allocation": rounding})
    return POLICY.model_copy(update=update)


def output(quantity: str, product: str = "electricity", unit: str = "MWh") -> Output:
    return Output(product=product, unit=unit, quantity=Decimal(quantity))


def parameters(computed: Computed) -> dict[str, str]:
    return {name: parameter_text(value) for name, value in computed.parameters.items()}


# --- the plan in the policy file ----------------------------------------------------------------


def test_the_policy_plans_each_sector_and_says_its_values_are_illustrative() -> None:
    plan = POLICY.allocation
    assert plan.base_years == [2022, 2023, 2024]
    assert isinstance(plan.for_sector("power"), Benchmark)
    assert isinstance(plan.for_sector("steel"), HistoricalIntensity)
    assert isinstance(plan.for_sector("chemicals"), HistoricalEmissions)
    assert plan.for_sector("textiles") == plan.default  # a sector not listed
    assert "ILLUSTRATIVE" in default_policy_path().read_text(encoding="utf-8")


# --- historical emissions: average of the known base years x decline ---------------------------


def test_historical_emissions_averages_the_base_years_as_the_contract_example_shows() -> None:
    # 25100, 24800 (imported) and 24251.551 (final): average 24717.18366.. x 0.98 = 24222.84
    computed = allocate("chemicals", base={2022: "25100.000", 2023: "24800.000"})
    assert computed == Computed(
        method="historical_emissions",
        final_allocation=24223,
        parameters={
            "base_2022": Decimal("25100.000"),
            "base_2023": Decimal("24800.000"),
            "base_2024": Decimal("24251.551"),
            "decline": Decimal("0.98"),
        },
    )
    example = json.loads(
        contract_path("events/allocation.issued/examples/pudong-chemicals-2024.json").read_text()
    )
    assert computed.final_allocation == example["final_allocation"]
    assert parameters(computed) == example["parameters"]


def test_historical_emissions_uses_the_base_years_it_knows_only() -> None:
    # Only the year's own figure: 24251.551 x 0.98 = 23766.51998
    computed = allocate("chemicals")
    assert computed.final_allocation == 23767
    assert parameters(computed) == {"base_2024": "24251.551", "decline": "0.98"}
    # A year outside the policy's base years is no base year, whatever is known of it.
    assert allocate("chemicals", base={2019: "99999.000"}) == computed
    two = allocate("chemicals", base={2023: "24800.000"})  # (24800 + 24251.551) / 2 x 0.98
    assert two.final_allocation == 24035
    assert list(two.parameters) == ["base_2023", "base_2024", "decline"]


def test_a_sector_without_a_plan_of_its_own_takes_the_default() -> None:
    assert allocate("textiles") == allocate("chemicals")


def test_historical_emissions_without_any_base_year_figure_is_refused() -> None:
    later = POLICY.model_copy(
        update={"allocation": POLICY.allocation.model_copy(update={"base_years": [2020, 2021]})}
    )
    with pytest.raises(Invalid) as refused:
        allocate("chemicals", policy=later)
    assert refused.value.code == "missing_base_years"
    assert "2020, 2021" in refused.value.message


# --- benchmark: verified output x benchmark x adjustments ---------------------------------------


def test_benchmark_multiplies_the_verified_output_by_the_benchmark() -> None:
    computed = allocate("power", outputs=(output("100000"),))  # x 0.5810 x 1.00 x 1.00
    assert computed.method == "benchmark"
    assert computed.final_allocation == 58100
    assert parameters(computed) == {
        "output": "100000",
        "benchmark": "0.581",
        "load_factor": "1",
        "cooling": "1",
    }


def test_benchmark_applies_every_adjustment_factor() -> None:
    plan = Benchmark(
        method="benchmark",
        product="electricity",
        unit="MWh",
        benchmark=Decimal("0.5810"),
        adjustments={"load_factor": Decimal("0.95"), "cooling": Decimal("1.02")},
    )
    policy = with_sector("power", plan)
    # 1000 x 0.581 x 0.95 x 1.02 = 562.9890
    computed = allocate("power", outputs=(output("1000"),), policy=policy)
    assert computed.final_allocation == 563
    assert parameters(computed)["load_factor"] == "0.95"


def test_benchmark_adds_up_the_lines_of_its_product_in_its_unit_only() -> None:
    outputs = (
        output("600"),
        output("400.5"),
        output("9999", unit="GWh"),  # another unit: not this plan's figure
        output("9999", product="steam"),
    )
    computed = allocate("power", outputs=outputs)
    assert computed.parameters["output"] == Decimal("1000.5")
    assert computed.final_allocation == 581  # 1000.5 x 0.581 = 581.2905


@pytest.mark.parametrize(
    "outputs",
    [(), (output("100", unit="GWh"),), (output("100", product="steam"),)],
    ids=["none", "other unit", "other product"],
)
def test_an_output_method_without_its_verified_output_is_refused(
    outputs: tuple[Output, ...],
) -> None:
    with pytest.raises(Invalid) as refused:
        allocate("power", outputs=outputs)
    assert (refused.value.code, refused.value.status) == ("missing_output", 422)
    assert "electricity in MWh" in refused.value.message


# --- historical intensity: verified output x base intensity x decline ---------------------------


def test_historical_intensity_multiplies_output_intensity_and_decline() -> None:
    steel = (output("10000", product="crude_steel", unit="t"),)
    computed = allocate("steel", outputs=steel)  # 10000 x 1.85 x 0.98 = 18130
    assert computed.method == "historical_intensity"
    assert computed.final_allocation == 18130
    assert parameters(computed) == {
        "output": "10000",
        "base_intensity": "1.85",
        "decline": "0.98",
    }
    with pytest.raises(Invalid) as refused:
        allocate("steel", outputs=(output("10000"),))
    assert refused.value.code == "missing_output"


# --- rounding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rounding", "quantity", "expected"),
    [
        ("half_up", "2.5", 3),
        ("half_up", "3.5", 4),
        ("half_up", "2.499", 2),
        ("half_even", "2.5", 2),
        ("half_even", "3.5", 4),
        ("floor", "2.999", 2),
        ("ceiling", "2.001", 3),
    ],
)
def test_the_final_allocation_rounds_by_the_policy(
    rounding: str, quantity: str, expected: int
) -> None:
    plan = Benchmark(method="benchmark", product="x", unit="t", benchmark=Decimal("1"))
    policy = with_sector("power", plan, rounding=rounding)
    outputs = (output(quantity, product="x", unit="t"),)
    assert allocate("power", outputs=outputs, policy=policy).final_allocation == expected


def test_a_base_year_average_at_exactly_half_rounds_half_up() -> None:
    plan = HistoricalEmissions(method="historical_emissions", decline=Decimal("1"))
    policy = with_sector("chemicals", plan)
    # (2 + 3 + 2.5) / 3 = 2.5 exactly
    computed = allocate("chemicals", "2.500", base={2022: "2.000", 2023: "3.000"}, policy=policy)
    assert computed.final_allocation == 3


# --- parameters as the event writes them ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("25100.000", "25100"),
        ("24251.551", "24251.551"),
        ("0.000", "0"),
        ("0.5810", "0.581"),
        ("1E+3", "1000"),
        ("0.1234567891234", "0.123456789"),
    ],
)
def test_a_parameter_is_a_plain_decimal_string(value: str, text: str) -> None:
    assert parameter_text(Decimal(value)) == text


def test_the_parameters_of_every_method_fit_the_event() -> None:
    steel = (output("12345.678", product="crude_steel", unit="t"),)
    for computed in (
        allocate("chemicals", base={2022: "25100.000", 2023: "24800.125"}),
        allocate("power", outputs=(output("100000.25"),)),
        allocate("steel", outputs=steel),
    ):
        issued = AllocationIssued.model_validate(
            {
                **json.loads(
                    contract_path(
                        "events/allocation.issued/examples/pudong-chemicals-2024.json"
                    ).read_text()
                ),
                "method": computed.method,
                "final_allocation": computed.final_allocation,
                "parameters": parameters(computed),
            }
        )
        assert json.loads(issued.model_dump_json())["parameters"] == parameters(computed)


# --- true-up ----------------------------------------------------------------------------------


def test_a_final_allocation_above_the_preallocation_is_topped_up() -> None:
    assert true_up(final_allocation=24223, preallocated=19840, held=19840) == TrueUp(4383, 0, 0)
    assert true_up(final_allocation=24223, preallocated=0, held=0) == TrueUp(24223, 0, 0)


def test_a_final_allocation_equal_to_the_preallocation_moves_nothing() -> None:
    assert true_up(final_allocation=1000, preallocated=1000, held=0) == TrueUp(0, 0, 0)


def test_an_excess_preallocation_is_clawed_back_from_holdings() -> None:
    assert true_up(final_allocation=1000, preallocated=1500, held=1500) == TrueUp(0, 500, 0)
    assert true_up(final_allocation=1000, preallocated=1500, held=800) == TrueUp(0, 500, 0)


def test_what_was_sold_of_the_excess_is_owed() -> None:
    assert true_up(final_allocation=1000, preallocated=1500, held=200) == TrueUp(0, 200, 300)
    assert true_up(final_allocation=1000, preallocated=1500, held=0) == TrueUp(0, 0, 500)
    assert true_up(final_allocation=0, preallocated=1500, held=0) == TrueUp(0, 0, 1500)


@pytest.mark.parametrize(("final", "preallocated", "held"), [(-1, 0, 0), (0, -1, 0), (0, 0, -1)])
def test_negative_amounts_are_refused(final: int, preallocated: int, held: int) -> None:
    with pytest.raises(Invalid) as refused:
        true_up(final_allocation=final, preallocated=preallocated, held=held)
    assert refused.value.code == "invalid_amount"


amounts = st.integers(min_value=0, max_value=10**9)


@given(final=amounts, excess=st.integers(min_value=1, max_value=10**9), held=amounts)
def test_a_clawback_conserves_the_difference(final: int, excess: int, held: int) -> None:
    """final < preallocated: what is taken back plus what is owed is exactly the excess, and
    no more is taken than is held."""
    preallocated = final + excess
    done = true_up(final_allocation=final, preallocated=preallocated, held=held)
    assert done.topped_up - done.clawed_back - done.owed == final - preallocated
    assert done.topped_up == 0
    assert 0 <= done.clawed_back <= held
    assert done.owed >= 0
    assert done.owed == 0 or done.clawed_back == held  # owed only what is no longer held


@given(final=amounts, preallocated=amounts, held=amounts)
def test_any_true_up_conserves_the_difference(final: int, preallocated: int, held: int) -> None:
    done = true_up(final_allocation=final, preallocated=preallocated, held=held)
    assert done.topped_up - done.clawed_back - done.owed == final - preallocated
    assert min(done.topped_up, done.clawed_back, done.owed) >= 0
    assert not (done.topped_up and (done.clawed_back or done.owed))
