"""The annual emissions report's lifecycle: every transition and the states it may start from.

    draft -> submitted -> (returned -> submitted as a new version) -> accepted

A draft is the entity's own until it submits it. A submitted or accepted version can be returned
for correction (by the Bureau, or by the verifier through verification); the entity corrects a
submitted or returned report with a new version and a reason (verification always works on the
latest version). The Bureau accepts the latest version once its sealed paper copy has arrived
(when the policy asks for one); an accepted report takes no correction unless it is returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Literal
from uuid import UUID

from carbon_contracts.errors import Conflict, Invalid

Status = Literal["draft", "submitted", "returned", "accepted"]
STATUSES: tuple[Status, ...] = ("draft", "submitted", "returned", "accepted")
ReturnedBy = Literal["bureau", "verifier"]


def is_late(at: datetime, deadline: datetime) -> bool:
    """A deadline is the first instant that is late: "by 03-31" is late from 04-01 00:00."""
    return at >= deadline


def check_products(products: Iterable[str]) -> None:
    """A production output is listed once (in a report and in a monitoring plan)."""
    seen: set[str] = set()
    for product in products:
        if product in seen:
            raise Invalid("duplicate_output", f"output {product!r} is listed twice")
        seen.add(product)


@dataclass(frozen=True)
class Report:
    report_id: UUID
    credit_code: str
    compliance_year: int
    status: Status
    version: int
    """The latest version; a draft is the version 1 to be."""
    paper_copy_received: bool = False

    def edit_draft(self) -> Report:
        self._must_be_draft("edit")
        return self

    def submit_draft(self) -> Report:
        self._must_be_draft("submit")
        return replace(self, status="submitted")

    def correct(self) -> Report:
        """A new version, with a reason, of a submitted or returned report."""
        self._must_be_submitted("correct")
        if self.status == "accepted":
            raise Conflict(
                "report_accepted",
                f"report {self.report_id}: version {self.version} is accepted; only a returned "
                "(or not yet accepted) report takes a corrected version",
            )
        return replace(self, status="submitted", version=self.version + 1)

    def give_back(self, version: int | None) -> Report:
        """Return the latest version to the entity for correction."""
        self._must_be_submitted("return")
        self._must_be_latest(version, "return")
        if self.status == "returned":
            raise Conflict(
                "already_returned",
                f"report {self.report_id}: version {self.version} is already returned for "
                "correction",
            )
        return replace(self, status="returned")

    def record_paper_copy(self, received_on: date, *, today: date, required: bool) -> Report:
        """The Bureau records the arrival of the sealed paper copy, once."""
        if not required:
            raise Conflict(
                "no_paper_copy", "the policy in force asks for no paper copy of the report"
            )
        if received_on > today:
            raise Invalid(
                "received_in_future",
                f"the paper copy cannot have arrived on {received_on}: today is {today}",
            )
        self._must_be_submitted("record the paper copy of")
        if self.paper_copy_received:
            raise Conflict(
                "paper_copy_already_received",
                f"report {self.report_id}: its paper copy is already recorded",
            )
        return replace(self, paper_copy_received=True)

    def accept(self, version: int | None, *, paper_copy_required: bool) -> Report:
        """The Bureau accepts the latest submitted version: online, and on paper when asked."""
        self._must_be_submitted("accept")
        self._must_be_latest(version, "accept")
        if self.status == "accepted":
            raise Conflict(
                "already_accepted",
                f"report {self.report_id}: version {self.version} is accepted",
            )
        if self.status == "returned":
            raise Conflict(
                "awaiting_correction",
                f"report {self.report_id}: version {self.version} was returned for correction",
            )
        if paper_copy_required and not self.paper_copy_received:
            raise Conflict(
                "paper_copy_missing",
                f"report {self.report_id}: its sealed paper copy has not been received; a "
                "report is complete only with it",
            )
        return replace(self, status="accepted")

    def is_complete(self, *, paper_copy_required: bool) -> bool:
        """Submitted online and, when the policy asks for it, received on paper."""
        return self.status != "draft" and (self.paper_copy_received or not paper_copy_required)

    def _must_be_draft(self, action: str) -> None:
        if self.status != "draft":
            raise Conflict(
                "not_a_draft",
                f"report {self.report_id} is {self.status}, not a draft: cannot {action} it as one",
            )

    def _must_be_submitted(self, action: str) -> None:
        if self.status == "draft":
            raise Conflict(
                "not_submitted",
                f"report {self.report_id} is a draft: submit it before you {action} it",
            )

    def _must_be_latest(self, version: int | None, action: str) -> None:
        """A decision may name the version it was made on (None: the latest, whatever it is)."""
        if version is not None and version != self.version:
            raise Conflict(
                "stale_version",
                f"report {self.report_id}: cannot {action} version {version}, the latest is "
                f"version {self.version}",
            )
