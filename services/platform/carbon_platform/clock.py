"""The one source of "now". A demo or test can start the clock at any instant of the cycle, and a
rehearsal on the embedded stack can move it while the services run (`carbon clock set`)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from carbon_platform.settings import REPO_ROOT

log = logging.getLogger(__name__)

CLOCK_FILE = "clock"
MAX_RATE = 3600.0  # an hour a second: faster, checks made every second would act hours late
"""The rehearsal clock's file in the embedded stack's var dir."""


def default_var_dir() -> Path:
    """The embedded stack's var dir when `carbon up` is given none: CARBON_VAR_DIR, else
    <repo>/var. Its databases, logs, dev secret and rehearsal clock file live there."""
    return Path(os.environ.get("CARBON_VAR_DIR", REPO_ROOT / "var"))


def aware_time(text: str) -> datetime:
    """An ISO 8601 time that carries its UTC offset: one without names no instant."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset, e.g. {text}+08:00")
    return at


def rehearsal_clock_file(var_dir: Path | None = None) -> Path:
    """The clock file a `carbon` command sets or follows: the one in `var_dir` when given, else
    the one CARBON_CLOCK_FILE names, else the one `carbon up` hands its services by default."""
    if var_dir is not None:
        return var_dir / CLOCK_FILE
    named = os.environ.get("CARBON_CLOCK_FILE")
    return Path(named) if named else default_var_dir() / CLOCK_FILE


def set_clock_file(path: Path, *, start: datetime, rate: float = 1.0) -> None:
    """Make every clock that follows `path` say `start` now and run on from there, `rate` times
    as fast as real time (a rehearsal of a deadline need not last a day).

    Written whole to a temporary file and renamed over, so a service never reads half of it."""
    if start.tzinfo is None:
        raise ValueError("clock start must carry a UTC offset")
    _check_rate(rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    content = {"start": start.isoformat(), "set_at": datetime.now(UTC).isoformat(), "rate": rate}
    written.write_text(json.dumps(content) + "\n")
    os.replace(written, path)


@dataclass(frozen=True)
class ClockFile:
    start: datetime
    set_at: datetime  # real time
    rate: float = 1.0


def read_clock_file(path: Path) -> ClockFile:
    """What a clock file says; ValueError when it is not one."""
    try:
        content = json.loads(path.read_text())
        start, set_at = (datetime.fromisoformat(content[name]) for name in ("start", "set_at"))
        rate = float(content.get("rate", 1.0))
    except (KeyError, TypeError, AttributeError) as error:  # JSON, but not a clock file's
        raise ValueError(f"not a clock file: {error!r}") from error
    if start.tzinfo is None or set_at.tzinfo is None:
        raise ValueError("start and set_at must carry a UTC offset")
    _check_rate(rate)
    return ClockFile(start, set_at, rate)


def _check_rate(rate: float) -> None:
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"clock rate {rate} must be above 0 and at most {MAX_RATE:g}")


class Clock:
    """Wall-clock time, optionally shifted so that it starts at `start` and runs on from there.

    Following a clock file (`follow`, from CARBON_CLOCK_FILE), it says the file's start plus the
    real time since the file was set, and sees a new file at its next call; without the file it
    runs as if it had none. The file is a rehearsal tool of the embedded stack: `carbon up`
    names it, production (compose, deploy/) does not. Leases and timeouts never read this clock.
    """

    def __init__(
        self, start: datetime | None = None, *, rate: float = 1.0, follow: Path | None = None
    ) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("clock start must carry a UTC offset")
        _check_rate(rate)
        # (start, real time then, rate) while no clock file is in effect; None: real time.
        started = datetime.now(UTC)
        self._without_file = ClockFile(start, started, rate) if start else None
        self._anchor = self._without_file
        self._file = follow
        self._seen: tuple[int, int, int] | None = None  # the clock file version last read

    def now(self) -> datetime:
        if self._file is not None:
            self._follow(self._file)
        real = datetime.now(UTC)
        anchor = self._anchor
        if anchor is None:
            return real
        return anchor.start + (real - anchor.set_at) * anchor.rate

    def _follow(self, path: Path) -> None:
        # One stat a call: cheap enough for every request, and a change counts at once.
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            self._anchor, self._seen = self._without_file, None
            return
        # Each set renames a new file over the old: a new inode, even within one mtime tick.
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if version == self._seen:
            return
        try:
            anchor = read_clock_file(path)
        except FileNotFoundError:  # reset between the stat and the read
            self._anchor, self._seen = self._without_file, None
            return
        except (OSError, ValueError) as error:
            # A service must not fail over a rehearsal tool: it keeps the time it had, and says
            # so once (this version of the file is not read again).
            log.warning("clock file %s ignored, keeping the time: %s", path, error)
        else:
            self._anchor = anchor
        self._seen = version

    @classmethod
    def from_env(cls) -> Clock:
        """The services' clock: CARBON_CLOCK_START (at CARBON_CLOCK_RATE), following
        CARBON_CLOCK_FILE when it is set."""
        named = os.environ.get("CARBON_CLOCK_FILE")
        return cls(_start_from_env(), rate=_rate_from_env(), follow=Path(named) if named else None)

    @classmethod
    def for_commands(cls) -> Clock:
        """The services' clock as a `carbon` command sees it: following CARBON_CLOCK_FILE, else
        the clock file of the embedded stack's default var dir, so that a command run in a
        rehearsal dates what it sends in the rehearsed time."""
        return cls(_start_from_env(), rate=_rate_from_env(), follow=rehearsal_clock_file())


def _start_from_env() -> datetime | None:
    start = os.environ.get("CARBON_CLOCK_START")
    return datetime.fromisoformat(start) if start else None


def _rate_from_env() -> float:
    return float(os.environ.get("CARBON_CLOCK_RATE", "1"))
