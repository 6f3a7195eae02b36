"""The reporting system's submit_report command and its entity.registered handler on an
in-memory database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from carbon_contracts.errors import Conflict, Invalid, NotFound
from carbon_contracts.events import EntityRegistered
from registry.domain.credit_code import make_credit_code
from reporting import commands, store
from reporting.schemas import ActivityInput, SubmitReport
from tests.unit.support import Harness

CODE = make_credit_code(1)
README_LINES: list[dict[str, Any]] = [
    {"source": "electricity", "activity": "2450.8"},
    {"source": "heat", "activity": "48000"},
    {"source": "fuel", "fuel": "natural_gas", "activity": "512.36"},
]


def registered(
    code: str = CODE, *, name: str = "示例化工", district: str = "pudong", year: int = 2024
) -> EntityRegistered:
    return EntityRegistered(
        credit_code=code,
        compliance_year=year,
        name=name,
        district=district,
        sector="chemicals",
        new_entrant=False,
        registered_at=datetime(2025, 1, 10, tzinfo=UTC),
    )


def report(
    lines: list[dict[str, Any]] = README_LINES, code: str = CODE, year: int = 2024
) -> SubmitReport:
    return SubmitReport(
        credit_code=code,
        compliance_year=year,
        lines=[ActivityInput.model_validate(line) for line in lines],
        submitted_by=f"entity-{code}",
    )


async def test_submit_report_computes_the_total_from_the_factor_table(
    reporting: Harness,
) -> None:
    await reporting.handle(registered())
    ran = await reporting.run(commands.submit_report, report())

    submitted = ran.result
    assert submitted.total_emissions == Decimal("24251.551")
    assert submitted.factor_table == "shanghai-default-2024.1"
    [event] = ran.events
    assert (event.topic, event.key, event.type) == ("report.submitted", CODE, "report.submitted")
    assert event.headers["ce_source"] == "/carbon/reporting"
    assert event.event.id == submitted.event_id
    payload = event.payload
    assert payload["report_id"] == str(submitted.report_id)
    assert payload["total_emissions"] == "24251.551"
    assert payload["factor_table"] == "shanghai-default-2024.1"
    assert payload["submitted_at"] == reporting.clock.now().isoformat()
    assert [(line["source"], line["unit"], line["emissions"]) for line in payload["lines"]] == [
        ("electricity", "10^4 kWh", "10293.360"),
        ("heat", "GJ", "2880.000"),
        ("fuel", "10^4 Nm3", "11078.191"),
    ]
    # The lines add up to the total exactly.
    assert sum(Decimal(line["emissions"]) for line in payload["lines"]) == Decimal("24251.551")
    stored = await reporting.read(store.get_report, report_id=str(submitted.report_id))
    assert (stored.credit_code, stored.compliance_year) == (CODE, 2024)
    assert stored.total_emissions == Decimal("24251.551")
    assert stored.submitted_by == f"entity-{CODE}"
    assert [e.event.id for e in await reporting.outbox()] == [submitted.event_id]


async def test_submit_report_before_the_roster_knows_the_entity_is_not_found(
    reporting: Harness,
) -> None:
    with pytest.raises(NotFound) as refused:
        await reporting.run(commands.submit_report, report())
    assert refused.value.code == "unknown_entity"
    assert await reporting.read(store.find_report, credit_code=CODE, compliance_year=2024) is None
    assert await reporting.outbox() == []


async def test_submit_report_for_a_year_the_entity_is_not_rostered_for_is_not_found(
    reporting: Harness,
) -> None:
    await reporting.handle(registered(year=2024))
    with pytest.raises(NotFound) as refused:
        await reporting.run(commands.submit_report, report(year=2025))
    assert refused.value.code == "unknown_entity"


async def test_a_second_report_for_the_year_conflicts(reporting: Harness) -> None:
    await reporting.handle(registered())
    first = await reporting.run(commands.submit_report, report())
    with pytest.raises(Conflict) as refused:
        await reporting.run(commands.submit_report, report([{"source": "heat", "activity": "1"}]))
    assert refused.value.code == "already_submitted"
    kept = await reporting.read(store.find_report, credit_code=CODE, compliance_year=2024)
    assert kept.report_id == str(first.result.report_id)
    assert len(await reporting.outbox()) == 1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"source": "fuel", "activity": "10"}, "must name its fuel"),
        ({"source": "fuel", "fuel": "peat", "activity": "10"}, "unknown fuel 'peat'"),
        ({"source": "electricity", "fuel": "diesel", "activity": "10"}, "names no fuel"),
    ],
)
async def test_an_activity_line_the_engine_cannot_compute_is_invalid(
    reporting: Harness, line: dict[str, Any], reason: str
) -> None:
    await reporting.handle(registered())
    with pytest.raises(Invalid) as refused:
        await reporting.run(commands.submit_report, report([README_LINES[0], line]))
    assert refused.value.code == "invalid_activity"
    assert reason in refused.value.message
    assert await reporting.read(store.find_report, credit_code=CODE, compliance_year=2024) is None


async def test_entity_registered_puts_the_entity_on_the_roster(reporting: Harness) -> None:
    assert await reporting.handle(registered()) == []
    row = await reporting.read(store.get_rostered, credit_code=CODE, compliance_year=2024)
    assert (row.name, row.district) == ("示例化工", "pudong")


async def test_a_second_entity_registered_overwrites_name_and_district(
    reporting: Harness,
) -> None:
    await reporting.handle(registered())
    await reporting.handle(registered(name="Renamed Ltd", district="minhang"))
    row = await reporting.read(store.get_rostered, credit_code=CODE, compliance_year=2024)
    assert (row.name, row.district) == ("Renamed Ltd", "minhang")


async def test_the_roster_keeps_one_row_per_year(reporting: Harness) -> None:
    await reporting.handle(registered(year=2024, district="pudong"))
    await reporting.handle(registered(year=2025, district="minhang"))
    rows = [
        await reporting.read(store.get_rostered, credit_code=CODE, compliance_year=year)
        for year in (2024, 2025)
    ]
    assert [row.district for row in rows] == ["pudong", "minhang"]


async def test_the_district_listing_follows_the_roster(reporting: Harness) -> None:
    other = make_credit_code(2)
    await reporting.handle(registered(CODE, district="pudong"))
    await reporting.handle(registered(other, district="minhang"))
    await reporting.run(commands.submit_report, report(code=CODE))
    await reporting.run(commands.submit_report, report(code=other))
    pudong = await reporting.read(store.list_reports, credit_code=None, district="pudong")
    everyone = await reporting.read(store.list_reports, credit_code=None)
    assert [row.credit_code for row in pudong] == [CODE]
    assert {row.credit_code for row in everyone} == {CODE, other}


def test_reporting_subscribes_its_handler_to_entity_registered() -> None:
    from reporting.service import SERVICE

    assert dict(SERVICE.handlers) == {
        "entity.registered": {"entity.registered": commands.on_entity_registered}
    }
