"""The notifier's handler on an in-memory database: for every event type, who is told (the
deadline events in detail: test_notifier_deadlines.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from carbon_contracts.catalogue import catalogue
from carbon_contracts.events import (
    EVENT_MODELS,
    OBLIGATIONS,
    AccountOpened,
    AllocationIssued,
    EventPayload,
    ObligationEvent,
    PreallocationIssued,
    SurrenderCompleted,
    VerificationApproved,
    VerificationAssigned,
)
from carbon_platform import metrics
from notifier import commands, store
from notifier.domain.messages import notifications_for
from notifier.figures import FIGURES
from registry.domain.credit_code import make_credit_code
from tests.support import example
from tests.unit.support import (
    DEADLINE,
    POLICY,
    SHANGHAI,
    Harness,
    consumed,
    entity_registered,
    report_submitted,
)

CODE = make_credit_code(1)
AT = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
CASE_ID = UUID("3f2b8c1e-0d4a-4c6e-8a5b-9e7d6c5b4a31")
REPORT_ID = UUID("a3c1e2f4-5b6d-4e7f-8091-a2b3c4d5e6f7")


def payloads(code: str = CODE, on_time: bool = True) -> dict[str, EventPayload]:
    """One payload of every event type about one entity, all about `code`: the contracts'
    examples, and those the tests below read written out."""
    common: dict[str, Any] = {"credit_code": code, "compliance_year": 2024}
    from_examples = {
        event: payload.model_copy(update=common)
        for event in EVENT_MODELS
        if isinstance(payload := example(event), EventPayload)
    }
    return from_examples | {
        "entity.registered": entity_registered(code, at=AT),
        "account.opened": AccountOpened(**common, account_id=f"SHEA-{code}", opened_at=AT),
        "report.submitted": report_submitted(code, REPORT_ID, at=AT),
        "verification.assigned": VerificationAssigned(
            **common, case_id=CASE_ID, report_id=REPORT_ID, agency_id="sh-verify-01", assigned_at=AT
        ),
        "verification.approved": VerificationApproved(
            **common,
            case_id=CASE_ID,
            report_id=REPORT_ID,
            agency_id="sh-verify-01",
            reported_emissions=Decimal("60.000"),
            verified_emissions=Decimal("59.500"),
            approved_at=AT,
        ),
        "allocation.issued": AllocationIssued(
            **common,
            policy="shanghai-2024",
            method="historical_emissions",
            verified_emissions=Decimal("59.500"),
            final_allocation=60,
            preallocated=0,
            allowances=60,
            issued_at=AT,
        ),
        "surrender.completed": SurrenderCompleted(
            **common,
            policy="shanghai-2024",
            verified_emissions=Decimal("59.500"),
            obligation=60,
            allowances_surrendered=60,
            offsets_surrendered=0,
            deadline=DEADLINE,
            on_time=on_time,
            completed_at=AT,
        ),
        "preallocation.issued": PreallocationIssued(
            credit_code=code,
            compliance_year=2025,
            policy="shanghai-2024",
            basis_year=2024,
            basis_verified_emissions=Decimal("59.500"),
            ratio=Decimal("0.80"),
            allowances=48,
            issued_at=AT,
        ),
    }


ESCALATIONS = {f"{obligation}.case_escalated" for obligation in OBLIGATIONS}
"""Told to the district and the Bureau; the entity heard of its case when it opened."""
TOLD_TO_THE_DISTRICT = {
    "entity.registered",
    "report.submitted",
    "emissions.determined",
    "surrender.completed",
    "auction.award_cancelled",
    *(f"{obligation}.overdue" for obligation in OBLIGATIONS),
    *(f"{obligation}.done_late" for obligation in OBLIGATIONS),
    *ESCALATIONS,
}
OBLIGATION_EVENTS = {e for e, model in EVENT_MODELS.items() if issubclass(model, ObligationEvent)}
"""They name the district themselves: told at once, never kept waiting for entity.registered."""
CYCLE_WIDE = ["auction.announced", "auction.cleared", "verification.closed"]
"""Keyed by the policy cycle, about no one entity: told to no one."""
DEADLINES_PASSED = [f"{obligation}.deadline_passed" for obligation in OBLIGATIONS]
"""Cycle-wide too, but told to the Bureau and the districts with entities overdue."""
ENTITY_EVENTS = sorted(
    e
    for e, model in EVENT_MODELS.items()
    if issubclass(model, EventPayload) and not catalogue().topic_for_event(e).is_inbound
)
"""What the notifier tells: not the inbound events (the registry acts on those first)."""


async def notifications_gauge(notifier: Harness, recipient_type: str) -> float:
    """carbon_notifications{recipient_type} as the service sets it, from its database."""
    await FIGURES.refresh_gauges(notifier.context)
    value: float = metrics.NOTIFICATIONS.labels(recipient_type)._value.get()
    return value


async def told(notifier: Harness, recipient_type: str, recipient_id: str) -> list[Any]:
    rows = await notifier.read(
        store.list_for, recipient_type=recipient_type, recipient_id=recipient_id, limit=100
    )
    return list(reversed(rows))  # oldest first


async def waiting(conn: AsyncConnection) -> list[Any]:
    return list(await conn.execute(select(store.pending_district_notices)))


def telling_the_district() -> list[Any]:
    """One event of each type that tells the district, in a form that does: a late account, an
    allocation that leaves allowances owed."""
    every = payloads()
    return [
        *(
            pytest.param(every[e], id=e)
            for e in sorted(TOLD_TO_THE_DISTRICT - {"entity.registered"} - OBLIGATION_EVENTS)
        ),
        pytest.param(
            every["account.opened"].model_copy(update={"on_time": False}), id="account.opened-late"
        ),
        pytest.param(
            every["allocation.issued"].model_copy(
                update={"allowances": 0, "clawed_back": 12, "owed": 7}
            ),
            id="allocation.issued-owed",
        ),
    ]


def test_the_fixture_covers_every_event_type_about_an_entity() -> None:
    # market_day.closed is the exchange's market data, keyed by the instrument.
    assert set(payloads()) == (
        set(EVENT_MODELS) - set(CYCLE_WIDE) - set(DEADLINES_PASSED) - {"market_day.closed"}
    )
    assert set(ENTITY_EVENTS) == set(payloads()) - {
        e for topic in catalogue().topics if topic.is_inbound for e in topic.event_types
    }


@pytest.mark.parametrize("event_type", CYCLE_WIDE)
async def test_a_cycle_wide_event_tells_no_one(notifier: Harness, event_type: str) -> None:
    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    assert await notifier.handle(example(event_type)) == []
    everyone = await notifier.read(store.list_for, recipient_type=None, recipient_id=None, limit=10)
    assert [row.event_type for row in everyone] == ["entity.registered", "entity.registered"]


def test_the_notifier_subscribes_to_every_event_type_of_the_platforms_own_topics() -> None:
    from notifier.service import SERVICE

    expected = {
        topic.name: set(topic.event_types)
        for topic in catalogue().domain_topics()
        if not topic.is_inbound
    }
    assert {topic: set(by_type) for topic, by_type in SERVICE.handlers.items()} == expected
    assert {"auction.won", "auction.settled", "auction.award_cancelled"} <= set(SERVICE.handlers)
    # The exchange's market data and payments: the registry acts on them and tells of it.
    assert not {"market_day.closed", "auction_payment.confirmed"} & set(SERVICE.handlers)
    assert all(
        handler is commands.notify
        for by_type in SERVICE.handlers.values()
        for handler in by_type.values()
    )


@pytest.mark.parametrize("event_type", ENTITY_EVENTS)
async def test_each_event_tells_the_entity_and_where_due_its_district(
    notifier: Harness, event_type: str
) -> None:
    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    event = consumed(payloads()[event_type])
    assert await notifier.handle(event) == []  # the notifier publishes nothing

    to_entity = [row for row in await told(notifier, "entity", CODE) if row.event_id == event.id]
    to_district = [
        row for row in await told(notifier, "district", "pudong") if row.event_id == event.id
    ]
    to_bureau = [
        row for row in await told(notifier, "bureau", "bureau") if row.event_id == event.id
    ]
    if event_type in ESCALATIONS:
        assert to_entity == []
    else:
        [entity_row] = to_entity
        assert (entity_row.credit_code, entity_row.event_type) == (CODE, event_type)
        assert entity_row.subject and entity_row.message
        assert entity_row.created_at == notifier.clock.now()
    if event_type in TOLD_TO_THE_DISTRICT:
        [district_row] = to_district
        assert (district_row.credit_code, district_row.event_type) == (CODE, event_type)
    else:
        assert to_district == []
    if event_type in ESCALATIONS:
        [bureau_row] = to_bureau
        assert (bureau_row.credit_code, bureau_row.event_type) == (CODE, event_type)
    else:
        assert to_bureau == []


@pytest.mark.parametrize(
    "event_type", sorted(set(ENTITY_EVENTS) - {"entity.registered"} - OBLIGATION_EVENTS)
)
async def test_without_a_known_district_only_the_entity_is_told(
    notifier: Harness, event_type: str
) -> None:
    await notifier.handle(payloads()[event_type])
    assert len(await told(notifier, "entity", CODE)) == 1
    districts = await notifier.read(
        store.list_for, recipient_type="district", recipient_id=None, limit=10
    )
    assert districts == []


async def test_entity_registered_teaches_the_district_it_then_tells(notifier: Harness) -> None:
    assert await notifier.read(store.district_of, credit_code=CODE) is None
    await notifier.handle(entity_registered(CODE, district="jinshan", at=AT))
    assert await notifier.read(store.district_of, credit_code=CODE) == "jinshan"
    [row] = await told(notifier, "district", "jinshan")
    assert row.subject == f"New covered entity {CODE}"


async def test_a_district_is_told_only_about_entities_it_supervises(notifier: Harness) -> None:
    other = make_credit_code(2)
    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    await notifier.handle(entity_registered(other, district="minhang", at=AT))
    await notifier.handle(payloads(other)["report.submitted"])
    assert [row.event_type for row in await told(notifier, "district", "pudong")] == [
        "entity.registered"
    ]
    assert [row.event_type for row in await told(notifier, "district", "minhang")] == [
        "entity.registered",
        "report.submitted",
    ]


async def test_a_new_district_is_told_from_then_on(notifier: Harness) -> None:
    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    await notifier.handle(entity_registered(CODE, district="minhang", at=AT))
    await notifier.handle(payloads()["surrender.completed"])
    assert [row.event_type for row in await told(notifier, "district", "pudong")] == [
        "entity.registered"
    ]
    assert [row.event_type for row in await told(notifier, "district", "minhang")] == [
        "entity.registered",
        "surrender.completed",
    ]


async def test_a_new_entrant_is_told_the_accounts_deadline(notifier: Harness) -> None:
    await notifier.handle(entity_registered(CODE, new_entrant=True, at=AT))
    [row] = await told(notifier, "entity", CODE)
    # The policy's deadline is 2025-04-01 00:00, the first late instant: "by 2025-03-31".
    assert "open your registry and trading accounts by 2025-03-31." in row.message


@pytest.mark.parametrize(("on_time", "timing"), [(True, "on time"), (False, "after the deadline")])
async def test_surrender_notices_say_whether_it_was_on_time(
    notifier: Harness, on_time: bool, timing: str
) -> None:
    await notifier.handle(entity_registered(CODE, at=AT))
    await notifier.handle(payloads(on_time=on_time)["surrender.completed"])
    [entity_row] = [r for r in await told(notifier, "entity", CODE) if "surrender" in r.event_type]
    [district_row] = [
        r for r in await told(notifier, "district", "pudong") if "surrender" in r.event_type
    ]
    assert timing in entity_row.message
    assert timing in district_row.message
    assert "obligation of 60" in district_row.message


async def test_allocation_notice_gives_the_surrender_deadline_in_shanghai_time(
    notifier: Harness,
) -> None:
    await notifier.handle(payloads()["allocation.issued"])
    [row] = await told(notifier, "entity", CODE)
    assert DEADLINE.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") == "2025-06-30 17:00"
    assert "before 2025-06-30 17:00" in row.message
    assert "60 allowances credited" in row.message


async def test_an_auction_winner_is_told_the_price_the_payment_and_what_the_allowances_are_for(
    notifier: Harness,
) -> None:
    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    await notifier.handle(payloads()["auction.won"])
    [row] = [r for r in await told(notifier, "entity", CODE) if r.event_type == "auction.won"]
    assert row.subject == "Won 5000 allowances at auction shanghai-2024-1"
    # payment_due is 2025-07-03 00:00 in Shanghai, the first late instant: "by 2025-07-02".
    assert row.message == (
        "You won 5000 allowances at auction shanghai-2024-1 at 93.00 yuan each. Pay 465000.00 "
        "yuan to the exchange by 2025-07-02, or the award is cancelled. They can be used only "
        "for your 2024 surrender and cannot be transferred."
    )
    assert [r.event_type for r in await told(notifier, "district", "pudong")] == [
        "entity.registered"
    ]


async def test_a_settled_auction_tells_the_winner_its_allowances_are_credited(
    notifier: Harness,
) -> None:
    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    await notifier.handle(payloads()["auction.settled"])
    [row] = [r for r in await told(notifier, "entity", CODE) if r.event_type == "auction.settled"]
    assert row.subject == "2024 auction allowances credited"
    assert row.message == (
        "The exchange confirmed your payment of 465000.00 yuan: 5000 allowances won at auction "
        "shanghai-2024-1 are credited, usable only for your 2024 surrender and not transferable."
    )
    assert [r.event_type for r in await told(notifier, "district", "pudong")] == [
        "entity.registered"
    ]


async def test_a_cancelled_award_tells_the_winner_and_its_district(notifier: Harness) -> None:
    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    await notifier.handle(payloads()["auction.award_cancelled"])
    [entity_row] = [
        r for r in await told(notifier, "entity", CODE) if r.event_type == "auction.award_cancelled"
    ]
    [district_row] = [
        r
        for r in await told(notifier, "district", "pudong")
        if r.event_type == "auction.award_cancelled"
    ]
    assert entity_row.subject == "Auction award of 5000 allowances cancelled"
    assert entity_row.message == (
        "Your award of 5000 allowances at auction shanghai-2024-1 is cancelled: 465000.00 yuan "
        "was not paid by 2025-07-02. Nothing was credited."
    )
    assert district_row.credit_code == CODE
    assert district_row.subject == f"{CODE}: auction award cancelled"
    assert district_row.message == (
        f"{CODE} did not pay 465000.00 yuan by 2025-07-02 for the 5000 allowances it won at "
        "auction shanghai-2024-1; the award is cancelled."
    )


@pytest.mark.parametrize(
    "order",
    [
        ["event", "event", "registered", "registered"],
        ["event", "registered", "event", "registered"],
        ["event", "registered", "registered", "event"],
    ],
    ids="-".join,
)
@pytest.mark.parametrize("payload", telling_the_district())
async def test_a_district_notice_of_an_event_before_the_registration_is_told_once_it_comes(
    notifier: Harness, payload: EventPayload, order: list[str]
) -> None:
    event = consumed(payload)
    registered = consumed(entity_registered(CODE, district="jinshan", at=AT))
    received = notifier.clock.now()
    counted = await notifications_gauge(notifier, "district")

    for step, which in enumerate(order):
        notifier.clock.current = received + timedelta(minutes=step)
        await notifier.handle(event if which == "event" else registered)
        if step == 0:  # the entity is told at once; the district waits for its name
            [entity_row] = await told(notifier, "entity", CODE)
            assert (entity_row.event_id, entity_row.created_at) == (event.id, received)
            assert await told(notifier, "district", "jinshan") == []
            assert [row.event_id for row in await notifier.read(waiting)] == [event.id]

    [expected] = [
        n
        for n in notifications_for(payload, district="jinshan", policy=POLICY)
        if n.recipient_type == "district"
    ]
    district_rows = await told(notifier, "district", "jinshan")
    assert [(row.event_type, row.event_id) for row in district_rows] == [
        (payload.EVENT, event.id),
        ("entity.registered", registered.id),
    ]
    waited = district_rows[0]
    assert (waited.credit_code, waited.subject, waited.message) == (
        CODE,
        expected.subject,
        expected.message,
    )
    assert waited.created_at == received  # dated when the event was received
    assert [row.event_id for row in await told(notifier, "entity", CODE)] == [
        event.id,
        registered.id,
    ]
    assert await notifier.read(waiting) == []
    # Counted once each: the waiting notice and the roster's, not the repeats.
    assert await notifications_gauge(notifier, "district") == counted + 2


async def test_a_waiting_notice_is_told_only_when_its_own_entity_registers(
    notifier: Harness,
) -> None:
    other = make_credit_code(2)
    await notifier.handle(payloads()["report.submitted"])
    await notifier.handle(payloads(other)["surrender.completed"])
    await notifier.handle(entity_registered(other, district="minhang", at=AT))
    assert [row.event_type for row in await told(notifier, "district", "minhang")] == [
        "surrender.completed",
        "entity.registered",
    ]
    [still_waiting] = await notifier.read(waiting)
    assert (still_waiting.credit_code, still_waiting.event_type) == (CODE, "report.submitted")

    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    assert [row.event_type for row in await told(notifier, "district", "pudong")] == [
        "report.submitted",
        "entity.registered",
    ]
    assert await notifier.read(waiting) == []


async def test_an_event_that_tells_no_district_leaves_nothing_waiting(notifier: Harness) -> None:
    await notifier.handle(payloads()["verification.approved"])
    await notifier.handle(payloads(on_time=True)["account.opened"])
    assert await notifier.read(waiting) == []
    await notifier.handle(entity_registered(CODE, district="pudong", at=AT))
    assert [row.event_type for row in await told(notifier, "district", "pudong")] == [
        "entity.registered"
    ]
