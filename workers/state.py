"""The deployment's state, read once from Redis (RQ) and PostgreSQL: what the exporter and `stats` show.

Each server is read on its own, so one that does not answer never hides the other: its part is None
and the reason is kept. Every read is bounded: short socket timeouts, PostgreSQL's connect_timeout
and statement_timeout, and a deadline on the whole read of each server, because a server that
accepts connections but never answers (stopped, overloaded) would otherwise hang a scrape.
Nothing here writes: RQ's own `count` would run its registry cleanup, which moves and fails jobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcparse
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from smsc.exceptions import Conflict, PermanentError
from smsc.protocol.fields import DELIVERED_STATUSES, FAILED_STATUSES, Kind
from smsc.queue import queue_key
from smsc.redisconn import close, sync_client
from smsc.settings import Settings

T = TypeVar("T")

REDIS_CONNECT_TIMEOUT_SECONDS = 1.0
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0
POSTGRES_CONNECT_TIMEOUT_SECONDS = 2  # libpq's smallest


@dataclass(frozen=True)
class Patience:
    """How long a read may take: each PostgreSQL statement, and each server's whole read."""

    statement_ms: int
    deadline_seconds: float


# A scrape must be over well within Prometheus's default scrape timeout (10 s).
SCRAPE = Patience(statement_ms=2000, deadline_seconds=5.0)
# `stats` also counts a day of events, which takes longer on a big deployment; a person waits.
STATS = Patience(statement_ms=20_000, deadline_seconds=60.0)

# Queue entries looked at for the oldest job: the first whose job hash still exists counts.
_HEAD = 10

# Dead-letter classes the workers write, exported at 0 when none waits, so that a rule or a panel
# finds the series before the first dead letter (any other class appears once it has a row).
KNOWN_ERROR_CLASSES = (PermanentError.__name__, Conflict.__name__)

DEAD_LETTERS_WAITING = """
SELECT error_class, count(*) FROM dead_letters WHERE replayed_at IS NULL GROUP BY error_class
"""

COMMON_REASONS = """
SELECT error_class, reason, count(*) AS n FROM dead_letters WHERE replayed_at IS NULL
GROUP BY error_class, reason ORDER BY n DESC, error_class, reason LIMIT %(limit)s
"""

# The windows are on stored_at, the row's commit time: BRIN indexes on it (schema.sql) keep these
# from reading more than the newest pages of each table.
EVENTS_STORED = """
SELECT kind,
       count(*) FILTER (WHERE stored_at > now() - interval '5 minutes'),
       count(*) FILTER (WHERE stored_at > now() - interval '1 hour'),
       count(*)
FROM (
    SELECT 'status' AS kind, stored_at FROM status_events WHERE stored_at > now() - interval '24 hours'
    UNION ALL
    SELECT 'incoming', stored_at FROM incoming_messages WHERE stored_at > now() - interval '24 hours'
    UNION ALL
    SELECT 'call', stored_at FROM call_confirmations WHERE stored_at > now() - interval '24 hours'
) AS stored
GROUP BY kind
"""

# percentile_disc: the lag of a real row (the smallest one at or above that fraction of rows).
LAG = """
SELECT count(*),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY lag),
       percentile_disc(0.99) WITHIN GROUP (ORDER BY lag)
FROM (
    SELECT extract(epoch FROM stored_at - received_at)::float8 AS lag
    FROM status_events WHERE stored_at > now() - interval '5 minutes'
    UNION ALL
    SELECT extract(epoch FROM stored_at - received_at)::float8
    FROM incoming_messages WHERE stored_at > now() - interval '5 minutes'
    UNION ALL
    SELECT extract(epoch FROM stored_at - received_at)::float8
    FROM call_confirmations WHERE stored_at > now() - interval '5 minutes'
) AS lags
"""

# A message's row changes only in the transaction that stores a newer status event of it, so the
# status events of the window (indexed) lead to the messages (by primary key): no scan of `messages`.
MESSAGES_SETTLED = """
SELECT count(*) FILTER (WHERE m.status = ANY(%(delivered)s)),
       count(*) FILTER (WHERE m.status = ANY(%(failed)s))
FROM messages AS m
WHERE m.updated_at > now() - interval '24 hours'
  AND (m.account, m.message_id, m.phone) IN (
      SELECT account, message_id, phone FROM status_events WHERE stored_at > now() - interval '24 hours'
  )
"""


@dataclass(frozen=True)
class RedisState:
    """The queue as RQ keeps it, and Redis's own health."""

    queued: int
    oldest_job_age: float  # seconds; 0 when the queue is empty
    started: int
    scheduled: int
    failed: int
    workers_alive: int
    aof_enabled: bool
    aof_last_write_ok: bool
    evicted_keys: int


@dataclass(frozen=True)
class Activity:
    """What the workers stored lately, for `stats`."""

    stored: dict[str, tuple[int, int, int]]  # kind -> events stored in the last 5 min, 1 h, 24 h
    lag_events: int  # events stored in the last 5 min, whose lag the percentiles describe
    lag_p50: float | None  # seconds; None without events
    lag_p99: float | None
    delivered: int  # messages whose current status is a delivery, stored in the last 24 h
    failed: int  # ... a failure
    common_reasons: list[tuple[str, str, int]]  # (error class, reason, dead letters waiting)


@dataclass(frozen=True)
class PostgresState:
    """Dead letters waiting for a replay and, when asked for, the recent activity."""

    dead_letters: dict[str, int]  # error class -> rows not replayed
    activity: Activity | None


@dataclass(frozen=True)
class State:
    """One reading of both servers; a part is None when its server could not be read, with why."""

    redis: RedisState | None
    postgres: PostgresState | None
    redis_error: str | None = None
    postgres_error: str | None = None


class BoundedReads(Generic[T]):
    """Runs one server's read in a thread and waits for it until a deadline.

    A read past its deadline is left to finish (or fail) in its daemon thread; while it has not, the
    next read of that server fails at once instead of starting another, so a hung server costs one
    thread and one connection, never one per scrape.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._hung: threading.Thread | None = None

    def start(self, read: Callable[[], T]) -> Callable[[float], T]:
        """Start `read`; the returned function waits for its result until a monotonic deadline."""
        with self._lock:
            if self._hung is not None and self._hung.is_alive():
                return self._still_hung
            outcome: list[T] = []
            failure: list[BaseException] = []

            def run() -> None:
                try:
                    outcome.append(read())
                except Exception as e:  # noqa: BLE001 - handed to the waiting thread as the reason
                    failure.append(e)

            thread = threading.Thread(target=run, name=f"state-{self._name}", daemon=True)
            thread.start()

        def wait(deadline: float) -> T:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                with self._lock:
                    self._hung = thread
                raise TimeoutError(f"{self._name} did not answer in time")
            if failure:
                raise failure[0]
            return outcome[0]

        return wait

    def _still_hung(self, deadline: float) -> T:
        raise TimeoutError(f"{self._name} has not answered a previous read yet")


class StateReader:
    """Reads the state of one deployment (its queue, Redis and PostgreSQL) as often as asked."""

    def __init__(self, settings: Settings, patience: Patience = SCRAPE) -> None:
        self._settings = settings
        self._patience = patience
        self._redis = sync_client(
            settings.redis_url,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        )
        self._redis_reads: BoundedReads[RedisState] = BoundedReads("Redis")
        self._postgres_reads: BoundedReads[PostgresState] = BoundedReads("PostgreSQL")

    def read(self, *, activity: bool = False) -> State:
        """Both servers' state, read at the same time; `activity` adds what `stats` shows."""
        redis_result = self._redis_reads.start(self._read_redis)
        postgres_result = self._postgres_reads.start(lambda: self._read_postgres(activity))
        deadline = time.monotonic() + self._patience.deadline_seconds
        redis: RedisState | None = None
        postgres: PostgresState | None = None
        redis_error = postgres_error = None
        try:
            redis = redis_result(deadline)
        except Exception as e:  # noqa: BLE001 - any failure to read means "down", with its reason
            redis_error = _reason(e)
        try:
            postgres = postgres_result(deadline)
        except Exception as e:  # noqa: BLE001
            postgres_error = _reason(e)
        return State(redis, postgres, redis_error, postgres_error)

    def close(self) -> None:
        """Close the Redis connections (a read still hanging keeps its own)."""
        close(self._redis)

    def _read_redis(self) -> RedisState:
        key, name = queue_key(self._settings), self._settings.queue
        now = time.time()
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(key)
            pipe.lrange(key, 0, _HEAD - 1)
            # Running jobs whose worker still beats: an abandoned one (worker killed) expires and is
            # retried or failed by a worker's maintenance within a job timeout.
            pipe.zcount(StartedJobRegistry.key_template.format(name), now, "+inf")
            # Scored by when each is due, not by an expiry: all of them wait.
            pipe.zcard(ScheduledJobRegistry.key_template.format(name))
            # Failed jobs past their failure TTL have already expired; RQ removes their entries later.
            pipe.zcount(FailedJobRegistry.key_template.format(name), now, "+inf")
            pipe.smembers(WORKERS_BY_QUEUE_KEY % name)
            pipe.info("persistence")
            pipe.info("stats")
            queued, head, started, scheduled, failed, workers, persistence, stats = pipe.execute()
        # A dead worker's key expires with its heartbeat, but its name stays in the queue's set
        # until some worker cleans it: only names whose key still exists are alive.
        worker_keys = sorted(workers)
        with self._redis.pipeline(transaction=False) as pipe:
            for job_id in head:
                pipe.hget(Job.key_for(job_id.decode()), "enqueued_at")
            for worker_key in worker_keys:
                pipe.exists(worker_key)
            answers = pipe.execute()
        enqueued = [e for e in answers[: len(head)] if e]
        age = max(0.0, now - utcparse(enqueued[0].decode()).timestamp()) if enqueued else 0.0
        return RedisState(
            queued=queued,
            oldest_job_age=age,
            started=started,
            scheduled=scheduled,
            failed=failed,
            workers_alive=sum(1 for alive in answers[len(head) :] if alive),
            aof_enabled=int(persistence.get("aof_enabled", 0)) == 1,
            aof_last_write_ok=persistence.get("aof_last_write_status") == "ok",
            evicted_keys=int(stats.get("evicted_keys", 0)),
        )

    def _read_postgres(self, activity: bool) -> PostgresState:
        with _connect(self._settings.database_url, self._patience.statement_ms) as conn:
            waiting = dict.fromkeys(KNOWN_ERROR_CLASSES, 0)
            waiting.update({str(c): int(n) for c, n in conn.execute(DEAD_LETTERS_WAITING)})
            return PostgresState(waiting, _activity(conn) if activity else None)


def _activity(conn: psycopg.Connection[tuple[Any, ...]]) -> Activity:
    stored = {str(k): (int(a), int(b), int(c)) for k, a, b, c in conn.execute(EVENTS_STORED)}
    lag = conn.execute(LAG).fetchone()
    settled = conn.execute(
        MESSAGES_SETTLED, {"delivered": sorted(DELIVERED_STATUSES), "failed": sorted(FAILED_STATUSES)}
    ).fetchone()
    # Aggregates without GROUP BY: always one row.
    assert lag is not None
    assert settled is not None
    reasons = conn.execute(COMMON_REASONS, {"limit": 3}).fetchall()
    return Activity(
        stored={kind.value: stored.get(kind.value, (0, 0, 0)) for kind in Kind},
        lag_events=int(lag[0]),
        lag_p50=None if lag[1] is None else float(lag[1]),
        lag_p99=None if lag[2] is None else float(lag[2]),
        delivered=int(settled[0]),
        failed=int(settled[1]),
        common_reasons=[(str(c), str(r), int(n)) for c, r, n in reasons],
    )


def _connect(url: str, statement_ms: int) -> psycopg.Connection[tuple[Any, ...]]:
    conn = psycopg.connect(url, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS)
    try:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(statement_ms),))
    except BaseException:
        conn.close()
        raise
    return conn


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
