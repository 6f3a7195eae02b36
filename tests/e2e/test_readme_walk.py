"""The README's walk-through, run as written on a platform of its own (it closes the year's
verification, which needs every rostered entity to have a final figure), then read back by an
outside subscriber that knows only contracts/."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.e2e.subscriber import events_of
from tests.support import (
    JWT_SECRET,
    PORTS,
    REPO,
    Database,
    Platform,
    running_platform,
)

pytestmark = pytest.mark.e2e
CODE = "91310115MA1K4C8N0W"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("walk"), Database.for_test()) as platform:
        yield platform
    assert platform.process.returncode == 0, platform.output.read_text()


def readme_walk(platform: Platform) -> str:
    """The README's walk-through as a script, pointed at this test's platform. Each block runs
    until it succeeds (a person pasting it waits for the previous event to be handled)."""
    readme = (REPO / "README.md").read_text()
    walk = readme.split("## Walk through", 1)[1].split("### The events", 1)[0]
    blocks = walk.split("```sh\n")[1:]
    script = [
        "set -uo pipefail",
        'retry() { for _ in $(seq 30); do "$@" && return; sleep 1; done; return 1; }',
    ]
    for number, block in enumerate(blocks):
        body = block.split("```", 1)[0]
        for name, port in PORTS.items():
            body = body.replace(f"http://127.0.0.1:{port}", platform.urls[name])
        script += [f"step_{number}() {{\n{body}}}", f"retry step_{number} || exit 1", "echo"]
    return "\n".join(script)


def test_the_readme_walk_through_works_as_written(platform: Platform) -> None:
    walk = subprocess.run(
        ["bash", "-c", readme_walk(platform)],
        cwd=REPO,
        # The stand-ins for the external systems publish to this platform's broker.
        env={
            **os.environ,
            "CARBON_JWT_SECRET": JWT_SECRET,
            "CARBON_KAFKA_BOOTSTRAP": platform.bootstrap,
            # `carbon clock` moves this platform's clock, as it would the one `make run` starts.
            "CARBON_VAR_DIR": str(platform.var_dir),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert walk.returncode == 0, walk.stdout + walk.stderr
    output = walk.stdout
    assert '"total_emissions":"24251.551"' in output
    assert '"verified_emissions":"24281.551"' in output, output  # the first agency's figure
    assert '"final_emissions":"24251.551"' in output, output  # re-verified: it replaced it
    assert '"status":"compliant"' in output
    assert '"preallocation":{"compliance_year":2025,"allowances":19401}' in output
    assert "balanced" in output and "NOT BALANCED" not in output, output
    assert "already_compliant" in output and "insufficient_holdings" in output, output
    assert '"rows":3,"done":3,"registered":2,"refused":1' in output, output
    assert '"status":"refused","code":"invalid_credit_code"' in output, output
    assert "allowances: Input should be a valid integer" in output, output
    assert "expected 'W'" in output
    assert "missing bearer token" in output
    assert "report_accepted" in output and "unknown material 'gypsum'" in output, output

    # Everything it published, inbound events included, is valid for an outside subscriber.
    for event in (
        "entity.registered",
        "account.opened",
        "trading_account.opened",
        "monitoring_plan.submitted",
        "monitoring_plan.approved",
        "report.submitted",
        "report.paper_copy_received",
        "report.accepted",
        "verification.approved",
        "reverification.selected",
        "reverification.completed",
        "verification.finalised",
        "allocation.issued",
        "allowances.transferred",
        "exchange_transfer.settled",
        "shcercir1.cancelled",
        "auction.won",
        "auction_payment.confirmed",
        "auction.settled",
        "surrender.completed",
        "preallocation.issued",
    ):
        assert len(events_of(platform, event, CODE)) == 1, event
    [closed] = events_of(platform, "verification.closed", "shanghai-2024")
    assert (closed["cases"], closed["total_verified_emissions"]) == (1, "24251.551")
    [finalised] = events_of(platform, "verification.finalised", CODE)
    assert finalised["outputs"] == [
        {"product": "ethylene_glycol", "unit": "t", "quantity": "182000"}
    ]
    [allocation] = events_of(platform, "allocation.issued", CODE)
    assert (
        allocation["method"],
        allocation["final_allocation"],
        allocation["preallocated"],
        allocation["allowances"],
        allocation["clawed_back"],
        allocation["owed"],
    ) == ("historical_emissions", 24223, 19840, 4383, 0, 0)
    assert allocation["parameters"] == {
        "base_2022": "25100",
        "base_2023": "24800",
        "base_2024": "24251.551",
        "decline": "0.98",
    }
    [surrendered] = events_of(platform, "surrender.completed", CODE)
    assert (
        surrendered["obligation"],
        surrendered["allowances_surrendered"],
        surrendered["offsets_surrendered"],
        surrendered["offsets_by_type"],
    ) == (24252, 23052, 1200, {"SHCERCIR1": 1200})
    assert surrendered["on_time"] is True  # in the rehearsed time, 2025-06-30 11:30

    # The auction: the reserve from the market days in the window, six winners, the marginal
    # one partly filled, the entity's award settled and the five unpaid ones cancelled.
    assert len(events_of(platform, "market_day.closed", "SHEA")) == 4
    [announced] = events_of(platform, "auction.announced", "shanghai-2024")
    assert (announced["reserve_price"], announced["reference_trading_days"]) == ("92.23", 3)
    [cleared] = events_of(platform, "auction.cleared", "shanghai-2024")
    assert (cleared["clearing_price"], cleared["sold"], cleared["winners"]) == ("93.00", 500000, 6)
    [won] = events_of(platform, "auction.won", CODE)
    assert (won["allowances"], won["amount_due"], len(won["bids"])) == (5000, "465000.00", 1)
    [marginal] = events_of(platform, "auction.won", "91310118370783735L")
    assert marginal["allowances"] == 95000 and marginal["bids"][0]["quantity"] == 100000
    cancelled = [
        code
        for code in ("91310112368370181C", "91310113368852893M", "91310114369335601Q",
                     "91310116369818312U", "91310118370783735L")
        if events_of(platform, "auction.award_cancelled", code)
    ]  # fmt: skip
    assert len(cancelled) == 5
    assert '"surrender_only_drawn":5000' in output, output
    assert '"code":"below_reserve"' in output and '"code":"over_bidder_cap"' in output, output
    assert '"code":"bids_sealed"' in output and '"code":"surrender_only"' in output, output

    # The surrender deadline, rehearsed fast: the jinshan bidder, still open, was reminded (the
    # entity, done at 11:30, never), became overdue at 17:00 and surrendered late.
    late = "91310116369818312U"
    befores = {
        reminder["before"] for reminder in events_of(platform, "surrender.reminder_due", late)
    }
    assert "PT2H" in befores, befores
    assert events_of(platform, "surrender.reminder_due", CODE) == []
    [overdue] = events_of(platform, "surrender.overdue", late)
    assert (overdue["district"], overdue["missing"]) == (
        "jinshan",
        "surrendered 0 of 2100 allowances",
    )
    [done_late] = events_of(platform, "surrender.done_late", late)
    assert datetime.fromisoformat(done_late["done_at"]) >= datetime.fromisoformat(overdue["due_at"])
    [late_surrender] = events_of(platform, "surrender.completed", late)
    assert late_surrender["on_time"] is False
    assert "signature valid" in output and "surrender.overdue" in output, output
    assert "mail to supervision@jinshan.example.cn" in output, output
    assert '"state":"closed"' in output, output
