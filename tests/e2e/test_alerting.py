"""Alerts that reach someone, for real: the stack as `carbon up` runs it, a real Prometheus with
the shipped rules, a real Alertmanager (Debian's) with the shipped config pointed at this stack's
notifier. A stopped service fires CarbonServiceDown; Alertmanager posts it to the notifier, which
tells the Bureau (its notice names the alert and its runbook) and delivers the notice to the
Bureau's webhook, signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import (
    REPO,
    Database,
    free_port,
    prometheus_query,
    running_platform,
    running_prometheus,
    service_pids,
    token,
    wait_until,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
        reason="needs Debian's prometheus and prometheus-alertmanager (make tools)",
    ),
]

DATABASE = Database.for_test()
ALERT = "CarbonServiceDown"
RUNBOOK = f"deploy/runbooks/{ALERT}.md"
STOPPED = "verification"  # the notifier must keep running: it is the one told


@contextmanager
def running_alertmanager(tmp_path: Path, notifier: str, bearer: str) -> Iterator[str]:
    """Debian's Alertmanager with deploy/alertmanager/alertmanager.yml as shipped but for where
    the notifier is and the token file it sends (a Bureau token of this stack); no cluster.
    Yields its base URL once ready."""
    config = yaml.safe_load((REPO / "deploy/alertmanager/alertmanager.yml").read_text())
    [receiver] = [r for r in config["receivers"] if r["name"] == config["route"]["receiver"]]
    [webhook] = receiver["webhook_configs"]
    token_file = tmp_path / "alertmanager.token"
    token_file.write_text(bearer)
    token_file.chmod(0o600)
    webhook["url"] = f"{notifier}/alerts"
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError((tmp_path / "alertmanager.log").read_text()[-3000:])
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=60, what="Alertmanager ready")
        yield url
    finally:
        process.terminate()
        process.wait(20)


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A subscriber's endpoint: answers 204 to every POST and keeps (headers, body)."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def bureau_alert_notices(notifier: str) -> list[dict[str, Any]]:
    reply = httpx.get(
        f"{notifier}/notifications",
        params={"recipient_type": "bureau", "event_type": "alert.firing"},
        headers=token("regulator"),
        timeout=5,
    )
    assert reply.status_code == 200, reply.text
    notices: list[dict[str, Any]] = reply.json()
    return [n for n in notices if n["subject"].startswith(f"[FIRING critical] {ALERT}: {STOPPED}")]


def test_a_stopped_service_fires_an_alert_that_reaches_the_bureau(tmp_path: Path) -> None:
    for folder in ("stack", "prometheus", "alertmanager"):
        (tmp_path / folder).mkdir()
    with running_platform(tmp_path / "stack", DATABASE) as platform, webhook_receiver() as hook:
        notifier = platform.urls["notifier"]
        hook_url, received = hook
        subscribed = httpx.post(
            f"{notifier}/subscriptions",
            json={"channel": "webhook", "url": hook_url},
            headers=token("regulator"),
            timeout=10,
        )
        assert subscribed.status_code == 201, subscribed.text
        secret = subscribed.json()["secret"]
        bearer = token("regulator")["Authorization"].removeprefix("Bearer ")

        with (
            running_alertmanager(tmp_path / "alertmanager", notifier, bearer) as alertmanager,
            running_prometheus(
                tmp_path / "prometheus",
                platform.urls,
                scrape_interval="1s",
                alertmanager=alertmanager,
            ) as api,
        ):
            wait_until(
                lambda: len(prometheus_query(api, "up == 1")) == len(platform.urls),
                timeout=60,
                what="every service scraped",
            )
            pids = service_pids(platform.var_dir, STOPPED)
            assert pids
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)  # stopped: no answer, and not restarted
            try:
                # Down for the rule's 1m, then Alertmanager's group_wait (30s) as shipped.
                [notice] = wait_until(
                    lambda: bureau_alert_notices(notifier), timeout=240, what="the alert notice"
                )
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)

            firing = prometheus_query(api, f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}')
            assert [a["metric"]["job"] for a in firing] == [STOPPED]
            instance = firing[0]["metric"]["instance"]
            assert notice["credit_code"] is None
            assert (notice["recipient_type"], notice["recipient_id"]) == ("bureau", "bureau")
            assert f"Runbook: {RUNBOOK}" in notice["message"]
            assert f"instance={instance}, job={STOPPED}" in notice["message"]
            assert (REPO / RUNBOOK).is_file()

            # Delivered to the Bureau's webhook like any notice, signed with its secret.
            def delivered() -> list[dict[str, Any]]:
                return [
                    json.loads(body)
                    for headers, body in list(received)
                    if json.loads(body)["event_id"] == notice["event_id"]
                    and headers["x-carbon-signature"] == signature(secret, headers, body)
                ]

            [document] = wait_until(delivered, timeout=60, what="the webhook delivery")
            assert document["event_type"] == "alert.firing"
            assert document["subject"] == notice["subject"]
            assert RUNBOOK in document["message"]


def signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    expected = hmac.new(
        secret.encode(), f"{headers['x-carbon-timestamp']}.".encode() + body, hashlib.sha256
    )
    return f"sha256={expected.hexdigest()}"
