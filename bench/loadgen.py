"""A small closed-loop HTTP/1.1 load generator: keep-alive connections, no client library.

Each connection sends a request, waits for the whole response, records the latency and
sends the next. It is lean so that, on a small machine, most CPU goes to the server measured.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


def request_bytes(path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def _connection(
    host: str, port: int, make_request: Callable[[], bytes], stop_at: float, result: Result
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            payload = make_request()
            started = time.perf_counter()
            writer.write(payload)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            if not status_line.startswith(b"HTTP/1.1 2"):
                result.errors += 1
    finally:
        writer.close()


async def run(
    host: str, port: int, make_request: Callable[[], bytes], connections: int, seconds: float
) -> Result:
    result = Result(0, 0, seconds, [])
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_connection(host, port, make_request, stop_at, result) for _ in range(connections))
    )
    result.seconds = time.perf_counter() - started
    return result
