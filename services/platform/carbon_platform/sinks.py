"""`carbon sink ...`: receivers on this machine for what the notifier delivers, so that a
walk-through sees its webhook requests and e-mails with nothing but the project installed.

`carbon sink webhook` checks each request's signature as a subscriber would and prints what it
got; `carbon sink smtp` takes every mail and prints who it was for and its subject. Both bind
127.0.0.1 only and run until Ctrl-C. The notifier's wire format (headers, signed text, JSON body)
is restated here rather than imported: the platform never depends on a service."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any

import typer

HOST = "127.0.0.1"
SIGNATURE_HEADER = "X-Carbon-Signature"
TIMESTAMP_HEADER = "X-Carbon-Timestamp"
DELIVERY_HEADER = "X-Carbon-Delivery"
MAX_BODY_BYTES = 1_048_576
"""A notice is a few hundred bytes; anything far larger is not the notifier's."""
MAX_LINE = 200
"""A mail's first body line is cut here, so that one mail stays one line."""

sink = typer.Typer(
    help="Local receivers for the notifier's deliveries: a webhook endpoint and an SMTP server.",
    no_args_is_help=True,
)

Port = Annotated[int, typer.Option(min=1, max=65535, help="port on 127.0.0.1")]


MAX_AGE_S = 300


def is_fresh(timestamp: str, *, now: float) -> bool:
    """Whether the signed timestamp (Unix seconds) is within MAX_AGE_S of `now`: a request
    captured and replayed later is refused even with its valid signature."""
    try:
        return abs(now - int(timestamp)) <= MAX_AGE_S
    except ValueError:
        return False


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether `header` is `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, over the
    raw body bytes as received, compared in constant time (the timestamp's age is checked
    apart: `is_fresh`)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    expected = f"sha256={digest.hexdigest()}".encode()
    # Bytes, not str: compare_digest refuses a str with non-ASCII characters, which a forged
    # header may well carry.
    return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), expected)


def describe(body: bytes) -> str:
    """What the body says, as far as it says it: `<event type> for <whom>: <subject>`."""
    try:
        document = json.loads(body)
    except ValueError:
        return f"body is not JSON ({len(body)} bytes)"
    if not isinstance(document, dict):
        return f"body is JSON but not an object ({len(body)} bytes)"
    event_type = document.get("event_type") or "notice"
    whom = document.get("credit_code") or " ".join(
        str(document[key]) for key in ("recipient_type", "recipient_id") if document.get(key)
    )
    text = f"{event_type} for {whom}" if whom else str(event_type)
    subject = document.get("subject")
    return f"{text}: {subject}" if subject else text


class _FailFirst:
    """Counts requests across the server's threads: the first `n` are to be answered 500."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._taken = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        """This request's place among the failures (1 to n), or 0 once they are all spent."""
        with self._lock:
            if self._taken >= self.n:
                return 0
            self._taken += 1
            return self._taken


def _webhook_handler(secret: str, fail: _FailFirst) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            declared = self.headers.get("Content-Length") or "0"
            length = int(declared) if declared.isdigit() else -1
            if not 0 <= length <= MAX_BODY_BYTES:
                status = 400 if length < 0 else 413
                typer.echo(f"webhook request refused: Content-Length {declared}; answered {status}")
                self._answer(status)
                return
            body = self.rfile.read(length)
            delivery = self.headers.get(DELIVERY_HEADER)
            if delivery is None and (document := _object(body)):
                delivery = document.get("delivery_id")
            signature = self._check(body)
            status = 204 if signature == "valid" else 401
            answered = ""
            if failure := fail.take():
                status = 500
                answered = f"; answered 500 (--fail {failure}/{fail.n})"
            typer.echo(
                f"webhook delivery {delivery if delivery is not None else '?'}: "
                f"signature {signature}{answered}; {describe(body)}"
            )
            self._answer(status)

        def _check(self, body: bytes) -> str:
            timestamp = self.headers.get(TIMESTAMP_HEADER)
            header = self.headers.get(SIGNATURE_HEADER)
            if timestamp is None or header is None:
                missing = SIGNATURE_HEADER if header is None else TIMESTAMP_HEADER
                return f"INVALID (no {missing} header)"
            if not verify(secret, timestamp, body, header):
                return "INVALID"
            if not is_fresh(timestamp, now=time.time()):
                return f"INVALID (timestamp {timestamp} more than {MAX_AGE_S} s from now)"
            return "valid"

        def _answer(self, status: int) -> None:
            self.send_response(status)
            if status != 204:  # a 204 carries no Content-Length (RFC 9110)
                self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: each request has its own line on stdout already."""

    return Handler


def _object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


@sink.command("webhook")
def webhook(
    secret: Annotated[
        str, typer.Option(help="the subscription's secret (shown once, when it was created)")
    ],
    port: Port = 9100,
    fail: Annotated[
        int, typer.Option(min=0, help="answer 500 to the first N requests, to show retries")
    ] = 0,
) -> None:
    """Receive the notifier's webhook requests, check each signature, print one line each.

    Any path takes a POST: 204 when its signature is valid, 401 when it is not (with --fail N,
    the first N requests get 500 whatever they carry, so that the notifier retries them).
    A timestamp more than 5 minutes from real time is refused too, as a replayed request (the
    notifier signs with real time, also on a rehearsal clock). Runs until Ctrl-C.
    """
    try:
        server = ThreadingHTTPServer((HOST, port), _webhook_handler(secret, _FailFirst(fail)))
    except OSError as error:
        typer.echo(f"cannot listen on {HOST}:{port}: {error}", err=True)
        raise typer.Exit(1) from error
    server.daemon_threads = True
    failing = f", answering 500 to the first {fail}" if fail else ""
    typer.echo(f"webhook sink listening on http://{HOST}:{server.server_port}/{failing}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped.")
    finally:
        server.server_close()


class _Mailbox:
    """aiosmtpd's handler: accepts every mail and prints one line for it."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        typer.echo(mail_line(list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def mail_line(recipients: list[str], content: bytes) -> str:
    """`mail to <recipients>: <subject> (delivery <id>) — <first body line>`."""
    mail = message_from_bytes(content, policy=policy.default)
    line = f"mail to {', '.join(recipients)}: {mail.get('Subject', '(no subject)')}"
    if delivery := mail.get(DELIVERY_HEADER):
        line += f" (delivery {delivery})"
    if first := _first_line(mail):
        line += f" — {first}"
    return line


def _first_line(mail: Any) -> str:
    if not isinstance(mail, EmailMessage):
        return ""
    part = mail.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    try:
        text = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        return ""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return first if len(first) <= MAX_LINE else first[: MAX_LINE - 1] + "…"


@sink.command("smtp")
def smtp(port: Port = 8025) -> None:
    """Take every mail over SMTP and print one line each: recipients, subject, first line.

    Point the notifier at it with CARBON_SMTP_HOST=127.0.0.1 and CARBON_SMTP_PORT=<port>.
    Runs until Ctrl-C.
    """
    try:
        asyncio.run(_serve_smtp(port))
    except KeyboardInterrupt:
        typer.echo("stopped.")


async def _serve_smtp(port: int) -> None:
    # A dev dependency: imported here, so that the rest of `carbon` loads without it.
    try:
        from aiosmtpd.smtp import SMTP
    except ImportError as error:
        typer.echo("carbon sink smtp needs aiosmtpd (`make setup` installs it)", err=True)
        raise typer.Exit(1) from error
    loop = asyncio.get_running_loop()
    mailbox = _Mailbox()
    try:
        server = await loop.create_server(
            # hostname given: SMTP's default looks up this machine's FQDN, which may wait on DNS.
            lambda: SMTP(mailbox, hostname="carbon-sink", enable_SMTPUTF8=True, loop=loop),
            host=HOST,
            port=port,
        )
    except OSError as error:
        typer.echo(f"cannot listen on {HOST}:{port}: {error}", err=True)
        raise typer.Exit(1) from error
    bound = server.sockets[0].getsockname()[1]
    typer.echo(f"smtp sink listening on {HOST}:{bound}")
    async with server:
        await server.serve_forever()
