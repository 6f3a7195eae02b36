"""The services' clock: shifted by CARBON_CLOCK_START, or moved while they run by `carbon clock`."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from carbon_platform.cli import app
from carbon_platform.clock import Clock

SHANGHAI = ZoneInfo("Asia/Shanghai")
AUCTION_OPENS = datetime(2025, 6, 30, 9, 30, tzinfo=SHANGHAI)
AUCTION_CLOSES = datetime(2025, 6, 30, 11, 30, tzinfo=SHANGHAI)

runner = CliRunner(env={"COLUMNS": "300"})  # an error on one line, however long


@pytest.fixture
def var_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The embedded stack's var dir, and services that follow its clock file as under `up`."""
    monkeypatch.setenv("CARBON_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("CARBON_CLOCK_FILE", str(tmp_path / "clock"))
    monkeypatch.delenv("CARBON_CLOCK_START", raising=False)
    return tmp_path


def clock(*arguments: str) -> str:
    result = runner.invoke(app, ["clock", *arguments])
    assert result.exit_code == 0, result.output
    return result.output


def assert_about(actual: datetime, expected: datetime) -> None:
    """Equal but for the real time the test itself takes."""
    assert abs(actual - expected) < timedelta(seconds=5), (actual, expected)


def test_a_service_follows_the_clock_as_it_is_set_and_reset(var_dir: Path) -> None:
    service = Clock.from_env()
    assert_about(service.now(), datetime.now(UTC))

    clock("set", AUCTION_OPENS.isoformat())
    assert_about(service.now(), AUCTION_OPENS)
    clock("set", AUCTION_CLOSES.isoformat())  # at once, though the file has just changed
    assert_about(service.now(), AUCTION_CLOSES)

    assert clock("reset").strip() == "real time"
    assert not (var_dir / "clock").exists()
    assert_about(service.now(), datetime.now(UTC))


def test_the_rehearsed_time_runs_on_from_where_it_was_set(var_dir: Path) -> None:
    service = Clock.from_env()
    clock("set", AUCTION_OPENS.isoformat())
    first = service.now()
    time.sleep(0.01)
    assert service.now() - first >= timedelta(milliseconds=10)
    assert_about(service.now(), AUCTION_OPENS)


def test_without_the_file_the_clock_starts_where_clock_start_says(
    var_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBON_CLOCK_START", "2025-04-15T10:00:00+08:00")
    service = Clock.from_env()
    assert_about(service.now(), datetime(2025, 4, 15, 10, 0, tzinfo=SHANGHAI))
    clock("set", AUCTION_OPENS.isoformat())
    assert_about(service.now(), AUCTION_OPENS)
    clock("reset")
    assert_about(service.now(), datetime(2025, 4, 15, 10, 0, tzinfo=SHANGHAI))


def test_a_malformed_clock_file_keeps_the_time_and_is_warned_about_once(
    var_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = Clock.from_env()
    clock("set", AUCTION_OPENS.isoformat())
    assert_about(service.now(), AUCTION_OPENS)

    (var_dir / "clock").write_text('{"start": "half past nine"}')
    with caplog.at_level(logging.WARNING, logger="carbon_platform.clock"):
        assert_about(service.now(), AUCTION_OPENS)
        assert_about(service.now(), AUCTION_OPENS)
    assert [record.getMessage() for record in caplog.records] == [
        f"clock file {var_dir / 'clock'} ignored, keeping the time: "
        "Invalid isoformat string: 'half past nine'"
    ]

    clock("set", AUCTION_CLOSES.isoformat())  # put right: followed again
    assert_about(service.now(), AUCTION_CLOSES)


def test_a_time_without_its_utc_offset_is_refused(var_dir: Path) -> None:
    for naive in ("2025-06-30T09:30", "2025-06-30"):
        result = runner.invoke(app, ["clock", "set", naive])
        assert result.exit_code == 2
        assert f"'{naive}' has no UTC offset" in result.output
    result = runner.invoke(app, ["clock", "set", "half past nine"])
    assert result.exit_code == 2
    assert "Invalid isoformat string: 'half past nine'" in result.output
    assert not (var_dir / "clock").exists()


def test_show_tells_the_rehearsed_time_or_real_time(var_dir: Path) -> None:
    assert clock("show").strip() == "real time"
    clock("set", AUCTION_OPENS.isoformat())
    shown = clock("show")
    assert_about(datetime.fromisoformat(shown.split()[0]), AUCTION_OPENS.replace(microsecond=0))
    assert shown.startswith("2025-06-30T09:30:")
    assert shown.split()[0].endswith("+08:00")  # in the offset it was set in


def test_show_says_so_when_the_file_is_malformed(var_dir: Path) -> None:
    (var_dir / "clock").write_text("not json")
    result = runner.invoke(app, ["clock", "show"])
    assert result.exit_code == 1
    assert "the services keep the time they had" in result.output


def test_var_dir_option_sets_the_clock_of_a_stack_started_with_it(
    var_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    clock("set", AUCTION_OPENS.isoformat(), "--var-dir", str(elsewhere))
    assert_about(Clock(follow=elsewhere / "clock").now(), AUCTION_OPENS)
    assert not (var_dir / "clock").exists()


def test_commands_follow_the_default_var_dirs_clock_file(
    var_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARBON_CLOCK_FILE")  # a shell beside `carbon up`: only the var dir
    clock("set", AUCTION_OPENS.isoformat())
    assert (var_dir / "clock").exists()
    assert_about(Clock.for_commands().now(), AUCTION_OPENS)
    assert_about(Clock.from_env().now(), datetime.now(UTC))  # a service not under `up`: real time


def test_a_rehearsal_clock_can_run_faster_than_real_time(var_dir: Path) -> None:
    service = Clock.from_env()
    assert "60 x real time" in clock("set", AUCTION_OPENS.isoformat(), "--rate", "60")
    before = service.now()
    time.sleep(0.5)
    elapsed = service.now() - before
    assert timedelta(seconds=29) < elapsed < timedelta(seconds=60)  # about 30 s rehearsed


def test_a_clock_started_from_the_environment_runs_at_its_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CARBON_CLOCK_FILE", raising=False)
    monkeypatch.setenv("CARBON_CLOCK_START", AUCTION_OPENS.isoformat())
    monkeypatch.setenv("CARBON_CLOCK_RATE", "120")
    service = Clock.from_env()
    assert_about(service.now(), AUCTION_OPENS)
    time.sleep(0.5)
    assert service.now() - AUCTION_OPENS > timedelta(seconds=59)


def test_a_rate_out_of_range_is_refused(var_dir: Path) -> None:
    result = runner.invoke(app, ["clock", "set", AUCTION_OPENS.isoformat(), "--rate", "0"])
    assert result.exit_code == 2 and "rate" in result.output
    assert not (var_dir / "clock").exists()
