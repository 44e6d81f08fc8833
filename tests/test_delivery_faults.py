"""Delivery under faults, with real api, worker and scheduler processes on PostgreSQL and a
throwaway Redis, sending through the webhook provider to a receiver on loopback.

Whatever breaks (a worker killed mid-call, the broker wiped, a provider failing, a job
delivered twice), every message reaches the receiver under its idempotency key exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import text

from service.kit.jobs import SEND_MESSAGE
from service.kit.settings import Settings
from tests.helpers.deployment import (
    BrokerRedis,
    Deployment,
    Process,
    Processes,
    deployed,
)
from tests.helpers.polling import eventually
from tests.helpers.processes import Receiver
from tests.helpers.rules import WELCOME, RulePack
from workers import events
from workers.actors import build_runtime

SECRET = "faults-webhook-secret"


@dataclass
class WebhookDeployment(Deployment):
    """The production commands, sending email through the webhook provider."""

    extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.extra}

    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            broker_url=self.broker_url,
            rules_dir=Path(self.extra["LIFELINE_RULES_DIR"]),
            secret_key=self.extra["LIFELINE_SECRET_KEY"],
        )

    def sign_up(self, users: int) -> None:
        """`users` new people, each identified with an email, then Signed Up."""
        tag = uuid.uuid4().hex[:6]
        now = dt.datetime.now(dt.UTC).isoformat()
        write_key = self.create_source(f"web-{tag}")
        calls = []
        for n in range(users):
            user = f"user-{tag}-{n}"
            traits = {"email": f"{user}@example.com"}
            calls.append({"type": "identify", "userId": user, "traits": traits, "timestamp": now})
            calls.append({"type": "track", "userId": user, "event": "Signed Up", "timestamp": now})
        with httpx.Client(base_url=self.api_url, auth=(write_key, ""), timeout=30) as client:
            response = client.post("/v1/batch", json={"batch": calls})
            assert response.status_code == 200, response.text

    def process_here(self) -> None:
        """Process the stored events in this process, as a worker would: the messages they
        queue wait in the broker for a worker to send them."""
        runtime = build_runtime(self.settings())
        try:
            runtime.rules.reload_if_changed()
            with self.db().connect() as conn:
                ids = conn.scalars(text("SELECT id FROM events WHERE processed_at IS NULL"))
                events.process_events(runtime, list(ids))
        finally:
            runtime.close()

    def message_statuses(self) -> dict[int, str]:
        with self.db().connect() as conn:
            return {int(i): s for i, s in conn.execute(text("SELECT id, status FROM messages"))}

    def wait_all_sent(self, users: int, timeout: float = 40) -> dict[int, str]:
        eventually(
            lambda: Counter(self.message_statuses().values()),
            until=lambda by_status: by_status == {"sent": users},
            timeout=timeout,
            interval=0.1,
            what=f"{users} messages sent (messages by status)",
        )
        return self.message_statuses()

    def retries(self) -> list[str]:
        """The detail of every status change back to queued after a provider error."""
        with self.db().connect() as conn:
            rows = conn.scalars(
                text(
                    "SELECT detail FROM message_status_changes WHERE status = 'queued' "
                    "AND detail LIKE 'webhook-email:%' ORDER BY id"
                )
            )
            return [str(detail) for detail in rows]


@dataclass
class Setup:
    deployment: WebhookDeployment
    broker: BrokerRedis
    receiver: Receiver

    def start(self, *names: str) -> dict[str, Process]:
        started = {}
        for name in names:
            if name == "api":
                started[name] = self.deployment.start_api()
            elif name == "scheduler":
                started[name] = self.deployment.start_scheduler()
            else:
                started[name] = self.deployment.start_worker(name)
        return started

    def assert_each_delivered_once(self, users: int) -> set[str]:
        """Every intended message sent, and received under its key exactly once."""
        sent = self.deployment.wait_all_sent(users)
        keys = {f"lifeline-message-{message_id}" for message_id in sent}
        eventually(
            lambda: self.receiver.in_flight,
            until=lambda in_flight: in_flight == 0,
            what="the receiver to answer (calls in flight)",
        )
        assert self.receiver.delivered() == keys
        assert all(call.signed for call in self.receiver.calls)
        assert {call.key for call in self.receiver.calls} == keys  # no stray calls
        return keys


def setup_with(request: pytest.FixtureRequest, receiver: Receiver) -> Iterator[Setup]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    processes: Processes = request.getfixturevalue("procs")
    database: str = request.getfixturevalue("pg_url")
    broker: BrokerRedis = request.getfixturevalue("broker_redis")
    # Settled: the processes load the rules at once, not after the settling time.
    rules = RulePack(tmp_path / "rules").rules(WELCOME).settled().write()
    extra = {
        "LIFELINE_RULES_DIR": str(rules),
        "LIFELINE_SECRET_KEY": "faults-secret-key",
        "LIFELINE_EMAIL_PROVIDER": "webhook-email",
        "LIFELINE_WEBHOOK_URL": receiver.url,
        "LIFELINE_WEBHOOK_SECRET": SECRET,
        "LIFELINE_WEBHOOK_TIMEOUT_SECONDS": "0.5",
        "LIFELINE_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "LIFELINE_STUCK_SEND_SECONDS": "2",
        "LIFELINE_RETRY_BASE_SECONDS": "0.2",
        "LIFELINE_MAX_SEND_ATTEMPTS": "10",
    }
    with receiver, deployed(processes, database, broker.url) as base:
        deployment = WebhookDeployment(base.procs, base.database_url, base.broker_url)
        deployment.extra = extra
        try:
            yield Setup(deployment, broker, receiver)
        finally:
            if deployment.engine is not None:
                deployment.engine.dispose()
            processes.stop_all()
            processes.started.clear()


@pytest.fixture
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    param = getattr(request, "param", {})
    yield from setup_with(request, Receiver(secret=SECRET, **param))


def messages_in_broker(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.hlen("dramatiq:messages.msgs"))


def message_ids_in_broker(url: str) -> list[int]:
    """The message ids the queued send jobs carry (a job carries a list of them)."""
    ids: list[int] = []
    with redis.Redis.from_url(url) as client:
        for job in client.hvals("dramatiq:messages.msgs"):
            (carried,) = json.loads(job)["args"]
            ids += carried if isinstance(carried, list) else [carried]
    return sorted(ids)


@pytest.mark.services
@pytest.mark.parametrize("setup", [{"delay": 0.2}], indirect=True)
def test_a_worker_killed_mid_send_leaves_nothing_unsent_or_sent_twice(setup: Setup) -> None:
    users = 40
    setup.start("api", "scheduler")
    setup.deployment.sign_up(users)
    worker = setup.start("worker-killed")["worker-killed"]
    eventually(
        lambda: (len(setup.receiver.calls), setup.receiver.in_flight),
        until=lambda seen: seen[0] >= 4 and seen[1] > 0,
        timeout=30,
        interval=0.01,
        what="sends in flight (calls, in flight)",
    )

    Processes.kill(worker, signal.SIGKILL)

    statuses = list(setup.deployment.message_statuses().values())
    assert statuses.count("sending") > 0, "no send was in flight at the kill"
    assert statuses.count("sent") < users, "everything was sent before the kill"
    setup.start("worker-new")
    setup.assert_each_delivered_once(users)


@pytest.mark.services
def test_a_broker_wiped_while_messages_wait_loses_none(setup: Setup) -> None:
    users = 20
    setup.start("api")
    setup.deployment.sign_up(users)
    setup.deployment.process_here()
    queued = message_ids_in_broker(setup.broker.url)
    assert queued == sorted(setup.deployment.message_statuses()), "the sends were never queued"

    setup.broker.wipe()  # Redis restarts with no persistence: the queued sends are gone

    setup.start("worker", "scheduler")
    setup.assert_each_delivered_once(users)
    assert len(setup.receiver.calls) == users


@pytest.mark.services
@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"fail_first": 12, "failure": "503"}, "HTTP 503"),
        ({"fail_first": 6, "failure": "timeout", "hang": 1.5}, "timed out: ReadTimeout"),
    ],
    indirect=["setup"],
)
def test_a_failing_provider_is_retried_until_each_message_is_sent(
    setup: Setup, reason: str
) -> None:
    users = 10
    failures = setup.receiver.fail_first
    setup.start("api", "worker", "scheduler")

    setup.deployment.sign_up(users)

    setup.assert_each_delivered_once(users)
    retries = setup.deployment.retries()
    assert len(retries) == failures
    assert all(detail.startswith(f"webhook-email: {reason}") for detail in retries)
    assert len(setup.receiver.calls) == users + failures


@pytest.mark.services
def test_a_send_job_delivered_more_than_once_calls_the_provider_once(setup: Setup) -> None:
    users = 10
    setup.start("api")
    setup.deployment.sign_up(users)
    setup.deployment.process_here()
    ids = sorted(setup.deployment.message_statuses())
    assert len(ids) == users
    runtime = build_runtime(setup.deployment.settings())
    try:
        send_message = runtime.broker.get_actor(SEND_MESSAGE)
        for message_id in ids:  # the original job, and two more deliveries of it
            send_message.send(message_id)
            send_message.send(message_id)
    finally:
        runtime.close()
    # The jobs processing queued (one carrying all ten), and two more deliveries of each.
    assert message_ids_in_broker(setup.broker.url) == sorted(ids * 3)

    setup.start("worker")

    setup.assert_each_delivered_once(users)
    eventually(
        lambda: messages_in_broker(setup.broker.url),
        until=lambda waiting: waiting == 0,
        what="every job to run (jobs in the broker)",
    )
    assert len(setup.receiver.calls) == users
