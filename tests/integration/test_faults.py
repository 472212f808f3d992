"""Fault tests with real processes and real servers: what got 200 reaches PostgreSQL exactly once.

Servers that must be killed or restarted are throwaway ones (servers.py); the shared ones are only
used where nothing is killed but our own processes.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from tests.integration.conftest import TABLES, TEST_DATABASE_URL, service_env
from tests.integration.procs import Ingress, post_all, run_workers, start_worker
from tests.integration.servers import ThrowawayPostgres, ThrowawayRedis, wait_until
from tests.payloads import SAMPLES, Request, build
from workers.db import create_database_if_missing
from workers.runner import JOBS_TOGETHER
from workers.schema import migrate


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def calls(n: int, start: int = 0) -> list[Request]:
    """`n` distinct call confirmations."""
    return [build("call", params={**SAMPLES["call"], "ts": str(1_700_000_000 + start + i)}) for i in range(n)]


def statuses(n: int, start: int = 0) -> list[Request]:
    """`n` distinct delivery statuses (one message each)."""
    return [build("status", params={**SAMPLES["status"], "id": str(start + i)}) for i in range(n)]


def enqueue(settings: Settings, redis: Redis, batches: list[list[Request]]) -> None:
    """Put one job per batch on the queue, the way the ingress writes them."""
    for n, batch in enumerate(batches):
        raws = [
            RawRequest(f"job{n}-req{i}", time.time(), r.query, r.content_type, r.body)
            for i, r in enumerate(batch)
        ]
        with redis.pipeline(transaction=True) as pipe:
            stage_job(pipe, build_job(raws, settings), settings)
            pipe.execute()


def waiting_on_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ).fetchone()
    return row is not None and row[0] > 0


@pytest.fixture(scope="module")
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL cluster of our own (initdb), with the schema applied, ours to stop."""
    directory = Path(tempfile.mkdtemp(prefix="smsc-pg-"))
    server = ThrowawayPostgres(directory)
    server.start()
    create_database_if_missing(server.url)
    migrate(server.url)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_sigkill_mid_batch_then_a_live_worker_finishes(settings: Settings, db: Any, redis_db: Redis) -> None:
    """A worker killed inside a job of a batch: a live worker finds the jobs it had started (the first
    and those taken along with it) and every row exists once."""
    fast = Settings.from_env(service_env(SMSC_RETRY_INTERVALS="1", SMSC_JOB_TIMEOUT="3"))
    enqueue(fast, redis_db, [calls(20, start=20 * n) for n in range(5)])
    queue = Queue(fast.queue, connection=redis_db)
    with (
        psycopg.connect(TEST_DATABASE_URL) as lock,
        psycopg.connect(TEST_DATABASE_URL, autocommit=True) as watch,
    ):
        lock.execute("LOCK TABLE call_confirmations IN ACCESS EXCLUSIVE MODE")
        doomed = start_worker(SMSC_JOB_TIMEOUT="3")
        wait_until(lambda: waiting_on_lock(watch), 30, "the worker to block inside its first job")
        assert StartedJobRegistry(queue=queue).count == JOBS_TOGETHER
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=20)
        lock.rollback()
    survivor = start_worker(SMSC_JOB_TIMEOUT="3")
    try:
        wait_until(lambda: count(TEST_DATABASE_URL, "call_confirmations") == 100, 90, "all 100 calls")
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=30) == 0
    assert count(TEST_DATABASE_URL, "call_confirmations") == 100
    assert count(TEST_DATABASE_URL, "dead_letters") == 0
    failed = FailedJobRegistry(queue=queue)
    assert failed.count == 0, [queue.fetch_job(j).latest_result().exc_string for j in failed.get_job_ids()]


async def test_postgres_down_while_events_flow(
    throwaway_postgres: ThrowawayPostgres, redis_db: Redis, db: Any
) -> None:
    """PostgreSQL stops while callbacks arrive: the ingress still answers 200, and once PostgreSQL is
    back every event is stored exactly once."""
    pg = throwaway_postgres
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    ingress = Ingress(SMSC_RETRY_INTERVALS="1,2,2,2,2,2,2,2,2,2,2,2")
    worker = start_worker(DATABASE_URL=pg.url, SMSC_JOB_TIMEOUT="5")
    try:
        assert await post_all(ingress.base, statuses(20)) == [200] * 20
        wait_until(lambda: count(pg.url, "status_events") == 20, 60, "the first 20 statuses")
        pg.stop()
        assert await post_all(ingress.base, statuses(30, start=20)) == [200] * 30
        await asyncio.sleep(3)  # the worker meets the dead database and schedules retries
        pg.start()
        wait_until(lambda: count(pg.url, "status_events") == 50, 90, "all 50 statuses")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert ingress.stop() == 0
    assert count(pg.url, "status_events") == 50
    assert count(pg.url, "messages") == 50
    assert count(pg.url, "dead_letters") == 0


async def test_redis_restart_keeps_everything_that_got_200(throwaway_redis: ThrowawayRedis, db: Any) -> None:
    """Redis (AOF, appendfsync always) is killed and restarted between ingress and worker: every
    request answered 200 is still queued and stored once."""
    ingress = Ingress(REDIS_URL=throwaway_redis.url)
    try:
        sent = [*statuses(40), *calls(40), build("incoming")]
        assert await post_all(ingress.base, sent) == [200] * len(sent)
    finally:
        assert ingress.stop() == 0
    throwaway_redis.kill()
    throwaway_redis.start()
    run_workers(1, REDIS_URL=throwaway_redis.url)
    assert count(TEST_DATABASE_URL, "status_events") == 40
    assert count(TEST_DATABASE_URL, "call_confirmations") == 40
    assert count(TEST_DATABASE_URL, "incoming_messages") == 1


async def test_redis_down_means_503_until_it_returns(throwaway_redis: ThrowawayRedis, db: Any) -> None:
    """With Redis down the ingress answers 503 and /readyz fails; when Redis returns the same process
    answers 200 again, and exactly the requests that got 200 are queued."""
    ingress = Ingress(REDIS_URL=throwaway_redis.url)
    answered: list[int] = []
    try:
        answered += await post_all(ingress.base, calls(1))
        throwaway_redis.kill()
        answered += await post_all(ingress.base, calls(3, start=1))
        assert answered == [200, 503, 503, 503]
        assert await ready(ingress.base) == 503
        throwaway_redis.start()
        for _ in range(200):  # bounded: 20 s
            if await ready(ingress.base) == 200:
                break
            await asyncio.sleep(0.1)
        answered += await post_all(ingress.base, calls(3, start=1))
        assert answered[-3:] == [200, 200, 200]
    finally:
        assert ingress.stop() == 0
    assert queued_requests(throwaway_redis.url) == answered.count(200)


def queued_requests(url: str) -> int:
    """Raw requests held by the queued jobs (the ingress may put several in one job)."""
    queue = Queue(service_env()["SMSC_QUEUE"], connection=Redis.from_url(url), serializer=JSONSerializer)
    return sum(len(job.args[0]) for job in queue.get_jobs())


async def ready(base: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/readyz") as resp:
        return resp.status


async def test_fifty_copies_of_two_hundred_events_three_workers(redis_db: Redis, db: Any) -> None:
    """50 copies of each of 200 events, sent concurrently and drained by 3 worker processes: exact counts."""
    events = [
        *statuses(100),
        *(build("incoming", params={**SAMPLES["incoming"], "id": str(9000 + i)}) for i in range(60)),
        *calls(40),
    ]
    copies = [r for _ in range(50) for r in events]
    ingress = Ingress()
    try:
        assert await post_all(ingress.base, copies, concurrency=64) == [200] * len(copies)
    finally:
        assert ingress.stop() == 0
    run_workers(3)
    assert count(TEST_DATABASE_URL, "status_events") == 100
    assert count(TEST_DATABASE_URL, "messages") == 100
    assert count(TEST_DATABASE_URL, "incoming_messages") == 60
    assert count(TEST_DATABASE_URL, "call_confirmations") == 40


def test_sigterm_on_a_worker_finishes_its_job_then_stops(
    settings: Settings, db: Any, redis_db: Redis
) -> None:
    """SIGTERM while a job runs: that job, and those it took from the queue with it, are stored whole,
    the worker exits 0, later jobs stay queued."""
    enqueue(settings, redis_db, [calls(10, start=10 * n) for n in range(JOBS_TOGETHER + 2)])
    with (
        psycopg.connect(TEST_DATABASE_URL) as lock,
        psycopg.connect(TEST_DATABASE_URL, autocommit=True) as watch,
    ):
        lock.execute("LOCK TABLE call_confirmations IN ACCESS EXCLUSIVE MODE")
        worker = start_worker()
        wait_until(lambda: waiting_on_lock(watch), 30, "the worker to block inside its first job")
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        lock.rollback()
    assert worker.wait(timeout=30) == 0
    assert count(TEST_DATABASE_URL, "call_confirmations") == 10 * JOBS_TOGETHER
    assert Queue(settings.queue, connection=redis_db).count == 2


def test_sigterm_on_the_ingress_finishes_requests_in_flight(throwaway_redis: ThrowawayRedis, db: Any) -> None:
    """SIGTERM while a request waits on Redis: it is still answered 200 and stored, then the ingress
    exits 0 (a request whose body is still arriving is not: aiohttp stops reading, and it gets 408)."""
    ingress = Ingress(REDIS_URL=throwaway_redis.url)
    r = build("status")
    head = f"POST /smsc?{r.query} HTTP/1.1\r\nHost: x\r\nContent-Type: {r.content_type}\r\n"
    head += f"Content-Length: {len(r.body)}\r\nConnection: close\r\n\r\n"
    throwaway_redis.pause()
    try:
        with socket.create_connection(("127.0.0.1", ingress.port), timeout=30) as conn:
            conn.sendall(head.encode() + r.body)
            time.sleep(0.3)
            ingress.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            throwaway_redis.resume()
            answer = conn.recv(200)
    finally:
        throwaway_redis.resume()
    assert answer.startswith(b"HTTP/1.1 200")
    assert ingress.proc.wait(timeout=90) == 0
    assert queued_requests(throwaway_redis.url) == 1


async def test_stalled_redis_means_503_not_a_hang(throwaway_redis: ThrowawayRedis, db: Any) -> None:
    """A Redis that stops answering (SIGSTOP) gets 503 after the Redis timeout, then 200 once it resumes."""
    ingress = Ingress(REDIS_URL=throwaway_redis.url)
    try:
        throwaway_redis.pause()
        try:
            assert await post_all(ingress.base, calls(2)) == [503, 503]
            assert await ready(ingress.base) == 503
        finally:
            throwaway_redis.resume()
        for _ in range(200):  # bounded: 20 s
            if await ready(ingress.base) == 200:
                break
            await asyncio.sleep(0.1)
        assert await post_all(ingress.base, calls(1, start=5)) == [200]
    finally:
        assert ingress.stop() == 0
