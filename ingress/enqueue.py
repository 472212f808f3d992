"""Writing raw requests into Redis as RQ jobs, by group commit, without blocking the event loop.

One write is in flight at a time. Requests that arrive meanwhile wait, and the moment it returns
they all go out together, as one job in one MULTI/EXEC. Each request is answered only once the
write holding it was acknowledged. Under light load a batch is a single request and nothing waits;
under heavy load batches grow by themselves, up to MAX_BATCH requests or MAX_BATCH_BYTES of bodies.

Between the two, a steady stream (thousands a second, each parsed long before the next arrives)
would make jobs of one or two requests, and a worker pays RQ's cost per job, not per request. So,
like PostgreSQL's commit_delay, a write lingers up to LINGER_SECONDS for company, but only while
requests come densely (the last one less than LINGER_SECONDS after the one before), only while the
batch is small, and only as long as more keep arriving: a lone request is written at once, and
clients that all wait for their answers are not kept waiting for others that cannot come.

With SMSC_REDIS_MIN_REPLICAS=N, the MULTI/EXEC is followed by `WAIT N timeout` on the same
connection: the requests are answered only once N replicas have the job too, so a 200 survives
losing the primary's machine. Fewer replicas in time raise ReplicasMissing (a 503); the job stays on
the primary and may still be processed, and the gateway's resent copy is deduplicated.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from ingress.metrics import IngressMetrics
from smsc.constants import REDIS_WAIT_TIMEOUT_MS
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings

MAX_BATCH = 200
MAX_BATCH_BYTES = 1 << 20
LINGER_SECONDS = 0.010
LINGER_STEP = 0.001
# A batch this large has company enough: saturated clients all waiting are not kept waiting.
LINGER_TARGET = 32
# Steps in a row that bring no request before lingering stops (one is often just timer jitter).
LINGER_PATIENCE = 2


class ReplicasMissing(Exception):
    """Fewer replicas than SMSC_REDIS_MIN_REPLICAS acknowledged a job's write in time."""


class Enqueuer:
    """Puts raw requests on the RQ queue; `submit` returns once Redis acknowledged their job.

    `client` must hold a single connection (max_connections=1): WAIT counts the replicas that have
    the writes of its own connection, so it must follow the MULTI/EXEC on the one that sent it.
    Writes are one at a time, so that connection is always free for the next one.
    """

    def __init__(
        self, client: aioredis.Redis, settings: Settings, metrics: IngressMetrics | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._waiting: list[tuple[RawRequest, asyncio.Future[str]]] = []
        self._writer: asyncio.Task[None] | None = None
        # The loop of the first request: the client's connection belongs to it anyway. Kept because
        # asyncio.get_running_loop() costs a getpid() system call on every call (Python 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_arrival = 0.0
        self._gap = float("inf")

    async def submit(self, raw: RawRequest) -> str:
        """Store `raw` in the next job; return that job's id. Raises the write's redis error."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        self._gap, self._last_arrival = now - self._last_arrival, now
        done: asyncio.Future[str] = loop.create_future()
        self._waiting.append((raw, done))
        if self._writer is None:
            self._writer = loop.create_task(self._write_all())
        # Not shielded: a cancelled request cancels only its own future, which the write, a task of
        # its own that also holds its neighbours, then leaves alone.
        return await done

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                if self._gap < LINGER_SECONDS:
                    await self._linger()
                batch = self._take()
                try:
                    job_id = await self._write([raw for raw, _ in batch])
                except Exception as e:  # noqa: BLE001 - every waiting request gets the write's own error
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(e)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(job_id)
        finally:
            self._writer = None

    async def _linger(self) -> None:
        waited, idle = 0.0, 0
        while waited < LINGER_SECONDS and len(self._waiting) < LINGER_TARGET and idle < LINGER_PATIENCE:
            seen = len(self._waiting)
            await asyncio.sleep(LINGER_STEP)
            waited += LINGER_STEP
            idle = idle + 1 if len(self._waiting) == seen else 0

    def _take(self) -> list[tuple[RawRequest, asyncio.Future[str]]]:
        size = 0
        count = 0
        for raw, _ in self._waiting:
            if count and (count == MAX_BATCH or size + len(raw.body) > MAX_BATCH_BYTES):
                break
            size += len(raw.body)
            count += 1
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        return batch

    async def _write(self, requests: list[RawRequest]) -> str:
        job = build_job(requests, self._settings)
        started = time.perf_counter()
        async with self._client.pipeline(transaction=True) as pipe:
            stage_job(pipe, job, self._settings)
            await pipe.execute()
        wanted = self._settings.redis_min_replicas
        if wanted:
            acknowledged = await self._client.wait(wanted, REDIS_WAIT_TIMEOUT_MS)
            if acknowledged < wanted:
                raise ReplicasMissing(f"{acknowledged} of {wanted} replicas in {REDIS_WAIT_TIMEOUT_MS} ms")
        if self._metrics is not None:
            self._metrics.written(len(requests), time.perf_counter() - started)
        return job.id
