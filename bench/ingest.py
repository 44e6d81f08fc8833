"""Ingestion benchmark: the API on PostgreSQL with Redis and a real worker, against the ceiling.

Measures, in one run on this machine:
  (a) a bare FastAPI endpoint that only validates the same payload (the machine's ceiling);
  (b) POST /v1/track, one event per request, each committed before its response;
  (c) POST /v1/batch, 100 events per request.
and prints events/s, p50/p99 latency and the ratio (b)/(a).

    .venv/bin/python bench/ingest.py [--seconds 15] [--api-workers 2] [--connections 32]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Result, request_bytes, run

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432"
DB_NAME = "lifeline_bench"
REDIS = "redis://127.0.0.1:6379/13"


def _admin_engine():  # type: ignore[no-untyped-def]
    return create_engine(
        f"{PG.replace('postgresql', 'postgresql+psycopg')}/test", isolation_level="AUTOCOMMIT"
    )


def fresh_database() -> str:
    with _admin_engine().connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {DB_NAME}"))
    return f"{PG}/{DB_NAME}"


def count_events(url: str) -> tuple[int, int]:
    engine = create_engine(url.replace("postgresql", "postgresql+psycopg"))
    with engine.connect() as conn:
        total = conn.scalar(text("SELECT count(*) FROM events"))
        done = conn.scalar(text("SELECT count(*) FROM events WHERE processed_at IS NOT NULL"))
    engine.dispose()
    return int(total or 0), int(done or 0)


@contextmanager
def process(args: list[str], env: dict[str, str], port: int | None = None) -> Iterator[None]:
    proc = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        if port is not None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        stderr = proc.stderr.read().decode() if proc.stderr else ""
                        raise RuntimeError(stderr) from None
                    time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def track_payload(counter: Iterator[int]) -> Callable[[], bytes]:
    def make() -> bytes:
        n = next(counter)
        return orjson.dumps(
            {
                "userId": f"user-{n % 5000}",
                "event": "Order Completed",
                "messageId": f"bench-{n}",
                "properties": {"order_id": str(n), "revenue": 25.5, "currency": "USD"},
                "context": {"library": {"name": "bench"}, "locale": "en-US"},
                "timestamp": "2026-11-21T10:00:00Z",
            }
        )

    return make


def batch_payload(counter: Iterator[int], size: int) -> Callable[[], bytes]:
    one = track_payload(counter)

    def make() -> bytes:
        items = [orjson.loads(one()) | {"type": "track"} for _ in range(size)]
        return orjson.dumps({"batch": items, "sentAt": "2026-11-21T10:00:01Z"})

    return make


def measure(
    port: int,
    path: str,
    headers: dict[str, str],
    body: Callable[[], bytes],
    connections: int,
    seconds: float,
) -> Result:
    make = lambda: request_bytes(path, headers, body())  # noqa: E731
    asyncio.run(run("127.0.0.1", port, make, connections, min(3.0, seconds)))  # warm-up
    return asyncio.run(run("127.0.0.1", port, make, connections, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    url = fresh_database()
    env = {
        **os.environ,
        "LIFELINE_DATABASE_URL": url,
        "LIFELINE_BROKER_URL": REDIS,
        "LIFELINE_LOG_LEVEL": "WARNING",
        "LIFELINE_SWEEP_GRACE_SECONDS": "600",
    }
    subprocess.run(
        [BIN / "lifeline", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True
    )
    created = subprocess.run(
        [BIN / "lifeline", "sources", "create", "bench"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    subprocess.run(["redis-cli", "-n", "13", "flushdb"], check=True, capture_output=True)
    auth = {
        "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    counter = itertools.count()
    workers = str(args.api_workers)
    print(
        f"machine: {os.cpu_count()} cores; API and ceiling: {workers} uvicorn workers; "
        f"{args.connections} connections ({args.batch_connections} for batches); "
        f"{args.seconds:.0f}s per scenario; a worker process runs throughout"
    )

    results: dict[str, tuple[Result, int]] = {}
    with process([str(BIN / "lifeline"), "worker", "--processes", "1", "--threads", "8"], env):
        with process(
            [
                str(BIN / "uvicorn"),
                "bench.bare_app:app",
                "--port",
                "8701",
                "--workers",
                workers,
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env,
            port=8701,
        ):
            results["(a) bare FastAPI, validate only"] = (
                measure(
                    8701, "/v1/track", auth, track_payload(counter), args.connections, args.seconds
                ),
                1,
            )
        with process(
            [str(BIN / "lifeline"), "api", "--port", "8702", "--workers", workers], env, port=8702
        ):
            results["(b) POST /v1/track"] = (
                measure(
                    8702, "/v1/track", auth, track_payload(counter), args.connections, args.seconds
                ),
                1,
            )
            results[f"(c) POST /v1/batch x{args.batch_size}"] = (
                measure(
                    8702,
                    "/v1/batch",
                    auth,
                    batch_payload(counter, args.batch_size),
                    args.batch_connections,
                    args.seconds,
                ),
                args.batch_size,
            )
        stored, processed = count_events(url)

    print(
        f"\n{'scenario':36} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
    )
    for name, (r, per_request) in results.items():
        print(
            f"{name:36} {r.rps:9.0f} {r.rps * per_request:10.0f} {r.p50:8.1f} "
            f"{r.percentile(99):8.1f} {r.errors:7d}"
        )
    a = results["(a) bare FastAPI, validate only"][0]
    b = results["(b) POST /v1/track"][0]
    print(f"\nratio (b)/(a): {b.rps / a.rps:.0%} of the ceiling's requests/s")
    print(f"events stored: {stored}; processed by the worker when the run ended: {processed}")


if __name__ == "__main__":
    main()
