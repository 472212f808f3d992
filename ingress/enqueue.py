"""Writing raw requests into Redis as RQ jobs, without a blocking call on the event loop."""

from __future__ import annotations

import redis.asyncio as aioredis

from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings


class Enqueuer:
    """Puts lists of raw requests on the RQ queue; `submit` returns once Redis acknowledged."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    async def submit(self, requests: list[RawRequest]) -> str:
        """Store one job holding `requests`; return its id. Raises redis errors on failure."""
        job = build_job(requests, self._settings)
        async with self._client.pipeline(transaction=True) as pipe:
            stage_job(pipe, job, self._settings)
            await pipe.execute()
        return job.id
