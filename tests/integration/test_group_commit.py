"""Group commit: requests arriving while a Redis write is in flight go out together, in one job."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from ingress.app import create_app
from ingress.enqueue import MAX_BATCH, MAX_BATCH_BYTES, Enqueuer
from smsc.protocol.raw import RawRequest
from smsc.settings import Settings
from tests.integration.conftest import service_env
from tests.integration.servers import ThrowawayRedis
from tests.integration.test_ingress import post
from tests.payloads import SAMPLES, build


def job_sizes(settings: Settings) -> list[int]:
    queue = Queue(settings.queue, connection=Redis.from_url(settings.redis_url), serializer=JSONSerializer)
    return [len(job.args[0]) for job in queue.get_jobs()]


async def test_requests_waiting_on_a_write_share_the_next_job(
    throwaway_redis: ThrowawayRedis, db: Any
) -> None:
    """While one write hangs, the requests arriving meanwhile wait unanswered; they are then written
    together as one job, and each answered 200 only then."""
    settings = Settings.from_env(service_env(REDIS_URL=throwaway_redis.url))
    requests = [build("call", params={**SAMPLES["call"], "ts": str(1_700_000_000 + i)}) for i in range(60)]
    async with TestClient(TestServer(create_app(settings))) as client:
        throwaway_redis.pause()
        first = asyncio.create_task(post(client, requests[0]))
        await asyncio.sleep(0.2)  # the first write is now in flight, stuck in the paused Redis
        rest = [asyncio.create_task(post(client, r)) for r in requests[1:]]
        await asyncio.sleep(0.5)
        assert not first.done()
        assert not any(task.done() for task in rest)
        throwaway_redis.resume()
        answers = [await first, *[await task for task in rest]]
    assert [status for status, _ in answers] == [200] * 60
    assert sorted(job_sizes(settings)) == [1, 59]


async def test_a_batch_is_capped(throwaway_redis: ThrowawayRedis, db: Any) -> None:
    """However many requests wait, a job holds at most MAX_BATCH of them."""
    settings = Settings.from_env(service_env(REDIS_URL=throwaway_redis.url))
    client = aioredis.Redis.from_url(settings.redis_url)
    enqueuer = Enqueuer(client, settings)
    r = build("call")
    raws = [RawRequest(f"r{i}", 1.0, r.query, r.content_type, r.body) for i in range(2 * MAX_BATCH + 1)]
    throwaway_redis.pause()
    first = asyncio.create_task(enqueuer.submit(raws[0]))
    await asyncio.sleep(0.2)
    rest = [asyncio.create_task(enqueuer.submit(raw)) for raw in raws[1:]]
    await asyncio.sleep(0.2)
    throwaway_redis.resume()
    await asyncio.gather(first, *rest)
    await client.aclose()
    assert sorted(job_sizes(settings)) == [1, MAX_BATCH, MAX_BATCH]


async def test_light_load_writes_one_request_per_job(
    client: TestClient[Any, Any], settings: Settings
) -> None:
    """One request at a time: each is its own job, written at once."""
    for kind in ("status", "incoming", "call"):
        assert (await post(client, build(kind)))[0] == 200
    assert job_sizes(settings) == [1, 1, 1]


async def test_a_batch_is_capped_in_bytes(throwaway_redis: ThrowawayRedis, db: Any) -> None:
    """However many requests wait, a job holds at most MAX_BATCH_BYTES of bodies (or a single request)."""
    settings = Settings.from_env(service_env(REDIS_URL=throwaway_redis.url))
    client = aioredis.Redis.from_url(settings.redis_url)
    enqueuer = Enqueuer(client, settings)
    body = b"x" * (MAX_BATCH_BYTES // 4 + 1)  # four of them are one byte too many for a job
    raws = [RawRequest(f"r{i}", 1.0, "", "", body) for i in range(9)]
    throwaway_redis.pause()
    first = asyncio.create_task(enqueuer.submit(raws[0]))
    await asyncio.sleep(0.2)
    rest = [asyncio.create_task(enqueuer.submit(raw)) for raw in raws[1:]]
    await asyncio.sleep(0.2)
    throwaway_redis.resume()
    await asyncio.gather(first, *rest)
    await client.aclose()
    assert sorted(job_sizes(settings)) == [1, 2, 3, 3]
