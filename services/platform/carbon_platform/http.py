"""The FastAPI application of a service: its routers, health, metrics, body limits and the one
error shape of every 4xx."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from opentelemetry.trace import Span
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carbon_contracts.errors import ErrorResponse, Rejection, where_invalid
from carbon_platform import metrics, tracing
from carbon_platform.auth import current_principal
from carbon_platform.context import ServiceContext, ServiceDefinition

log = logging.getLogger(__name__)
access = logging.getLogger("carbon_platform.access_log")
ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}
_MEANING = {
    401: "no bearer token, or an invalid or expired one",
    403: "the caller's role or binding may not do this",
    404: "no such resource",
    409: "the rules or the current state refuse it",
    413: "the request body is larger than this route accepts",
    415: "the request body is not of a type this route accepts",
    422: "the request is malformed or a value is invalid",
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the 4xx statuses a route may answer, all with the error body."""
    return {
        status: {"model": ErrorResponse, "description": _MEANING[status]} for status in statuses
    }


class Readiness(BaseModel):
    status: str
    checks: dict[str, bool]


def create_api(
    definition: ServiceDefinition,
    context: ServiceContext,
    operations: Sequence[APIRouter] = (),
) -> FastAPI:
    """The service's API: its routers and the platform's `operations` routers (dead letters)."""
    api = FastAPI(
        title=definition.title or f"carbon {definition.name}",
        version="2.0.0",
        # Every route may be refused for a malformed or oversized request.
        responses=refusals(413, 422),
    )
    api.state.context = context
    api.state.readiness_checks = []
    for router in (*definition.routers, *operations):
        _document_unauthorised(router)
        api.include_router(router)

    @api.exception_handler(Rejection)
    async def rejected(_request: Request, rejection: Rejection) -> JSONResponse:
        return _error(rejection.status, rejection.code, rejection.message)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(error.status_code, "error")
        return _error(error.status_code, code, str(error.detail), headers=error.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()
        ]
        return _error(422, "invalid_request", where_invalid(details), details=details)

    @api.exception_handler(IntegrityError)
    async def conflicting(_request: Request, error: IntegrityError) -> JSONResponse:
        # A constraint refused the write: a concurrent request got there first. Nothing of this
        # request was applied (its transaction rolled back).
        log.warning("constraint refused a request: %s", error.orig)
        return _error(
            409, "conflict", "a concurrent change conflicts with this request; read and retry"
        )

    @api.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @api.get(
        "/health/ready",
        tags=["health"],
        responses={200: {"model": Readiness}, 503: {"model": Readiness}},
    )
    async def ready() -> JSONResponse:
        """200 when this instance can do its work; 503 names the failing checks."""
        checks = {"database": await _database_ok(context)}
        for check in api.state.readiness_checks:
            checks.update(await check())
        status = 200 if all(checks.values()) else 503
        body = Readiness(status="ready" if status == 200 else "not ready", checks=checks)
        return JSONResponse(status_code=status, content=body.model_dump())

    @api.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    api.add_middleware(
        _Edge,
        default_limit=context.settings.http_max_body_bytes,
        limits=definition.body_limits,
    )
    return api


def _document_unauthorised(router: APIRouter) -> None:
    """Every route that needs a bearer token documents its 401."""
    for route in router.routes:
        if isinstance(route, APIRoute) and _needs_token(route.dependant):
            route.responses.setdefault(401, refusals(401)[401])


def _needs_token(dependant: Dependant) -> bool:
    return dependant.call is current_principal or any(
        _needs_token(sub) for sub in dependant.dependencies
    )


class _Edge:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a body copy per request):
    refuses bodies over the limit with 413 and counts every request by route template."""

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: Mapping[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(("/health/", "/metrics")):  # probes and scrapes: no trace
            await self._serve(scope, receive, send, None)
            return
        headers = Headers(scope=scope)
        correlation = tracing.caller_correlation_id(headers.get(tracing.CORRELATION_HEADER))
        with tracing.serving(scope["method"], headers, correlation or str(uuid4())) as traced:
            await self._serve(scope, receive, send, traced)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, traced: tuple[Span, str] | None
    ) -> None:
        started = time.perf_counter()
        limit = self.limits.get(scope["path"], self.default_limit)
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if traced is not None:  # the caller can quote it, and find the request's events
                    MutableHeaders(scope=message).append(tracing.CORRELATION_HEADER, traced[1])
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                await _error(413, "payload_too_large", _too_large(limit))(scope, receive, sending)
            else:
                await self.app(scope, _bounded(receive, limit), sending)
        finally:
            # Label by route template, never by concrete path: ids must not become label values.
            route = getattr(scope.get("route"), "path", "unmatched")
            if traced is not None:
                traced[0].update_name(f"{scope['method']} {route}")
                traced[0].set_attributes({"http.route": route, "http.response.status_code": status})
            seconds = time.perf_counter() - started
            metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            metrics.HTTP_DURATION.labels(scope["method"], route).observe(seconds)
            # The access log, by route template too (a path may carry a credit code); probes
            # and scrapes only at DEBUG, or they would drown it.
            quiet = route.startswith(("/health/", "/metrics"))
            access.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %d",
                scope["method"],
                route,
                status,
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> str:
    return f"the request body exceeds {limit} bytes"


def _bounded(receive: Receive, limit: int) -> Receive:
    """A body sent without (or with a false) Content-Length is counted as it arrives."""
    received = 0

    async def bounded() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, _too_large(limit))
        return message

    return bounded


def _error(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse(status_code=status, content={"error": body}, headers=headers)


async def _database_ok(context: ServiceContext) -> bool:
    try:
        async with context.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
