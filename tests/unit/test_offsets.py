"""Offsets under the shanghai-2024 policy: which cancellation proofs a surrender may name, the
06-25 certificate date, the CCER switch and the 5% cap (floor), alone and inside a surrender."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.errors import Conflict, Invalid, NotFound
from registry.domain.compliance import Surrendered, plan_surrender, surrender
from registry.domain.offsets import (
    Proof,
    cap,
    check_cap,
    check_proof,
    check_proofs,
    last_certificate_date,
)
from tests.unit.support import POLICY, SHANGHAI

CODE = "91310115MA1K4C8N0W"
OTHER = "91310000MA1FL0RX3B"
VERIFIED = Decimal("24251.551")  # cap: floor(1212.57755) = 1212
BEFORE_DEADLINE = datetime(2025, 6, 24, 15, 20, tzinfo=SHANGHAI)


def proof(
    offset_type: str = "SHCERCIR1",
    proof_id: str = "SHCERCIR1-2025-0042",
    *,
    credit_code: str = CODE,
    compliance_year: int = 2024,
    quantity: int = 1200,
    cancelled_on: date = date(2025, 6, 20),
    used: bool = False,
) -> Proof:
    return Proof(
        offset_type=offset_type,
        proof_id=proof_id,
        credit_code=credit_code,
        compliance_year=compliance_year,
        quantity=quantity,
        cancelled_on=cancelled_on,
        used=used,
    )


def test_a_proof_cancelled_for_another_year_is_refused() -> None:
    with pytest.raises(Invalid) as refused:
        checked(proof(compliance_year=2023))
    assert refused.value.code == "proof_for_another_year"
    assert "cancelled for 2023, not 2024" in refused.value.message


def checked(found: Proof | None, key: tuple[str, str] | None = None) -> Proof:
    wanted = key or (found.key if found else ("SHCERCIR1", "SHCERCIR1-2025-0042"))
    return check_proof(POLICY, wanted, found, credit_code=CODE, compliance_year=2024)


POLICY_WITHOUT_CCER = POLICY.model_copy(
    update={
        "offsets": POLICY.offsets.model_copy(update={"allowed": {"CCER": False, "SHCERCIR1": True}})
    }
)


# --- the cap ----------------------------------------------------------------------------------


def test_the_policy_caps_offsets_at_five_percent_rounded_down() -> None:
    assert POLICY.offsets.cap_ratio == Decimal("0.05")
    assert POLICY.rounding.offset_cap == "floor"


@pytest.mark.parametrize(
    ("verified", "expected"),
    [
        ("24251.551", 1212),  # 1212.57755: floor, never half up (1213)
        ("20.000", 1),
        ("19.999", 0),  # 0.99995
        ("0.000", 0),
        ("1000.000", 50),
    ],
)
def test_the_cap_is_the_floor_of_five_percent_of_verified_emissions(
    verified: str, expected: int
) -> None:
    assert cap(POLICY, Decimal(verified)) == expected


def test_offsets_up_to_the_cap_pass_and_one_more_is_refused() -> None:
    check_cap(POLICY, verified_emissions=VERIFIED, already_used=0, requested=1212)
    with pytest.raises(Invalid) as refused:
        check_cap(POLICY, verified_emissions=VERIFIED, already_used=0, requested=1213)
    assert (refused.value.code, refused.value.status) == ("offsets_over_cap", 422)
    message = refused.value.message
    assert "1213 offsets requested" in message
    assert "cap of 1212" in message
    assert "5% of verified emissions 24251.551" in message


def test_offsets_already_surrendered_for_the_year_count_towards_the_cap() -> None:
    check_cap(POLICY, verified_emissions=VERIFIED, already_used=1000, requested=212)
    with pytest.raises(Invalid) as refused:
        check_cap(POLICY, verified_emissions=VERIFIED, already_used=1000, requested=213)
    assert "1000 already surrendered" in refused.value.message
    assert "at most 212 more" in refused.value.message


@given(
    verified=st.decimals(min_value=0, max_value=10_000_000, places=3),
    already=st.integers(min_value=0, max_value=600_000),
    requested=st.integers(min_value=1, max_value=600_000),
)
def test_the_cap_refuses_exactly_what_exceeds_floor_five_percent(
    verified: Decimal, already: int, requested: int
) -> None:
    limit = int(verified * Decimal("0.05"))  # int() truncates: floor for non-negatives
    try:
        check_cap(POLICY, verified_emissions=verified, already_used=already, requested=requested)
    except Invalid as refused:
        assert refused.code == "offsets_over_cap"
        assert already + requested > limit
    else:
        assert already + requested <= limit


# --- the certificate date ---------------------------------------------------------------------


def test_the_last_certificate_date_is_the_day_before_the_deadline_in_shanghai() -> None:
    assert POLICY.deadlines.shcercir1_cancellation == datetime(2025, 6, 26, tzinfo=SHANGHAI)
    assert last_certificate_date(POLICY) == date(2025, 6, 25)


@pytest.mark.parametrize("day", [date(2025, 6, 25), date(2025, 6, 1), date(2024, 12, 31)])
def test_an_shcercir1_certificate_dated_on_or_before_06_25_counts(day: date) -> None:
    assert checked(proof(cancelled_on=day)).cancelled_on == day


@pytest.mark.parametrize("day", [date(2025, 6, 26), date(2025, 6, 30), date(2025, 7, 1)])
def test_an_shcercir1_certificate_dated_after_06_25_is_refused(day: date) -> None:
    with pytest.raises(Invalid) as refused:
        checked(proof(cancelled_on=day))
    assert (refused.value.code, refused.value.status) == ("certificate_too_late", 422)
    assert day.isoformat() in refused.value.message
    assert "on or before 2025-06-25" in refused.value.message


def test_the_certificate_date_rule_is_for_shcercir1_only() -> None:
    ccer = proof("CCER", "CCER-2025-000817", cancelled_on=date(2025, 6, 28))
    assert checked(ccer) == ccer


# --- each proof -------------------------------------------------------------------------------


def test_an_unknown_proof_is_not_found() -> None:
    with pytest.raises(NotFound) as refused:
        checked(None, ("CCER", "CCER-404"))
    assert (refused.value.code, refused.value.status) == ("unknown_proof", 404)
    assert "CCER-404" in refused.value.message


def test_a_proof_of_another_entity_is_refused() -> None:
    with pytest.raises(Conflict) as refused:
        checked(proof(credit_code=OTHER))
    assert (refused.value.code, refused.value.status) == ("proof_of_another_entity", 409)


def test_a_used_proof_is_refused() -> None:
    with pytest.raises(Conflict) as refused:
        checked(proof(used=True))
    assert (refused.value.code, refused.value.status) == ("proof_used", 409)


def test_ccer_is_refused_while_the_policy_switch_is_off() -> None:
    ccer = proof("CCER", "CCER-2025-000817")
    assert checked(ccer) == ccer  # the shanghai-2024 file allows it
    with pytest.raises(Invalid) as refused:
        check_proof(POLICY_WITHOUT_CCER, ccer.key, ccer, credit_code=CODE, compliance_year=2024)
    assert (refused.value.code, refused.value.status) == ("offset_type_not_allowed", 422)
    assert "CCER" in refused.value.message
    shcercir1 = proof()
    assert check_proof(
        POLICY_WITHOUT_CCER, shcercir1.key, shcercir1, credit_code=CODE, compliance_year=2024
    )


def test_a_proofs_refusals_come_in_order_exists_owner_unused_type_date() -> None:
    late_used_foreign = proof(credit_code=OTHER, used=True, cancelled_on=date(2025, 6, 30))
    with pytest.raises(Conflict, match="another entity"):
        checked(late_used_foreign)
    with pytest.raises(Conflict, match="already surrendered"):
        checked(proof(used=True, cancelled_on=date(2025, 6, 30)))
    ccer = proof("CCER", "C-1", used=False)
    with pytest.raises(Invalid, match="may not be surrendered"):
        check_proof(POLICY_WITHOUT_CCER, ccer.key, ccer, credit_code=CODE, compliance_year=2024)


def test_check_proofs_keeps_the_order_named_and_refuses_a_proof_named_twice() -> None:
    a, b = proof(proof_id="A"), proof("CCER", "B", quantity=5)
    found = {a.key: a, b.key: b}
    assert check_proofs(POLICY, [b.key, a.key], found, credit_code=CODE, compliance_year=2024) == [
        b,
        a,
    ]
    with pytest.raises(Invalid) as refused:
        check_proofs(POLICY, [a.key, a.key], found, credit_code=CODE, compliance_year=2024)
    assert refused.value.code == "duplicate_proof"
    with pytest.raises(NotFound):
        check_proofs(POLICY, [a.key, ("CCER", "A")], found, credit_code=CODE, compliance_year=2024)


# --- a surrender with offsets -----------------------------------------------------------------


def surrender_with(
    allowances: int,
    *offsets: Proof,
    obligation: int = 24252,
    surrendered: int = 0,
    offsets_surrendered: int = 0,
    holdings: dict[int, int] | None = None,
    at: datetime = BEFORE_DEADLINE,
) -> Surrendered:
    return surrender(
        POLICY,
        compliance_year=2024,
        allowances=allowances,
        offsets=offsets,
        verified_emissions=VERIFIED,
        obligation=obligation,
        surrendered=surrendered,
        offsets_surrendered=offsets_surrendered,
        holdings={2024: 24252} if holdings is None else holdings,
        at=at,
    )


def test_allowances_and_offsets_together_complete_the_obligation() -> None:
    done = surrender(
        POLICY,
        compliance_year=2024,
        allowances=23052,
        offsets=[proof(quantity=1200)],
        verified_emissions=VERIFIED,
        obligation=24252,
        surrendered=0,
        holdings={2024: 24252},
        at=BEFORE_DEADLINE,
    )
    assert done.drawn == [(2024, 23052)]
    assert (done.offsets, done.surrendered, done.offsets_surrendered) == (1200, 24252, 1200)
    assert (done.remaining, done.complete, done.on_time) == (0, True, True)


def test_offsets_alone_need_no_allowances_held() -> None:
    done = surrender(
        POLICY,
        compliance_year=2024,
        allowances=0,
        offsets=[proof(quantity=12)],
        verified_emissions=VERIFIED,
        obligation=24252,
        surrendered=100,
        offsets_surrendered=0,
        holdings={},
        at=BEFORE_DEADLINE,
    )
    assert done.drawn == []
    assert (done.offsets, done.surrendered, done.remaining, done.complete) == (
        12,
        112,
        24140,
        False,
    )


def test_the_cap_is_checked_before_the_obligation() -> None:
    with pytest.raises(Invalid) as refused:
        surrender_with(24252, proof(quantity=1213))
    assert refused.value.code == "offsets_over_cap"
    with pytest.raises(Invalid) as refused:
        surrender_with(24252, proof(quantity=1))
    assert refused.value.code == "exceeds_obligation"
    assert "24252 allowances and 1 offsets exceed the remaining obligation of 24252" in (
        refused.value.message
    )


def test_a_compliant_year_takes_nothing_more_offsets_included() -> None:
    # Said first: an entity that has complied is told so, not that its offsets exceed the cap.
    for extra in (proof(quantity=1), proof(quantity=5000)):
        with pytest.raises(Conflict) as refused:
            surrender_with(0, extra, surrendered=24252, offsets_surrendered=1212)
        assert refused.value.code == "already_compliant"


def test_offsets_count_towards_the_obligation_but_not_the_holdings() -> None:
    # 1000 allowances held and 1212 offsets: 2212 surrendered, the holdings only debited 1000.
    def plan(requested: int) -> list[tuple[int, int]]:
        return plan_surrender(
            compliance_year=2024,
            requested=requested,
            offsets=1212,
            obligation=3000,
            surrendered=0,
            holdings={2024: 1000},
        )[1]

    assert plan(1000) == [(2024, 1000)]
    with pytest.raises(Conflict) as refused:
        plan(1001)
    assert refused.value.code == "insufficient_holdings"


def test_nothing_at_all_to_surrender_is_invalid() -> None:
    with pytest.raises(Invalid) as refused:
        surrender_with(0)
    assert refused.value.code == "invalid_amount"


@pytest.mark.parametrize(
    ("at", "on_time"),
    [
        (datetime(2025, 6, 30, 16, 59, 59, 999000, tzinfo=SHANGHAI), True),
        (datetime(2025, 6, 30, 17, 0, 0, 0, tzinfo=SHANGHAI), False),
    ],
)
def test_a_surrender_with_offsets_is_on_time_strictly_before_17_00(
    at: datetime, on_time: bool
) -> None:
    done = surrender(
        POLICY,
        compliance_year=2024,
        allowances=23052,
        offsets=[proof(quantity=1200)],
        verified_emissions=VERIFIED,
        obligation=24252,
        surrendered=0,
        holdings={2024: 24252},
        at=at,
    )
    assert (done.complete, done.on_time) == (True, on_time)
