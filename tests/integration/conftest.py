"""Fixtures on the real servers: a PostgreSQL database and a Redis database number of our own."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from ingress.app import create_app
from smsc.settings import Settings
from tests.integration.servers import ThrowawayRedis
from tests.payloads import SECRET
from workers.db import create_database_if_missing
from workers.runner import run
from workers.schema import migrate

TABLES = (
    "status_events",
    "messages",
    "incoming_messages",
    "call_confirmations",
    "dead_letters",
    "duplicate_requests",
)


def __getattr__(name: str) -> str:
    """TEST_DATABASE_URL and TEST_REDIS_URL: our own database and Redis database number (the fixtures
    empty them, and nothing else). Read when asked for, since tests/conftest.py sets them in its
    pytest_configure, which runs after this module is imported when a path under it is given."""
    if name in ("TEST_DATABASE_URL", "TEST_REDIS_URL"):
        return os.environ[name]
    raise AttributeError(name)


def service_env(**overrides: str) -> dict[str, str]:
    """The environment a test's ingress or worker runs with."""
    env = {
        "SMSC_SECRET": SECRET,
        "SMSC_HASH": "md5",
        "DATABASE_URL": os.environ["TEST_DATABASE_URL"],
        "REDIS_URL": os.environ["TEST_REDIS_URL"],
        "SMSC_QUEUE": "smsc-test",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def database() -> str:
    """The test database, created if missing, migrated from nothing (dropped tables first)."""
    url = os.environ["TEST_DATABASE_URL"]
    create_database_if_missing(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for table in (*TABLES, "schema_migrations"):
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    migrate(url)
    return url


@pytest.fixture
def db(database: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A connection to the test database, its tables emptied for this test."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        yield conn


@pytest.fixture
def redis_db() -> Iterator[Redis]:
    """Our Redis database number, flushed before and after the test."""
    client = Redis.from_url(os.environ["TEST_REDIS_URL"])
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def settings(redis_db: Redis, db: psycopg.Connection[tuple[Any, ...]]) -> Settings:
    """Settings of a signed md5 deployment on the test servers."""
    return Settings.from_env(service_env())


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """An HTTP client on a real ingress bound to a loopback port."""
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.fixture
def queue(settings: Settings, redis_db: Redis) -> Queue:
    """The RQ queue the ingress writes to."""
    return Queue(settings.queue, connection=redis_db, serializer=JSONSerializer)


@pytest.fixture
def drain(settings: Settings) -> Callable[[], None]:
    """Run a burst worker in this process until the queue is empty (as `worker --burst` does)."""
    return lambda: run(settings, burst=True)


@pytest.fixture(autouse=True)
def no_stray_processes() -> Iterator[None]:
    """Whatever a test started is gone after it, even when the test failed half-way."""
    yield
    from tests.integration.procs import reap

    reap()


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    """A redis-server of our own with AOF (appendfsync always) in a temp dir, to pause or kill."""
    directory = Path(tempfile.mkdtemp(prefix="smsc-redis-"))
    server = ThrowawayRedis(directory)
    server.start()
    yield server
    server.resume()
    server.kill()
    shutil.rmtree(directory, ignore_errors=True)
