"""What the notifier tells of deadlines, and whom: reminders to the entity alone, an overdue
obligation and one done late to the entity and its district, an escalated case to the district
and the Bureau, a deadline passed to the Bureau and the districts with entities overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carbon_contracts import events as ev
from carbon_platform import metrics
from notifier import store
from notifier.domain.messages import Notification, notifications_for
from notifier.figures import FIGURES
from registry.domain.credit_code import make_credit_code
from tests.support import example
from tests.unit.support import POLICY, Harness, consumed, entity_registered

CODE = "91310115MA1K4C8N0W"  # the examples' entity, supervised by pudong
OTHER = make_credit_code(2)
WORDS = {
    "monitoring_plan": "2025 monitoring plan",
    "report": "2024 emissions report",
    "accounts_opening": "registry and trading accounts (new entrant)",
    "surrender": "2024 allowance surrender",
}
"""Each obligation in plain words (the monitoring plan of this cycle is the next year's)."""
BY = {
    "monitoring_plan": "by 2025-01-15",
    "report": "by 2025-03-31",
    "accounts_opening": "by 2025-03-31",
    "surrender": "before 2025-06-30 17:00",
}
"""Each deadline as people say it in Shanghai: the policy's is the first late instant."""
ESCALATES = {
    "monitoring_plan": "2025-01-23 00:00",
    "report": "2025-04-08 00:00",
    "accounts_opening": "2025-04-08 00:00",
    "surrender": "2025-07-07 17:00",
}
"""The examples' escalates_at (deadline + the policy's case SLA), in Shanghai time."""
DONE = {
    "monitoring_plan": "2025-01-16 02:00",
    "report": "2025-04-01 02:00",
    "accounts_opening": "2025-04-01 02:00",
    "surrender": "2025-06-30 19:00",
}
"""The examples' done_at, in Shanghai time."""


def told(payload: ev.Payload, district: str | None = None) -> dict[str, Notification]:
    """The notices of one event by recipient ("type:id"), in the order they are recorded."""
    notes = notifications_for(payload, district=district, policy=POLICY)
    by_recipient = {f"{n.recipient_type}:{n.recipient_id}": n for n in notes}
    assert len(by_recipient) == len(notes)  # one notice per recipient
    return by_recipient


def of(kind: str, obligation: str, **changes: Any) -> Any:
    """The contracts' example of `<obligation>.<kind>`, changed."""
    return example(f"{obligation}.{kind}").model_copy(update=changes)


# --- the texts --------------------------------------------------------------------------------


@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
def test_a_reminder_tells_the_entity_alone_what_is_missing_and_by_when(obligation: str) -> None:
    payload = of("reminder_due", obligation)
    notes = told(payload, district="pudong")
    assert list(notes) == [f"entity:{CODE}"]
    note = notes[f"entity:{CODE}"]
    assert note.subject == f"Reminder: {WORDS[obligation]} due {BY[obligation]}"
    assert f"Complete your {WORDS[obligation]} {BY[obligation]}" in note.message
    assert "the reminder 1 day before the deadline" in note.message
    assert f"Still open: {payload.missing}." in note.message


def test_a_reminder_says_how_long_before_the_deadline_it_is() -> None:
    hours = told(of("reminder_due", "surrender", before=timedelta(hours=2)))
    assert "the reminder 2 hours before the deadline" in hours[f"entity:{CODE}"].message
    weeks = told(of("reminder_due", "report", before=timedelta(days=14)))
    assert "the reminder 14 days before the deadline" in weeks[f"entity:{CODE}"].message
    mixed = told(of("reminder_due", "report", before=timedelta(days=1, hours=12)))
    assert "the reminder 1 day 12 hours before" in mixed[f"entity:{CODE}"].message


def test_deadlines_are_told_in_shanghai_time_whatever_the_offset_sent() -> None:
    in_utc = of(
        "overdue",
        "surrender",
        due_at=datetime(2025, 6, 30, 9, 0, tzinfo=UTC),
        escalates_at=datetime(2025, 7, 7, 9, 0, tzinfo=UTC),
    )
    note = told(in_utc)[f"entity:{CODE}"]
    assert "due before 2025-06-30 17:00" in note.message
    assert "still open at 2025-07-07 17:00" in note.message
    assert "09:00" not in note.message


@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
def test_an_overdue_obligation_tells_the_entity_and_its_district_of_the_case(
    obligation: str,
) -> None:
    payload = of("overdue", obligation)
    what, by, escalates = WORDS[obligation], BY[obligation], ESCALATES[obligation]
    notes = told(payload)
    assert list(notes) == [f"entity:{CODE}", "district:pudong"]
    entity, district = notes[f"entity:{CODE}"], notes["district:pudong"]
    assert entity.subject == f"Overdue: {what}"
    was, is_ = ("were", "are") if obligation == "accounts_opening" else ("was", "is")
    assert entity.message == (
        f"Your {what} {was} due {by} and {is_} overdue. Still open: {payload.missing}. A case is "
        f"open in the queue of your district bureau (pudong); if it is still open at "
        f"{escalates}, it goes to the Bureau."
    )
    assert district.subject == f"{CODE}: {what} overdue"
    assert district.message == (
        f"{CODE} did not complete its {what} {by}. Still open: {payload.missing}. A case is "
        f"open in your queue; if it is still open at {escalates}, it goes to the Bureau."
    )


@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
def test_an_obligation_done_late_tells_the_entity_and_its_district_the_case_is_closed(
    obligation: str,
) -> None:
    what, by, done = WORDS[obligation], BY[obligation], DONE[obligation]
    notes = told(of("done_late", obligation))
    assert list(notes) == [f"entity:{CODE}", "district:pudong"]
    entity, district = notes[f"entity:{CODE}"], notes["district:pudong"]
    assert entity.subject == f"{what[0].upper()}{what[1:]} done late"
    was = "were" if obligation == "accounts_opening" else "was"
    assert entity.message == (
        f"Your {what} {was} done at {done}, after the deadline ({by}). The case in your district "
        "bureau's queue is closed."
    )
    assert district.subject == f"{CODE}: {what} done late"
    assert district.message == (
        f"{CODE} completed its {what} at {done}, after the deadline ({by}); its case in your "
        "queue is closed."
    )


@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
def test_an_escalated_case_goes_to_the_district_and_the_bureau_not_the_entity(
    obligation: str,
) -> None:
    payload = of("case_escalated", obligation)
    what, by = WORDS[obligation], BY[obligation]
    notes = told(payload)
    assert list(notes) == ["district:pudong", "bureau:bureau"]
    district, bureau = notes["district:pudong"], notes["bureau:bureau"]
    opened = payload.opened_at.strftime("%Y-%m-%d %H:%M")  # the examples say +08:00
    escalated = payload.escalated_at.strftime("%Y-%m-%d %H:%M")
    assert district.subject == f"{CODE}: {what} case escalated to the Bureau"
    assert district.message == (
        f"The case on {CODE}'s {what} (due {by}), open in your queue since {opened}, went to "
        f"the Bureau at {escalated}. Still open: {payload.missing}."
    )
    assert bureau.subject == f"Escalated: {CODE}, {what}"
    assert bureau.message == (
        f"{CODE} (district pudong) has not completed its {what}, due {by}. Still open: "
        f"{payload.missing}. Its case opened in the district's queue at {opened} and came to "
        f"the Bureau at {escalated}."
    )


@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
def test_a_deadline_passed_tells_the_bureau_the_counts_and_each_district_its_own(
    obligation: str,
) -> None:
    what, by = WORDS[obligation], BY[obligation]
    notes = told(of("deadline_passed", obligation), district="minhang")
    # The example: 300 obligated, 297 on time, 3 overdue: pudong 2, jinshan 1.
    assert list(notes) == ["bureau:bureau", "district:jinshan", "district:pudong"]
    bureau = notes["bureau:bureau"]
    assert bureau.subject == f"{what[0].upper()}{what[1:]} deadline passed: 3 overdue"
    assert bureau.message == (
        f"The deadline for the {what} ({by}) passed: 297 of 300 entities met it on time, "
        "3 overdue (jinshan 1, pudong 2)."
    )
    pudong, jinshan = notes["district:pudong"], notes["district:jinshan"]
    assert pudong.subject.endswith("deadline passed: 2 overdue in your district")
    assert pudong.message == (
        f"The deadline for the {what} ({by}) passed with 2 of your entities overdue: each has "
        "a case in your queue."
    )
    assert jinshan.message.endswith(
        "passed with 1 of your entities overdue: it has a case in your queue."
    )
    for district in (pudong, jinshan):  # its own count, not the others' nor the total
        assert "300" not in district.message and "297" not in district.message


def test_a_deadline_met_by_everyone_tells_the_bureau_alone() -> None:
    everyone = of("deadline_passed", "report", done_on_time=300, overdue=0, overdue_by_district={})
    notes = told(everyone)
    assert list(notes) == ["bureau:bureau"]
    assert notes["bureau:bureau"].message.endswith(
        "300 of 300 entities met it on time, none overdue."
    )
    # A district listed with none overdue is told nothing either.
    listed = of("deadline_passed", "report", overdue_by_district={"pudong": 3, "jinshan": 0})
    assert list(told(listed)) == ["bureau:bureau", "district:pudong"]


# --- the handler ------------------------------------------------------------------------------


async def notifications_gauge(notifier: Harness, recipient_type: str) -> float:
    """carbon_notifications{recipient_type} as the service sets it, from its database."""
    await FIGURES.refresh_gauges(notifier.context)
    value: float = metrics.NOTIFICATIONS.labels(recipient_type)._value.get()
    return value


async def notices(notifier: Harness, recipient_type: str | None = None) -> list[Any]:
    rows = await notifier.read(
        store.list_for, recipient_type=recipient_type, recipient_id=None, limit=1000
    )
    return list(reversed(rows))  # oldest first


def recipients(rows: list[Any], event_id: str) -> list[tuple[str, str]]:
    return sorted(
        (row.recipient_type, row.recipient_id) for row in rows if row.event_id == event_id
    )


@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
async def test_a_reminder_never_goes_to_the_district(notifier: Harness, obligation: str) -> None:
    await notifier.handle(entity_registered(CODE, district="pudong"))  # the district is known
    reminder = consumed(of("reminder_due", obligation))
    await notifier.handle(reminder)
    assert recipients(await notices(notifier), reminder.id) == [("entity", CODE)]
    assert await notifier.read(waiting) == []  # nor kept for later


@pytest.mark.parametrize("kind", ["overdue", "done_late"])
@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
async def test_overdue_and_done_late_reach_the_entity_and_the_district_the_event_names(
    notifier: Harness, obligation: str, kind: str
) -> None:
    # No entity.registered yet (the topics are read independently): the event names its
    # district, so nothing waits; and a roster saying otherwise does not redirect it.
    event = consumed(of(kind, obligation))
    await notifier.handle(event)
    assert recipients(await notices(notifier), event.id) == [
        ("district", "pudong"),
        ("entity", CODE),
    ]
    assert await notifier.read(waiting) == []
    await notifier.handle(entity_registered(CODE, district="minhang"))
    moved = consumed(of(kind, obligation, district="minhang"))
    await notifier.handle(moved)
    assert recipients(await notices(notifier), moved.id) == [
        ("district", "minhang"),
        ("entity", CODE),
    ]
    [row] = [r for r in await notices(notifier, "district") if r.event_id == event.id]
    assert (row.credit_code, row.event_type) == (CODE, f"{obligation}.{kind}")


@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
async def test_an_escalation_reaches_the_district_and_the_bureau(
    notifier: Harness, obligation: str
) -> None:
    counted = await notifications_gauge(notifier, "bureau")
    event = consumed(of("case_escalated", obligation))
    await notifier.handle(event)
    await notifier.handle(event)  # again: nothing new
    assert recipients(await notices(notifier), event.id) == [
        ("bureau", "bureau"),
        ("district", "pudong"),
    ]
    [row] = await notices(notifier, "bureau")
    assert (row.credit_code, row.event_type) == (CODE, f"{obligation}.case_escalated")
    assert row.created_at == notifier.clock.now()
    assert await notifications_gauge(notifier, "bureau") == counted + 1


@pytest.mark.parametrize("obligation", ev.OBLIGATIONS)
async def test_a_deadline_passed_reaches_the_bureau_and_only_the_districts_with_overdue_entities(
    notifier: Harness, obligation: str
) -> None:
    await notifier.handle(entity_registered(CODE, district="pudong"))
    await notifier.handle(entity_registered(OTHER, district="minhang"))  # none overdue there
    counted = {kind: await notifications_gauge(notifier, kind) for kind in ("bureau", "district")}
    event = consumed(of("deadline_passed", obligation))
    assert await notifier.handle(event) == []  # the notifier publishes nothing
    await notifier.handle(event)  # again: nothing new
    rows = [row for row in await notices(notifier) if row.event_id == event.id]
    assert sorted((row.recipient_type, row.recipient_id) for row in rows) == [
        ("bureau", "bureau"),
        ("district", "jinshan"),
        ("district", "pudong"),
    ]
    # About the whole cycle, no one entity.
    assert {(row.credit_code, row.event_type) for row in rows} == {
        (None, f"{obligation}.deadline_passed")
    }
    assert await notifications_gauge(notifier, "bureau") == counted["bureau"] + 1
    assert await notifications_gauge(notifier, "district") == counted["district"] + 2


async def test_a_district_reads_its_deadline_notice_over_the_api(notifier: Harness) -> None:
    await notifier.handle(consumed(of("deadline_passed", "surrender")))
    async with notifier.client() as client:
        answer = await client.get(
            "/notifications", headers=notifier.token("district", district="jinshan")
        )
        bureau = await client.get(
            "/notifications?recipient_type=bureau", headers=notifier.token("regulator")
        )
    assert answer.status_code == 200
    [notice] = answer.json()
    assert (notice["recipient_type"], notice["recipient_id"]) == ("district", "jinshan")
    assert notice["credit_code"] is None
    assert notice["event_type"] == "surrender.deadline_passed"
    assert "1 of your entities overdue" in notice["message"]
    [own] = bureau.json()
    assert (own["recipient_type"], own["recipient_id"], own["credit_code"]) == (
        "bureau",
        "bureau",
        None,
    )


async def waiting(conn: Any) -> list[Any]:
    return list(await conn.execute(store.pending_district_notices.select()))


async def test_notices_can_be_listed_by_event_type(notifier: Harness) -> None:
    await notifier.handle(consumed(of("overdue", "surrender")))
    await notifier.handle(consumed(of("done_late", "surrender")))
    entity = notifier.token("entity", credit_code=of("overdue", "surrender").credit_code)
    async with notifier.client() as client:
        everything = (await client.get("/notifications", headers=entity)).json()
        late = (
            await client.get("/notifications?event_type=surrender.done_late", headers=entity)
        ).json()
    assert {note["event_type"] for note in everything} == {
        "surrender.overdue",
        "surrender.done_late",
    }
    assert [note["event_type"] for note in late] == ["surrender.done_late"]
