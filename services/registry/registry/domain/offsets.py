"""Offsets in a surrender: which cancellation proofs an entity may name, and how many offsets a
year may take. Pure: numbers and dates from the policy file, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from carbon_contracts.errors import Conflict, Invalid, NotFound
from carbon_contracts.policy import Policy

ProofKey = tuple[str, str]
"""(offset type, proof id): a proof id is unique per issuer, so per type."""


@dataclass(frozen=True)
class Proof:
    """A cancellation proof as the registry received it from its issuer."""

    offset_type: str
    proof_id: str
    credit_code: str
    compliance_year: int
    quantity: int
    cancelled_on: date
    used: bool

    @property
    def key(self) -> ProofKey:
        return (self.offset_type, self.proof_id)


def cap(policy: Policy, verified_emissions: Decimal) -> int:
    """The most offsets (all types together) a year's surrender may use: the policy's share of
    the verified emissions, rounded per policy (floor: never above the share)."""
    return policy.to_allowances(
        verified_emissions * policy.offsets.cap_ratio, policy.rounding.offset_cap
    )


def last_certificate_date(policy: Policy) -> date:
    """The last date an SHCERCIR1 cancellation certificate may carry: the day before the
    deadline's Asia/Shanghai date (a certificate shows a date, not an instant)."""
    deadline = policy.deadlines.shcercir1_cancellation.astimezone(ZoneInfo(policy.timezone))
    return date.fromordinal(deadline.date().toordinal() - 1)


def check_proof(
    policy: Policy, key: ProofKey, proof: Proof | None, *, credit_code: str, compliance_year: int
) -> Proof:
    """One named proof, refused unless it exists, is the entity's, is unused, was cancelled for
    the year surrendered for, is of a type the cycle allows and, for SHCERCIR1, carries a
    certificate date in time."""
    offset_type, proof_id = key
    if proof is None:
        raise NotFound("unknown_proof", f"no {offset_type} cancellation proof {proof_id}")
    if proof.credit_code != credit_code:
        raise Conflict(
            "proof_of_another_entity",
            f"{offset_type} proof {proof_id} was issued for another entity, not {credit_code}",
        )
    if proof.used:
        raise Conflict("proof_used", f"{offset_type} proof {proof_id} was already surrendered")
    if proof.compliance_year != compliance_year:
        raise Invalid(
            "proof_for_another_year",
            f"{offset_type} proof {proof_id} was cancelled for {proof.compliance_year}, "
            f"not {compliance_year}",
        )
    if not policy.offsets.is_allowed(offset_type):
        raise Invalid(
            "offset_type_not_allowed",
            f"{offset_type} offsets may not be surrendered in the {policy.cycle} cycle",
        )
    if offset_type == "SHCERCIR1":
        last = last_certificate_date(policy)
        # A certificate dated on the deadline's date is late: its deadline is 00:00 that day.
        if proof.cancelled_on > last:
            raise Invalid(
                "certificate_too_late",
                f"SHCERCIR1 certificate {proof_id} is dated {proof.cancelled_on.isoformat()}; "
                f"only certificates dated on or before {last.isoformat()} count",
            )
    return proof


def check_proofs(
    policy: Policy,
    keys: Sequence[ProofKey],
    found: Mapping[ProofKey, Proof],
    *,
    credit_code: str,
    compliance_year: int,
) -> list[Proof]:
    """Every named proof checked, in the order named; the first refusal wins."""
    if len(set(keys)) != len(keys):
        raise Invalid("duplicate_proof", "a proof may be named once per surrender")
    return [
        check_proof(
            policy, key, found.get(key), credit_code=credit_code, compliance_year=compliance_year
        )
        for key in keys
    ]


def check_cap(
    policy: Policy, *, verified_emissions: Decimal, already_used: int, requested: int
) -> None:
    """Offsets already surrendered for the year plus those requested stay within the cap."""
    limit = cap(policy, verified_emissions)
    if already_used + requested > limit:
        ratio = format((policy.offsets.cap_ratio * 100).normalize(), "f")
        raise Invalid(
            "offsets_over_cap",
            f"{requested} offsets requested with {already_used} already surrendered exceed the "
            f"cap of {limit} ({ratio}% of verified emissions {verified_emissions}, rounded "
            f"{policy.rounding.offset_cap}); at most {max(limit - already_used, 0)} more",
        )
