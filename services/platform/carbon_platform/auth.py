"""Bearer-token (JWT, HS256) authentication and role checks.

Roles: `regulator` (the Bureau), `entity` (bound to one credit code), `verifier` (bound to one
agency), `district` (bound to one district).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from carbon_platform.settings import Settings

Role = Literal["regulator", "entity", "verifier", "district"]
ROLES: tuple[Role, ...] = ("regulator", "entity", "verifier", "district")
_BINDING_CLAIM: dict[str, str] = {
    "entity": "credit_code",
    "verifier": "agency",
    "district": "district",
}


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    credit_code: str | None = None
    agency: str | None = None
    district: str | None = None


def issue_token(
    settings: Settings,
    *,
    role: Role,
    subject: str,
    now: datetime,
    credit_code: str | None = None,
    agency: str | None = None,
    district: str | None = None,
    ttl: timedelta = timedelta(hours=12),
) -> str:
    claims: dict[str, object] = {
        "sub": subject,
        "role": role,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    bound = {"credit_code": credit_code, "agency": agency, "district": district}
    required = _BINDING_CLAIM.get(role)
    if required and not bound[required]:
        raise ValueError(f"role {role} needs --{required.replace('_', '-')}")
    claims.update({name: value for name, value in bound.items() if value})
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def decode_token(settings: Settings, token: str) -> Principal:
    principal, expires = _verified(
        settings.jwt_secret.get_secret_value(), settings.jwt_issuer, settings.jwt_audience, token
    )
    if time.time() >= expires:
        raise ValueError("invalid token: Signature has expired")
    return principal


@lru_cache(maxsize=8192)
def _verified(secret: str, issuer: str, audience: str, token: str) -> tuple[Principal, float]:
    """A token's principal and expiry, verified once: a client sends the same token with many
    requests, and verifying it again each time cost more than the rest of the request's auth.
    A refused token is not remembered."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "sub", "role"]},
        )
    except jwt.PyJWTError as error:
        raise ValueError(f"invalid token: {error}") from error
    role = claims["role"]
    if role not in ROLES:
        raise ValueError(f"invalid token: unknown role {role!r}")
    required = _BINDING_CLAIM.get(role)
    if required and not claims.get(required):
        raise ValueError(f"invalid token: role {role} lacks the {required} claim")
    principal = Principal(
        subject=str(claims["sub"]),
        role=role,
        credit_code=claims.get("credit_code"),
        agency=claims.get("agency"),
        district=claims.get("district"),
    )
    return principal, float(claims["exp"])


_bearer = HTTPBearer(auto_error=False)


# Dependencies are `async def` although they never wait: FastAPI runs a plain `def` dependency
# on a worker thread, a hand-off per dependency per request.
async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    settings: Settings = request.app.state.context.settings
    try:
        return decode_token(settings, credentials.credentials)
    except ValueError as error:
        raise HTTPException(401, str(error), headers={"WWW-Authenticate": "Bearer"}) from error


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency: the caller must hold one of `roles`."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                403, f"role {principal.role!r} may not do this; needs one of {', '.join(roles)}"
            )
        return principal

    return check
