"""Back-pressure: past a queue length the ingress answers 503 rather than fill Redis's memory.

The length is read in the background, so no request ever waits on it; the gateway retries a 503
for 3 h 20 min, which gives the workers time to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from ingress.metrics import IngressMetrics

log = structlog.get_logger("smsc.ingress")

POLL_SECONDS = 0.5


class QueueWatch:
    """The queue's length, refreshed every POLL_SECONDS; `full` once it reaches `limit`. Each poll
    also sets the metrics of back-pressure and of Redis's reachability."""

    def __init__(
        self, client: aioredis.Redis, key: str, limit: int, metrics: IngressMetrics | None = None
    ) -> None:
        self._client = client
        self._key = key
        self._limit = limit
        self._metrics = metrics
        self.length = 0
        self.full = False
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask `run` to return after the poll in progress (cancelling it mid-call is not safe:
        redis.asyncio may swallow the cancellation)."""
        self._stop.set()

    async def run(self) -> None:
        """Poll until stopped; while Redis is unreachable the last reading stands."""
        reachable = True
        while not self._stop.is_set():
            try:
                self.length = int(await self._client.llen(self._key))
            except (RedisError, OSError) as e:
                if reachable:
                    log.warning("queue_length_unknown", reason=f"redis: {type(e).__name__}")
                reachable = False
            else:
                reachable = True
                full = self.length >= self._limit
                if full != self.full:
                    log.warning(
                        "queue_full" if full else "queue_accepting", length=self.length, limit=self._limit
                    )
                self.full = full
            if self._metrics is not None:
                self._metrics.polled(redis_up=reachable, full=self.full)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), POLL_SECONDS)
