"""The FastAPI application of a service: its routers, health, metrics and error mapping."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from carbon_platform import metrics
from carbon_platform.context import ServiceContext, ServiceDefinition
from carbon_platform.errors import Rejection

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def create_api(definition: ServiceDefinition, context: ServiceContext) -> FastAPI:
    api = FastAPI(title=definition.title or f"carbon {definition.name}", version="1.0.0")
    api.state.context = context
    api.state.readiness_checks = []
    for router in definition.routers:
        api.include_router(router)

    @api.exception_handler(Rejection)
    async def rejected(_request: Request, rejection: Rejection) -> JSONResponse:
        return JSONResponse(
            status_code=rejection.status,
            content={"error": {"code": rejection.code, "message": rejection.message}},
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


async def _database_ok(context: ServiceContext) -> bool:
    try:
        async with context.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
