"""The committed JSON Schemas equal the models, are closed, and every example is valid."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import ValidationError

from carbon_contracts import export
from carbon_contracts.envelope import dataschema_uri
from carbon_contracts.events import EVENT_MODELS
from carbon_contracts.policy import default_policy_path, load_policy

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
EVENTS = sorted(EVENT_MODELS)
EXAMPLES = sorted(CONTRACTS.glob("events/*/examples/*.json"))
STORY = "pudong-chemicals-2024.json"  # the shared story of the v1 examples

# GB 32100-2015: 31 characters (no I, O, S, V, Z) and the weights of positions 1..17.
_CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def credit_code_check_character(first17: str) -> str:
    total = sum(_CREDIT_CHARSET.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_CHARSET[(31 - total % 31) % 31]


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def schema_of(event: str) -> dict[str, Any]:
    schema: dict[str, Any] = load(
        CONTRACTS / export.schema_path(event, EVENT_MODELS[event].VERSION)
    )
    return schema


def validator(event: str) -> Draft202012Validator:
    return Draft202012Validator(schema_of(event), format_checker=FormatChecker())


def objects(node: Any) -> list[dict[str, Any]]:
    """Every JSON object inside a schema, including those under $defs."""
    if isinstance(node, dict):
        return [node, *(o for value in node.values() for o in objects(value))]
    if isinstance(node, list):
        return [o for item in node for o in objects(item)]
    return []


def example_id(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.name}"


# --- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", EVENTS)
def test_committed_schema_equals_generated(event: str) -> None:
    relative = export.schema_path(event, EVENT_MODELS[event].VERSION)
    expected = export.generated_files()[relative]
    committed = (CONTRACTS / relative).read_text(encoding="utf-8")
    assert committed == expected, f"run `python -m carbon_contracts.export`: {relative} is stale"


@pytest.mark.parametrize("event", EVENTS)
def test_schema_is_valid_2020_12(event: str) -> None:
    schema = schema_of(event)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("event", EVENTS)
def test_schema_is_closed_everywhere(event: str) -> None:
    object_schemas = [o for o in objects(schema_of(event)) if o.get("type") == "object"]
    assert object_schemas
    for node in object_schemas:
        # a map is closed by constraining its keys (propertyNames) and its values
        if "propertyNames" in node:
            assert isinstance(node["additionalProperties"], dict), node.get("title")
        else:
            assert node.get("additionalProperties") is False, node.get("title")


@pytest.mark.parametrize("event", EVENTS)
def test_schema_id_is_the_dataschema_uri(event: str) -> None:
    assert schema_of(event)["$id"] == dataschema_uri(event, EVENT_MODELS[event].VERSION)


@pytest.mark.parametrize("event", EVENTS)
def test_every_event_type_has_a_schema_and_an_example(event: str) -> None:
    assert (CONTRACTS / export.schema_path(event, EVENT_MODELS[event].VERSION)).is_file()
    assert list((CONTRACTS / "events" / event / "examples").glob("*.json"))


def test_every_event_directory_belongs_to_a_model() -> None:
    # A misspelt directory would hold examples that nothing validates.
    directories = {path.name for path in (CONTRACTS / "events").iterdir() if path.is_dir()}
    assert directories <= set(EVENT_MODELS)


# --- examples -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_example_validates_and_round_trips(path: Path) -> None:
    event = path.parent.parent.name
    payload = load(path)
    validator(event).validate(payload)
    model = EVENT_MODELS[event]
    parsed = model.model_validate_json(path.read_bytes())  # the consumer's path: raw bytes
    # Examples written before an optional field was added leave it out: they stay valid.
    assert parsed.model_dump(mode="json", exclude_unset=True) == payload


@pytest.mark.parametrize("path", EXAMPLES, ids=example_id)
def test_example_credit_code_has_a_valid_check_character(path: Path) -> None:
    code = load(path).get("credit_code")
    if "instrument" in load(path):  # the exchange's market data, keyed by the instrument
        assert code is None
        return
    if code is None:  # a cycle-wide event (keyed by the policy cycle)
        assert load(path)["policy"] == "shanghai-2024"
        return
    assert code[17] == credit_code_check_character(code[:17]), code


def test_report_example_is_computed_from_the_policy_factors() -> None:
    policy = load_policy(default_policy_path())
    factors = policy.emission_factors
    report = load(CONTRACTS / "events/report.submitted/examples" / STORY)
    total = Decimal(0)
    for line in report["lines"]:
        if line["source"] == "fuel":
            fuel = factors.fuels[line["fuel"]]
            factor = fuel.ncv * fuel.carbon_content * fuel.oxidation * 44 / 12 / 1000
            unit = fuel.unit
        else:
            table = getattr(factors, line["source"])  # electricity or heat
            factor, unit = table.factor, table.unit
        assert Decimal(line["factor"]) == factor
        assert line["unit"] == unit
        emissions = (Decimal(line["activity"]) * factor).quantize(Decimal("0.001"), ROUND_HALF_UP)
        assert Decimal(line["emissions"]) == emissions
        total += emissions
    assert Decimal(report["total_emissions"]) == total
    assert report["factor_table"] == policy.factor_table


def test_story_examples_agree_with_each_other() -> None:
    story = {path.parent.parent.name: load(path) for path in EXAMPLES if path.name == STORY}
    # Returns, a determination, the cycle's close, the auction and the market are other stories.
    assert set(EVENT_MODELS) - set(story) == {
        "auction.announced",
        "auction.cleared",
        "market_day.closed",
        "monitoring_plan.returned",
        "report.returned",
        "verification.returned",
        "emissions.determined",
        "verification.closed",
        *(event for event in EVENT_MODELS if event.endswith(".deadline_passed")),
    }
    assert len({payload["credit_code"] for payload in story.values()}) == 1
    code = story["entity.registered"]["credit_code"]
    assert story["account.opened"]["account_id"] == f"SHEA-{code}"
    total = story["report.submitted"]["total_emissions"]
    approved = story["verification.approved"]
    assert approved["reported_emissions"] == total
    assert approved["report_id"] == story["report.submitted"]["report_id"]
    assert approved["case_id"] == story["verification.assigned"]["case_id"]
    # Re-verification replaced the first verified figure: the final one is what counts.
    completed = story["reverification.completed"]
    assert completed["first_verified_emissions"] == approved["verified_emissions"]
    assert (
        story["reverification.selected"]["first_verified_emissions"]
        == (approved["verified_emissions"])
    )
    assert completed["agency_id"] != approved["agency_id"]
    verified = story["verification.finalised"]["verified_emissions"]
    assert verified == completed["verified_emissions"] != approved["verified_emissions"]
    assert story["report.accepted"]["total_emissions"] == total
    assert story["allocation.issued"]["verified_emissions"] == verified
    assert story["surrender.completed"]["verified_emissions"] == verified
    assert story["preallocation.issued"]["basis_verified_emissions"] == verified
    surrender = story["surrender.completed"]
    surrendered = surrender["allowances_surrendered"] + surrender["offsets_surrendered"]
    assert surrendered == surrender["obligation"]
    allocation = story["allocation.issued"]
    assert allocation["allowances"] == allocation["final_allocation"] - allocation["preallocated"]
    won, paid = story["auction.won"], story["auction_payment.confirmed"]
    assert Decimal(won["amount_due"]) == won["allowances"] * Decimal(won["price"])
    assert paid["amount"] == won["amount_due"] == story["auction.settled"]["amount"]
    assert sum(bid["filled"] for bid in won["bids"]) == won["allowances"]


# --- rejections ---------------------------------------------------------------------------------

REPORT = CONTRACTS / "events/report.submitted/examples" / STORY


def _extra_field(p: dict[str, Any]) -> None:
    p["comment"] = "not in the contract"


def _extra_nested_field(p: dict[str, Any]) -> None:
    p["lines"][0]["comment"] = "not in the contract"


def _float_emissions(p: dict[str, Any]) -> None:
    p["total_emissions"] = 1.5


def _four_decimals(p: dict[str, Any]) -> None:
    p["total_emissions"] = "24251.5510"


def _bad_credit_code(p: dict[str, Any]) -> None:
    p["credit_code"] = "91310115MA1K4C8NO3"  # O is not in the GB 32100 character set


def _naive_datetime(p: dict[str, Any]) -> None:
    p["submitted_at"] = "2025-03-20T16:45:12"


@pytest.mark.parametrize(
    "mutate",
    [
        _extra_field,
        _extra_nested_field,
        _float_emissions,
        _four_decimals,
        _bad_credit_code,
        _naive_datetime,
    ],
)
def test_invalid_payload_is_rejected_by_schema_and_model(mutate: Any) -> None:
    payload = load(REPORT)
    mutate(payload)
    assert not validator("report.submitted").is_valid(payload)
    with pytest.raises(ValidationError):
        EVENT_MODELS["report.submitted"].model_validate_json(json.dumps(payload))


def test_a_tolerant_reader_skips_fields_added_later() -> None:
    # What contracts/python/README.md tells integrators to do, for top-level and nested fields.
    payload = load(REPORT)
    payload["added_in_1_1"] = "x"
    payload["lines"][0]["added_in_1_1"] = "x"
    model = EVENT_MODELS["report.submitted"]
    parsed = model.model_validate_json(json.dumps(payload), extra="ignore")
    assert parsed.model_dump(mode="json") == load(REPORT)
