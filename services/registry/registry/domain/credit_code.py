"""Unified social credit code (统一社会信用代码), GB 32100-2015.

An entity's identity in the platform, and the Kafka key of its events. Eighteen characters:

======  ===================================================================
1       registration authority code (登记管理部门代码), e.g. ``9`` = market regulation
2       organisation category code (机构类别代码), e.g. ``1`` = enterprise
3-8     administrative division code of the registering authority (GB/T 2260), digits
9-17    subject identifier (主体标识码): the 9-character organisation code of
        GB 11714, whose 9th character (position 17) is its own check character
18      check character over positions 1-17 (modulus 31)
======  ===================================================================

The characters are the digits and the uppercase letters except I, O, S, V and Z (31 in all,
:data:`CHARSET`). A letter's value in the position-18 check is its index in :data:`CHARSET`
(A=10 ... H=17, J=18 ... Y=30).

The organisation-code check (positions 9-17) is enforced. GB 11714 values letters by their
place in the full alphabet (A=10 ... Z=35, so e.g. M=22 rather than 21), computes
``11 - (sum of value x weight) mod 11`` with weights 3, 7, 9, 10, 5, 8, 4, 2, and writes 10 as
``X`` and 11 as ``0``. Before enforcing it, this rule was checked against 178 distinct real
codes from public sources (96 of them newer ``MA...`` codes issued directly under GB 32100;
categories 91, 92 and 12): every one satisfies it, while 92 of them fail if letters are valued
by their :data:`CHARSET` index instead. The unit tests keep a sample of those codes.

Position 2 is not checked against position 1: the category tables change with new
registration authorities, and a wrong category is caught by the check character anyway.
"""

from __future__ import annotations

from carbon_contracts.errors import Invalid

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters of a credit code; a character's value is its index here."""

WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
"""Weights of positions 1-17 in the position-18 check (3^(i-1) mod 31)."""

REGISTRATION_AUTHORITIES = "123456789AGNY"
"""Registration authority codes allowed in position 1."""

ORGANISATION_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
"""GB 11714 weights of the 8 body characters of the organisation code (positions 9-16)."""

_LENGTH = 18
_VALUES = {char: value for value, char in enumerate(CHARSET)}
_SHANGHAI_DISTRICTS = (
    "310115",  # Pudong New Area
    "310101",  # Huangpu
    "310104",  # Xuhui
    "310105",  # Changning
    "310106",  # Jing'an
    "310107",  # Putuo
    "310109",  # Hongkou
    "310110",  # Yangpu
    "310112",  # Minhang
    "310113",  # Baoshan
    "310114",  # Jiading
    "310116",  # Jinshan
    "310117",  # Songjiang
    "310118",  # Qingpu
    "310120",  # Fengxian
    "310151",  # Chongming
)


class InvalidCreditCode(ValueError):
    """A string that is not a valid unified social credit code; the message says why."""


def check_character(first17: str) -> str:
    """The check character (position 18) of the 17 characters before it.

    ``(31 - sum(value x weight) mod 31) mod 31``, mapped back through :data:`CHARSET`.
    """
    if len(first17) != _LENGTH - 1:
        raise InvalidCreditCode(
            f"the check character is computed over 17 characters, got {len(first17)}"
        )
    for position, char in enumerate(first17, start=1):
        if char not in _VALUES:
            raise InvalidCreditCode(_illegal("check character input", first17, position, char))
    total = sum(_VALUES[char] * weight for char, weight in zip(first17, WEIGHTS, strict=True))
    return CHARSET[(31 - total % 31) % 31]


def organisation_check_character(body: str) -> str:
    """The GB 11714 check character of an organisation code's 8 body characters.

    ``11 - (sum(value x weight) mod 11)``, letters valued A=10 ... Z=35; 10 is written ``X``
    and 11 is written ``0``.
    """
    if len(body) != len(ORGANISATION_CODE_WEIGHTS):
        raise InvalidCreditCode(
            f"the organisation-code check is computed over 8 characters, got {len(body)}"
        )
    for position, char in enumerate(body, start=1):
        if char not in _VALUES:
            raise InvalidCreditCode(_illegal("organisation code body", body, position, char))
    total = sum(
        _gb11714_value(char) * weight
        for char, weight in zip(body, ORGANISATION_CODE_WEIGHTS, strict=True)
    )
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


def validate_credit_code(code: str) -> str:
    """The code, stripped and upper-cased, if it is a valid credit code; else InvalidCreditCode.

    Checked in this order, the first failure reported: length; the character set; the
    registration authority (position 1); the administrative division code (positions 3-8,
    digits); the organisation-code check (position 17); the check character (position 18).
    """
    if not isinstance(code, str):
        raise InvalidCreditCode(
            f"a unified social credit code is a string, not {type(code).__name__}"
        )
    normalised = code.strip().upper()
    if len(normalised) != _LENGTH:
        raise InvalidCreditCode(
            f"unified social credit code {normalised!r} has {len(normalised)} characters, "
            f"expected {_LENGTH}"
        )
    for position, char in enumerate(normalised, start=1):
        if char not in _VALUES:
            raise InvalidCreditCode(
                _illegal("unified social credit code", normalised, position, char)
            )
    if normalised[0] not in REGISTRATION_AUTHORITIES:
        raise InvalidCreditCode(
            f"unified social credit code {normalised!r}: position 1 (registration authority "
            f"code) is {normalised[0]!r}, expected one of 1-9, A, G, N, Y"
        )
    for position in range(3, 9):
        char = normalised[position - 1]
        if not char.isdigit():
            raise InvalidCreditCode(
                f"unified social credit code {normalised!r}: position {position} is {char!r}, "
                "but positions 3-8 (administrative division code) must be digits"
            )
    organisation_code = normalised[8:17]
    expected = organisation_check_character(organisation_code[:8])
    if organisation_code[8] != expected:
        raise InvalidCreditCode(
            f"unified social credit code {normalised!r}: the organisation code "
            f"{organisation_code!r} (positions 9-17) fails its GB 11714 check: its check "
            f"character (position 17) is {organisation_code[8]!r}, expected {expected!r}"
        )
    expected = check_character(normalised[:17])
    if normalised[17] != expected:
        raise InvalidCreditCode(
            f"unified social credit code {normalised!r}: check character is "
            f"{normalised[17]!r}, expected {expected!r}"
        )
    return normalised


def checked_credit_code(code: str) -> str:
    """The normalised code, or the rejection a caller sees (422 invalid_credit_code)."""
    try:
        return validate_credit_code(code)
    except InvalidCreditCode as error:
        raise Invalid("invalid_credit_code", str(error)) from error


def is_valid_credit_code(code: str) -> bool:
    """Whether :func:`validate_credit_code` accepts the code."""
    try:
        validate_credit_code(code)
    except InvalidCreditCode:
        return False
    return True


def make_credit_code(seed: int) -> str:
    """A valid, deterministic credit code for tests, examples and demos.

    Authority ``9`` (market regulation), category ``1`` (enterprise), a Shanghai district
    (``310115`` Pudong for seed 0) and a numeric organisation code with its GB 11714 check,
    then the check character. Distinct seeds in ``[0, 10**8)`` give distinct codes.
    """
    district = _SHANGHAI_DISTRICTS[seed % len(_SHANGHAI_DISTRICTS)]
    # A bijection of Z/10^8 (the multiplier is coprime to 10), so that neighbouring seeds
    # do not give look-alike organisation codes.
    body = f"{(seed * 48_271 + 27_182_818) % 10**8:08d}"
    first17 = f"91{district}{body}{organisation_check_character(body)}"
    return first17 + check_character(first17)


def _gb11714_value(char: str) -> int:
    return int(char) if char.isdigit() else ord(char) - ord("A") + 10


def _illegal(what: str, text: str, position: int, char: str) -> str:
    return (
        f"{what} {text!r}: position {position} has illegal character "
        f"{char!r} (allowed: digits and uppercase letters other than I, O, S, V, Z)"
    )
