"""The worker process: an RQ SimpleWorker (no fork per job) with its scheduler for retries."""

from __future__ import annotations

import structlog
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from smsc.settings import Settings
from workers import metrics
from workers.failures import record_failure
from workers.jobs import WorkerContext, install
from workers.store import Store

log = structlog.get_logger("smsc.worker")

# Seconds past its timeout after which a job that no worker finished counts as abandoned.
ABANDONED_MARGIN_SECONDS = 5


class SmscWorker(SimpleWorker):
    """A SimpleWorker that notices a job of a killed worker within about twice the job timeout.

    RQ keeps a running job in the started registry until `timeout + 60` s and looks for expired
    entries every 10 minutes; an abandoned job is then retried (it has retries left) by a live
    worker. A job is killed at its timeout anyway, so a few seconds of margin are enough, and the
    maintenance runs every job timeout.
    """

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return int(job.timeout or 0) + ABANDONED_MARGIN_SECONDS


def run(settings: Settings, *, burst: bool, metrics_at: tuple[str, int] | None = None) -> None:
    """Work the queue until stopped (SIGTERM finishes the current job first), or until empty.

    With `metrics_at` (host, port), the process's metrics are served there.
    """
    if metrics_at is not None:
        metrics.serve(*metrics_at)
    store = Store(settings.database_url)
    install(WorkerContext(settings=settings, store=store))
    connection = Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue, connection=connection, serializer=JSONSerializer)
    worker = SmscWorker(
        [queue],
        connection=connection,
        serializer=JSONSerializer,
        # An idle worker wakes from its blocking pop every worker_ttl - 15 s to run maintenance.
        worker_ttl=settings.job_timeout + 15,
        maintenance_interval=settings.job_timeout,
        # Also called for abandoned jobs found by the maintenance; RQ's own handling follows.
        exception_handlers=[record_failure],
    )
    log.info(
        "worker_starting",
        queue=settings.queue,
        burst=burst,
        name=worker.name,
        metrics=f"{metrics_at[0]}:{metrics_at[1]}" if metrics_at else None,
    )
    try:
        # The scheduler moves jobs whose retry interval has passed back onto the queue.
        worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
    finally:
        store.close()
        install(None)
