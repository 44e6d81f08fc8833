"""The broker's middleware, on a real worker: every log line written while a job runs names
the job (actor, dramatiq message id, retry count), and no line written outside a job does."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from service.kit.logs import FORMAT, JobContextFilter
from workers.broker import middleware

log = logging.getLogger("tests.jobs")


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker(middleware=middleware())
    yield broker
    broker.close()


def run_all(broker: StubBroker, queue_name: str) -> None:
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join(queue_name)
        worker.join()
    finally:
        worker.stop()


def test_each_line_of_a_job_names_the_actor_the_message_and_the_retry(
    broker: StubBroker, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []

    @dramatiq.actor(broker=broker, actor_name="flaky_job", max_retries=1, min_backoff=10)
    def flaky_job(order: int) -> None:
        runs.append(order)
        log.info("run %d for order %d", len(runs), order)
        if len(runs) == 1:
            raise RuntimeError("the first run fails")

    caplog.handler.addFilter(JobContextFilter())
    caplog.handler.setFormatter(logging.Formatter(FORMAT))
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="dramatiq.worker")
    log.info("before the job")
    message = flaky_job.send(7)
    run_all(broker, flaky_job.queue_name)
    log.info("after the job")

    assert runs == [7, 7]
    lines = caplog.text.splitlines()
    job = f"[flaky_job msg={message.message_id}"
    [first] = [line for line in lines if "run 1 for order 7" in line]
    [second] = [line for line in lines if "run 2 for order 7" in line]
    assert first.endswith(f"tests.jobs: {job} retry=0] run 1 for order 7")
    assert second.endswith(f"tests.jobs: {job} retry=1] run 2 for order 7")
    # Dramatiq's own line about the failed run is the job's line too.
    [failed] = [line for line in lines if "Failed to process message" in line]
    assert f"{job} retry=0] Failed to process message" in failed
    # Lines outside a job carry no job; the worker thread's lines between its two runs
    # ("Received message") neither.
    for outside in ("before the job", "after the job"):
        [line] = [line for line in lines if outside in line]
        assert line.endswith(f"tests.jobs: {outside}")
    received = [line for line in lines if "Received message" in line]
    assert len(received) == 2
    assert not any("[flaky_job" in line for line in received)
