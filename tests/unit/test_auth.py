"""Bearer tokens (JWT, HS256): issue/decode, refusals, and the `require` role dependency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Annotated, Any

import jwt
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from carbon_platform.auth import Principal, Role, decode_token, issue_token, require
from carbon_platform.settings import Settings

SECRET = "unit-test-secret-0123456789abcdef"
CODE = "91310115MA1K4C8N0W"
SETTINGS = Settings(service="registry", jwt_secret=SecretStr(SECRET))

ROLE_BINDINGS: list[tuple[Role, dict[str, str]]] = [
    ("regulator", {}),
    ("entity", {"credit_code": CODE}),
    ("verifier", {"agency": "sh-verifier-03"}),
    ("district", {"district": "pudong"}),
]


def now() -> datetime:
    return datetime.now(UTC)


def issue(role: Role, subject: str, binding: dict[str, str]) -> str:
    return issue_token(
        SETTINGS,
        role=role,
        subject=subject,
        now=now(),
        credit_code=binding.get("credit_code"),
        agency=binding.get("agency"),
        district=binding.get("district"),
    )


def forge(claims: dict[str, Any], *, secret: str = SECRET) -> str:
    base: dict[str, Any] = {
        "sub": "someone",
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
        "iat": int(now().timestamp()),
        "exp": int((now() + timedelta(hours=1)).timestamp()),
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm="HS256")


# --- issue / decode --------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "binding"), ROLE_BINDINGS)
def test_issue_then_decode_gives_the_principal_back(role: Role, binding: dict[str, str]) -> None:
    token = issue(role, f"{role}-user", binding)
    principal = decode_token(SETTINGS, token)
    assert principal == Principal(subject=f"{role}-user", role=role, **binding)


def test_the_token_is_hs256_with_issuer_audience_and_expiry() -> None:
    issued = datetime(2030, 1, 1, tzinfo=UTC)
    token = issue_token(
        SETTINGS, role="entity", subject="u1", now=issued, credit_code=CODE, ttl=timedelta(hours=2)
    )
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == claims["aud"] == "carbon-ets"
    assert claims["iat"] == int(issued.timestamp())
    assert claims["exp"] - claims["iat"] == 2 * 3600
    assert claims["credit_code"] == CODE
    assert "agency" not in claims
    assert "district" not in claims


@pytest.mark.parametrize(("role", "binding"), [rb for rb in ROLE_BINDINGS if rb[1]])
def test_a_bound_role_without_its_claim_is_refused_at_issue(
    role: Role, binding: dict[str, str]
) -> None:
    (claim,) = binding
    with pytest.raises(ValueError, match=claim.replace("_", "-")):
        issue_token(SETTINGS, role=role, subject="u1", now=now())


def test_an_entity_with_another_roles_claim_is_still_refused() -> None:
    with pytest.raises(ValueError, match="credit-code"):
        issue_token(SETTINGS, role="entity", subject="u1", now=now(), agency="sh-verifier-03")


def test_decode_refuses_a_token_signed_with_another_secret() -> None:
    other = Settings(service="registry", jwt_secret=SecretStr("another-secret-0123456789abcdef!"))
    token = issue_token(other, role="regulator", subject="bureau", now=now())
    with pytest.raises(ValueError, match="invalid token"):
        decode_token(SETTINGS, token)


def test_decode_refuses_an_expired_token() -> None:
    token = issue_token(SETTINGS, role="regulator", subject="bureau", now=now() - timedelta(days=1))
    with pytest.raises(ValueError, match="expired"):
        decode_token(SETTINGS, token)


def test_decode_refuses_another_audience() -> None:
    other = Settings(service="registry", jwt_secret=SecretStr(SECRET), jwt_audience="other-ets")
    token = issue_token(other, role="regulator", subject="bureau", now=now())
    with pytest.raises(ValueError, match="invalid token"):
        decode_token(SETTINGS, token)


def test_decode_refuses_another_issuer() -> None:
    other = Settings(service="registry", jwt_secret=SecretStr(SECRET), jwt_issuer="someone-else")
    token = issue_token(other, role="regulator", subject="bureau", now=now())
    with pytest.raises(ValueError, match="invalid token"):
        decode_token(SETTINGS, token)


def test_decode_refuses_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        decode_token(SETTINGS, forge({"role": "trader"}))


@pytest.mark.parametrize(("role", "binding"), [rb for rb in ROLE_BINDINGS if rb[1]])
def test_decode_refuses_a_bound_role_without_its_claim(role: Role, binding: dict[str, str]) -> None:
    (claim,) = binding
    with pytest.raises(ValueError, match=f"lacks the {claim} claim"):
        decode_token(SETTINGS, forge({"role": role}))
    with pytest.raises(ValueError, match=f"lacks the {claim} claim"):
        decode_token(SETTINGS, forge({"role": role, claim: ""}))


@pytest.mark.parametrize("missing", ["exp", "sub", "role"])
def test_decode_refuses_a_token_without_a_required_claim(missing: str) -> None:
    with pytest.raises(ValueError, match="invalid token"):
        decode_token(SETTINGS, forge({"role": "regulator", missing: None}))


def test_decode_refuses_an_unsigned_token() -> None:
    claims = {
        "sub": "bureau",
        "role": "regulator",
        "iss": "carbon-ets",
        "aud": "carbon-ets",
        "exp": int((now() + timedelta(hours=1)).timestamp()),
    }
    token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(ValueError, match="invalid token"):
        decode_token(SETTINGS, token)


def test_decode_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="invalid token"):
        decode_token(SETTINGS, "not.a.jwt")


# --- require() through FastAPI ---------------------------------------------------------------


def make_client() -> TestClient:
    app = FastAPI()
    app.state.context = SimpleNamespace(settings=SETTINGS)

    @app.get("/bureau")
    def bureau(principal: Annotated[Principal, Depends(require("regulator"))]) -> dict[str, str]:
        return {"subject": principal.subject, "role": principal.role}

    @app.get("/holdings")
    def holdings(
        principal: Annotated[Principal, Depends(require("entity", "district"))],
    ) -> dict[str, str | None]:
        return {"credit_code": principal.credit_code, "district": principal.district}

    return TestClient(app)


def bearer(role: Role, **binding: str) -> dict[str, str]:
    token = issue(role, f"{role}-user", binding)
    return {"Authorization": f"Bearer {token}"}


def test_require_without_a_token_is_401() -> None:
    response = make_client().get("/bureau")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_require_with_a_garbage_token_is_401() -> None:
    response = make_client().get("/bureau", headers={"Authorization": "Bearer garbage"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "invalid token" in response.json()["detail"]


def test_require_with_another_scheme_is_401() -> None:
    response = make_client().get("/bureau", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


def test_require_with_an_expired_token_is_401() -> None:
    token = issue_token(SETTINGS, role="regulator", subject="bureau", now=now() - timedelta(days=1))
    response = make_client().get("/bureau", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_require_with_the_wrong_role_is_403() -> None:
    response = make_client().get("/bureau", headers=bearer("entity", credit_code=CODE))
    assert response.status_code == 403
    assert "regulator" in response.json()["detail"]


def test_require_with_the_right_role_is_200() -> None:
    response = make_client().get("/bureau", headers=bearer("regulator"))
    assert response.status_code == 200
    assert response.json() == {"subject": "regulator-user", "role": "regulator"}


def test_require_accepts_any_of_several_roles() -> None:
    client = make_client()
    as_entity = client.get("/holdings", headers=bearer("entity", credit_code=CODE))
    as_district = client.get("/holdings", headers=bearer("district", district="pudong"))
    as_verifier = client.get("/holdings", headers=bearer("verifier", agency="sh-verifier-03"))
    assert as_entity.status_code == 200
    assert as_entity.json() == {"credit_code": CODE, "district": None}
    assert as_district.status_code == 200
    assert as_district.json() == {"credit_code": None, "district": "pudong"}
    assert as_verifier.status_code == 403
