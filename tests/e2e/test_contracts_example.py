"""The subscriber of contracts/python/README.md, run as written against `carbon up`: after one
entity's compliance cycle over HTTP, it prints that entity's report.submitted as its typed
model, and on the multi-type report.deadline topic only the type it wants, reading the records
only through the carbon-contracts package."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from carbon_platform.codec import Outgoing, encode
from registry.domain.credit_code import make_credit_code
from tests.support import (
    REPO,
    Database,
    Platform,
    compliance_cycle,
    example,
    produce,
    running_platform,
    wait_until,
)

pytestmark = pytest.mark.e2e
README = REPO / "contracts" / "python" / "README.md"
SUBMITTED, OVERDUE = "cn.sh.carbon.report.submitted.v1", "cn.sh.carbon.report.overdue.v1"


def readme_subscriber() -> str:
    """The one ```python block of the README's complete subscriber, as an integrator copies it."""
    section = README.read_text(encoding="utf-8").split("## A complete subscriber", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def one_cycle(platform: Platform, code: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        receipt = await compliance_cycle(client, lambda service: platform.urls[service], code)
    assert receipt["status"] == "compliant"


def deadline_event(event: str, code: str) -> Outgoing:
    """The reporting service's example `event` about entity `code`, as its record."""
    payload = example(event).model_copy(update={"credit_code": code})
    return encode(payload, source="/carbon/reporting", time=datetime.now(UTC))


def test_the_readme_subscriber_prints_the_typed_events_it_wants(tmp_path: Path) -> None:
    code = make_credit_code(2024)
    script, output = tmp_path / "subscriber.py", tmp_path / "subscriber.out"
    script.write_text(readme_subscriber(), encoding="utf-8")
    var_dir = tmp_path / "platform"
    var_dir.mkdir()
    with running_platform(var_dir, Database.for_test()) as platform:
        asyncio.run(one_cycle(platform, code))
        # On report.deadline, a type it does not want, then one it wants, with one key (so in one
        # partition): once the second is printed, the first was read and skipped.
        reminder = deadline_event("report.reminder_due", code)
        overdue = deadline_event("report.overdue", code)
        produce(
            platform.bootstrap,
            "report.deadline",
            [(record.key, record.value, record.headers) for record in (reminder, overdue)],
        )
        with output.open("wb") as sink:
            subscriber = subprocess.Popen(
                [sys.executable, str(script)],
                env={**os.environ, "KAFKA_BOOTSTRAP": platform.bootstrap},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

        def printed() -> list[str]:
            if subscriber.poll() is not None:
                raise AssertionError(f"the subscriber exited: {output.read_text()}")
            return output.read_text(encoding="utf-8").splitlines()

        def both_printed() -> bool:
            lines = printed()
            report = any(line.startswith(SUBMITTED) and code in line for line in lines)
            return report and any(overdue.event_id in line for line in lines)

        try:
            wait_until(both_printed, timeout=60, what="the subscriber to print both events")
        finally:
            subscriber.terminate()
            subscriber.wait(30)
    lines = output.read_text(encoding="utf-8").splitlines()
    assert {line.split(" ", 1)[0] for line in lines} <= {SUBMITTED, OVERDUE}, lines
    assert not any(reminder.event_id in line for line in lines)
    [report] = [line for line in lines if line.startswith(SUBMITTED)]
    _, event_id, model = report.split(" ", 2)
    assert len(event_id) == 36
    assert model.startswith(f"ReportSubmitted(credit_code='{code}', compliance_year=2024, ")
    assert "total_emissions=Decimal('60.000')" in model
    [late] = [line for line in lines if overdue.event_id in line]
    assert late.startswith(f"{OVERDUE} {overdue.event_id} ReportOverdue(credit_code='{code}', ")
