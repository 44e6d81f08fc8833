"""Logging set-up shared by every process. Log lines never carry personal data or secrets."""

from __future__ import annotations

import contextvars
import logging

# The job a worker thread is running, as it prefixes that job's log lines:
# "[process_events msg=<dramatiq message id> retry=0] "; empty outside jobs. Set by
# workers.broker.JobLogContext.
job_context: contextvars.ContextVar[str] = contextvars.ContextVar("job_context", default="")

FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(job)s%(message)s"


class JobContextFilter(logging.Filter):
    """Gives each record the job it was written in (`%(job)s`), so a job's lines can be
    told apart from those of other jobs running at the same time."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = job_context.get()
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(JobContextFilter())
    logging.basicConfig(level=level.upper(), format=FORMAT, handlers=[handler])
    # Per-request access lines come from uvicorn; SQL statements would carry personal data.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
