"""`carbon sink webhook` and `carbon sink smtp`: the walk-through's local receivers, run as the
person walking through runs them (the installed `carbon`, in a process of its own), and fed
what the notifier sends: its own signature and its own mail."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import IO

import httpx
import pytest

from carbon_platform.sinks import MAX_AGE_S, MAX_BODY_BYTES, describe, is_fresh, mail_line, verify
from notifier.delivery import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    body_of,
    sign,
)
from tests.support import free_port

CARBON = Path(sys.executable).with_name("carbon")
CODE = "91310115MA1K4C8N0W"
SECRET = "5f" * 32
SUBJECT = "履约清缴已逾期 / surrender overdue"
NOTICE = SimpleNamespace(
    id=12,
    recipient_type="entity",
    recipient_id=CODE,
    credit_code=CODE,
    event_type="surrender.overdue",
    event_id="0f3c5a52-6d0e-4f7a-9d0e-0d5c3a2b1e11",
    subject=SUBJECT,
    message="The surrender deadline has passed.",
    created_at=datetime(2025, 7, 1, tzinfo=UTC),
)
BODY = json.loads(body_of(NOTICE))
"""The notifier's own body for a delivery, so that the sinks read what it really sends."""
STARTUP_S = 20.0
LINE_S = 10.0


class Sink:
    """A `carbon sink ...` process whose stdout lines are collected by a reader thread, so that
    a test can wait for a line with a deadline."""

    def __init__(self, *arguments: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        self.process = subprocess.Popen(
            [str(CARBON), "sink", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self.closed = False
        self._changed = threading.Condition()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def line(self, starting: str, *, after: int = 0, timeout: float = LINE_S) -> str:
        """The first line from the `after`-th on that starts with `starting`, waited for."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines[after:] if line.startswith(starting)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:  # the deadline, or the process gone
                    raise AssertionError(
                        f"no line starting {starting!r} within {timeout}s; got {self.lines}"
                    )
                self._changed.wait(min(left, 0.2))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def started(*arguments: str) -> Iterator[Sink]:
    sink = Sink(*arguments)
    try:
        sink.line(f"{arguments[0]} sink listening on", timeout=STARTUP_S)
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def port() -> int:
    return free_port()


def post(port: int, body: bytes, *, secret: str = SECRET, delivery: int = 12) -> httpx.Response:
    """A request as the notifier's `_webhook` sends it."""
    timestamp = int(time.time())
    return httpx.post(
        f"http://127.0.0.1:{port}/hooks/carbon",
        content=body,
        headers={
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            DELIVERY_HEADER: str(delivery),
        },
        timeout=5,
    )


def encoded(document: dict[str, object]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


# verify, against the notifier's own signature


def test_verify_accepts_what_the_notifier_signs() -> None:
    body = encoded(BODY)
    assert verify(SECRET, "1751328000", body, sign(SECRET, 1751328000, body))


@pytest.mark.parametrize(
    ("secret", "timestamp", "body"),
    [
        ("another secret", "1751328000", encoded(BODY)),  # signed with another secret
        (SECRET, "1751328001", encoded(BODY)),  # the timestamp moved: a replay
        (SECRET, "1751328000", encoded({**BODY, "subject": "forged"})),  # the body changed
    ],
)
def test_verify_refuses_a_signature_of_anything_else(
    secret: str, timestamp: str, body: bytes
) -> None:
    assert not verify(secret, timestamp, body, sign(SECRET, 1751328000, encoded(BODY)))


def test_verify_refuses_a_malformed_header_without_raising() -> None:
    body = encoded(BODY)
    assert not verify(SECRET, "1751328000", body, "")
    assert not verify(SECRET, "1751328000", body, "sha256=签名")  # non-ASCII: no TypeError
    digest = sign(SECRET, 1751328000, body).removeprefix("sha256=")
    assert not verify(SECRET, "1751328000", body, digest)  # the prefix is part of it


def test_describe_takes_what_the_body_offers() -> None:
    assert describe(encoded(BODY)) == f"surrender.overdue for {CODE}: {SUBJECT}"
    district = {**BODY, "credit_code": None, "recipient_type": "district", "recipient_id": "PD"}
    assert describe(encoded(district)) == f"surrender.overdue for district PD: {SUBJECT}"
    assert describe(b"not json") == "body is not JSON (8 bytes)"
    assert describe(b"[1]") == "body is JSON but not an object (3 bytes)"


# the webhook sink


@pytest.fixture
def webhook(port: int) -> Iterator[Sink]:
    with started("webhook", "--port", str(port), "--secret", SECRET) as sink:
        yield sink


def test_a_signed_delivery_is_answered_204_and_printed(webhook: Sink, port: int) -> None:
    response = post(port, encoded(BODY))
    assert response.status_code == 204
    line = webhook.line("webhook delivery 12:")
    assert line == f"webhook delivery 12: signature valid; surrender.overdue for {CODE}: {SUBJECT}"


def test_a_delivery_signed_with_another_secret_is_answered_401(webhook: Sink, port: int) -> None:
    response = post(port, encoded(BODY), secret="not the subscription's secret", delivery=13)
    assert response.status_code == 401
    assert webhook.line("webhook delivery 13:").startswith(
        "webhook delivery 13: signature INVALID; surrender.overdue"
    )


def test_a_request_without_a_signature_is_answered_401(webhook: Sink, port: int) -> None:
    response = httpx.post(f"http://127.0.0.1:{port}/", content=encoded(BODY), timeout=5)
    assert response.status_code == 401
    # No delivery header: the body's delivery_id names it.
    assert webhook.line("webhook delivery 12:").startswith(
        f"webhook delivery 12: signature INVALID (no {SIGNATURE_HEADER} header);"
    )


def test_an_oversized_body_is_refused_unread(webhook: Sink, port: int) -> None:
    # Only the headers: the sink answers from them, without waiting for the body.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
        )
        answer = connection.recv(1024)
    assert answer.startswith(b"HTTP/1.0 413 ")
    assert webhook.line("webhook request refused:") == (
        f"webhook request refused: Content-Length {MAX_BODY_BYTES + 1}; answered 413"
    )


def test_fail_answers_500_to_the_first_requests_then_204(port: int) -> None:
    with started("webhook", "--port", str(port), "--secret", SECRET, "--fail", "1") as sink:
        assert post(port, encoded(BODY)).status_code == 500
        first = sink.line("webhook delivery 12:")
        assert "signature valid; answered 500 (--fail 1/1)" in first
        seen = len(sink.lines)
        assert post(port, encoded(BODY)).status_code == 204  # the notifier's retry
        assert sink.line("webhook delivery 12:", after=seen) == (
            f"webhook delivery 12: signature valid; surrender.overdue for {CODE}: {SUBJECT}"
        )


# the SMTP sink


def test_a_mail_is_taken_and_printed(port: int) -> None:
    with started("smtp", "--port", str(port)) as sink:
        mail = EmailMessage()
        mail["From"] = "notifier@carbon.example"
        mail["To"] = "ehs@example.com"
        mail["Subject"] = SUBJECT
        mail[DELIVERY_HEADER] = "12"
        mail.set_content("\nThe surrender deadline has passed.\nSecond line.\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            refused = smtp.send_message(mail, to_addrs=["ehs@example.com", "bureau@example.com"])
        assert refused == {}
        assert sink.line("mail to") == (
            f"mail to ehs@example.com, bureau@example.com: {SUBJECT} (delivery 12)"
            " — The surrender deadline has passed."
        )


def test_a_mail_line_without_body_or_subject() -> None:
    assert mail_line(["a@example.com"], b"From: x@example.com\r\n\r\n") == (
        "mail to a@example.com: (no subject)"
    )


def test_a_port_taken_is_a_clear_refusal(webhook: Sink, port: int) -> None:
    result = subprocess.run(
        [str(CARBON), "sink", "webhook", "--port", str(port), "--secret", SECRET],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_timestamp_more_than_five_minutes_from_now_is_stale() -> None:
    now = 1_750_000_000.0
    assert is_fresh("1750000000", now=now)
    assert is_fresh(str(int(now) - MAX_AGE_S), now=now)
    assert is_fresh(str(int(now) + MAX_AGE_S), now=now)
    assert not is_fresh(str(int(now) - MAX_AGE_S - 1), now=now)
    assert not is_fresh(str(int(now) + MAX_AGE_S + 1), now=now)
    assert not is_fresh("soon", now=now)
