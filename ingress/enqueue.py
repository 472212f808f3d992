"""Writing raw requests into Redis as RQ jobs, without a blocking call on the event loop.

RQ's own `Queue.enqueue` is synchronous, so the job is built with RQ's `Job` (which owns the
stored format) and written with redis.asyncio in one MULTI/EXEC: the job hash, the queue list
entry and the queue registration land together or not at all.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now

from smsc.constants import (
    JOB_FAILURE_TTL_SECONDS,
    JOB_FUNCTION,
    JOB_RESULT_TTL_SECONDS,
    JOB_TIMEOUT_SECONDS,
)
from smsc.protocol.raw import RawRequest


class Enqueuer:
    """Puts lists of raw requests on one RQ queue; `submit` returns once Redis acknowledged."""

    def __init__(self, client: aioredis.Redis, queue: str) -> None:
        self._client = client
        self._queue = queue
        self._queue_key = Queue.redis_queue_namespace_prefix + queue
        # Job.create wants a connection object; it does no I/O with it, so it is never opened.
        self._unused = redis.Redis()

    async def submit(self, requests: list[RawRequest]) -> str:
        """Store one job holding `requests`; return its id. Raises redis errors on failure."""
        job = Job.create(
            JOB_FUNCTION,
            args=[[r.to_json() for r in requests]],
            connection=self._unused,
            serializer=JSONSerializer,
            status=JobStatus.QUEUED,
            origin=self._queue,
            timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=JOB_RESULT_TTL_SECONDS,
            failure_ttl=JOB_FAILURE_TTL_SECONDS,
        )
        job.enqueued_at = now()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(job.key, mapping=job.to_dict())
            pipe.rpush(self._queue_key, job.id)
            pipe.sadd(Queue.redis_queues_keys, self._queue_key)
            await pipe.execute()
        return job.id
