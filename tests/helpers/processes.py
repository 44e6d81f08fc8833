"""A webhook receiver on loopback for tests and benchmarks with real worker processes.

It stands in for a provider that honours Idempotency-Key: every call is recorded, and the
keys it accepted are what such a provider would deliver, once each.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Failure = Literal["503", "timeout"]


@dataclass(frozen=True)
class Call:
    key: str
    message_id: int
    received: float  # time.time() when the request arrived
    accepted: bool  # answered 2xx, or would have (a provider that timed out still delivers)
    signed: bool  # the signature matched the body


class Server(ThreadingHTTPServer):
    # Workers open many connections at once; the default backlog of 5 resets some of them.
    request_queue_size = 1024


class Receiver:
    """A threaded HTTP server: delays each answer by `delay` seconds and fails the first
    `fail_first` calls, with a 503 or by answering only after `hang` seconds (a timeout)."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        fail_first: int = 0,
        failure: Failure = "503",
        hang: float = 2.0,
        secret: str | None = None,
    ):
        self.delay, self.fail_first, self.failure, self.hang = delay, fail_first, failure, hang
        self.secret = secret.encode() if secret else None
        self.calls: list[Call] = []
        self.in_flight = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real provider's API

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, wait = receiver.record(body, self.headers)
                try:
                    time.sleep(wait)
                    answer = json.dumps({"id": f"receiver-{len(receiver.calls)}"}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up (timeout) or was killed
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/messages"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def record(self, body: bytes, headers: Any) -> tuple[int, float]:
        """Record one call; returns the status to answer with and how long to wait first."""
        received = time.time()
        signed = True
        if self.secret is not None:
            expected = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            signed = hmac.compare_digest(
                headers.get("X-Lifeline-Signature", ""), f"sha256={expected}"
            )
        with self.lock:
            failing = len(self.calls) < self.fail_first
            rejected = failing and self.failure == "503"
            key = headers.get("Idempotency-Key", "")
            message_id = int(json.loads(body)["message_id"])
            self.calls.append(Call(key, message_id, received, not rejected, signed))
            self.in_flight += 1
        if rejected:
            return 503, self.delay
        return 200, self.hang if failing else self.delay

    def delivered(self) -> set[str]:
        """The distinct keys accepted: what a provider that honours the key delivers."""
        with self.lock:
            return {c.key for c in self.calls if c.accepted}

    def first_received(self) -> dict[int, float]:
        """When each message first reached the receiver, by message id."""
        with self.lock:
            found: dict[int, float] = {}
            for call in self.calls:
                found.setdefault(call.message_id, call.received)
            return found

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        with contextlib.suppress(OSError):
            self.server.server_close()
        self.thread.join(5)
