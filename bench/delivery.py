"""Delivery benchmark: real api, worker and scheduler processes on PostgreSQL and Redis, sending
through the webhook provider to a receiver on loopback that answers after 50 ms.

Measures, in one run on this machine:
  (1) sends per second draining a backlog of N queued messages (the sign-ups are processed
      with no worker running, so only the sends are timed);
  (2) event-to-provider-call latency p50/p99 under a steady rate of Signed Up events: each
      event's timestamp against the time the receiver got its welcome email.
Both check that provider calls (distinct idempotency keys, and raw calls) equal messages.

    .venv/bin/python bench/delivery.py [--backlog 12000] [--rate 200] [--seconds 20]
        [--processes 4] [--threads 2] [--worker-timeout-ms 100] [--send-concurrency 32]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Redis on 127.0.0.1:6379 (uses and
empties database 12).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.receiver import LeanReceiver  # noqa: E402
from service.kit.settings import Settings  # noqa: E402
from tests.helpers.deployment import (  # noqa: E402
    Processes,
    clean_env,
    free_port,
    wait_for_http,
)
from tests.helpers.polling import eventually  # noqa: E402
from tests.helpers.rules import WELCOME, RulePack  # noqa: E402
from workers import events  # noqa: E402
from workers.actors import build_runtime  # noqa: E402

BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432"
DB_NAME = "lifeline_bench_delivery"
REDIS = "redis://127.0.0.1:6379/12"


def fresh_database() -> str:
    admin = create_engine(f"{PG.replace('postgresql', 'postgresql+psycopg')}/test")
    with admin.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {DB_NAME}"))
    admin.dispose()
    return f"{PG}/{DB_NAME}"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, receiver: LeanReceiver):
        self.args, self.receiver = args, receiver
        self.database_url = fresh_database()
        rules = RulePack(workdir / "rules").rules(WELCOME).settled().write()
        self.env = clean_env(
            LIFELINE_DATABASE_URL=self.database_url,
            LIFELINE_BROKER_URL=REDIS,
            LIFELINE_RULES_DIR=str(rules),
            LIFELINE_SECRET_KEY="bench-secret-key",
            LIFELINE_EMAIL_PROVIDER="webhook-email",
            LIFELINE_WEBHOOK_URL=receiver.url,
            LIFELINE_WORKER_TIMEOUT_MS=str(args.worker_timeout_ms),
            LIFELINE_SCHEDULER_INTERVAL_SECONDS="0.5",
            LIFELINE_DB_POOL_SIZE=str(args.threads + 4),
            LIFELINE_SEND_CONCURRENCY=str(args.send_concurrency),
            LIFELINE_LOG_LEVEL="WARNING",
        )
        self.procs = Processes(workdir / "logs")
        self.engine: Engine = create_engine(
            self.database_url.replace("postgresql", "postgresql+psycopg")
        )
        self.api_url = ""

    def lifeline(self, *args: str) -> list[str]:
        return [str(BIN / "lifeline"), *args]

    def start_api(self) -> str:
        port = free_port()
        api = self.procs.start("api", self.lifeline("api", "--port", str(port)), self.env, ROOT)
        self.api_url = f"http://127.0.0.1:{port}"
        wait_for_http(api, f"{self.api_url}/healthz")
        out = self.procs.run(self.lifeline("sources", "create", "bench"), self.env, ROOT)
        return out.strip().splitlines()[-1]

    def start_workers(self) -> None:
        args = ["--processes", str(self.args.processes), "--threads", str(self.args.threads)]
        self.procs.start("worker", self.lifeline("worker", *args), self.env, ROOT)
        self.procs.start("scheduler", self.lifeline("scheduler"), self.env, ROOT)

    def post(self, write_key: str, calls: list[dict[str, object]]) -> None:
        with httpx.Client(base_url=self.api_url, auth=(write_key, ""), timeout=60) as client:
            for start in range(0, len(calls), 500):
                response = client.post("/v1/batch", json={"batch": calls[start : start + 500]})
                response.raise_for_status()

    def scalar(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(text(sql)) or 0)

    def wait_sent(self, expected: int, timeout: float) -> None:
        eventually(
            lambda: self.scalar("SELECT count(*) FROM messages WHERE status = 'sent'"),
            until=lambda sent: sent >= expected,
            timeout=timeout,
            interval=0.05,
            what=f"{expected} messages sent",
        )

    def check_calls(self, expected: int) -> str:
        messages = self.scalar("SELECT count(*) FROM messages")
        distinct, raw = len(self.receiver.delivered()), len(self.receiver.calls)
        verdict = "OK" if messages == distinct == raw == expected else "MISMATCH"
        return f"messages {messages}, distinct keys {distinct}, raw calls {raw}: {verdict}"


def sign_ups(tag: str, users: int, at: dt.datetime) -> list[dict[str, object]]:
    calls: list[dict[str, object]] = []
    for n in range(users):
        user = f"{tag}-{n}"
        stamp = at.isoformat()
        traits = {"email": f"{user}@example.com"}
        calls.append({"type": "identify", "userId": user, "traits": traits, "timestamp": stamp})
        calls.append({"type": "track", "userId": user, "event": "Signed Up", "timestamp": stamp})
    return calls


def drain(bench: Bench, write_key: str) -> None:
    n = bench.args.backlog
    bench.post(write_key, sign_ups(f"backlog-{uuid.uuid4().hex[:6]}", n, dt.datetime.now(dt.UTC)))
    runtime = build_runtime(
        Settings(
            database_url=bench.database_url,
            broker_url=REDIS,
            rules_dir=Path(bench.env["LIFELINE_RULES_DIR"]),
            secret_key="bench-secret-key",
        )
    )
    try:
        with bench.engine.connect() as conn:
            ids = list(conn.scalars(text("SELECT id FROM events ORDER BY id")))
        for start in range(0, len(ids), 500):
            events.process_events(runtime, ids[start : start + 500])
    finally:
        runtime.close()
    client = redis.Redis.from_url(REDIS)
    client.delete("dramatiq:events", "dramatiq:events.msgs")  # their work is done already
    queued = int(client.hlen("dramatiq:messages.msgs"))
    client.close()
    print(f"(1) backlog: {n} messages queued, {queued} send jobs in Redis; starting workers")

    started = time.monotonic()
    bench.start_workers()
    bench.wait_sent(n, timeout=600)
    wall = time.monotonic() - started
    times = sorted(bench.receiver.first_received().values())
    span = times[-1] - times[0]
    print(
        f"(1) drained {n} messages in {wall:.1f} s from worker start "
        f"({n / wall:.0f} sends/s); first to last provider call {span:.1f} s "
        f"({n / span:.0f} sends/s)"
    )
    print(f"(1) {bench.check_calls(n)}")


async def paced(bench: Bench, write_key: str, tag: str, count: int) -> dict[str, float]:
    """`count` Signed Up events at a steady rate: a batch every 50 ms, each event timestamped
    when its batch is sent."""
    sent_at: dict[str, float] = {}
    tick = 0.05
    per_tick = max(1, round(bench.args.rate * tick))
    async with httpx.AsyncClient(
        base_url=bench.api_url, auth=(write_key, ""), timeout=30
    ) as client:

        async def batch(first: int) -> None:
            now = time.time()
            stamp = dt.datetime.fromtimestamp(now, dt.UTC).isoformat()
            calls = []
            for n in range(first, min(first + per_tick, count)):
                user = f"{tag}-{n}"
                sent_at[user] = now
                calls.append(
                    {"type": "track", "userId": user, "event": "Signed Up", "timestamp": stamp}
                )
            response = await client.post("/v1/batch", json={"batch": calls})
            response.raise_for_status()

        start = time.monotonic()
        tasks = []
        for i, first in enumerate(range(0, count, per_tick)):
            await asyncio.sleep(max(0.0, start + i * tick - time.monotonic()))
            tasks.append(asyncio.create_task(batch(first)))
        await asyncio.gather(*tasks)
    return sent_at


def latency(bench: Bench, write_key: str, backlog_sent: int) -> None:
    count = int(bench.args.rate * bench.args.seconds)
    tag = f"steady-{uuid.uuid4().hex[:6]}"
    identified = [
        c for c in sign_ups(tag, count, dt.datetime.now(dt.UTC)) if c["type"] == "identify"
    ]
    bench.post(write_key, identified)  # who they are first; their sign-ups come paced
    eventually(
        lambda: bench.scalar("SELECT count(*) FROM events WHERE processed_at IS NULL"),
        until=lambda unprocessed: unprocessed == 0,
        timeout=120,
        interval=0.2,
        what="the identifies to be processed (events left)",
    )
    began = time.monotonic()
    sent_at = asyncio.run(paced(bench, write_key, tag, count))
    took = time.monotonic() - began
    total = backlog_sent + count
    bench.wait_sent(total, timeout=300)
    with bench.engine.connect() as conn:
        owners: dict[int, str] = dict(
            conn.execute(
                text(
                    "SELECT m.id, u.user_id FROM messages m JOIN users u ON u.id = m.profile_id "
                    "WHERE u.user_id LIKE :tag"
                ),
                {"tag": f"{tag}-%"},
            ).all()
        )
    received = bench.receiver.first_received()
    waits = sorted(received[mid] - sent_at[user] for mid, user in owners.items())
    p50 = statistics.median(waits)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    print(
        f"(2) {count} events at {count / took:.0f}/s for {took:.1f} s: event to provider call "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms"
    )
    print(f"(2) {bench.check_calls(total)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=12000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker-timeout-ms", type=int, default=100)
    parser.add_argument("--send-concurrency", type=int, default=32)
    args = parser.parse_args()
    with redis.Redis.from_url(REDIS) as client:
        client.flushdb()
    with tempfile.TemporaryDirectory() as workdir, LeanReceiver(delay=0.05) as receiver:
        bench = Bench(args, Path(workdir), receiver)
        try:
            bench.procs.run(bench.lifeline("migrate"), bench.env, ROOT)
            write_key = bench.start_api()
            print(
                f"workers: {args.processes} processes x {args.threads} threads, "
                f"{args.send_concurrency} provider calls at once per process, "
                f"worker timeout {args.worker_timeout_ms} ms; receiver answers after 50 ms"
            )
            drain(bench, write_key)
            latency(bench, write_key, args.backlog)
        finally:
            bench.procs.stop_all()
            bench.engine.dispose()


if __name__ == "__main__":
    main()
