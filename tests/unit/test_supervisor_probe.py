"""`carbon up`'s readiness probe: anything but an HTTP 200 from /health/ready is "not ready"."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from carbon_platform.supervisor import _answers_ready


@contextmanager
def echoing_listener() -> Iterator[str]:
    """A port that answers a request with the request's own bytes, as a TCP self-connect does."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.sendall(connection.recv(4096))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        thread.join(timeout=5)


def test_a_port_that_echoes_the_request_is_not_ready() -> None:
    # Seen in CI: a probe of a port in the ephemeral range, before the service listened, read
    # back "GET /health/ready HTTP/1.1" and the HTTP client raised BadStatusLine.
    with echoing_listener() as url:
        assert _answers_ready(url) is False


def test_a_port_nobody_listens_on_is_not_ready() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _answers_ready(f"http://127.0.0.1:{port}") is False
