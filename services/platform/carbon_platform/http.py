"""The FastAPI application of a service: its routers, health, metrics and error mapping."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from carbon_platform import metrics
from carbon_platform.context import ServiceContext, ServiceDefinition
from carbon_platform.errors import Rejection

log = logging.getLogger(__name__)
ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def create_api(definition: ServiceDefinition, context: ServiceContext) -> FastAPI:
    api = FastAPI(title=definition.title or f"carbon {definition.name}", version="1.0.0")
    api.state.context = context
    api.state.readiness_checks = []
    for router in definition.routers:
        api.include_router(router)

    # One error shape for every 4xx: {"error": {"code": ..., "message": ...}}.
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
        where = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details)
        return _error(422, "invalid_request", where, details=details)

    @api.exception_handler(IntegrityError)
    async def conflicting(_request: Request, error: IntegrityError) -> JSONResponse:
        # A constraint refused the write: a concurrent request got there first. Nothing of this
        # request was applied (its transaction rolled back).
        log.warning("constraint refused a request: %s", error.orig)
        return _error(
            409, "conflict", "a concurrent change conflicts with this request; read and retry"
        )

    @api.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # Label by route template, never by concrete path: ids must not become label values.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.HTTP_DURATION.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    @api.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @api.get("/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        checks = {"database": await _database_ok(context)}
        for check in api.state.readiness_checks:
            checks.update(await check())
        status = 200 if all(checks.values()) else 503
        return JSONResponse(
            status_code=status,
            content={"status": "ready" if status == 200 else "not ready", "checks": checks},
        )

    @api.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return api


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid_request",
}


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
        async with context.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
