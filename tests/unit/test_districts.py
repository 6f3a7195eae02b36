"""Districts as the policy's code list: the policy model checks its lots against it, the
registry refuses an entity in any other district and lists the codes at GET /districts."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from carbon_contracts.errors import Invalid
from carbon_contracts.policy import Policy, default_policy_path
from registry import store
from registry.domain.credit_code import make_credit_code
from tests.unit.support import POLICY, Harness

CODE = make_credit_code(1)
ZONES = {"chemical-park": "化工区", "lingang": "临港新片区", "ftz-bonded": "自贸区保税区"}


def policy_file() -> dict[str, Any]:
    """The shipped policy file as data, to change before validating it again."""
    loaded: dict[str, Any] = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    return loaded


# --- the policy model -------------------------------------------------------------------------


def test_the_policy_lists_the_16_districts_and_the_three_zone_committees() -> None:
    assert len(POLICY.districts) == 19
    assert POLICY.districts["pudong"] == "浦东新区"
    assert POLICY.districts["chongming"] == "崇明区"
    assert {code: POLICY.districts[code] for code in ZONES} == ZONES


def test_a_lot_naming_an_unknown_district_is_refused() -> None:
    data = policy_file()
    data["verification"]["lots"][0]["districts"] = ["pudong", "nanhui"]
    with pytest.raises(ValidationError) as refused:
        Policy.model_validate(data)
    assert "lot lot-2024-01 names unknown districts nanhui" in str(refused.value)


def test_a_lot_naming_known_districts_is_accepted() -> None:
    data = policy_file()
    data["verification"]["lots"][0]["districts"] = ["pudong", "lingang"]
    lot = Policy.model_validate(data).verification.lots[0]
    assert lot.covers(sector="power", district="lingang")
    assert not lot.covers(sector="power", district="minhang")


@pytest.mark.parametrize(
    ("districts", "reason"),
    [
        ({}, "at least 1 item"),
        ({"Pudong": "浦东新区"}, "should match pattern"),  # a code is an identifier
        (None, "Field required"),
    ],
    ids=["empty", "not an identifier", "absent"],
)
def test_the_district_code_list_is_required_and_of_identifiers(
    districts: dict[str, str] | None, reason: str
) -> None:
    data = policy_file()
    if districts is None:
        del data["districts"]
    else:
        data["districts"] = districts
    with pytest.raises(ValidationError) as refused:
        Policy.model_validate(data)
    assert reason in str(refused.value)


def test_ensure_district_refuses_a_code_not_in_the_list() -> None:
    POLICY.ensure_district("ftz-bonded")  # a known code passes
    with pytest.raises(Invalid) as refused:
        POLICY.ensure_district("Pudong")  # codes are exact: no case folding
    assert refused.value.code == "unknown_district"
    assert refused.value.status == 422
    assert refused.value.message == (
        "unknown district 'Pudong': not in the districts code list of the policy shanghai-2024"
    )


# --- the registry -----------------------------------------------------------------------------


async def test_post_entities_refuses_an_unknown_district_and_writes_nothing(
    registry: Harness,
) -> None:
    body = {
        "credit_code": CODE,
        "name": "A",
        "district": "nanhui",
        "sector": "power",
        "compliance_year": 2024,
    }
    async with registry.client() as client:
        response = await client.post("/entities", json=body, headers=registry.token("regulator"))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "unknown_district"
    assert "'nanhui'" in error["message"] and "shanghai-2024" in error["message"]
    assert await registry.read(store.get_entity, credit_code=CODE) is None
    assert await registry.outbox() == []


@pytest.mark.parametrize(
    "caller",
    [
        {"role": "regulator"},
        {"role": "entity", "credit_code": CODE},
        {"role": "district", "district": "lingang"},
    ],
    ids=["bureau", "entity", "district"],
)
async def test_get_districts_lists_the_code_list_in_the_policy_order(
    registry: Harness, caller: dict[str, Any]
) -> None:
    async with registry.client() as client:
        response = await client.get("/districts", headers=registry.token(**caller))
    assert response.status_code == 200, response.text
    listed = response.json()
    assert listed == [{"code": code, "name": name} for code, name in POLICY.districts.items()]
    assert listed[0] == {"code": "huangpu", "name": "黄浦区"}
    assert listed[-3:] == [{"code": code, "name": name} for code, name in ZONES.items()]


async def test_get_districts_is_refused_to_a_verifier_and_without_a_token(
    registry: Harness,
) -> None:
    async with registry.client() as client:
        verifier = await client.get(
            "/districts", headers=registry.token("verifier", agency="sh-verify-01")
        )
        anonymous = await client.get("/districts")
    assert (verifier.status_code, verifier.json()["error"]["code"]) == (403, "forbidden")
    assert anonymous.status_code == 401
