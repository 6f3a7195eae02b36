"""Activity lines between the wire and the engine (carbon_emissions.lines): what reporting
publishes, recomputed from its activity data as verification does, gives the same figures."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_contracts.events import ReportSubmitted
from carbon_emissions.calculation import ActivityLine, CalculationError, FactorTable, calculate
from carbon_emissions.lines import ActivityInput, activity_lines, compute, inputs_of
from reporting import commands
from tests.unit.reporting_support import CODE, LIMESTONE, README_LINES, report
from tests.unit.support import POLICY, Harness, entity_registered

TABLE = FactorTable.from_policy(POLICY)


def inputs(*given: dict[str, str]) -> list[ActivityInput]:
    return [ActivityInput.model_validate(line) for line in given]


def test_compute_is_the_engine_split_into_the_contracts_two_lists() -> None:
    given = inputs(*README_LINES, LIMESTONE)
    result = compute(given, TABLE)
    engine = calculate(activity_lines(given), TABLE)
    assert result.factor_table == engine.factor_table == "shanghai-default-2024.1"
    assert result.total == engine.total == Decimal("28211.551")
    assert [line.emissions for line in result.lines] == [
        line.emissions for line in engine.lines if line.source != "process"
    ]
    assert [(line.material, line.emissions) for line in result.process_lines] == [
        ("limestone", Decimal("3960.000"))
    ]
    lines_json, process_json = result.as_json()
    assert process_json == [
        {
            "material": "limestone",
            "activity": "9000",
            "unit": "t",
            "factor": "0.44",
            "emissions": "3960.000",
        }
    ]
    assert [line["source"] for line in lines_json] == ["electricity", "heat", "fuel"]


def test_a_line_the_engine_refuses_is_named_by_its_number() -> None:
    with pytest.raises(CalculationError, match="line 2: a process line must name its material"):
        compute(inputs(README_LINES[0], {"source": "process", "activity": "1"}), TABLE)
    with pytest.raises(CalculationError, match="line 1: unknown material 'chalk'"):
        compute(inputs({"source": "process", "material": "chalk", "activity": "1"}), TABLE)


def test_inputs_of_gives_back_the_activity_data() -> None:
    computed = compute(inputs(*README_LINES, LIMESTONE), TABLE)
    assert inputs_of(computed.lines, computed.process_lines) == inputs(*README_LINES, LIMESTONE)


async def test_a_published_report_recomputes_to_the_same_figures(reporting: Harness) -> None:
    """What verification does with a report's lines: the same engine, the same table, the same
    result, line by line and in total."""
    await reporting.handle(entity_registered(CODE))
    ran = await reporting.run(commands.submit_report, report([*README_LINES, LIMESTONE]))
    published = ran.events[0].event.payload
    assert isinstance(published, ReportSubmitted)
    again = compute(inputs_of(published.lines, published.process_lines), TABLE)
    assert again.factor_table == published.factor_table
    assert again.lines == published.lines
    assert again.process_lines == published.process_lines
    assert again.total == published.total_emissions == ran.result.total_emissions


_SOURCES = st.one_of(
    st.builds(lambda: {"source": "electricity"}),
    st.builds(lambda: {"source": "heat"}),
    st.sampled_from(sorted(TABLE.fuels)).map(lambda fuel: {"source": "fuel", "fuel": fuel}),
    st.sampled_from(sorted(TABLE.processes)).map(
        lambda material: {"source": "process", "material": material}
    ),
)
_ACTIVITY = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False).map(
    lambda amount: format(amount.normalize(), "f")
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_SOURCES, _ACTIVITY), min_size=1, max_size=20))
def test_any_lines_recompute_to_the_same_figures(lines: list[tuple[dict[str, str], str]]) -> None:
    given_lines = inputs(*({**source, "activity": activity} for source, activity in lines))
    first = compute(given_lines, TABLE)
    second = compute(inputs_of(first.lines, first.process_lines), TABLE)
    assert (second.lines, second.process_lines, second.total) == (
        first.lines,
        first.process_lines,
        first.total,
    )
    emissions = [line.emissions for line in first.lines]
    emissions += [line.emissions for line in first.process_lines]
    assert first.total == sum(emissions, Decimal("0.000"))
    assert (
        first.total
        == calculate(
            [ActivityLine(g.source, g.activity, g.fuel, g.material) for g in given_lines], TABLE
        ).total
    )
