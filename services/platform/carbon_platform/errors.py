"""Outcomes that are not bugs: a request or event the rules reject, with a reason for the caller.

Pure Python, so domain modules may raise these; the HTTP layer maps them to 4xx responses.
"""

from __future__ import annotations


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
