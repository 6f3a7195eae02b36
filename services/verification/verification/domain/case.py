"""A verification case: opened when a report arrives, assigned to an agency by the Bureau,
approved by that agency with the verified emissions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal
from uuid import UUID, uuid5

from carbon_contracts.errors import Conflict, Forbidden

Status = Literal["opened", "assigned", "approved"]
_CASE_NAMESPACE = UUID("6f1c1f4e-4a51-4f39-9d0e-5b2a9a0c2b11")


def case_id_for(report_id: UUID) -> UUID:
    """One case per report, with an id any replica derives the same way."""
    return uuid5(_CASE_NAMESPACE, str(report_id))


@dataclass(frozen=True)
class Case:
    case_id: UUID
    report_id: UUID
    credit_code: str
    compliance_year: int
    reported_emissions: Decimal
    status: Status = "opened"
    agency_id: str | None = None
    verified_emissions: Decimal | None = None

    def assign(self, agency_id: str) -> Case:
        """The Bureau assigns (or reassigns, before approval) an agency from the tender results."""
        if self.status == "approved":
            raise Conflict("case_closed", f"case {self.case_id} is already approved")
        if self.agency_id == agency_id:
            raise Conflict("already_assigned", f"case {self.case_id} is already with {agency_id}")
        return replace(self, status="assigned", agency_id=agency_id)

    def approve(self, *, agency_id: str, verified_emissions: Decimal) -> Case:
        """Only the assigned agency approves, once, with the verified emissions."""
        if self.status == "opened":
            raise Conflict("not_assigned", f"case {self.case_id} has no agency assigned yet")
        if self.status == "approved":
            raise Conflict("case_closed", f"case {self.case_id} is already approved")
        if agency_id != self.agency_id:
            raise Forbidden("other_agency", f"case {self.case_id} is assigned to another agency")
        return replace(self, status="approved", verified_emissions=verified_emissions)
