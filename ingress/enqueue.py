"""Writing raw requests into Redis as RQ jobs, by group commit, without blocking the event loop.

One write is in flight at a time. Requests that arrive meanwhile wait, and the moment it returns
they all go out together, as one job in one MULTI/EXEC. Each request is answered only once the
write holding it was acknowledged. Under light load a batch is a single request and nothing waits;
under heavy load batches grow by themselves, up to MAX_BATCH requests or MAX_BATCH_BYTES of bodies.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings

MAX_BATCH = 200
MAX_BATCH_BYTES = 1 << 20


class Enqueuer:
    """Puts raw requests on the RQ queue; `submit` returns once Redis acknowledged their job."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._waiting: list[tuple[RawRequest, asyncio.Future[str]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, raw: RawRequest) -> str:
        """Store `raw` in the next job; return that job's id. Raises the write's redis error."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((raw, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        # Shielded: a cancelled request must not cancel the write that also holds its neighbours.
        return await asyncio.shield(done)

    async def _write_all(self) -> None:
        try:
            while self._waiting:
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
        async with self._client.pipeline(transaction=True) as pipe:
            stage_job(pipe, job, self._settings)
            await pipe.execute()
        return job.id
