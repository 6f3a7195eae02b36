"""Unified social credit codes (GB 32100-2015) with the GB 11714 organisation-code check."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.types import CREDIT_CODE_PATTERN
from registry.domain.credit_code import (
    CHARSET,
    InvalidCreditCode,
    check_character,
    is_valid_credit_code,
    make_credit_code,
    organisation_check_character,
    validate_credit_code,
)

# Real codes from public sources: older codes built on a pre-2015 organisation code, newer
# `MA...` codes, a category-92 (individual business) and a category-12 (public institution) code.
REAL_CODES = [
    "91110000600037341L",
    "9144030071526726XG",
    "91310000631696382C",
    "9115220107837757XE",
    "91620105660017457X",
    "91620105L015101280",
    "91310115MA1K3BTP2B",
    "91340600MA2PBM9HXD",
    "92340603MA2UK2ECXU",
    "121200004013590816",
]


def test_charset_is_the_31_characters_without_i_o_s_v_z() -> None:
    assert len(CHARSET) == 31
    assert set(CHARSET).isdisjoint("IOSVZ")
    assert re.fullmatch(r"[0-9A-HJ-NPQRTUWXY]+", CHARSET)


@pytest.mark.parametrize("code", REAL_CODES)
def test_real_codes_validate(code: str) -> None:
    assert validate_credit_code(code) == code
    assert check_character(code[:17]) == code[17]
    assert organisation_check_character(code[8:16]) == code[16]


def test_known_check_characters() -> None:
    assert check_character("91110000600037341") == "L"
    assert check_character("91310115MA1K3BTP2") == "B"
    # GB 11714 special cases: 10 is written X, 11 is written 0.
    assert organisation_check_character("71526726") == "X"
    assert organisation_check_character("L0151012") == "8"
    assert organisation_check_character("00000000") == "0"


def test_letters_in_the_organisation_code_take_their_alphabet_value() -> None:
    # M=22 in GB 11714 (A=10 ... Z=35), not its CHARSET index 21.
    assert organisation_check_character("MA1K3BTP") == "2"


def test_generated_codes_are_fixed() -> None:
    assert make_credit_code(0) == "91310115271828184C"
    assert make_credit_code(1) == "91310101272310897W"
    assert make_credit_code(2) == "91310104272793606E"


def test_generated_codes_are_distinct_and_match_the_contract_pattern() -> None:
    codes = {make_credit_code(seed) for seed in range(2000)}
    assert len(codes) == 2000
    assert all(re.fullmatch(CREDIT_CODE_PATTERN, code) for code in codes)
    assert make_credit_code(0)[2:8] == "310115"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("9131011527182818", "has 16 characters, expected 18"),
        ("91310115271828184CC", "has 19 characters, expected 18"),
        ("", "has 0 characters, expected 18"),
        ("91310115I71828184C", "position 9 has illegal character 'I'"),
        ("91310115271828184Z", "position 18 has illegal character 'Z'"),
        ("91310115-71828184C", "position 9 has illegal character '-'"),
        ("B1310115271828184C", "position 1 (registration authority code) is 'B'"),
        ("913101A5271828184C", "position 7 is 'A', but positions 3-8 (administrative division"),
        ("91310115271828185C", "fails its GB 11714 check: its check character (position 17) is"),
        ("91110000600037341K", "check character is 'K', expected 'L'"),
        ("91310115271828184D", "check character is 'D', expected 'C'"),
    ],
)
def test_each_failure_says_what_is_wrong(code: str, message: str) -> None:
    with pytest.raises(InvalidCreditCode, match=re.escape(message)):
        validate_credit_code(code)


def test_organisation_code_check_is_enforced_even_with_a_correct_check_character() -> None:
    first17 = "91310115271828185"  # organisation code check should be 4
    code = first17 + check_character(first17)
    with pytest.raises(InvalidCreditCode) as raised:
        validate_credit_code(code)
    assert str(raised.value) == (
        f"unified social credit code {code!r}: the organisation code '271828185' "
        "(positions 9-17) fails its GB 11714 check: its check character (position 17) is '5', "
        "expected '4'"
    )


def test_an_untrusted_sample_code_is_rejected() -> None:
    with pytest.raises(InvalidCreditCode, match="expected '5'"):
        validate_credit_code("91310000MA1FL8LQ3K")


def test_invalid_credit_code_is_a_value_error() -> None:
    assert issubclass(InvalidCreditCode, ValueError)
    assert not is_valid_credit_code("not a code")
    assert is_valid_credit_code(REAL_CODES[0])


def test_non_strings_are_rejected() -> None:
    with pytest.raises(InvalidCreditCode, match="is a string, not int"):
        validate_credit_code(913101152718281840)  # type: ignore[arg-type]


def test_input_is_stripped_and_upper_cased() -> None:
    assert validate_credit_code("  91310115ma1k3btp2b\n") == "91310115MA1K3BTP2B"


def test_check_helpers_reject_bad_input() -> None:
    with pytest.raises(InvalidCreditCode, match="over 17 characters, got 18"):
        check_character("91310115271828184C")
    with pytest.raises(InvalidCreditCode, match="position 3 has illegal character 'O'"):
        check_character("91O10115271828184")
    with pytest.raises(InvalidCreditCode, match="over 8 characters, got 9"):
        organisation_check_character("271828184")
    with pytest.raises(InvalidCreditCode, match="position 1 has illegal character 'a'"):
        organisation_check_character("a7182818")


# --- properties ----------------------------------------------------------------------------

_charset = st.sampled_from(CHARSET)


@st.composite
def valid_codes(draw: st.DrawFn) -> str:
    """Any valid code: letters in the category and organisation code included."""
    authority = draw(st.sampled_from("123456789AGNY"))
    category = draw(_charset)
    division = draw(st.text(alphabet="0123456789", min_size=6, max_size=6))
    body = draw(st.text(alphabet=CHARSET, min_size=8, max_size=8))
    first17 = f"{authority}{category}{division}{body}{organisation_check_character(body)}"
    return first17 + check_character(first17)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_every_generated_code_validates(seed: int) -> None:
    code = make_credit_code(seed)
    assert validate_credit_code(code) == code
    assert re.fullmatch(CREDIT_CODE_PATTERN, code)


@given(valid_codes())
def test_every_constructed_code_validates(code: str) -> None:
    assert validate_credit_code(code) == code


@given(valid_codes(), st.integers(min_value=0, max_value=17), _charset)
def test_changing_any_single_character_makes_a_code_invalid(
    code: str, index: int, replacement: str
) -> None:
    if code[index] == replacement:
        replacement = CHARSET[(CHARSET.index(replacement) + 1) % len(CHARSET)]
    changed = code[:index] + replacement + code[index + 1 :]
    with pytest.raises(InvalidCreditCode):
        validate_credit_code(changed)


@given(valid_codes(), st.integers(min_value=0, max_value=15))
def test_swapping_two_neighbours_before_the_check_character_is_caught(
    code: str, index: int
) -> None:
    swapped = code[:index] + code[index + 1] + code[index] + code[index + 2 :]
    if swapped != code:
        assert not is_valid_credit_code(swapped)


@given(valid_codes())
def test_lower_case_input_normalises(code: str) -> None:
    assert validate_credit_code(code.lower()) == code
    assert validate_credit_code(f" {code.lower()}\t") == code


def test_every_contract_example_uses_a_code_the_registry_accepts() -> None:
    import json
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "contracts" / "events"
    payloads = [json.loads(path.read_text()) for path in examples.glob("*/examples/*.json")]
    # A cycle-wide event (verification.closed) names a policy cycle, not an entity.
    codes = {payload["credit_code"] for payload in payloads if "credit_code" in payload}
    assert codes
    assert {validate_credit_code(code) for code in codes} == codes
