"""A verification case: one per report (or per regulator determination). The tender lot's agency
verifies the report (site visit, verified activity lines recomputed by the engine) or returns it
for correction; the Bureau finalises the approved figure or selects the case for re-verification
(复查) by another agency, whose figure is then final.

    opened -> assigned -> (returned -> assigned) -> approved -> final
                                                    approved -> selected -> reverifying -> final
    a determination: final at once

Pure rules: each transition returns the changed case with the audit trail's line for it, or
raises the refusal."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import ROUND_UP, Decimal
from typing import Literal, get_args
from uuid import UUID, uuid5

from carbon_contracts.errors import Conflict, Forbidden, Invalid
from carbon_contracts.policy import Lot, ReverificationRule

Status = Literal["opened", "assigned", "returned", "approved", "selected", "reverifying", "final"]
STATUSES: tuple[Status, ...] = get_args(Status)
Round = Literal["verification", "reverification"]
Basis = Literal["verification", "reverification", "determination"]
SelectedBy = Literal["bureau", "rule"]

_CASE_NAMESPACE = UUID("6f1c1f4e-4a51-4f39-9d0e-5b2a9a0c2b11")
_PERCENT = Decimal("0.001")


def case_id_for(origin_id: UUID) -> UUID:
    """One case per report (or per determination), with an id any replica derives the same
    way."""
    return uuid5(_CASE_NAMESPACE, str(origin_id))


@dataclass(frozen=True)
class SiteVisit:
    visited_on: date
    findings: str


@dataclass(frozen=True)
class Change:
    """A transition: the case after it, and what the audit trail says of it."""

    case: Case
    action: str
    reason: str | None = None


@dataclass(frozen=True)
class Case:
    case_id: UUID
    credit_code: str
    compliance_year: int
    opened_at: datetime
    report_id: UUID | None = None
    determination_id: UUID | None = None
    status: Status = "opened"
    round: Round = "verification"
    report_version: int | None = None
    reported_emissions: Decimal | None = None
    lot_id: str | None = None
    agency_id: str | None = None
    """The agency at work in the current round; none while waiting for one."""
    first_agency_id: str | None = None
    """The agency whose verification was approved: never the re-verifying one."""
    verified_emissions: Decimal | None = None
    reverified_emissions: Decimal | None = None
    final_emissions: Decimal | None = None
    final_basis: Basis | None = None
    selected_by: SelectedBy | None = None
    selection_reason: str | None = None
    contact_name: str | None = None
    contact_phone: str | None = None
    verification_visit: SiteVisit | None = None
    reverification_visit: SiteVisit | None = None
    verification_outside_window: bool | None = None
    reverification_outside_window: bool | None = None
    assigned_at: datetime | None = None
    returned_at: datetime | None = None
    approved_at: datetime | None = None
    selected_at: datetime | None = None
    reverified_at: datetime | None = None
    finalised_at: datetime | None = None
    revision: int = 0
    """Bumped by every saved change: a save guarded by it loses to any concurrent one."""

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def for_report(
        cls,
        *,
        report_id: UUID,
        credit_code: str,
        compliance_year: int,
        version: int,
        reported: Decimal,
        at: datetime,
    ) -> Case:
        return cls(
            case_id=case_id_for(report_id),
            report_id=report_id,
            credit_code=credit_code,
            compliance_year=compliance_year,
            report_version=version,
            reported_emissions=reported,
            opened_at=at,
        )

    @classmethod
    def for_determination(
        cls,
        *,
        determination_id: UUID,
        credit_code: str,
        compliance_year: int,
        determined: Decimal,
        at: datetime,
    ) -> Case:
        """No report came and the Bureau determined the emissions: nothing to verify, final."""
        return cls(
            case_id=case_id_for(determination_id),
            determination_id=determination_id,
            credit_code=credit_code,
            compliance_year=compliance_year,
            status="final",
            final_emissions=determined,
            final_basis="determination",
            opened_at=at,
            finalised_at=at,
        )

    @property
    def visit(self) -> SiteVisit | None:
        """The current round's site visit."""
        return (
            self.verification_visit if self.round == "verification" else self.reverification_visit
        )

    @property
    def latest_verified(self) -> Decimal | None:
        if self.reverified_emissions is not None:
            return self.reverified_emissions
        return self.verified_emissions

    def _with_visit(self, visit: SiteVisit | None) -> Case:
        """The case with the current round's site visit set (or cleared)."""
        if self.round == "verification":
            return replace(self, verification_visit=visit)
        return replace(self, reverification_visit=visit)

    # --- the report's versions ----------------------------------------------------------------

    def take_version(self, version: int, reported: Decimal, at: datetime) -> Change | None:
        """A corrected report: verification always works on the latest version. None when this
        version, or a newer one, is already the case's (a redelivery, or an overtaken one)."""
        if self.report_version is None or version <= self.report_version:
            return None
        newer = replace(self, report_version=version, reported_emissions=reported)
        note = f"version {version} ({reported} t) replaces version {self.report_version}"
        match self.status:
            case "returned":
                return Change(
                    replace(newer, status="assigned"),
                    "resubmitted",
                    f"{note}: back with {self.agency_id}",
                )
            case "approved":
                return Change(
                    replace(
                        newer,
                        status="assigned",
                        verified_emissions=None,
                        first_agency_id=None,
                        verification_outside_window=None,
                        approved_at=None,
                    ),
                    "approval_voided",
                    f"{note}: the approval of {self.verified_emissions} t was of version "
                    f"{self.report_version}, so it is void; {self.agency_id} verifies again",
                )
            case "final":
                return Change(newer, "version_after_final", f"{note}; the final figure stands")
            case _:
                return Change(newer, "new_version", note)

    # --- the Bureau assigns, the entity names its contact -------------------------------------

    def ensure_assignable(self) -> None:
        if self.status == "final":
            raise self._final()
        if self.status == "approved":
            raise Conflict(
                "already_approved",
                f"case {self.case_id} was approved with {self.verified_emissions} t by "
                f"{self.agency_id}: finalise it or select it for re-verification",
            )

    def assign(self, *, agency_id: str, lot: Lot, at: datetime) -> Change:
        """The agency of the case's lot for its current round; another agency before approval
        (or completion) if the lot changed. Re-verification is never by the first agency."""
        self.ensure_assignable()
        if lot.round != self.round:
            raise ValueError(f"lot {lot.id} is for {lot.round}, case is in {self.round}")
        if self.round == "reverification" and agency_id == self.first_agency_id:
            raise Conflict(
                "same_agency",
                f"{agency_id} verified case {self.case_id} first: another agency re-verifies",
            )
        if agency_id != lot.agency:
            raise Conflict(
                "agency_not_in_lot",
                f"case {self.case_id} is in {lot.round} lot {lot.id}, won by {lot.agency}: "
                f"{agency_id} is not that lot's agency",
            )
        if agency_id == self.agency_id:
            raise Conflict("already_assigned", f"case {self.case_id} is already with {agency_id}")
        waiting: dict[Status, Status] = {"opened": "assigned", "selected": "reverifying"}
        changed = replace(
            self,
            status=waiting.get(self.status, self.status),
            agency_id=agency_id,
            lot_id=lot.id,
            assigned_at=at,
        )
        if self.agency_id is None:
            return Change(changed, "assign", f"{lot.round} lot {lot.id}: {agency_id}")
        # Another agency's site visit is not this one's: it visits again before approving.
        return Change(
            changed._with_visit(None),
            "reassign",
            f"{lot.round} lot {lot.id}: {agency_id} replaces {self.agency_id}",
        )

    def name_contact(self, *, name: str, phone: str) -> Change:
        if self.status == "final":
            raise self._final()
        return Change(
            replace(self, contact_name=name, contact_phone=phone), "contact", f"contact: {name}"
        )

    # --- the agency at work -------------------------------------------------------------------

    def record_site_visit(
        self, *, agency_id: str, visited_on: date, findings: str, today: date
    ) -> Change:
        """The current round's site visit, by the agency at work (a later one replaces it)."""
        self._at_work(agency_id, "record a site visit for")
        if visited_on > today:
            raise Invalid("visit_in_future", f"visited_on {visited_on} is after today ({today})")
        visit = SiteVisit(visited_on, findings)
        return Change(
            self._with_visit(visit),
            "site_visit",
            f"{self.round} visit on {visited_on}: {findings}",
        )

    def return_report(self, *, agency_id: str, reason: str, at: datetime) -> Change:
        """The verifier sends the report back to the entity for correction; its next version
        brings the case back to the same agency."""
        self._at_work(agency_id, "return")
        if self.round == "reverification":
            raise Conflict(
                "not_returnable",
                f"case {self.case_id} is being re-verified: a re-verification completes with "
                "the verified lines, it does not return the report",
            )
        return Change(replace(self, status="returned", returned_at=at), "return", reason)

    def ensure_approvable(self, agency_id: str) -> None:
        self._at_work(agency_id, "approve")
        if self.visit is None:
            raise Conflict(
                "no_site_visit",
                f"no site visit is recorded for the {self.round} of case {self.case_id}: "
                "record it before approving",
            )

    def approve(
        self, *, agency_id: str, verified: Decimal, outside_window: bool, at: datetime
    ) -> Change:
        """The figure recomputed from the verified lines. A verification's is approved (not
        final yet); a re-verification's replaces it and is final."""
        self.ensure_approvable(agency_id)
        flagged = " (outside the verification window)" if outside_window else ""
        if self.round == "verification":
            return Change(
                replace(
                    self,
                    status="approved",
                    verified_emissions=verified,
                    first_agency_id=agency_id,
                    verification_outside_window=outside_window,
                    approved_at=at,
                ),
                "approve",
                f"verified {verified} t, reported {self.reported_emissions} t{flagged}",
            )
        return Change(
            replace(
                self,
                status="final",
                reverified_emissions=verified,
                final_emissions=verified,
                final_basis="reverification",
                reverification_outside_window=outside_window,
                reverified_at=at,
                finalised_at=at,
            ),
            "reverify",
            f"re-verified {verified} t replaces {self.verified_emissions} t{flagged}",
        )

    # --- the Bureau decides on an approved figure ---------------------------------------------

    def select(self, *, by: SelectedBy, reason: str, at: datetime) -> Change:
        """Re-verification (复查): the case waits for the re-verification lot's agency."""
        self._approved("select")
        return Change(
            replace(
                self,
                status="selected",
                round="reverification",
                agency_id=None,
                lot_id=None,
                selected_by=by,
                selection_reason=reason,
                selected_at=at,
            ),
            "select",
            reason,
        )

    def finalise(self, *, at: datetime) -> Change:
        """Not selected: the verified figure is final."""
        self._approved("finalise")
        return Change(
            replace(
                self,
                status="final",
                final_emissions=self.verified_emissions,
                final_basis="verification",
                finalised_at=at,
            ),
            "finalise",
            f"not selected for re-verification: {self.verified_emissions} t is final",
        )

    # --- refusals -----------------------------------------------------------------------------

    def _final(self) -> Conflict:
        return Conflict(
            "case_final",
            f"case {self.case_id} is final ({self.final_basis}, {self.final_emissions} t)",
        )

    def _at_work(self, agency_id: str, doing: str) -> None:
        """The case is with an agency now, and it is the caller's."""
        match self.status:
            case "final":
                raise self._final()
            case "opened" | "selected":
                raise Conflict(
                    "not_assigned",
                    f"case {self.case_id} has no {self.round} agency yet: nobody may {doing} it",
                )
            case "returned":
                raise Conflict(
                    "case_returned",
                    f"case {self.case_id} was returned to the entity for correction: it comes "
                    "back with the corrected version",
                )
            case "approved":
                raise Conflict(
                    "already_approved",
                    f"case {self.case_id} was approved with {self.verified_emissions} t",
                )
        if agency_id != self.agency_id:
            raise Forbidden("other_agency", f"case {self.case_id} is assigned to another agency")

    def _approved(self, doing: str) -> None:
        match self.status:
            case "approved":
                return
            case "final":
                raise self._final()
            case "selected" | "reverifying":
                raise Conflict(
                    "already_selected",
                    f"case {self.case_id} is already selected for re-verification",
                )
            case _:
                raise Conflict(
                    "not_approved",
                    f"case {self.case_id} is {self.status}: only an approved case can be "
                    f"{'finalised' if doing == 'finalise' else 'selected'}",
                )


# --- re-verification by rule ------------------------------------------------------------------


def sample_draw(case_id: UUID) -> int:
    """The case's place in the deterministic sample, 0-999: any replica draws the same."""
    return int(hashlib.sha256(str(case_id).encode()).hexdigest(), 16) % 1000


def selected_by_rule(case: Case, rule: ReverificationRule) -> str | None:
    """Why the policy's rule selects an approved case for re-verification, or None: a verified
    figure differing from the reported one by strictly more than the ratio, else the sample."""
    reported, verified = case.reported_emissions, case.verified_emissions
    if reported is None or verified is None:
        raise ValueError(f"case {case.case_id} has no verified figure to select by")
    difference = abs(verified - reported)
    if difference > rule.difference_ratio * reported:
        limit = f"{(rule.difference_ratio * 100).normalize():f}%"
        if not reported:
            return f"verified {verified} t where {reported} t were reported (> {limit})"
        # Rounded away from zero: a difference just above the limit never reads as equal to it.
        share = (difference * 100 / reported).quantize(_PERCENT, rounding=ROUND_UP)
        return f"verified {verified} t differs from reported {reported} t by {share}% (> {limit})"
    draw = sample_draw(case.case_id)
    if draw < rule.sample_per_mille:
        return f"drawn in the sample: draw {draw} < {rule.sample_per_mille} per mille"
    return None


# --- closing the year -------------------------------------------------------------------------


def closing_refusal(
    year: int, *, cases_by_status: dict[str, int], without_case: list[str]
) -> Conflict | None:
    """Why verification of the year cannot close yet: a case not final, or an entity on the
    roster without a case (neither a report nor a determination)."""
    open_cases = {status: n for status, n in cases_by_status.items() if status != "final" and n}
    if not open_cases and not without_case:
        if cases_by_status.get("final"):
            return None
        return Conflict("verification_open", f"no case and no entity on the roster for {year} yet")
    parts = []
    if open_cases:
        counts = ", ".join(f"{n} {status}" for status, n in open_cases.items())
        parts.append(f"{sum(open_cases.values())} case(s) not final ({counts})")
    if without_case:
        shown = ", ".join(without_case[:10])
        more = f" and {len(without_case) - 10} more" if len(without_case) > 10 else ""
        entities = "entity" if len(without_case) == 1 else "entities"
        parts.append(f"{len(without_case)} rostered {entities} without a case: {shown}{more}")
    return Conflict("verification_open", f"verification of {year} is open: {'; '.join(parts)}")
