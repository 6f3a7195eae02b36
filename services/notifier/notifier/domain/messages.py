"""Notifications for the entity concerned and the district bureau supervising it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
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


def _by(policy: Policy, deadline: datetime) -> str:
    """A deadline as people say it: the policy's deadlines are the first late instant, so one at
    midnight is "by" the day before; any other is "before" its time."""
    local = deadline.astimezone(ZoneInfo(policy.timezone))
    if local.time() == time(0):
        return f"by {(local - timedelta(days=1)).date().isoformat()}"
    return f"before {local.strftime('%Y-%m-%d %H:%M')}"


def notifications_for(
    payload: ev.EventPayload, *, district: str | None, policy: Policy
) -> list[Notification]:
    """The notifications one event gives rise to; the district is told where it supervises."""
    to_entity, to_district = _texts(payload, policy)
    result: list[Notification] = []
    if to_entity:
        result.append(Notification("entity", payload.credit_code, *to_entity))
    if to_district and district:
        result.append(Notification("district", district, *to_district))
    return result


def district_notice(payload: ev.EventPayload, *, policy: Policy) -> tuple[str, str] | None:
    """The subject and message the entity's district is told of the event, if any. The texts
    never name the district, so they can be kept until the district is known."""
    return _texts(payload, policy)[1]


def _texts(
    payload: ev.EventPayload, policy: Policy
) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """(subject, message) for the entity and for its district; None where one is not told."""
    code, year = payload.credit_code, payload.compliance_year
    to_entity: tuple[str, str] | None = None
    to_district: tuple[str, str] | None = None
    match payload:
        case ev.EntityRegistered():
            to_entity = (
                f"Covered for compliance year {year}",
                f"{payload.name} is a covered entity for {year}."
                + (
                    " As a new entrant, open your registry and trading accounts "
                    f"{_by(policy, policy.deadlines.accounts_opening)}."
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
            if payload.on_time is False:
                to_district = (
                    f"{code} opened its account late",
                    f"New entrant {code} opened its allowance account after the deadline "
                    f"({_by(policy, policy.deadlines.accounts_opening)}).",
                )
        case ev.MonitoringPlanSubmitted():
            late = " after the deadline" if payload.late else ""
            to_entity = (
                f"{payload.plan_year} monitoring plan received",
                f"Version {payload.version} of your {payload.plan_year} monitoring plan was "
                f"received{late}; the Bureau will approve it or return it with reasons.",
            )
        case ev.MonitoringPlanApproved():
            to_entity = (
                f"{payload.plan_year} monitoring plan approved",
                f"Version {payload.version} of your {payload.plan_year} monitoring plan is "
                "approved.",
            )
        case ev.MonitoringPlanReturned():
            to_entity = (
                f"{payload.plan_year} monitoring plan returned",
                f"Version {payload.version} was returned: {payload.reason} Submit a new version.",
            )
        case ev.ReportSubmitted():
            what = (
                f"Version {payload.version} of report {payload.report_id}"
                if payload.version > 1
                else f"Report {payload.report_id}"
            )
            paper = " Mail the sealed paper copy to the Bureau." if policy.report.paper_copy else ""
            to_entity = (
                f"{year} emissions report received",
                f"{what} received: {payload.total_emissions} tCO2e computed with factor table "
                f"{payload.factor_table}.{paper}",
            )
            late = " after the deadline" if payload.late else ""
            to_district = (
                f"{code} reported for {year}",
                f"{code} submitted its {year} report{late}.",
            )
        case ev.ReportReturned():
            by = "the Bureau" if payload.returned_by == "bureau" else "the verification agency"
            to_entity = (
                f"{year} report returned for correction",
                f"{by.capitalize()} returned version {payload.version} of your report: "
                f"{payload.reason} Submit a corrected version.",
            )
        case ev.PaperCopyReceived():
            to_entity = (
                "Paper copy received",
                f"The Bureau received the sealed paper copy of report {payload.report_id} on "
                f"{payload.received_on.isoformat()}.",
            )
        case ev.ReportAccepted():
            to_entity = (
                f"{year} report accepted",
                f"Version {payload.version} of your report ({payload.total_emissions} tCO2e) is "
                "accepted, online and on paper.",
            )
        case ev.EmissionsDetermined():
            to_entity = (
                f"{year} emissions determined by the Bureau",
                f"No report came; the Bureau determined your {year} emissions at "
                f"{payload.total_emissions} tCO2e: {payload.reason}",
            )
            to_district = (
                f"{code}: {year} emissions determined",
                f"{code} sent no {year} report; the Bureau determined its emissions.",
            )
        case ev.VerificationAssigned() if payload.round == "reverification":
            to_entity = (
                "Re-verification agency assigned",
                f"Agency {payload.agency_id} will re-verify your {year} report.",
            )
        case ev.VerificationAssigned():
            to_entity = (
                "Verification agency assigned",
                f"Agency {payload.agency_id} will verify your {year} report from "
                f"{_local(policy, policy.deadlines.verification_start)[:10]} "
                f"{_by(policy, policy.deadlines.verification_end)}. Name a contact person.",
            )
        case ev.VerificationReturned():
            to_entity = (
                "Verification: report returned",
                f"Agency {payload.agency_id} returned your report for correction: {payload.reason}",
            )
        case ev.VerificationApproved():
            to_entity = (
                f"{year} emissions verified",
                f"Verified emissions: {payload.verified_emissions} tCO2e "
                f"(reported {payload.reported_emissions}). Re-verification may follow before "
                "the figure is final.",
            )
        case ev.ReverificationSelected():
            to_entity = (
                f"{year} report selected for re-verification",
                f"Your {year} verification will be re-verified by another agency: {payload.reason}",
            )
        case ev.ReverificationCompleted():
            to_entity = (
                f"{year} re-verification complete",
                f"Re-verified emissions: {payload.verified_emissions} tCO2e (first verification "
                f"{payload.first_verified_emissions}).",
            )
        case ev.VerificationFinalised():
            to_entity = (
                f"{year} verified emissions final",
                f"Your final verified {year} emissions: {payload.verified_emissions} tCO2e. "
                "Your allowances and surrender obligation rest on this figure.",
            )
        case ev.AllocationIssued():
            adjusted = (
                f"{payload.clawed_back} pre-allocated allowances taken back"
                + (f", {payload.owed} owed (no longer held)" if payload.owed else "")
                if payload.clawed_back or payload.owed
                else f"{payload.allowances} allowances credited"
            )
            to_entity = (
                f"{year} allowances issued",
                f"Final {year} allocation {payload.final_allocation} ({payload.method}), "
                f"{payload.preallocated} pre-allocated: {adjusted}. Surrender allowances equal "
                f"to your verified emissions {_by(policy, policy.deadlines.surrender)}.",
            )
            if payload.owed:
                to_district = (
                    f"{code} owes {payload.owed} allowances",
                    f"{code} was pre-allocated more {year} allowances than its final allocation "
                    f"and no longer holds {payload.owed} of them.",
                )
        case ev.SurrenderCompleted():
            timing = "on time" if payload.on_time else "after the deadline"
            offsets = ", ".join(f"{n} {kind}" for kind, n in payload.offsets_by_type.items())
            to_entity = (
                f"{year} compliance complete",
                f"You surrendered {payload.allowances_surrendered} allowances and "
                f"{payload.offsets_surrendered} offsets{f' ({offsets})' if offsets else ''} "
                f"for {year}, {timing}.",
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
        case ev.AllowancesTransferred():
            to_entity = (
                "Allowances sent to the exchange",
                f"{payload.allowances} allowances of vintage {payload.vintage} moved from "
                f"{payload.account_id} to trading account {payload.trading_account_id}.",
            )
        case ev.AuctionWon():
            to_entity = (
                f"Won {payload.allowances} allowances at auction {payload.auction_id}",
                f"You won {payload.allowances} allowances at auction {payload.auction_id} at "
                f"{payload.price} yuan each. Pay {payload.amount_due} yuan to the exchange "
                f"{_by(policy, payload.payment_due)}, or the award is cancelled. They can be used "
                f"only for your {year} surrender and cannot be transferred.",
            )
        case ev.AuctionSettled():
            to_entity = (
                f"{year} auction allowances credited",
                f"The exchange confirmed your payment of {payload.amount} yuan: "
                f"{payload.allowances} allowances won at auction {payload.auction_id} are "
                f"credited, usable only for your {year} surrender and not transferable.",
            )
        case ev.AuctionAwardCancelled():
            by = _by(policy, payload.payment_due)
            to_entity = (
                f"Auction award of {payload.allowances} allowances cancelled",
                f"Your award of {payload.allowances} allowances at auction {payload.auction_id} "
                f"is cancelled: {payload.amount_due} yuan was not paid {by}. Nothing was "
                "credited.",
            )
            to_district = (
                f"{code}: auction award cancelled",
                f"{code} did not pay {payload.amount_due} yuan {by} for the "
                f"{payload.allowances} allowances it won at auction {payload.auction_id}; the "
                "award is cancelled.",
            )
    return to_entity, to_district
