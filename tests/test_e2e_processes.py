"""End to end with real processes: `lifeline migrate`, `api`, `worker`, `scheduler`, `serve`.

Each test starts the commands an operator would run, talks to them over HTTP and looks at the
database the way a user of the admin API would. Every process is killed in teardown, and its
log is printed there (pytest shows it only when the test fails).
"""

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
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import Engine

from service.kit.db import create_sync_engine
from service.kit.jobs import PROCESS_EVENTS
from service.kit.settings import Settings
from tests.conftest import ADMIN_TOKEN, fresh_postgres_database, require_service
from workers.actors import build_runtime

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Without redis-server installed, a database of the shared Redis (the benchmark uses 13).
SHARED_REDIS_URL = os.environ.get("LIFELINE_TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/14")
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SWEEP = {"LIFELINE_SWEEP_INTERVAL_SECONDS": "0.5", "LIFELINE_SWEEP_GRACE_SECONDS": "1"}
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


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


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


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
        with self.db().connect() as conn:
            total, done = conn.execute(
                text("SELECT count(*), count(processed_at) FROM events")
            ).one()
        return int(total), int(done)

    def wait_all_processed(self, expected: int, timeout: float) -> None:
        def check() -> tuple[int, int] | None:
            total, done = self.counts()
            assert total <= expected, f"{total} events stored, only {expected} were sent"
            return (total, done) if total == done == expected else None

        try:
            wait_until(check, timeout, f"all {expected} events processed", interval=0.2)
        except AssertionError as exc:
            total, done = self.counts()
            raise AssertionError(f"{exc}: {done}/{total} processed") from None

    def processed_at(self) -> dict[int, dt.datetime]:
        with self.db().connect() as conn:
            rows = conn.execute(text("SELECT id, processed_at FROM events ORDER BY id"))
            return {int(i): at for i, at in rows}


def wait_for_http(process: Process, url: str, timeout: float = 30) -> None:
    def up() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited {process.popen.returncode} on start")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout, f"{process.name} to answer {url}")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


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


@pytest.fixture
def broker_redis(tmp_path: Path) -> Iterator[BrokerRedis]:
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
        wait_until(up, 10, "redis-server to start", 0.02)
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


@pytest.fixture
def deployment(pg_url: str, broker_redis: BrokerRedis, procs: Processes) -> Iterator[Deployment]:
    """PostgreSQL and Redis, migrated; no process started yet."""
    with deployed(procs, pg_url, broker_redis.url) as deployment:
        yield deployment


# --- Events a product backend sends -----------------------------------------------------------


@dataclass
class Sent:
    """What was sent, per user: message ids and event times, and the latest email."""

    calls: list[dict[str, Any]]
    message_ids: dict[str, set[str]]
    times: dict[str, list[dt.datetime]]
    emails: dict[str, str]


def user_events(users: int, per_user: int, tag: str | None = None) -> Sent:
    """For each user an identify (with an email) and `per_user - 1` tracks, interleaved
    across users, each with its own timestamp."""
    tag = tag or uuid.uuid4().hex[:6]
    sent = Sent([], {}, {}, {})
    for n in range(per_user):
        for u in range(users):
            user_id = f"user-{tag}-{u}"
            at = T0 + dt.timedelta(minutes=n, seconds=u)
            call: dict[str, Any] = {
                "userId": user_id,
                "messageId": f"{tag}-{u}-{n}",
                "timestamp": at.isoformat(),
            }
            if n == 0:
                email = f"{user_id}@example.com"
                call.update(type="identify", traits={"email": email, "plan": "pro"})
                sent.emails[user_id] = email
            else:
                call.update(type="track", event="Page Viewed", properties={"n": n})
            sent.calls.append(call)
            sent.message_ids.setdefault(user_id, set()).add(call["messageId"])
            sent.times.setdefault(user_id, []).append(at)
    return sent


def post_batches(api_url: str, write_key: str, calls: list[dict[str, Any]], size: int) -> None:
    with httpx.Client(base_url=api_url, auth=(write_key, ""), timeout=30) as client:
        for start in range(0, len(calls), size):
            response = client.post("/v1/batch", json={"batch": calls[start : start + size]})
            assert response.status_code == 200, response.text


def assert_profiles(api_url: str, sent: Sent) -> None:
    """Every user's profile exists and reflects each of their events exactly once."""
    with httpx.Client(base_url=api_url, headers=ADMIN, timeout=30) as client:
        for user_id, message_ids in sent.message_ids.items():
            profile = client.get(f"/v1/users/{user_id}")
            assert profile.status_code == 200, f"{user_id}: {profile.text}"
            body = profile.json()
            assert body["email"] == sent.emails[user_id]
            assert body["traits"] == {"email": sent.emails[user_id], "plan": "pro"}
            assert dt.datetime.fromisoformat(body["firstSeenAt"]) == min(sent.times[user_id])
            assert dt.datetime.fromisoformat(body["lastSeenAt"]) == max(sent.times[user_id])
            timeline = client.get(f"/v1/users/{user_id}/events", params={"limit": 500}).json()
            assert timeline["nextCursor"] is None
            got = [e["messageId"] for e in timeline["events"]]
            assert len(got) == len(message_ids), f"{user_id}: {len(got)} events in the timeline"
            assert set(got) == message_ids
            assert all(e["processedAt"] for e in timeline["events"])


def redis_queue(url: str) -> dict[str, int]:
    """How many `process_events` messages Redis holds: waiting or in progress, to be retried,
    dead-lettered."""
    client = redis.Redis.from_url(url)
    try:
        return {
            "events": int(client.hlen("dramatiq:events.msgs")),
            "retrying": int(client.hlen("dramatiq:events.DQ.msgs")),
            "dead": int(client.hlen("dramatiq:events.XQ.msgs")),
        }
    finally:
        client.close()


# --- Tests -------------------------------------------------------------------------------------


@pytest.mark.services
def test_production_topology_processes_every_event(deployment: Deployment) -> None:
    deployment.start_api()
    deployment.start_worker()
    deployment.start_scheduler()
    write_key = deployment.create_source()
    sent = user_events(users=30, per_user=10)

    post_batches(deployment.api_url, write_key, sent.calls, size=50)

    deployment.wait_all_processed(len(sent.calls), timeout=30)
    assert_profiles(deployment.api_url, sent)
    assert httpx.get(f"{deployment.api_url}/healthz").status_code == 200
    ready = httpx.get(f"{deployment.api_url}/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"ready": True, "database": "ok", "broker": "ok"},
    )
    assert redis_queue(deployment.broker_url)["dead"] == 0


@pytest.mark.services
def test_worker_killed_mid_backlog_loses_nothing(deployment: Deployment) -> None:
    deployment.start_api()
    deployment.start_scheduler()
    write_key = deployment.create_source()
    sent = user_events(users=40, per_user=50)
    post_batches(deployment.api_url, write_key, sent.calls, size=100)
    assert deployment.counts() == (len(sent.calls), 0)

    worker = deployment.start_worker("worker-killed")
    wait_until(lambda: deployment.counts()[1] > 0, 30, "the first worker to make progress", 0.02)
    deployment.procs.kill(worker, signal.SIGKILL)
    _, done = deployment.counts()
    assert done < len(sent.calls), "the backlog was gone before the kill: make it larger"

    # A client retrying a batch it is unsure about adds nothing.
    post_batches(deployment.api_url, write_key, sent.calls[:100], size=100)
    deployment.start_worker("worker-new")
    deployment.wait_all_processed(len(sent.calls), timeout=40)
    assert_profiles(deployment.api_url, sent)


@pytest.mark.services
def test_broker_flushed_while_workers_are_down_loses_nothing(
    deployment: Deployment, broker_redis: BrokerRedis
) -> None:
    deployment.start_api()
    deployment.start_scheduler()
    write_key = deployment.create_source()
    sent = user_events(users=20, per_user=10)
    post_batches(deployment.api_url, write_key, sent.calls, size=50)
    assert deployment.counts() == (len(sent.calls), 0)
    assert redis_queue(deployment.broker_url)["events"] > 0, "the jobs were never queued"

    broker_redis.wipe()  # Redis restarts with no persistence: the queued jobs are gone

    deployment.start_worker()
    deployment.wait_all_processed(len(sent.calls), timeout=30)
    assert_profiles(deployment.api_url, sent)


@pytest.mark.services
def test_a_job_delivered_twice_does_nothing_the_second_time(deployment: Deployment) -> None:
    deployment.start_api()
    deployment.start_worker()
    write_key = deployment.create_source()
    sent = user_events(users=5, per_user=4)
    post_batches(deployment.api_url, write_key, sent.calls, size=100)
    deployment.wait_all_processed(len(sent.calls), timeout=30)
    processed_before = deployment.processed_at()
    with httpx.Client(base_url=deployment.api_url, headers=ADMIN) as client:
        profiles_before = [client.get(f"/v1/users/{u}").json() for u in sent.message_ids]
    wait_until(lambda: redis_queue(deployment.broker_url)["events"] == 0, 10, "an idle queue")

    runtime = build_runtime(
        Settings(database_url=deployment.database_url, broker_url=deployment.broker_url)
    )
    try:
        # Straight to the broker (the job sender would only log a failure to enqueue).
        process_events = runtime.broker.get_actor(PROCESS_EVENTS)
        process_events.send(sorted(processed_before))
        process_events.send(sorted(processed_before))
        wait_until(
            lambda: redis_queue(deployment.broker_url)["events"] == 0, 10, "both jobs to run"
        )
    finally:
        runtime.close()

    assert redis_queue(deployment.broker_url) == {"events": 0, "retrying": 0, "dead": 0}
    assert deployment.processed_at() == processed_before
    with httpx.Client(base_url=deployment.api_url, headers=ADMIN) as client:
        assert [client.get(f"/v1/users/{u}").json() for u in sent.message_ids] == profiles_before
    assert_profiles(deployment.api_url, sent)


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A virtual host of our own when rabbitmqctl can make one; else `/`, purged after."""
    require_service("RabbitMQ", "127.0.0.1", 5672)
    vhost = f"lifeline_test_{uuid.uuid4().hex[:8]}"
    ctl = shutil.which("rabbitmqctl")

    def rabbitmqctl(*args: str) -> bool:
        if ctl is None:
            return False
        done = subprocess.run([ctl, *args], capture_output=True, timeout=30, check=False)
        return done.returncode == 0

    if rabbitmqctl("add_vhost", vhost) and rabbitmqctl(
        "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"
    ):
        try:
            yield f"{RABBITMQ}/{vhost}"
        finally:
            rabbitmqctl("delete_vhost", vhost)
        return
    try:
        yield f"{RABBITMQ}/%2F"
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(f"{RABBITMQ}/%2F"))
        for queue in ("events", "events.DQ", "events.XQ"):
            with contextlib.suppress(pika.exceptions.ChannelClosed):
                connection.channel().queue_purge(queue)  # a missing queue closes its channel
        connection.close()


@pytest.fixture
def rabbitmq_deployment(pg_url: str, rabbitmq_url: str, procs: Processes) -> Iterator[Deployment]:
    with deployed(procs, pg_url, rabbitmq_url) as deployment:
        yield deployment


@pytest.mark.services
def test_rabbitmq_broker_processes_events(rabbitmq_deployment: Deployment) -> None:
    deployment = rabbitmq_deployment
    deployment.start_api()
    deployment.start_worker()
    write_key = deployment.create_source()
    sent = user_events(users=10, per_user=5)

    post_batches(deployment.api_url, write_key, sent.calls, size=25)

    deployment.wait_all_processed(len(sent.calls), timeout=30)
    assert_profiles(deployment.api_url, sent)
    ready = httpx.get(f"{deployment.api_url}/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"ready": True, "database": "ok", "broker": "ok"},
    )


def test_readyz_names_an_unreachable_broker(tmp_path: Path, procs: Processes) -> None:
    database = f"sqlite:///{tmp_path / 'lifeline.db'}"
    with deployed(procs, database, "redis://127.0.0.1:1/0") as deployment:
        write_key = deployment.create_source()
        deployment.start_api()

        ready = httpx.get(f"{deployment.api_url}/readyz", timeout=30)

        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "database": "ok", "broker": "unreachable"}
        # Accepted anyway: the event is committed; the sweep enqueues it once the broker is back.
        post_batches(deployment.api_url, write_key, user_events(1, 1).calls, size=1)
        assert deployment.counts() == (1, 0)


def test_embedded_default_needs_nothing_but_a_folder(tmp_path: Path, procs: Processes) -> None:
    home = tmp_path / "newcomer"
    home.mkdir()
    env = clean_env(LIFELINE_ADMIN_TOKEN=ADMIN_TOKEN)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = procs.start("serve", [str(BIN / "lifeline"), "serve", "--port", str(port)], env, home)
    wait_for_http(serve, f"{url}/healthz")
    assert (home / "lifeline.db").is_file()
    created = procs.run([str(BIN / "lifeline"), "sources", "create", "web"], env, home)
    write_key = created.strip().splitlines()[-1]
    sent = user_events(users=1, per_user=3)

    post_batches(url, write_key, sent.calls, size=10)

    def processed() -> bool:
        response = httpx.get(f"{url}/v1/users/{next(iter(sent.message_ids))}/events", headers=ADMIN)
        events = response.json()["events"] if response.status_code == 200 else []
        return len(events) == 3 and all(e["processedAt"] for e in events)

    wait_until(processed, 20, "the embedded worker to process the events")
    assert_profiles(url, sent)
    ready = httpx.get(f"{url}/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"ready": True, "database": "ok", "broker": "ok"},
    )
