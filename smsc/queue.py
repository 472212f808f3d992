"""The RQ job that carries raw requests: built here for the ingress and for replays alike.

The job is built with RQ's own `Job` (so the stored format stays RQ's) and staged on a pipeline
the caller executes: the ingress with redis.asyncio, a replay with plain redis. The job hash, the
queue entry and the queue's registration go in one MULTI/EXEC and land together or not at all.
"""

from __future__ import annotations

import json
import random
from typing import Any

import redis
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.utils import get_call_string, now

from smsc import jsondump
from smsc.constants import JOB_FUNCTION, JOB_RESULT_TTL_SECONDS
from smsc.protocol.raw import RawRequest
from smsc.settings import Settings

# Job.create wants a connection object; it does no I/O with it, so this one is never opened.
_UNUSED = redis.Redis()
# As much of the first request as RQ's description of a call shows (rq.job.Job.get_call_string).
_DESCRIBED = 75


class _JSON:
    """RQ's JSON serializer, writing with orjson: the same JSON, which RQ's JSONSerializer reads,
    for a third of the cost of the ingress's largest write (a job of up to 200 requests)."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return jsondump.dumps(obj)

    @staticmethod
    def loads(data: bytes) -> Any:
        return json.loads(data)


def queue_key(settings: Settings) -> str:
    """The Redis list RQ workers pop job ids from."""
    return Queue.redis_queue_namespace_prefix + settings.queue


def build_job(requests: list[RawRequest], settings: Settings) -> Job:
    """A queued job holding `requests`, retried with jittered backoff on a transient failure."""
    # Jitter spreads the retries of jobs that failed together (a database restart) over time.
    intervals = [max(1, round(s * random.uniform(0.8, 1.2))) for s in settings.retry_intervals]  # noqa: S311
    payloads = [r.to_json() for r in requests]
    job = Job.create(
        JOB_FUNCTION,
        args=[payloads],
        # RQ's own description shows the first 75 characters of the repr of the whole batch, which
        # it builds first: of the first request alone, the same text, at a fraction of the cost.
        description=get_call_string(JOB_FUNCTION, [payloads[:1]], {}, max_length=_DESCRIBED),
        connection=_UNUSED,
        serializer=_JSON,
        status=JobStatus.QUEUED,
        origin=settings.queue,
        timeout=settings.job_timeout,
        result_ttl=JOB_RESULT_TTL_SECONDS,
        failure_ttl=settings.dead_letter_days * 24 * 3600,
        retry=Retry(max=len(intervals), interval=intervals),
    )
    job.enqueued_at = now()
    return job


def stage_job(pipe: Any, job: Job, settings: Settings) -> None:
    """Queue the commands that store and enqueue `job` on `pipe` (sync or asyncio pipeline)."""
    key = queue_key(settings)
    pipe.hset(job.key, mapping=job.to_dict())
    pipe.rpush(key, job.id)
    pipe.sadd(Queue.redis_queues_keys, key)
