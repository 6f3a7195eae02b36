"""What `carbon up` runs and watches: the embedded broker and the service processes.

A process that exits is started again after a pause that doubles while it keeps failing before
it is ready (0.5 s, 1 s, 2 s ... at most 30 s), with a line saying so; only a process that keeps
failing at start is given up on. A broker that comes back is empty: its topics are created again
and every service republishes its history onto it (see carbon_platform.outbox).
"""

from __future__ import annotations

import asyncio
import http.client
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from carbon_contracts.catalogue import catalogue
from carbon_platform.broker import create_topics, start_tansu, stop_process

GIVE_UP_AFTER = 5
"""Failures in a row before ever being ready, after which a process is given up on."""


class GaveUp(RuntimeError):
    pass


@dataclass
class Supervised:
    """One process `carbon up` keeps running."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    is_ready: Callable[[], bool]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    started_at: float = 0.0
    failures: int = 0  # exits in a row before becoming ready
    restarts: int = 0
    restart_at: float | None = None
    announced: bool = field(default=False, repr=False)

    def launch(self) -> None:
        self.process = self.start()
        self.started_at = time.monotonic()
        self.ready = False
        self.restart_at = None

    def stop(self, deadline: float) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Supervisor:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.broker: Supervised | None = None
        self.services: list[Supervised] = []

    def add_broker(self, port: int, log: Path) -> str:
        bootstrap = f"127.0.0.1:{port}"

        def start() -> subprocess.Popen[bytes]:
            process = start_tansu(port, log)
            asyncio.run(create_topics(bootstrap, catalogue(), replace_misshapen=True))
            return process

        self.broker = Supervised("broker", start, lambda: True, log)
        return bootstrap

    def add_service(
        self, name: str, start: Callable[[], subprocess.Popen[bytes]], url: str, log: Path
    ) -> None:
        self.services.append(Supervised(name, start, lambda: _answers_ready(url), log))

    @property
    def everything(self) -> list[Supervised]:
        return ([self.broker] if self.broker else []) + self.services

    def start(self) -> None:
        for item in self.everything:
            item.launch()

    def all_ready(self) -> bool:
        return all(item.ready for item in self.everything)

    def check(self) -> None:
        """One round: notice exits, restart what is due, notice what became ready."""
        now = time.monotonic()
        for item in self.everything:
            process = item.process
            if process is not None and process.poll() is not None and item.restart_at is None:
                self._exited(item, process.returncode, now)
            if item.restart_at is not None and now >= item.restart_at:
                item.restarts += 1
                try:
                    item.launch()
                except RuntimeError as error:  # the broker's port is taken, say
                    self._exited(item, -1, time.monotonic(), reason=str(error))
            elif self._became_ready(item):
                item.ready, item.failures = True, 0
                if item.restarts:
                    took = time.monotonic() - item.started_at
                    self.say(f"{item.name} is back: ready {took:.1f}s after its restart")

    @staticmethod
    def _became_ready(item: Supervised) -> bool:
        running = item.process is not None and item.process.poll() is None
        return running and not item.ready and item.is_ready()

    def _exited(self, item: Supervised, code: int, now: float, reason: str = "") -> None:
        if not item.ready:
            item.failures += 1
        item.ready = False
        if item.failures >= GIVE_UP_AFTER:
            raise GaveUp(
                f"{item.name} failed {item.failures} times in a row before it was ready "
                f"(last exit code {code}); giving up. See {item.log}"
            )
        pause = min(0.5 * 2 ** max(item.failures - 1, 0), 30.0)
        item.restart_at = now + pause
        why = reason or f"exited with code {code}"
        self.say(f"{item.name} {why}; restarting it in {pause:.1f}s (see {item.log})")

    def stop(self, timeout: float = 20) -> None:
        """Services first, while the broker is still there for them to leave their groups."""
        deadline = time.monotonic() + timeout
        for item in self.services:
            if item.process is not None and item.process.poll() is None:
                item.process.terminate()
        for item in self.services:
            item.stop(deadline)
        if self.broker is not None and self.broker.process is not None:
            stop_process(self.broker.process)


def _answers_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as reply:
            return bool(reply.status == 200)
    except (OSError, http.client.HTTPException):
        # Not HTTP yet: e.g. before the service listens, a connection to a port in the ephemeral
        # range can meet itself (TCP self-connect) and read back its own request line.
        return False
