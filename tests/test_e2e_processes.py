"""End to end with real processes: `lifeline migrate`, `api`, `worker`, `scheduler`, `serve`.

Each test starts the commands an operator would run, talks to them over HTTP and looks at the
database the way a user of the admin API would. Every process is killed in teardown, and its
log is printed there (pytest shows it only when the test fails).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
import redis

from service.kit.jobs import PROCESS_EVENTS
from service.kit.settings import Settings
from tests.helpers.api import ADMIN_TOKEN
from tests.helpers.deployment import (
    BIN,
    BrokerRedis,
    Deployment,
    Processes,
    clean_env,
    deployed,
    free_port,
    wait_for_http,
)
from tests.helpers.polling import eventually
from tests.helpers.services import require_service
from workers.actors import build_runtime

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


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
    eventually(
        deployment.counts,
        until=lambda seen: seen[1] > 0,
        timeout=30,
        interval=0.02,
        what="the first worker to make progress (stored, processed)",
    )
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
    eventually(
        lambda: redis_queue(deployment.broker_url),
        until=lambda queue: queue["events"] == 0,
        what="an idle queue",
    )

    runtime = build_runtime(
        Settings(database_url=deployment.database_url, broker_url=deployment.broker_url)
    )
    try:
        # Straight to the broker (the job sender would only log a failure to enqueue).
        process_events = runtime.broker.get_actor(PROCESS_EVENTS)
        process_events.send(sorted(processed_before))
        process_events.send(sorted(processed_before))
        eventually(
            lambda: redis_queue(deployment.broker_url),
            until=lambda queue: queue["events"] == 0,
            what="both jobs to run",
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

    def timeline() -> list[dict[str, Any]]:
        response = httpx.get(f"{url}/v1/users/{next(iter(sent.message_ids))}/events", headers=ADMIN)
        events: list[dict[str, Any]] = (
            response.json()["events"] if response.status_code == 200 else []
        )
        return events

    eventually(
        timeline,
        until=lambda events: len(events) == 3 and all(e["processedAt"] for e in events),
        timeout=20,
        what="the embedded worker to process the events",
    )
    assert_profiles(url, sent)
    ready = httpx.get(f"{url}/readyz")
    assert (ready.status_code, ready.json()) == (
        200,
        {"ready": True, "database": "ok", "broker": "ok"},
    )
