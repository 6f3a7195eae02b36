"""Outcomes that are not bugs: a command or event the rules reject, with a stable code and a
reason for the caller, and the error body every API answers with.

Pure Python, so domain modules raise these; the platform maps each kind to its HTTP status once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field


def where_invalid(errors: Iterable[Mapping[str, Any]], *, whole: str = "") -> str:
    """Validation errors (pydantic's `errors()`) as one line: `loc.path: message; ...`. An error
    about the whole object (a rule across fields) has no path: `whole` names it, if given."""

    def where(error: Mapping[str, Any]) -> str:
        path = ".".join(map(str, error["loc"])) or whole
        return f"{path}: {error['msg']}" if path else error["msg"]

    return "; ".join(where(error) for error in errors)


class Rejection(Exception):
    status = 409

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(Rejection):
    status = 404


class Conflict(Rejection):
    status = 409


class Invalid(Rejection):
    status = 422


class Forbidden(Rejection):
    status = 403


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable reason, e.g. insufficient_holdings")
    message: str = Field(description="what was refused and why, for a person")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="request validation errors: loc, msg, type"
    )


class ErrorResponse(BaseModel):
    """The body of every 4xx answer."""

    error: ErrorDetail
