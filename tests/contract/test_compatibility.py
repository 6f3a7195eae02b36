"""New schemas only add optional fields to what was released, and the checker catches breaks."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from carbon_contracts.compat import breaking_changes

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
RELEASED = sorted(CONTRACTS.glob("released/*/events/*/v*.schema.json"))

Schema = dict[str, Any]


def load(path: Path) -> Schema:
    schema: Schema = json.loads(path.read_text(encoding="utf-8"))
    return schema


def released_id(path: Path) -> str:
    return f"{path.parents[2].name}/{path.parent.name}/{path.name}"


def test_there_is_a_released_baseline() -> None:
    assert (CONTRACTS / "released/1.0.0/events").is_dir()
    assert RELEASED


@pytest.mark.parametrize("released", RELEASED, ids=released_id)
def test_current_schema_is_compatible_with_release(released: Path) -> None:
    # Same event, same major (vN.schema.json): a released event type never disappears either.
    current = CONTRACTS / "events" / released.parent.name / released.name
    assert current.is_file(), f"{current} was released and must stay"
    assert breaking_changes(load(released), load(current)) == []


# --- the checker itself, on variants of a real schema with a nested $defs object ------------------

BASE = load(CONTRACTS / "events/report.submitted/v1.schema.json")
LINE = ("$defs", "ReportLine")


def changes(mutate: Callable[[Schema], None]) -> list[str]:
    new = copy.deepcopy(BASE)
    mutate(new)
    return breaking_changes(BASE, new)


def line(schema: Schema) -> Schema:
    node: Schema = schema[LINE[0]][LINE[1]]
    return node


def test_identical_schemas_are_compatible() -> None:
    assert changes(lambda s: None) == []


def test_annotations_may_change() -> None:
    def reword(s: Schema) -> None:
        s["description"] = "reworded"
        s["properties"]["total_emissions"]["title"] = "Total"

    assert changes(reword) == []


def test_adding_an_optional_property_is_allowed() -> None:
    def add(s: Schema) -> None:
        s["properties"]["channel"] = {"type": "string"}

    assert changes(add) == []


def test_adding_an_optional_property_to_a_nested_object_is_allowed() -> None:
    def add(s: Schema) -> None:
        line(s)["properties"]["meter_id"] = {"type": "string"}

    assert changes(add) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["properties"].pop("factor_table"), "$.factor_table: property removed"),
        (lambda s: line(s)["properties"].pop("unit"), "$.lines[].unit: property removed"),
        (
            lambda s: s["properties"]["compliance_year"].update(type="string"),
            "$.compliance_year: type changed",
        ),
        (
            lambda s: s["properties"]["credit_code"].update(pattern="^[0-9A-Z]{18}$"),
            "$.credit_code: pattern changed",
        ),
        (
            lambda s: line(s)["properties"]["emissions"].update(pattern="^[0-9]+\\.[0-9]{2}$"),
            "$.lines[].emissions: pattern changed",
        ),
        (
            lambda s: line(s)["properties"]["source"]["enum"].append("steam"),
            "$.lines[].source: enum changed",
        ),
        (
            lambda s: s["properties"]["factor_table"].update(const="shanghai-default-2024.1"),
            "$.factor_table: const changed",
        ),
        (
            lambda s: s["properties"]["submitted_at"].update(format="date"),
            "$.submitted_at: format changed",
        ),
        (
            lambda s: line(s)["properties"]["fuel"]["anyOf"][0].update(pattern="^[a-z]+$"),
            "$.lines[].fuel.anyOf[0]: pattern changed",
        ),
        (lambda s: s.update(additionalProperties=True), "$: additionalProperties changed"),
        (
            lambda s: line(s).pop("additionalProperties"),
            "$.lines[]: additionalProperties changed",
        ),
        (lambda s: s["required"].remove("report_id"), "$.report_id: required property became"),
    ],
)
def test_breaks_are_reported(mutate: Callable[[Schema], None], expected: str) -> None:
    problems = changes(mutate)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_new_required_property_is_reported() -> None:
    def add(s: Schema) -> None:
        s["properties"]["channel"] = {"type": "string"}
        s["required"].append("channel")

    assert changes(add) == ["$.channel: new required property"]


def test_a_new_required_property_in_a_nested_object_is_reported() -> None:
    def add(s: Schema) -> None:
        line(s)["properties"]["meter_id"] = {"type": "string"}
        line(s)["required"].append("meter_id")

    assert changes(add) == ["$.lines[].meter_id: new required property"]


def test_an_optional_property_that_became_required_is_reported() -> None:
    assert changes(lambda s: line(s)["required"].append("fuel")) == [
        "$.lines[].fuel: optional property became required"
    ]


def test_a_removed_def_is_reported() -> None:
    # Inline the definition: the structure is unchanged, only the named $defs entry is gone.
    def inline(s: Schema) -> None:
        s["properties"]["lines"]["items"] = s["$defs"].pop("ReportLine")

    assert changes(inline) == ["$defs/ReportLine: removed"]


def test_a_dangling_ref_is_reported() -> None:
    problems = changes(lambda s: s["$defs"].pop("ReportLine"))
    assert "$defs/ReportLine: removed" in problems
    assert any("does not resolve" in problem for problem in problems)
