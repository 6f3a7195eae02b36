"""The access policies: for every policy and action, which callers may act on a resource, what
check_entity refuses before any lookup, and what each role may list."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_contracts.errors import Forbidden
from carbon_platform.access import (
    BIDS,
    CASE,
    DELIVERY,
    ENTITY,
    NOTIFICATION,
    OPERATIONS,
    PLAN,
    REPORT,
    AccessPolicy,
    Owner,
    Scope,
)
from carbon_platform.auth import Principal
from registry.domain.credit_code import make_credit_code

CODE, OTHER_CODE = make_credit_code(1), make_credit_code(2)
DISTRICT, OTHER_DISTRICT = "pudong", "minhang"
AGENCY, OTHER_AGENCY = "sh-verify-01", "sh-verify-02"

CALLERS = {
    "bureau": Principal("bureau", "regulator"),
    "own entity": Principal("e1", "entity", credit_code=CODE),
    "other entity": Principal("e2", "entity", credit_code=OTHER_CODE),
    "own district": Principal("d1", "district", district=DISTRICT),
    "other district": Principal("d2", "district", district=OTHER_DISTRICT),
    "own agency": Principal("v1", "verifier", agency=AGENCY),
    "other agency": Principal("v2", "verifier", agency=OTHER_AGENCY),
}
RESOURCE = Owner(credit_code=CODE, district=DISTRICT, agency=AGENCY)
"""An entity's resource, supervised by its district and in the hands of its agency."""

POLICIES = {
    "entity": ENTITY,
    "plan": PLAN,
    "report": REPORT,
    "case": CASE,
    "notification": NOTIFICATION,
    "delivery": DELIVERY,
    "bids": BIDS,
    "operations": OPERATIONS,
}
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("entity", "register"): {"bureau"},
    ("entity", "read"): {"bureau", "own entity", "own district"},
    ("entity", "open_account"): {"bureau", "own entity"},
    ("entity", "surrender"): {"own entity"},
    ("entity", "transfer"): {"own entity"},
    ("entity", "bid"): {"own entity"},
    ("entity", "allocate"): {"bureau"},
    ("plan", "submit"): {"own entity"},
    ("plan", "read"): {"bureau", "own entity", "own district"},
    ("plan", "decide"): {"bureau"},
    ("report", "submit"): {"own entity"},
    ("report", "read"): {"bureau", "own entity", "own district"},
    ("report", "review"): {"bureau"},
    ("report", "determine"): {"bureau"},
    ("case", "read"): {"bureau", "own entity", "own district", "own agency"},
    ("case", "assign"): {"bureau"},
    ("case", "name_contact"): {"own entity"},
    ("case", "verify"): {"own agency"},
    ("case", "approve"): {"own agency"},
    ("case", "select"): {"bureau"},
    ("case", "close"): {"bureau"},
    ("notification", "read"): {"bureau", "own entity", "own district"},
    ("delivery", "subscribe"): {"bureau", "own entity", "own district"},
    ("delivery", "read"): {"bureau", "own entity", "own district"},
    ("delivery", "replay"): {"bureau", "own entity", "own district"},
    ("bids", "read"): {"bureau", "own entity"},
    ("operations", "operate"): {"bureau"},
}
ROLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("entity", "register"): ("regulator",),
    ("entity", "read"): ("regulator", "district", "entity"),
    ("entity", "open_account"): ("regulator", "entity"),
    ("entity", "surrender"): ("entity",),
    ("entity", "transfer"): ("entity",),
    ("entity", "bid"): ("entity",),
    ("entity", "allocate"): ("regulator",),
    ("plan", "submit"): ("entity",),
    ("plan", "read"): ("regulator", "district", "entity"),
    ("plan", "decide"): ("regulator",),
    ("report", "submit"): ("entity",),
    ("report", "read"): ("regulator", "district", "entity"),
    ("report", "review"): ("regulator",),
    ("report", "determine"): ("regulator",),
    ("case", "read"): ("verifier", "regulator", "district", "entity"),
    ("case", "assign"): ("regulator",),
    ("case", "name_contact"): ("entity",),
    ("case", "verify"): ("verifier",),
    ("case", "approve"): ("verifier",),
    ("case", "select"): ("regulator",),
    ("case", "close"): ("regulator",),
    ("notification", "read"): ("regulator", "district", "entity"),
    ("delivery", "subscribe"): ("regulator", "district", "entity"),
    ("delivery", "read"): ("regulator", "district", "entity"),
    ("delivery", "replay"): ("regulator", "district", "entity"),
    ("bids", "read"): ("regulator", "entity"),
    ("operations", "operate"): ("regulator",),
}


def test_the_table_covers_every_action_of_every_policy() -> None:
    declared = {(name, action) for name, policy in POLICIES.items() for action in policy.actions}
    assert declared == set(ALLOWED) == set(ROLES)


@pytest.mark.parametrize(("policy", "action"), sorted(ROLES))
def test_roles_are_those_that_can_hold_a_granting_relation(policy: str, action: str) -> None:
    assert set(POLICIES[policy].roles(action)) == set(ROLES[policy, action])


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize(("policy", "action"), sorted(ALLOWED))
def test_allows_and_check_agree_with_the_table(policy: str, action: str, caller: str) -> None:
    access, principal = POLICIES[policy], CALLERS[caller]
    expected = caller in ALLOWED[policy, action]
    assert access.allows(principal, action, RESOURCE) is expected
    if expected:
        access.check(principal, action, RESOURCE)
    else:
        with pytest.raises(Forbidden) as refused:
            access.check(principal, action, RESOURCE)
        assert (refused.value.code, refused.value.status) == ("forbidden", 403)
        assert f"the {principal.role} role may not" in refused.value.message


def test_a_refusal_says_who_may() -> None:
    with pytest.raises(Forbidden) as refused:
        ENTITY.check(CALLERS["other entity"], "read", RESOURCE)
    assert refused.value.message.endswith(
        "; the Bureau or its district bureau or the entity itself may"
    )


@pytest.mark.parametrize(
    ("caller", "owner"),
    [
        ("own district", Owner(credit_code=CODE)),  # district unknown
        ("own agency", Owner(credit_code=CODE, district=DISTRICT)),  # no agency assigned yet
        ("own entity", Owner(district=DISTRICT, agency=AGENCY)),  # no entity
    ],
)
def test_nobody_holds_a_relation_the_resource_lacks(caller: str, owner: Owner) -> None:
    for policy, action in (
        (ENTITY, "read"),
        (REPORT, "read"),
        (CASE, "read"),
        (NOTIFICATION, "read"),
    ):
        assert not policy.allows(CALLERS[caller], action, owner)


def test_a_principal_missing_its_binding_holds_no_relation() -> None:
    unbound = [
        Principal("x", "entity"),
        Principal("x", "district"),
        Principal("x", "verifier"),
    ]
    for principal in unbound:
        assert not CASE.allows(principal, "read", RESOURCE)
        assert not ENTITY.allows(principal, "read", RESOURCE)


@given(st.integers(min_value=0, max_value=10**8 - 1), st.integers(min_value=0, max_value=10**8 - 1))
def test_an_entity_acts_for_its_own_code_only(caller_seed: int, owner_seed: int) -> None:
    caller = Principal("e", "entity", credit_code=make_credit_code(caller_seed))
    owner = Owner(credit_code=make_credit_code(owner_seed), district=DISTRICT)
    same = caller_seed == owner_seed
    assert ENTITY.allows(caller, "surrender", owner) is same
    assert REPORT.allows(caller, "read", owner) is same


# --- check_entity: what the credit code alone decides ----------------------------------------


@pytest.mark.parametrize("action", ["read", "open_account", "surrender"])
def test_check_entity_refuses_an_entity_acting_for_another_code(action: str) -> None:
    with pytest.raises(Forbidden) as refused:
        ENTITY.check_entity(CALLERS["other entity"], action, CODE)
    assert refused.value.code == "forbidden"


@pytest.mark.parametrize("action", ["read", "open_account", "surrender"])
def test_check_entity_lets_an_entity_act_for_its_own_code(action: str) -> None:
    ENTITY.check_entity(CALLERS["own entity"], action, CODE)


@pytest.mark.parametrize(
    ("caller", "action", "passes"),
    [
        ("bureau", "read", True),
        ("bureau", "open_account", True),
        ("bureau", "register", True),
        ("bureau", "surrender", False),
        # A district passes here for reading: its district is known only after the lookup.
        ("own district", "read", True),
        ("other district", "read", True),
        ("own district", "open_account", False),
        ("own agency", "read", False),
        ("own agency", "surrender", False),
    ],
)
def test_check_entity_applies_the_role_gate(caller: str, action: str, passes: bool) -> None:
    if passes:
        ENTITY.check_entity(CALLERS[caller], action, CODE)
    else:
        with pytest.raises(Forbidden):
            ENTITY.check_entity(CALLERS[caller], action, CODE)


# --- scope: what each role may list ----------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "caller", "scope"),
    [
        (REPORT, "bureau", Scope()),
        (REPORT, "own entity", Scope(credit_code=CODE)),
        (REPORT, "own district", Scope(district=DISTRICT)),
        (REPORT, "own agency", None),
        (CASE, "bureau", Scope()),
        (CASE, "own entity", Scope(credit_code=CODE)),
        (CASE, "own agency", Scope(agency=AGENCY)),
        (CASE, "own district", Scope(district=DISTRICT)),
        (PLAN, "own district", Scope(district=DISTRICT)),
        (PLAN, "own agency", None),
        (NOTIFICATION, "bureau", Scope()),
        (NOTIFICATION, "own entity", Scope(credit_code=CODE)),
        (NOTIFICATION, "own district", Scope(district=DISTRICT)),
        (NOTIFICATION, "own agency", None),
        (ENTITY, "own agency", None),
    ],
)
def test_scope_per_role(policy: AccessPolicy, caller: str, scope: Scope | None) -> None:
    if scope is None:
        with pytest.raises(Forbidden):
            policy.scope(CALLERS[caller], "read")
    else:
        assert policy.scope(CALLERS[caller], "read") == scope


@pytest.mark.parametrize(
    ("policy", "action", "caller"),
    [
        (CASE, "approve", "bureau"),  # the Bureau lists nothing it may only assign
        (REPORT, "submit", "bureau"),
        (OPERATIONS, "operate", "own entity"),
        (ENTITY, "register", "own district"),
    ],
)
def test_scope_refuses_a_role_the_action_does_not_grant(
    policy: AccessPolicy, action: str, caller: str
) -> None:
    with pytest.raises(Forbidden):
        policy.scope(CALLERS[caller], action)


def test_a_verifier_is_outside_the_entity_policy() -> None:
    verifier = CALLERS["own agency"]
    assert "verifier" not in {role for action in ENTITY.actions for role in ENTITY.roles(action)}
    for action in ENTITY.actions:
        assert not ENTITY.allows(verifier, action, RESOURCE)
        with pytest.raises(Forbidden):
            ENTITY.check_entity(verifier, action, CODE)


def test_check_any_allows_through_any_owner_and_refuses_otherwise() -> None:
    first_round = Owner(credit_code=CODE, district=DISTRICT, agency="agency-first")
    owners = [RESOURCE, first_round]
    CASE.check_any(CALLERS["own agency"], "read", owners)  # the agency at work
    CASE.check_any(Principal("v", "verifier", agency="agency-first"), "read", owners)
    with pytest.raises(Forbidden, match="the verifier role may not read this verification case"):
        CASE.check_any(Principal("v", "verifier", agency="agency-third"), "read", owners)
