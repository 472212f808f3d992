"""Redis that survives losing a machine: Sentinel failover followed without a restart, WAIT for
replicas before a 200, and a worker that outlives its Redis. Every server here is a throwaway one on
a loopback port (servers.py)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from redis import Redis
from rq import Worker

from smsc.settings import Settings
from tests.integration.conftest import TEST_DATABASE_URL, service_env
from tests.integration.procs import Ingress, post_all, start_worker
from tests.integration.servers import SentinelGroup, ThrowawayRedis, wait_until
from tests.integration.test_faults import calls, count, enqueue, waiting_on_lock
from tests.payloads import Request


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    """A primary, its replica and three Sentinels watching them."""
    directory = Path(tempfile.mkdtemp(prefix="smsc-sentinel-"))
    servers = SentinelGroup(directory)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def send_until_200(base: str, requests: list[Request], attempts: int = 100) -> None:
    """Send each request until it gets a 200, as the gateway does (bounded: `attempts` rounds)."""
    pending = requests
    for _ in range(attempts):
        answers = await post_all(base, pending)
        pending = [r for r, code in zip(pending, answers, strict=True) if code != 200]
        if not pending:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(pending)} requests never got a 200")


async def test_ingress_and_worker_follow_a_failover(group: SentinelGroup, db: Any) -> None:
    """With a redis+sentinel:// URL, SIGKILL of the primary: Sentinel promotes the replica, and the same
    ingress and worker processes go on answering 200 and storing, without a restart."""
    ingress = Ingress(REDIS_URL=group.url)
    worker = start_worker(REDIS_URL=group.url)
    try:
        assert await post_all(ingress.base, calls(5)) == [200] * 5
        wait_until(lambda: count(TEST_DATABASE_URL, "call_confirmations") == 5, 60, "5 stored before")
        group.primary.kill()
        wait_until(lambda: group.primary_port() == group.replica.port, 60, "the replica's promotion")
        await send_until_200(ingress.base, calls(5, start=5))
        wait_until(lambda: count(TEST_DATABASE_URL, "call_confirmations") == 10, 90, "5 more stored after")
        assert worker.poll() is None
    finally:
        assert ingress.stop() == 0


@pytest.mark.parametrize(
    ("wanted", "replica_paused", "code"),
    [
        (1, False, 200),
        (1, True, 503),
        (2, False, 503),  # one replica cannot make two
        (0, True, 200),  # no WAIT: a lone primary is enough
    ],
)
async def test_min_replicas(group: SentinelGroup, wanted: int, replica_paused: bool, code: int) -> None:
    """SMSC_REDIS_MIN_REPLICAS=N: 200 only once N replicas acknowledged the job, else 503 (`replicas`)."""
    ingress = Ingress(REDIS_URL=group.url, SMSC_REDIS_MIN_REPLICAS=str(wanted))
    try:
        if replica_paused:
            group.replica.pause()
        assert await post_all(ingress.base, calls(3)) == [code] * 3
        group.replica.resume()
        if code == 503 and wanted == 1:
            # The same requests resent once the replica is back: 200, as the gateway would get.
            assert await post_all(ingress.base, calls(3)) == [200] * 3
    finally:
        group.replica.resume()
        assert ingress.stop() == 0


def test_a_worker_outlives_its_redis(throwaway_redis: ThrowawayRedis, db: Any) -> None:
    """Redis killed while a worker finishes a job (RQ's own loop then quits): the process keeps
    running, and once Redis is back on the same address it stores the next jobs."""
    settings = Settings.from_env(service_env(REDIS_URL=throwaway_redis.url))
    redis = Redis.from_url(throwaway_redis.url)
    enqueue(settings, redis, [calls(10)])
    redis.close()
    with (
        psycopg.connect(TEST_DATABASE_URL) as lock,
        psycopg.connect(TEST_DATABASE_URL, autocommit=True) as watch,
    ):
        lock.execute("LOCK TABLE call_confirmations IN ACCESS EXCLUSIVE MODE")
        worker = start_worker(REDIS_URL=throwaway_redis.url, SMSC_JOB_TIMEOUT="5")
        wait_until(lambda: waiting_on_lock(watch), 30, "the worker to block inside its job")
        throwaway_redis.kill()
        lock.rollback()
    wait_until(lambda: count(TEST_DATABASE_URL, "call_confirmations") == 10, 30, "the job's rows")
    time.sleep(2)  # Redis stays away a while: the worker tries it and fails a few times
    throwaway_redis.start()
    redis = Redis.from_url(throwaway_redis.url)
    enqueue(settings, redis, [calls(10, start=10)])
    wait_until(lambda: count(TEST_DATABASE_URL, "call_confirmations") == 20, 60, "the next job's rows")
    assert worker.poll() is None
    redis.close()


def test_sigterm_stops_a_worker_waiting_for_redis(throwaway_redis: ThrowawayRedis, db: Any) -> None:
    """A worker that waits for its Redis to come back still stops on SIGTERM, with exit code 0."""
    worker = start_worker(REDIS_URL=throwaway_redis.url, log=subprocess.PIPE)
    wait_until(lambda: workers_registered(throwaway_redis.url) == 1, 30, "the worker to register")
    throwaway_redis.kill()
    time.sleep(2)  # the worker meets the closed port and starts waiting
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err.decode(errors="replace")[-3000:]


def workers_registered(url: str) -> int:
    client = Redis.from_url(url)
    try:
        return len(Worker.all(connection=client))
    finally:
        client.close()
