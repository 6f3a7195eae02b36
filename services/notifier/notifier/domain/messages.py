"""Notifications for the entity concerned and the district bureau supervising it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from carbon_contracts import events as ev
from carbon_contracts.policy import Policy

RecipientType = Literal["entity", "district"]


@dataclass(frozen=True)
class Notification:
    recipient_type: RecipientType
    recipient_id: str
    subject: str
    message: str


def _local(policy: Policy, moment: datetime) -> str:
    return moment.astimezone(ZoneInfo(policy.timezone)).strftime("%Y-%m-%d %H:%M")


def notifications_for(
    payload: ev.EventPayload, *, district: str | None, policy: Policy
) -> list[Notification]:
    """The notifications one event gives rise to; the district is told where it supervises."""
    code, year = payload.credit_code, payload.compliance_year
    to_entity: tuple[str, str] | None = None
    to_district: tuple[str, str] | None = None
    match payload:
        case ev.EntityRegistered():
            to_entity = (
                f"Covered for compliance year {year}",
                f"{payload.name} is a covered entity for {year}."
                + (
                    " As a new entrant, open your registry and trading accounts by "
                    f"{_local(policy, policy.deadlines.accounts_opening)}."
                    if payload.new_entrant
                    else ""
                ),
            )
            to_district = (
                f"New covered entity {code}",
                f"{payload.name} ({code}) was put on the {year} roster in your district.",
            )
        case ev.AccountOpened():
            to_entity = (
                "Allowance account opened",
                f"Your allowance account {payload.account_id} is open.",
            )
        case ev.ReportSubmitted():
            to_entity = (
                f"{year} emissions report received",
                f"Report {payload.report_id} received: {payload.total_emissions} tCO2e "
                f"computed with factor table {payload.factor_table}. Mail the sealed paper copy "
                "to the Bureau.",
            )
            to_district = (f"{code} reported for {year}", f"{code} submitted its {year} report.")
        case ev.VerificationAssigned():
            to_entity = (
                "Verification agency assigned",
                f"Agency {payload.agency_id} will verify your {year} report between "
                f"{_local(policy, policy.deadlines.verification_start)} and "
                f"{_local(policy, policy.deadlines.verification_end)}. Name a contact person.",
            )
        case ev.VerificationApproved():
            to_entity = (
                f"{year} emissions verified",
                f"Verified emissions: {payload.verified_emissions} tCO2e "
                f"(reported {payload.reported_emissions}).",
            )
        case ev.AllocationIssued():
            to_entity = (
                f"{year} allowances issued",
                f"{payload.allowances} allowances credited ({payload.method}, final allocation "
                f"{payload.final_allocation}). Surrender allowances equal to your verified "
                f"emissions by {_local(policy, policy.deadlines.surrender)}.",
            )
        case ev.SurrenderCompleted():
            timing = "on time" if payload.on_time else "after the deadline"
            to_entity = (
                f"{year} compliance complete",
                f"You surrendered {payload.allowances_surrendered} allowances and "
                f"{payload.offsets_surrendered} offsets for {year}, {timing}.",
            )
            to_district = (
                f"{code} completed {year} surrender",
                f"{code} met its {year} obligation of {payload.obligation} {timing}.",
            )
        case ev.PreallocationIssued():
            to_entity = (
                f"{year} pre-allocation issued",
                f"{payload.allowances} pre-allocated {year} allowances credited "
                f"({payload.ratio} of {payload.basis_year} verified emissions).",
            )
    result: list[Notification] = []
    if to_entity:
        result.append(Notification("entity", code, *to_entity))
    if to_district and district:
        result.append(Notification("district", district, *to_district))
    return result
