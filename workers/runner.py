"""The worker process: an RQ SimpleWorker (no fork per job) with its scheduler for retries.

A worker never gives up on Redis. RQ retries a lost connection by itself only while it waits for a
job; anywhere else (the maintenance between jobs, storing a job's outcome) its `work()` quits. So
`run` starts a new RQ worker on the same connection, with a growing pause, until stopped: with a
`redis+sentinel://` URL each new connection goes to whichever server is the primary by then.
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType
from typing import Any

import structlog
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError, WatchError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import as_text, now, utcformat
from rq.worker import WorkerStatus

from smsc import logs
from smsc.accounts import load
from smsc.redisconn import close, sync_client
from smsc.settings import Settings
from workers import metrics
from workers.failures import record_failure
from workers.jobs import WorkerContext, forget, install, take_along
from workers.store import Store

log = structlog.get_logger("smsc.worker")

# Seconds past its timeout after which a job that no worker finished counts as abandoned.
ABANDONED_MARGIN_SECONDS = 5
# A worker's heartbeat is skipped when one with at least the same TTL went out this recently: RQ
# sends one several times per job, each TTL is tens of seconds, and each costs Redis round trips.
HEARTBEAT_EVERY_SECONDS = 1.0
# Jobs taken from the queue at once, at most, when they wait there: the first stores the requests
# of all of them in its transaction, one commit where there would be one per job.
JOBS_TOGETHER = 4
# Pauses before starting again after losing Redis: doubled each time, up to the last.
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0


class SmscJob(Job):
    """RQ's job, less the rewrite of its whole hash when it finishes.

    RQ saves a finished job from scratch, its payload compressed and sent again (on jobs of 28
    requests, about 15 µs of the worker's CPU per event); by then only the fields of its run have
    changed since it was dequeued, and only those are written.
    """

    _finishing = False

    def _handle_success(self, result_ttl: int, pipeline: Pipeline, *args: Any, **kwargs: Any) -> None:
        self._finishing = True
        try:
            super()._handle_success(result_ttl, pipeline, *args, **kwargs)
        finally:
            self._finishing = False

    def save(
        self, pipeline: Pipeline | None = None, include_meta: bool = True, include_result: bool = True
    ) -> None:
        if not self._finishing or include_meta or include_result:
            super().save(pipeline, include_meta, include_result)
            return
        run = [
            *("started_at", utcformat(self.started_at) if self.started_at else ""),
            *("ended_at", utcformat(self.ended_at) if self.ended_at else ""),
            *("last_heartbeat", utcformat(self.last_heartbeat) if self.last_heartbeat else ""),
            *("worker_name", self.worker_name or ""),
        ]
        (pipeline if pipeline is not None else self.connection).hset(self.key, items=run)


class SmscWorker(SimpleWorker):
    """A SimpleWorker that notices a job of a killed worker within about twice the job timeout.

    RQ keeps a running job in the started registry until `timeout + 60` s and looks for expired
    entries every 10 minutes; an abandoned job is then retried (it has retries left) by a live
    worker. A job is killed at its timeout anyway, so a few seconds of margin are enough, and the
    maintenance runs every job timeout.
    """

    # RQ's own pauses while its blocking pop cannot reach Redis (60 s at most by default): a
    # failover takes seconds, and the worker should be back soon after.
    max_connection_wait_time = RECONNECT_MAX_SECONDS

    stopping = False
    _heartbeat_at = 0.0
    _heartbeat_ttl = 0

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, but in one round trip rather than three, and none if a heartbeat that
        keeps the worker alive at least as long was sent within HEARTBEAT_EVERY_SECONDS."""
        ttl = timeout or self.worker_ttl + 60
        sent = time.monotonic()
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
        elif sent - self._heartbeat_at >= HEARTBEAT_EVERY_SECONDS or ttl > self._heartbeat_ttl:
            with self.connection.pipeline(transaction=False) as own:
                super().heartbeat(timeout, own)
                own.execute()
        else:
            return
        self._heartbeat_at, self._heartbeat_ttl = sent, ttl

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """RQ's, less the round trip where Redis holds `state` already: RQ sets 'idle' both after a
        job and again before waiting for the next one."""
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's, for `job` and then for the jobs already waiting behind it, which `job` stores with
        its own requests (see workers.jobs.take_along); their bookkeeping in Redis goes together: one
        transaction starts them all, and one finishes those that ended well, where RQ spends six
        round trips a job on it. A job that fails, or asks more of RQ than to be finished, gets RQ's
        own handling."""
        along = self._dequeue_along()
        group = [(job, queue), *along]
        take_along(job.id, [other for other, _ in along])
        try:
            executions = self._start(group)
            ended = [(j, q, e) for (j, q), e in zip(group, executions, strict=True) if self._perform(j, q, e)]
            if ended:
                self._finish(ended)
        finally:
            forget([j.id for j, _ in group])
        self.set_state(WorkerStatus.IDLE)

    def _start(self, group: list[tuple[Job, Queue]]) -> list[Execution]:
        """RQ's prepare_execution and prepare_job_execution for every job of `group`, in one
        transaction: each job in the started registry with its execution, out of the intermediate
        queue, marked started by this worker."""
        executions: list[Execution] = []
        with self.connection.pipeline() as pipeline:
            ttl = 0
            for job, queue in group:
                job_ttl = self.get_heartbeat_ttl(job)
                ttl = max(ttl, job_ttl)
                executions.append(Execution.create(job, job_ttl, pipeline=pipeline, worker_name=self.name))
                # It dates the job's heartbeat too: RQ's job.heartbeat() just before it is left out.
                job.prepare_for_execution(self.name, pipeline=pipeline)
                pipeline.persist(job.key)
                if len(self.queues) == 1:
                    pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.heartbeat(ttl, pipeline=pipeline)
            pipeline.execute()
        for execution in executions:
            self.executions[execution.id] = execution
        return executions

    def _perform(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """RQ's perform_job once the job is started; True where the job ended well and is left for
        `_finish`, False where RQ has handled it (failed, retried, or finished by RQ itself)."""
        try:
            job.started_at = now()
            timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=job.id):
                result = job.perform()
            if isinstance(result, Retry) or _asks_more(job):
                self._finalize_success(job, queue, execution, result)
                return False
            self.handle_execution_ended(job, queue, job.success_callback_timeout)
            job._result = result
            job._status = JobStatus.FINISHED
            return True
        except BaseException:  # noqa: BLE001 - as RQ's perform_job: whatever ends the job is its failure
            self._finalize_failure(job, queue, execution, sys.exc_info())
            return False

    def _finish(self, ended: list[tuple[Job, Queue, Execution]]) -> None:
        """RQ's handle_job_success for the jobs `ended`, in one transaction. As RQ does, it watches
        their dependents' sets; where any job has dependents (none of ours has), each job is finished
        by RQ itself, which moves them to their queues."""
        with self.connection.pipeline() as pipeline:
            while True:
                try:
                    keys = [job.dependents_key for job, _, _ in ended]
                    pipeline.watch(*keys)  # type: ignore[no-untyped-call]
                    if pipeline.sunion(keys):
                        pipeline.reset()
                        for job, queue, execution in ended:
                            self.handle_job_success(job, queue, queue.started_job_registry, execution)
                        return
                    pipeline.multi()
                    for job, _, execution in ended:
                        self._finished(job, execution, pipeline)
                    self.set_state(WorkerStatus.IDLE, pipeline=pipeline)
                    pipeline.execute()
                    return
                except WatchError:
                    continue

    def _finished(self, job: Job, execution: Execution, pipeline: Pipeline) -> None:
        """What RQ's handle_job_success writes for a job without dependents, repeats or rate limit."""
        assert job.started_at is not None
        assert job.ended_at is not None
        self.increment_successful_job_count(pipeline=pipeline)
        self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if result_ttl != 0:
            job._handle_success(
                result_ttl,
                pipeline=pipeline,
                worker_name=self.name,
                execution_id=execution.id,
                execution_started_at=execution.created_at,
                execution_ended_at=job.ended_at,
            )
        job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
        self.cleanup_execution(job, pipeline=pipeline, execution=execution)

    def _dequeue_along(self) -> list[tuple[Job, Queue]]:
        """Up to JOBS_TOGETHER - 1 more jobs, of those already queued: never a wait for more."""
        if self._stop_requested:
            return []
        version = self.get_redis_server_version()  # type: ignore[no-untyped-call]
        if len(self._ordered_queues) == 1 and version >= (6, 2, 0):
            return self._moved_along(self._ordered_queues[0], version)
        along: list[tuple[Job, Queue]] = []
        while len(along) < JOBS_TOGETHER - 1:
            taken = self.queue_class.dequeue_any(
                self._ordered_queues,
                None,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
                death_penalty_class=self.death_penalty_class,
            )
            if taken is None:
                break
            taken[0].redis_server_version = version
            along.append(taken)
        return along

    def _moved_along(self, queue: Queue, version: tuple[int, int, int]) -> list[tuple[Job, Queue]]:
        """RQ's dequeue from one queue (LMOVE to its intermediate queue, then the job's hash) for
        several jobs in two round trips rather than two per job. A job whose hash is gone is passed
        over as RQ does; RQ's maintenance clears its id from the intermediate queue."""
        with self.connection.pipeline(transaction=False) as pipeline:
            for _ in range(JOBS_TOGETHER - 1):
                pipeline.lmove(queue.key, queue.intermediate_queue_key)
            moved = [as_text(job_id) for job_id in pipeline.execute() if job_id is not None]
        if not moved:
            return []
        jobs = self.job_class.fetch_many(moved, connection=self.connection, serializer=self.serializer)
        along: list[tuple[Job, Queue]] = []
        for job in jobs:
            if job is not None:
                job.redis_server_version = version
                along.append((job, queue))
        return along

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ's, less the job's heartbeat where no callback is to run after it: that heartbeat only
        dates the job hash (its registry entry is not extended), and costs a round trip per job."""
        if job.success_callback is not None or job.failure_callback is not None:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
        else:
            job.ended_at = now()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return int(job.timeout or 0) + ABANDONED_MARGIN_SECONDS

    def release(self) -> None:
        """Stop this worker's pubsub thread: RQ's teardown does not reach it when Redis failed it
        first, and the thread would go on retrying Redis for a worker that is gone."""
        if self.pubsub_thread is not None:
            self.pubsub_thread.stop()
            self.pubsub_thread.join(timeout=1)
        if self.pubsub is not None:
            self.pubsub.close()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        # Remembered here: RQ's own flag is set only when a job is running, and reading the
        # worker's state for it needs Redis, which may be the very thing that is gone.
        self.stopping = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def run(settings: Settings, *, burst: bool, metrics_at: tuple[str, int] | None = None) -> None:
    """Work the queue until stopped (SIGTERM finishes the current jobs first), or until empty.

    With `metrics_at` (host, port), the process's metrics are served there. Losing Redis never ends
    the process: it starts working again once Redis (or the new primary) answers.
    """
    # Until RQ installs its own handlers, a SIGTERM (a stop right after a start) ends the process
    # cleanly: nothing runs yet that it would interrupt.
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    accounts = load(settings)
    logs.hide(accounts.secrets)
    if metrics_at is not None:
        metrics.serve(*metrics_at)
    store = Store(settings.database_url)
    install(WorkerContext(settings=settings, store=store, accounts=accounts))
    connection = sync_client(settings.redis_url)
    try:
        _work_until_stopped(settings, connection, burst=burst, metrics_at=metrics_at)
    finally:
        close(connection)
        store.close()
        install(None)


def _work_until_stopped(
    settings: Settings, connection: Redis, *, burst: bool, metrics_at: tuple[str, int] | None
) -> None:
    pause = RECONNECT_FIRST_SECONDS
    lost: str | None = None
    while True:
        worker: SmscWorker | None = None
        try:
            # A new worker each time: RQ's registers the old one's death as it quits.
            worker = _worker(settings, connection)
            if lost is not None:
                log.info("redis_reconnected", after=lost)
                lost, pause = None, RECONNECT_FIRST_SECONDS
            log.info(
                "worker_starting",
                queue=settings.queue,
                burst=burst,
                name=worker.name,
                metrics=f"{metrics_at[0]}:{metrics_at[1]}" if metrics_at else None,
            )
            # The scheduler moves jobs whose retry interval has passed back onto the queue.
            worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
            reason = "the worker quit on an error (logged above)"
        except RedisError as e:
            if burst:
                raise  # a burst run is a one-off: its caller learns that Redis failed it
            reason = f"{type(e).__name__}: {e}"
        if burst or (worker is not None and worker.stopping):
            return
        if worker is not None:
            worker.release()
        # No job runs between two workers: a SIGTERM now ends the process at once.
        signal.signal(signal.SIGTERM, _exit)
        signal.signal(signal.SIGINT, _exit)
        if lost is None:
            log.warning("redis_lost", reason=reason, retry_in=pause)
            lost = reason
        time.sleep(pause)
        pause = min(pause * 2, RECONNECT_MAX_SECONDS)


def _worker(settings: Settings, connection: Redis) -> SmscWorker:
    queue = Queue(settings.queue, connection=connection, serializer=JSONSerializer, job_class=SmscJob)
    return SmscWorker(
        [queue],
        connection=connection,
        serializer=JSONSerializer,
        job_class=SmscJob,
        # An idle worker wakes from its blocking pop every worker_ttl - 15 s to run maintenance.
        worker_ttl=settings.job_timeout + 15,
        maintenance_interval=settings.job_timeout,
        # Also called for abandoned jobs found by the maintenance; RQ's own handling follows.
        exception_handlers=[record_failure],
    )


def _asks_more(job: Job) -> bool:
    """Whether finishing `job` takes more than `_finished` writes: a callback to run, webhooks, a
    rate limit slot to free, repeats to schedule."""
    return bool(
        job.success_callback is not None
        or getattr(job, "webhooks", None)
        or getattr(job, "has_rate_limit", False)
        or job.repeats_left
    )


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
