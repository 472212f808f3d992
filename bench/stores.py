"""Our Redis database number and PostgreSQL database: emptying them, counting what they hold."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from bench.config import DATABASE_URL, REDIS_URL

Connection = psycopg.Connection[tuple[Any, ...]]

# The event tables of the public schema (README "Tables"); every one has received_at and stored_at.
EVENT_TABLES = ("status_events", "incoming_messages", "call_confirmations")

# Shaped like status_events (columns, key, indexes) whatever schema.sql says today.
CREATE_REF_TABLE = """
DROP TABLE IF EXISTS bench_status_events;
CREATE TABLE bench_status_events (LIKE status_events INCLUDING ALL);
"""

INSERT_REF_COLUMNS = """
INSERT INTO bench_status_events (
    message_id, phone, status, status_at, ts, err, cnt, type, cost, flag, sender, params, request_id,
    received_at
) VALUES
"""
INSERT_REF_ROW = """(
    %(id)s, %(phone)s, %(status)s, to_timestamp(%(ts)s), to_timestamp(%(ts)s), %(err)s, %(cnt)s,
    %(type)s, %(cost)s, %(flag)s, %(sender)s, %(params)s, %(request_id)s, to_timestamp(%(received_at)s)
)"""
INSERT_REF_ONE = INSERT_REF_COLUMNS + INSERT_REF_ROW + " ON CONFLICT DO NOTHING"
INSERT_REF_BATCH_ROW = """(
    %s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s)
)"""

# Not schema_migrations: emptied, it would make the next `smsc-ingest migrate` apply every migration
# again to tables that exist.
PUBLIC_TABLES = """
SELECT tablename FROM pg_tables
WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
ORDER BY tablename
"""
COUNT_REF_ROWS = "SELECT count(*) FROM bench_status_events"
COUNT_DEAD_LETTERS = "SELECT count(*) FROM dead_letters"
COUNT_EVENTS = """
SELECT (SELECT count(*) FROM status_events)
     + (SELECT count(*) FROM incoming_messages)
     + (SELECT count(*) FROM call_confirmations)
"""
# stored_at is now() of the storing transaction; received_at is when the ingress received the request.
EVENT_SPAN = """
WITH e AS (
    SELECT received_at, stored_at FROM status_events
    UNION ALL SELECT received_at, stored_at FROM incoming_messages
    UNION ALL SELECT received_at, stored_at FROM call_confirmations
)
SELECT extract(epoch FROM min(received_at)), extract(epoch FROM max(received_at)),
       extract(epoch FROM max(stored_at))
FROM e
"""
# Per window [start, end) of receipt: events received in it, events stored in it, lag p50/p99 (s).
WINDOW = """
WITH e AS (
    SELECT received_at, stored_at FROM status_events
    UNION ALL SELECT received_at, stored_at FROM incoming_messages
    UNION ALL SELECT received_at, stored_at FROM call_confirmations
), w AS (
    SELECT to_timestamp(%(start)s) AS start, to_timestamp(%(end)s) AS stop
)
SELECT count(*) FILTER (WHERE received_at >= w.start AND received_at < w.stop),
       count(*) FILTER (WHERE stored_at >= w.start AND stored_at < w.stop),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at))
           FILTER (WHERE received_at >= w.start AND received_at < w.stop)
FROM e CROSS JOIN w
"""


@contextmanager
def database(url: str = DATABASE_URL) -> Iterator[Connection]:
    """An autocommit connection to the benchmark's database (or to `url`)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        yield conn


def redis(url: str = REDIS_URL) -> Redis:
    """A client of the benchmark's Redis database number (or of `url`)."""
    return Redis.from_url(url)


def empty(conn: Connection, client: Redis) -> None:
    """Flush our Redis database and truncate every table of our PostgreSQL database but the
    migrations' record."""
    client.flushdb()
    tables = [row[0] for row in conn.execute(PUBLIC_TABLES).fetchall()]
    if tables:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables))))


def create_ref_table(conn: Connection) -> None:
    conn.execute(CREATE_REF_TABLE)


def scalar(conn: Connection, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Queued:
    """The raw-request jobs of an RQ queue not finished yet."""

    jobs: int
    requests: int
    distinct_rids: int


def queued(client: Redis, queue: str) -> Queued:
    """Count the unfinished jobs of `queue` and the raw requests they carry (a job's argument is their list).

    Unfinished: queued, taken by a worker but not started yet (RQ's intermediate queue; a stopped
    worker can leave one there for RQ to requeue), or started.
    """
    q = Queue(queue, connection=client, serializer=JSONSerializer)
    taken = [
        i.decode() if isinstance(i, bytes) else str(i) for i in client.lrange(q.intermediate_queue_key, 0, -1)
    ]
    started = StartedJobRegistry(queue, connection=client).get_job_ids(cleanup=False)
    ids = list(dict.fromkeys([*q.get_job_ids(), *taken, *started]))
    requests = 0
    rids: set[str] = set()
    for start in range(0, len(ids), 1000):
        for job in Job.fetch_many(ids[start : start + 1000], connection=client, serializer=JSONSerializer):
            if job is None:
                continue
            batch = job.args[0] if job.args else []
            requests += len(batch)
            rids.update(str(raw.get("rid")) for raw in batch)
    return Queued(jobs=len(ids), requests=requests, distinct_rids=len(rids))


def failed_jobs(client: Redis, queue: str) -> int:
    """Jobs of `queue` that failed: given up (failed registry) or waiting for a retry (scheduled)."""
    failed = FailedJobRegistry(queue, connection=client).count
    return int(failed) + int(ScheduledJobRegistry(queue, connection=client).count)  # type: ignore[no-untyped-call]


def finished_jobs(client: Redis, queue: str) -> int:
    """Jobs of `queue` RQ finished within their result TTL (the product keeps them 60 s)."""
    return int(FinishedJobRegistry(queue, connection=client).count)
