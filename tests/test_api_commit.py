"""A 2xx from the admin API means committed: the request's unit of work commits before the
response is sent (service.kit.deps.UnitOfWork), so a client that has read the answer finds
the change in the database, and hanging up right afterwards loses nothing."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tests.helpers.api import ADMIN_TOKEN, LiveServer
from tests.helpers.consent import suppressions

SLOW_COMMIT_SECONDS = 0.5


@pytest.fixture
def slow_server_commits(live_server: LiveServer) -> Iterator[None]:
    """Commits in the server take half a second: a response sent before its commit would
    reach the client while the row is still missing, every time (not only when the timing
    happens to be unlucky)."""

    def slow(session: Session) -> None:
        if threading.current_thread() is live_server.thread:
            time.sleep(SLOW_COMMIT_SECONDS)

    event.listen(Session, "before_commit", slow)
    yield
    event.remove(Session, "before_commit", slow)


def http_request(port: int, method: str, path: str, body: dict[str, Any]) -> socket.socket:
    payload = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + payload)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of one response (the connection stays open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), json.loads(body)


def hang_up(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client that crashed or was killed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_an_admin_write_is_committed_when_its_response_arrives(
    live_server: LiveServer, slow_server_commits: None, engine: Engine
) -> None:
    sock = http_request(
        live_server.port, "POST", "/v1/suppressions", {"channel": "email", "address": "a@x.io"}
    )
    try:
        status, body = read_response(sock)
        assert (status, body["address"]) == (201, "a@x.io")
        assert suppressions(engine) == [("email", "a@x.io", "admin")]
    finally:
        hang_up(sock)
    time.sleep(SLOW_COMMIT_SECONDS)
    assert suppressions(engine) == [("email", "a@x.io", "admin")]
