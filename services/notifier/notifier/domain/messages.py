"""Notifications for the entity concerned, the district bureau supervising it and the Bureau."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal, assert_never
from zoneinfo import ZoneInfo

from carbon_contracts import events as ev
from carbon_contracts.policy import Policy

RecipientType = Literal["entity", "district", "bureau"]
BUREAU = "bureau"
"""The recipient id of the Bureau's notices: there is one Bureau."""

Text = tuple[str, str]
"""A notice's subject and message."""


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
    payload: ev.Payload, *, district: str | None, policy: Policy
) -> list[Notification]:
    """The notifications one event gives rise to. The district is told where it supervises (an
    obligation event names the district itself; `district` is what supervision knows). A
    deadline_passed tells the Bureau and each district with entities overdue; any other
    cycle-wide event tells no one."""
    if isinstance(payload, ev.DeadlinePassed):
        return _deadline_passed(payload, policy)
    if not isinstance(payload, ev.EventPayload):
        return []
    to_bureau: Text | None = None
    if isinstance(payload, ev.ObligationEvent):
        district = payload.district
        to_entity, to_district, to_bureau = _obligation_texts(payload, policy)
    else:
        to_entity, to_district = _texts(payload, policy)
    result: list[Notification] = []
    if to_entity:
        result.append(Notification("entity", payload.credit_code, *to_entity))
    if to_district and district:
        result.append(Notification("district", district, *to_district))
    if to_bureau:
        result.append(Notification("bureau", BUREAU, *to_bureau))
    return result


def district_notice(payload: ev.EventPayload, *, policy: Policy) -> Text | None:
    """The subject and message the entity's district is told of the event, if any. The texts
    never name the district, so they can be kept until the district is known (an obligation
    event names its district, so its notice never waits)."""
    if isinstance(payload, ev.ObligationEvent):
        return _obligation_texts(payload, policy)[1]
    return _texts(payload, policy)[1]


# --- Deadlines ---------------------------------------------------------------------------------


def _obligation(policy: Policy, obligation: ev.ObligationName, year: int) -> str:
    """An obligation in plain words, e.g. "2024 allowance surrender"."""
    match obligation:
        case "monitoring_plan":
            # The plan submitted in a cycle is for the next year: the policy says which.
            return f"{policy.monitoring_plan.year} monitoring plan"
        case "report":
            return f"{year} emissions report"
        case "accounts_opening":
            return "registry and trading accounts (new entrant)"
        case "surrender":
            return f"{year} allowance surrender"
        case _:
            assert_never(obligation)


def _was(obligation: ev.ObligationName) -> tuple[str, str]:
    """("was", "is"), or ("were", "are") for the accounts, which are two."""
    return ("were", "are") if obligation == "accounts_opening" else ("was", "is")


def _capital(words: str) -> str:
    return words[:1].upper() + words[1:]


def _duration(span: timedelta) -> str:
    """A policy duration in words, e.g. "7 days", "2 hours", "1 day 12 hours"."""
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}" if count == 1 else f"{count} {unit}s")
    return " ".join(parts) or "0 seconds"


def _missing(missing: str) -> str:
    # The producer's text, ended by our own full stop.
    return missing.rstrip(". ")


def _obligation_texts(
    payload: ev.ObligationEvent, policy: Policy
) -> tuple[Text | None, Text | None, Text | None]:
    """(subject, message) for the entity, its district and the Bureau; None where one is not
    told. A reminder is the entity's alone; an overdue obligation and one done late concern the
    entity and its district (whose queue holds the case); an escalated case goes to the
    district and the Bureau."""
    code = payload.credit_code
    what = _obligation(policy, payload.obligation, payload.compliance_year)
    by = _by(policy, payload.due_at)
    match payload:
        case ev.ReminderDue():
            return (
                (
                    f"Reminder: {what} due {by}",
                    f"Complete your {what} {by}: this is the reminder "
                    f"{_duration(payload.before)} before the deadline. Still open: "
                    f"{_missing(payload.missing)}. After the deadline it is overdue and a case "
                    "opens in your district bureau's queue.",
                ),
                None,
                None,
            )
        case ev.Overdue():
            escalates = _local(policy, payload.escalates_at)
            was, is_ = _was(payload.obligation)
            return (
                (
                    f"Overdue: {what}",
                    f"Your {what} {was} due {by} and {is_} overdue. Still open: "
                    f"{_missing(payload.missing)}. A case is open in the queue of your district "
                    f"bureau ({payload.district}); if it is still open at {escalates}, it goes "
                    "to the Bureau.",
                ),
                (
                    f"{code}: {what} overdue",
                    f"{code} did not complete its {what} {by}. Still open: "
                    f"{_missing(payload.missing)}. A case is open in your queue; if it is still "
                    f"open at {escalates}, it goes to the Bureau.",
                ),
                None,
            )
        case ev.DoneLate():
            done = _local(policy, payload.done_at)
            was = _was(payload.obligation)[0]
            return (
                (
                    f"{_capital(what)} done late",
                    f"Your {what} {was} done at {done}, after the deadline ({by}). The case in "
                    "your district bureau's queue is closed.",
                ),
                (
                    f"{code}: {what} done late",
                    f"{code} completed its {what} at {done}, after the deadline ({by}); its case "
                    "in your queue is closed.",
                ),
                None,
            )
        case ev.CaseEscalated():
            opened = _local(policy, payload.opened_at)
            escalated = _local(policy, payload.escalated_at)
            missing = _missing(payload.missing)
            return (
                None,
                (
                    f"{code}: {what} case escalated to the Bureau",
                    f"The case on {code}'s {what} (due {by}), open in your queue since {opened}, "
                    f"went to the Bureau at {escalated}. Still open: {missing}.",
                ),
                (
                    f"Escalated: {code}, {what}",
                    f"{code} (district {payload.district}) has not completed its {what}, due "
                    f"{by}. Still open: {missing}. Its case opened in the district's queue at "
                    f"{opened} and came to the Bureau at {escalated}.",
                ),
            )
    return None, None, None


def _deadline_passed(payload: ev.DeadlinePassed, policy: Policy) -> list[Notification]:
    """The Bureau hears how the whole deadline went; each district with entities overdue hears
    its own count (each of them is a case in its queue), and no other district anything."""
    what = _obligation(policy, payload.obligation, payload.compliance_year)
    by = _by(policy, payload.due_at)
    per_district = ", ".join(
        f"{district} {count}" for district, count in sorted(payload.overdue_by_district.items())
    )
    summary = f"{payload.done_on_time} of {payload.obligated} entities met it on time, " + (
        f"{payload.overdue} overdue ({per_district})." if payload.overdue else "none overdue."
    )
    result = [
        Notification(
            "bureau",
            BUREAU,
            f"{_capital(what)} deadline passed: {payload.overdue} overdue",
            f"The deadline for the {what} ({by}) passed: {summary}",
        )
    ]
    for district, count in sorted(payload.overdue_by_district.items()):
        if count:
            result.append(
                Notification(
                    "district",
                    district,
                    f"{_capital(what)} deadline passed: {count} overdue in your district",
                    f"The deadline for the {what} ({by}) passed with {count} of your entities "
                    f"overdue: {'it has' if count == 1 else 'each has'} a case in your queue.",
                )
            )
    return result


def _texts(payload: ev.EventPayload, policy: Policy) -> tuple[Text | None, Text | None]:
    """(subject, message) for the entity and for its district; None where one is not told."""
    code, year = payload.credit_code, payload.compliance_year
    to_entity: Text | None = None
    to_district: Text | None = None
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
