"""Obligation, pre-allocation and surrender planning with the shanghai-2024 policy (the
allocation: tests/unit/test_allocation.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.errors import Conflict, Invalid, Rejection
from carbon_contracts.policy import default_policy_path, load_policy
from registry.domain.compliance import (
    obligation,
    plan_surrender,
    preallocation,
)

POLICY = load_policy(default_policy_path())
YEAR = POLICY.compliance_year


def test_the_policy_is_shanghai_2024_rounding_half_up() -> None:
    assert POLICY.cycle == "shanghai-2024"
    assert YEAR == 2024
    assert POLICY.rounding.obligation == "half_up"
    assert POLICY.rounding.allocation == "half_up"
    assert POLICY.rounding.preallocation == "half_up"
    assert POLICY.preallocation.ratio == Decimal("0.80")


# --- obligation / pre-allocation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("emissions", "expected"),
    [
        ("24251.551", 24252),
        ("10.5", 11),
        ("10.499", 10),
        ("11.5", 12),  # half up, not half even
        ("12.500", 13),
        ("0.000", 0),
        ("0.499", 0),
        ("0.500", 1),
        ("24251.000", 24251),
    ],
)
def test_obligation_rounds_half_up_to_whole_allowances(emissions: str, expected: int) -> None:
    result = obligation(POLICY, Decimal(emissions))
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("emissions", "expected"),
    [
        ("24251.551", 19401),  # 19401.2408
        ("10.000", 8),
        ("13.125", 11),  # 10.5 -> 11, half up
        ("13.124", 10),  # 10.4992
        ("0.000", 0),
    ],
)
def test_preallocation_is_80_percent_rounded_half_up(emissions: str, expected: int) -> None:
    assert preallocation(POLICY, Decimal(emissions)) == expected


def test_preallocation_matches_the_contract_example() -> None:
    # contracts/events/preallocation.issued/examples: 24251.551 x 0.8 -> 19401
    assert preallocation(POLICY, Decimal("24251.551")) == 19401


# --- plan_surrender --------------------------------------------------------------------------


def plan(
    *, requested: int, obligation: int = 24252, surrendered: int = 0, holdings: dict[int, int]
) -> list[tuple[int, int]]:
    surrender_only, drawn = plan_surrender(
        compliance_year=YEAR,
        requested=requested,
        obligation=obligation,
        surrendered=surrendered,
        holdings=holdings,
    )
    assert surrender_only == 0  # none held
    return drawn


def test_a_surrender_draws_the_oldest_vintage_first() -> None:
    holdings = {2024: 20000, 2022: 3000, 2023: 5000}
    assert plan(requested=10000, holdings=holdings) == [(2022, 3000), (2023, 5000), (2024, 2000)]


def test_a_surrender_within_the_oldest_vintage_draws_only_it() -> None:
    assert plan(requested=100, holdings={2023: 500, 2024: 500}) == [(2023, 100)]


def test_a_surrender_skips_empty_vintages_and_later_vintages() -> None:
    holdings = {2021: 0, 2023: 10, 2024: 10, 2025: 1000}
    assert plan(requested=20, holdings=holdings) == [(2023, 10), (2024, 10)]


def test_a_surrender_of_the_whole_remaining_obligation() -> None:
    result = plan(requested=252, surrendered=24000, holdings={2024: 24252})
    assert result == [(2024, 252)]


@pytest.mark.parametrize("requested", [0, -1, -24252])
def test_a_non_positive_request_is_invalid(requested: int) -> None:
    with pytest.raises(Invalid) as caught:
        plan(requested=requested, holdings={2024: 30000})
    assert caught.value.code == "invalid_amount"
    assert caught.value.status == 422


@pytest.mark.parametrize(("obligation_", "surrendered"), [(24252, 24252), (24252, 25000), (0, 0)])
def test_a_surrender_when_already_compliant_conflicts(obligation_: int, surrendered: int) -> None:
    with pytest.raises(Conflict) as caught:
        plan(requested=1, obligation=obligation_, surrendered=surrendered, holdings={2024: 10})
    assert caught.value.code == "already_compliant"
    assert caught.value.status == 409
    assert "2024" in caught.value.message


def test_a_surrender_above_the_remaining_obligation_is_invalid() -> None:
    with pytest.raises(Invalid) as caught:
        plan(requested=253, surrendered=24000, holdings={2024: 30000})
    assert caught.value.code == "exceeds_obligation"
    assert caught.value.status == 422
    assert "252" in caught.value.message


def test_a_surrender_above_the_holdings_conflicts() -> None:
    with pytest.raises(Conflict) as caught:
        plan(requested=24252, holdings={2023: 4000, 2024: 20000})
    assert caught.value.code == "insufficient_holdings"
    assert caught.value.status == 409
    assert "24000" in caught.value.message


def test_later_vintages_do_not_count_towards_holdings() -> None:
    with pytest.raises(Conflict) as caught:
        plan(requested=100, holdings={2025: 50000, 2026: 50000})
    assert caught.value.code == "insufficient_holdings"
    assert caught.value.status == 409


def test_no_holdings_at_all_conflicts() -> None:
    with pytest.raises(Conflict) as caught:
        plan(requested=1, holdings={})
    assert caught.value.code == "insufficient_holdings"


def test_rejections_are_checked_in_order_amount_compliance_obligation_holdings() -> None:
    with pytest.raises(Invalid, match="positive"):
        plan(requested=0, obligation=10, surrendered=10, holdings={})
    with pytest.raises(Conflict, match="already met"):
        plan(requested=99, obligation=10, surrendered=10, holdings={})
    with pytest.raises(Invalid, match="exceed the remaining obligation"):
        plan(requested=99, obligation=10, surrendered=0, holdings={})


holdings_strategy = st.dictionaries(
    keys=st.integers(min_value=2013, max_value=2030),
    values=st.integers(min_value=0, max_value=50_000),
    max_size=10,
)


@given(
    holdings=holdings_strategy,
    obligation_=st.integers(min_value=0, max_value=100_000),
    surrendered=st.integers(min_value=0, max_value=100_000),
    requested=st.integers(min_value=-10, max_value=100_000),
    year=st.integers(min_value=2013, max_value=2030),
)
def test_a_surrender_plan_covers_the_request_from_usable_vintages_only(
    holdings: dict[int, int], obligation_: int, surrendered: int, requested: int, year: int
) -> None:
    usable = sum(amount for vintage, amount in holdings.items() if vintage <= year)
    remaining = obligation_ - surrendered
    try:
        _, result = plan_surrender(
            compliance_year=year,
            requested=requested,
            obligation=obligation_,
            surrendered=surrendered,
            holdings=holdings,
        )
    except Rejection as rejection:
        # Every rejection is justified, with its own code and status class.
        expected = {
            "invalid_amount": (Invalid, requested <= 0),
            "already_compliant": (Conflict, requested > 0 and remaining <= 0),
            "exceeds_obligation": (Invalid, 0 < remaining < requested),
            "insufficient_holdings": (Conflict, 0 < requested <= remaining and requested > usable),
        }
        kind, justified = expected[rejection.code]
        assert type(rejection) is kind
        assert justified
        return
    assert 0 < requested <= remaining
    assert requested <= usable
    assert sum(amount for _, amount in result) == requested
    vintages = [vintage for vintage, _ in result]
    assert vintages == sorted(set(vintages)), "oldest first, each vintage once"
    for vintage, amount in result:
        assert vintage <= year
        assert 0 < amount <= holdings[vintage]
    # Oldest first: every usable vintage older than the last one drawn is drawn in full.
    last = vintages[-1]
    drawn = dict(result)
    for vintage, amount in holdings.items():
        if vintage < last and amount > 0:
            assert drawn[vintage] == amount


@given(
    holdings=holdings_strategy,
    year=st.integers(min_value=2013, max_value=2030),
    data=st.data(),
)
def test_any_request_within_obligation_and_usable_holdings_is_planned(
    holdings: dict[int, int], year: int, data: st.DataObject
) -> None:
    usable = sum(amount for vintage, amount in holdings.items() if vintage <= year)
    if usable == 0:
        return
    requested = data.draw(st.integers(min_value=1, max_value=usable))
    _, result = plan_surrender(
        compliance_year=year,
        requested=requested,
        obligation=usable,
        surrendered=0,
        holdings=holdings,
    )
    assert sum(amount for _, amount in result) == requested


# --- surrender-only allowances (bought at auction) -------------------------------------------


def test_surrender_only_allowances_are_drawn_first_then_the_oldest_vintage() -> None:
    restricted, drawn = plan_surrender(
        compliance_year=YEAR,
        requested=7000,
        obligation=24252,
        surrendered=0,
        holdings={2023: 1000, 2024: 20000},
        surrender_only=5000,
    )
    assert (restricted, drawn) == (5000, [(2023, 1000), (2024, 1000)])


def test_surrender_only_allowances_count_towards_what_is_usable() -> None:
    restricted, drawn = plan_surrender(
        compliance_year=YEAR,
        requested=5500,
        obligation=24252,
        surrendered=0,
        holdings={2024: 500},
        surrender_only=5000,
    )
    assert (restricted, drawn) == (5000, [(2024, 500)])
    with pytest.raises(Conflict) as refused:
        plan_surrender(
            compliance_year=YEAR,
            requested=5501,
            obligation=24252,
            surrendered=0,
            holdings={2024: 500},
            surrender_only=5000,
        )
    assert refused.value.code == "insufficient_holdings"
