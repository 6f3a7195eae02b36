"""The HTTP access log: one JSON line per request, by route template (never the concrete path,
which may carry a credit code), with its status and time; health probes only at DEBUG."""

from __future__ import annotations

import json
import logging

import pytest

from carbon_platform.logs import JsonFormatter
from registry.domain.credit_code import make_credit_code
from tests.unit.support import Harness

CODE = make_credit_code(77)


async def test_each_request_is_logged_by_its_route_template_and_status(
    registry: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="carbon_platform.access_log")
    async with registry.client() as client:
        await client.get(f"/obligations/{CODE}/surrender", headers=registry.token("regulator"))
        await client.get("/health/live")
    request, probe = [r for r in caplog.records if r.name == "carbon_platform.access_log"]
    line = json.loads(JsonFormatter("registry").format(request))
    assert (line["level"], line["method"], line["route"], line["status"]) == (
        "INFO",
        "GET",
        "/obligations/{credit_code}/{obligation}",
        404,  # not_obligated
    )
    assert line["duration_ms"] >= 0
    assert CODE not in line["message"]
    assert (probe.levelno, probe.route) == (logging.DEBUG, "/health/live")  # type: ignore[attr-defined]
