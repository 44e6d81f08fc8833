"""The production commands as an operator runs them (`lifeline migrate`, `api`, `worker`,
`scheduler`), each a real process on one database and one broker, and the Redis they use as
that broker."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from sqlalchemy import text
from sqlalchemy.engine import Engine

from service.kit.db import create_sync_engine
from tests.helpers.api import ADMIN_TOKEN, stored_and_processed
from tests.helpers.polling import eventually
from tests.helpers.services import require_service

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Without redis-server installed, a database of the shared Redis (the benchmark uses 13).
SHARED_REDIS_URL = os.environ.get("LIFELINE_TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/14")
SWEEP = {"LIFELINE_SWEEP_INTERVAL_SECONDS": "0.5", "LIFELINE_SWEEP_GRACE_SECONDS": "1"}


# --- Processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any LIFELINE_* variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Processes:
    """Subprocesses, each in its own process group (a worker's children die with it)."""

    log_dir: Path
    started: list[Process] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{len(self.started):02d}-{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.started.append(process)
        return process

    def run(self, args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> str:
        """Run a command to completion; returns its stdout, fails the test if it fails."""
        done = subprocess.run(
            args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    @staticmethod
    def kill(process: Process, sig: int = signal.SIGKILL, timeout: float = 10) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, sig)
        try:
            process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait(timeout)

    def stop_all(self) -> None:
        for process in self.started:
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.0, deadline - time.monotonic()))
            # The group too: a worker parent that exited may leave a child behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(5)
        for process in self.started:
            print(f"----- {process.name} (exit {process.popen.returncode}) -----")
            print(process.output()[-6000:])


# --- A deployment -----------------------------------------------------------------------------


@dataclass
class Deployment:
    """The production commands on one database and one broker, as an operator runs them."""

    procs: Processes
    database_url: str
    broker_url: str
    api_url: str = ""
    engine: Engine | None = None

    @property
    def env(self) -> dict[str, str]:
        return clean_env(
            LIFELINE_DATABASE_URL=self.database_url,
            LIFELINE_BROKER_URL=self.broker_url,
            LIFELINE_ADMIN_TOKEN=ADMIN_TOKEN,
            LIFELINE_SOURCE_CACHE_SECONDS="0",
            LIFELINE_LOG_LEVEL="INFO",
            **SWEEP,
        )

    def lifeline(self, *args: str) -> list[str]:
        return [str(BIN / "lifeline"), *args]

    def migrate(self) -> None:
        self.procs.run(self.lifeline("migrate"), self.env, PROJECT_ROOT)

    def create_source(self, name: str = "web") -> str:
        out = self.procs.run(self.lifeline("sources", "create", name), self.env, PROJECT_ROOT)
        return out.strip().splitlines()[-1]

    def start_api(self) -> Process:
        port = free_port()
        process = self.procs.start(
            "api", self.lifeline("api", "--port", str(port)), self.env, PROJECT_ROOT
        )
        self.api_url = f"http://127.0.0.1:{port}"
        wait_for_http(process, f"{self.api_url}/healthz")
        return process

    def start_worker(self, name: str = "worker") -> Process:
        args = self.lifeline("worker", "--processes", "1", "--threads", "4")
        return self.procs.start(name, args, self.env, PROJECT_ROOT)

    def start_scheduler(self) -> Process:
        return self.procs.start("scheduler", self.lifeline("scheduler"), self.env, PROJECT_ROOT)

    def db(self) -> Engine:
        if self.engine is None:
            self.engine = create_sync_engine(self.database_url)
        return self.engine

    def counts(self) -> tuple[int, int]:
        """(events stored, events processed)."""
        return stored_and_processed(self.db())

    def wait_all_processed(self, expected: int, timeout: float) -> None:
        def counts() -> tuple[int, int]:
            total, done = self.counts()
            assert total <= expected, f"{total} events stored, only {expected} were sent"
            return total, done

        eventually(
            counts,
            until=lambda seen: seen == (expected, expected),
            timeout=timeout,
            interval=0.2,
            what=f"all {expected} events processed (stored, processed)",
        )

    def processed_at(self) -> dict[int, dt.datetime]:
        with self.db().connect() as conn:
            rows = conn.execute(text("SELECT id, processed_at FROM events ORDER BY id"))
            return {int(i): at for i, at in rows}


def wait_for_http(process: Process, url: str, timeout: float = 30) -> None:
    def answer() -> int | str:
        """The status code, or why there was none."""
        if process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited {process.popen.returncode} on start")
        try:
            return httpx.get(url, timeout=1).status_code
        except httpx.TransportError as exc:
            return repr(exc)

    eventually(
        answer,
        until=lambda seen: seen == 200,
        timeout=timeout,
        what=f"{process.name} to answer {url}",
    )


@dataclass
class BrokerRedis:
    url: str
    dedicated: bool

    def wipe(self) -> None:
        """What a Redis restart without persistence does to the broker's data."""
        client = redis.Redis.from_url(self.url)
        try:
            if self.dedicated:
                client.flushall()
            else:
                client.flushdb()
        finally:
            client.close()


@contextlib.contextmanager
def broker_redis_in(tmp_path: Path) -> Iterator[BrokerRedis]:
    """A redis-server of this test's own, so that wiping it, or another test run at the same
    time, disturbs nobody; without redis-server, a database of the shared Redis."""
    server = shutil.which("redis-server")
    if server is None or "LIFELINE_TEST_E2E_REDIS_URL" in os.environ:
        require_service("Redis", "127.0.0.1", 6379)
        shared = BrokerRedis(SHARED_REDIS_URL, dedicated=False)
        shared.wipe()
        try:
            yield shared
        finally:
            shared.wipe()
        return
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    own = BrokerRedis(f"redis://127.0.0.1:{port}/0", dedicated=True)

    def up() -> bool:
        assert process.poll() is None, f"redis-server exited {process.returncode}"
        with contextlib.suppress(redis.ConnectionError), redis.Redis(port=port) as client:
            return bool(client.ping())
        return False

    try:
        eventually(up, timeout=10, interval=0.02, what="redis-server to start")
        yield own
    finally:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def deployed(procs: Processes, database_url: str, broker_url: str) -> Iterator[Deployment]:
    """A migrated database and a broker; every process is stopped before the database goes."""
    deployment = Deployment(procs, database_url, broker_url)
    try:
        deployment.migrate()
        yield deployment
    finally:
        procs.stop_all()
        procs.started.clear()
        if deployment.engine is not None:
            deployment.engine.dispose()
