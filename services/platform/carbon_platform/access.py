"""Who may do what: one access policy per resource kind, applied the same way by every service.

Every resource belongs to a covered entity (its credit code), which a district bureau
supervises, and may be in the hands of a verification agency. A policy says, per action, which
relation to the resource grants it: the Bureau, the entity itself, its district or its agency.
Routes call a policy; they never compare roles and claims themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends

from carbon_contracts.errors import Forbidden
from carbon_platform.auth import Principal, Role, require

Relation = Literal["bureau", "entity", "district", "agency"]
ROLE_OF: Mapping[Relation, Role] = {
    "bureau": "regulator",
    "entity": "entity",
    "district": "district",
    "agency": "verifier",
}


@dataclass(frozen=True)
class Owner:
    """Whom one resource belongs to. None: nobody of that relation (no district, no agency)."""

    credit_code: str | None = None
    district: str | None = None
    agency: str | None = None


@dataclass(frozen=True)
class Scope:
    """What a caller may list: None is no restriction on that field."""

    credit_code: str | None = None
    district: str | None = None
    agency: str | None = None


@dataclass(frozen=True)
class AccessPolicy:
    kind: str
    actions: Mapping[str, frozenset[Relation]]

    def roles(self, action: str) -> tuple[Role, ...]:
        """The roles that can hold a relation granting `action` (the route's role gate)."""
        return tuple(ROLE_OF[relation] for relation in sorted(self.actions[action]))

    def allows(self, principal: Principal, action: str, owner: Owner) -> bool:
        return _relation(principal, owner) in self.actions[action]

    def check(self, principal: Principal, action: str, owner: Owner) -> None:
        if not self.allows(principal, action, owner):
            raise Forbidden("forbidden", self._refusal(principal, action))

    def check_any(self, principal: Principal, action: str, owners: Sequence[Owner]) -> None:
        """As `check`, for a resource some relations hold through more than one owner (e.g. a
        case in a second agency's hands that the first agency still reads)."""
        if not any(self.allows(principal, action, owner) for owner in owners):
            raise Forbidden("forbidden", self._refusal(principal, action))

    def check_entity(self, principal: Principal, action: str, credit_code: str) -> None:
        """Before a lookup, what the credit code alone decides: an entity acting for another
        entity is refused whether or not that entity exists, so a 404 tells it nothing."""
        if principal.role == "entity" and principal.credit_code != credit_code:
            raise Forbidden("forbidden", self._refusal(principal, action))
        if principal.role not in self.roles(action):
            raise Forbidden("forbidden", self._refusal(principal, action))

    def scope(self, principal: Principal, action: str) -> Scope:
        """The part of a listing this caller may see."""
        relations = self.actions[action]
        if principal.role == "regulator" and "bureau" in relations:
            return Scope()
        if principal.role == "entity" and "entity" in relations:
            return Scope(credit_code=principal.credit_code)
        if principal.role == "district" and "district" in relations:
            return Scope(district=principal.district)
        if principal.role == "verifier" and "agency" in relations:
            return Scope(agency=principal.agency)
        raise Forbidden("forbidden", self._refusal(principal, action))

    def _refusal(self, principal: Principal, action: str) -> str:
        who = " or ".join(_WHO[relation] for relation in sorted(self.actions[action]))
        what = f"{action.replace('_', ' ')} this {self.kind}"
        return f"the {principal.role} role may not {what}; {who} may"


_WHO: Mapping[Relation, str] = {
    "bureau": "the Bureau",
    "entity": "the entity itself",
    "district": "its district bureau",
    "agency": "its verification agency",
}


def _relation(principal: Principal, owner: Owner) -> Relation | None:
    if principal.role == "regulator":
        return "bureau"
    if principal.role == "entity" and owner.credit_code and principal.credit_code:
        return "entity" if principal.credit_code == owner.credit_code else None
    if principal.role == "district" and owner.district and principal.district:
        return "district" if principal.district == owner.district else None
    if principal.role == "verifier" and owner.agency and principal.agency:
        return "agency" if principal.agency == owner.agency else None
    return None


def allowed(policy: AccessPolicy, action: str) -> Any:
    """FastAPI dependency: the caller, if its role can hold `action` on this kind of resource
    (401 without a valid token, 403 otherwise). The route then checks the resource itself."""
    return Depends(require(*policy.roles(action)))


def _policy(kind: str, **actions: set[Relation]) -> AccessPolicy:
    return AccessPolicy(kind, {action: frozenset(grants) for action, grants in actions.items()})


ENTITY = _policy(
    "entity",
    register={"bureau"},
    read={"bureau", "entity", "district"},
    open_account={"bureau", "entity"},
    surrender={"entity"},
    transfer={"entity"},
    bid={"entity"},
    allocate={"bureau"},
)
"""A covered entity in the registry: its roster entry, account, holdings and compliance; the
entity surrenders, transfers to the exchange and bids at auction, the Bureau approves its
allocation and announces auctions."""

PLAN = _policy(
    "monitoring plan", submit={"entity"}, read={"bureau", "entity", "district"}, decide={"bureau"}
)
"""A monitoring plan version in the reporting system; the Bureau (or the technical centre acting
for it, with a regulator token) approves or returns it."""

REPORT = _policy(
    "report",
    submit={"entity"},
    read={"bureau", "entity", "district"},
    review={"bureau"},
    determine={"bureau"},
)
"""An emissions report in the reporting system: the entity writes and corrects it; the Bureau
reviews it (returns, records the paper copy, accepts) and determines emissions when none came."""

CASE = _policy(
    "verification case",
    read={"bureau", "entity", "district", "agency"},
    assign={"bureau"},
    name_contact={"entity"},
    verify={"agency"},
    approve={"agency"},
    select={"bureau"},
    close={"bureau"},
)
"""A verification case: the report's entity, its district, and the agency assigned to it. The
agency records the site visit, returns the report or approves (`verify`, `approve`); the Bureau
assigns, selects for re-verification and closes the year."""

BIDS = _policy("auction's bids", read={"bureau", "entity"})
"""A paid auction's sealed bids and awards: a bidder's own, and all of them for the Bureau (the
registry shows the Bureau the bids only once the auction has cleared)."""

NOTIFICATION = _policy("notification", read={"bureau", "entity", "district"})
"""A notification; its owner is its recipient (an entity, or a district bureau)."""

DELIVERY = _policy(
    "notification delivery",
    subscribe={"bureau", "entity", "district"},
    read={"bureau", "entity", "district"},
    replay={"bureau", "entity", "district"},
)
"""Where a recipient's notifications are sent (its subscriptions) and how that went (its
deliveries): the recipient's own (an entity, or a district bureau), and any for the Bureau."""

OBLIGATION = _policy("obligation", read={"bureau", "entity", "district"})
"""An entity's obligation with a deadline (plan, report, accounts, surrender), its status and its
history: the entity's own, its district's entities, and all of them for the Bureau."""

SUPERVISION = _policy("deadline or case", read={"bureau", "district"})
"""A deadline's progress and its cases (entities overdue): a district bureau its own district's,
the Bureau all of them."""

OPERATIONS = _policy("service", operate={"bureau"})
"""A service's operations: dead letters, parked outbox rows, bulk imports."""
