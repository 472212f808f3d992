"""Why an RQ job failed, recorded from the exception itself into the job's meta, and read back.

RQ keeps only a traceback text for a failed job, and as first time only when it was enqueued.
The worker's exception handler writes the error class, a one-line reason, the number of failures
and the first and last failure times into `job.meta`, at every failure, retried or final.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import structlog
from redis.exceptions import RedisError
from rq.exceptions import AbandonedJobError
from rq.job import Job

from smsc.exceptions import SmscError
from smsc.text import one_line
from workers.metrics import JOB_FAILURES

log = structlog.get_logger("smsc.worker")

# Keys of job.meta; prefixed so that they never meet RQ's own.
ERROR_CLASS = "smsc_error_class"
REASON = "smsc_reason"
FAILURES = "smsc_failures"
FIRST_FAILED_AT = "smsc_first_failed_at"
LAST_FAILED_AT = "smsc_last_failed_at"


@dataclass(frozen=True)
class Failure:
    """How a job failed: what the handler recorded, or what RQ alone kept."""

    error_class: str
    reason: str
    attempts: int
    first_failed_at: datetime | None
    failed_at: datetime | None


def record_failure(
    job: Job,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    _traceback: TracebackType | None,
) -> bool:
    """RQ exception handler: note the failure in the job's meta; True lets RQ go on as usual.

    RQ calls it for a job that raised, and for an abandoned job found by its maintenance, before
    it retries the job or moves it to the failed registry.
    """
    at = datetime.now(UTC).isoformat()
    # Called before RQ decides: it retries exactly when retries are left (Job.should_retry).
    error_class = exc_type.__name__ if exc_type is not None else "unknown"
    JOB_FAILURES.labels(error_class, "retry" if job.should_retry else "failed").inc()
    job.meta.setdefault(FIRST_FAILED_AT, at)
    job.meta[LAST_FAILED_AT] = at
    job.meta[FAILURES] = int(job.meta.get(FAILURES, 0)) + 1
    job.meta[ERROR_CLASS] = error_class
    job.meta[REASON] = one_line(_reason(exc) if exc is not None else "") or "no reason given"
    try:
        job.save_meta()  # type: ignore[no-untyped-call]
    except RedisError as e:
        # RQ's own failure handling, which follows, needs Redis too and reports it.
        log.warning("job_failure_not_recorded", job=job.id, error=type(e).__name__)
    return True


def failure_of(job: Job) -> Failure:
    """How `job` failed; for a job failed without our handler, the last line of RQ's text."""
    meta = job.meta
    if ERROR_CLASS in meta:
        return Failure(
            error_class=str(meta[ERROR_CLASS]),
            reason=one_line(str(meta.get(REASON, ""))),
            attempts=int(meta.get(FAILURES, 1)),
            first_failed_at=_time(meta.get(FIRST_FAILED_AT)),
            failed_at=_time(meta.get(LAST_FAILED_AT)),
        )
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or job.exc_info or ""
    lines = [line for line in text.splitlines() if line.strip()]
    return Failure(
        error_class="unknown",
        reason=one_line(lines[-1]) if lines else "no reason given",
        # retries_left counts down from the number of retry intervals the job was given.
        attempts=len(job.retry_intervals or []) - (job.retries_left or 0) + 1,
        first_failed_at=None,
        failed_at=result.created_at if result is not None else job.ended_at,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SmscError):
        return exc.reason
    if isinstance(exc, AbandonedJobError):
        return "the worker running the job stopped before the job ended (killed, out of memory, host lost)"
    return str(exc) or type(exc).__name__


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
