"""A lean stand-in for a provider's HTTP API, for benchmarks: an asyncio HTTP/1.1 server on
loopback that answers every POST with 200 and a JSON id after a fixed delay, and records each
call's Idempotency-Key, message id and arrival time.

The tests' threaded receiver (tests/helpers/processes.py) can also fail and hang on purpose; this
one only answers, cheaply, so the benchmark measures Lifeline rather than the stand-in (a real
provider runs on other machines).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    key: str
    message_id: int
    received: float


class LeanReceiver:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[Call] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def delivered(self) -> set[str]:
        return {call.key for call in self.calls}

    def first_received(self) -> dict[int, float]:
        found: dict[int, float] = {}
        for call in list(self.calls):
            found.setdefault(call.message_id, call.received)
        return found

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024)
        )
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/messages"
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(":", 1)
                    for line in head.decode("latin-1").split("\r\n")[1:]
                    if ":" in line
                )
                headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = time.time()
                message_id = int(json.loads(body)["message_id"])
                self.calls.append(Call(headers.get("idempotency-key", ""), message_id, received))
                await asyncio.sleep(self.delay)
                answer = json.dumps({"id": f"receiver-{len(self.calls)}"}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> LeanReceiver:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
