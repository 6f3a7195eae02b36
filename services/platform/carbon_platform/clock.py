"""The one source of "now". A demo or test can start the clock at any instant of the cycle."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock time, optionally shifted so that it starts at `start` and runs on from there."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("clock start must carry a UTC offset")
        self._offset = start - datetime.now(UTC) if start else timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    @classmethod
    def from_env(cls) -> Clock:
        start = os.environ.get("CARBON_CLOCK_START")
        return cls(datetime.fromisoformat(start) if start else None)
