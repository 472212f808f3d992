"""The queue state as the exporter and `smsc-ingest stats` read it: a known content of Redis (RQ) and
PostgreSQL, and what each shows of it, exactly; with one server down, what the other still shows."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb
from redis import Redis
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import Worker
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from smsc.devservers import free_port
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, queue_key, stage_job
from smsc.settings import Settings
from tests.integration.conftest import service_env
from tests.integration.procs import COMMAND, environment, spawn
from tests.integration.servers import ThrowawayRedis, port_open, wait_until
from workers.state import EVENTS_STORED, LAG, MESSAGES_SETTLED, RedisState, StateReader
from workers.store import UPSERT_DEAD_LETTER

# Our own queue name, in our own Redis database.
QUEUE = "smsc-state-test"
OLDEST = timedelta(hours=2)


@pytest.fixture
def deployment(redis_db: Redis, db: Any) -> Settings:
    """The test servers, with a queue of this module's own."""
    return Settings.from_env(service_env(SMSC_QUEUE=QUEUE))


def raw(rid: str) -> RawRequest:
    return RawRequest(rid, time.time(), "charset=utf-8", "application/x-www-form-urlencoded", b"id=1")


def fill_queue(settings: Settings, redis: Redis) -> datetime:
    """4 queue entries (one of a job whose hash is gone), 1 live and 1 abandoned execution, 2 scheduled
    jobs (one already due), 1 failed job and 1 whose failure TTL passed, 1 live and 1 dead worker.
    Returns when the oldest queued job was enqueued."""
    oldest = build_job([raw("old")], settings)
    oldest.enqueued_at = datetime.now(UTC) - OLDEST
    with redis.pipeline() as pipe:
        # RQ skips an id whose job hash has vanished; the oldest job is the next one.
        pipe.rpush(queue_key(settings), "vanished-job")
        for job in (oldest, build_job([raw("new1")], settings), build_job([raw("new2")], settings)):
            stage_job(pipe, job, settings)
        pipe.execute()

    queue = Queue(settings.queue, connection=redis, serializer=JSONSerializer)
    worker = Worker([queue], connection=redis, serializer=JSONSerializer)
    worker.register_birth()
    # A worker killed without a word: its name stays in the queue's set, its key expired.
    redis.sadd(WORKERS_BY_QUEUE_KEY % settings.queue, "rq:worker:killed-long-ago")

    running = _saved(build_job([raw("running")], settings), redis)
    with redis.pipeline() as pipe:
        # What a worker does when it takes a job (rq's Worker.prepare_execution).
        running.prepare_for_execution(worker.name, pipe)
        Execution.create(running, ttl=60, pipeline=pipe, worker_name=worker.name)
        pipe.execute()
    redis.zadd(StartedJobRegistry(queue=queue).key, {"abandoned:execution": time.time() - 10})

    scheduled = ScheduledJobRegistry(queue=queue)
    scheduled.schedule(_saved(build_job([raw("retry1")], settings), redis), datetime.now(UTC) + OLDEST)
    scheduled.schedule(_saved(build_job([raw("retry2")], settings), redis), datetime.now(UTC) - OLDEST)

    failed = FailedJobRegistry(queue=queue)
    failed.add(_saved(build_job([raw("failed")], settings), redis), ttl=3600, exc_string="TransientError")
    redis.zadd(failed.key, {"failed-ttl-passed": time.time() - 10})
    assert oldest.enqueued_at is not None
    return oldest.enqueued_at


def _saved(job: Job, redis: Redis) -> Job:
    """`job` stored in Redis, on a connection RQ's registries can use."""
    job.connection = redis
    job.save()
    return job


# What fill_queue leaves, as each reader must show it (the oldest job's age aside).
QUEUE_STATE = {"queued": 4, "started": 1, "scheduled": 2, "failed": 1, "workers_alive": 1}


def dead_letters(db: Any) -> None:
    """Waiting: 2 PermanentError (one reason), 1 Conflict, 1 DataError; 1 PermanentError replayed."""
    rows = [
        ("d1", "PermanentError", "status: ts 'x' is not a unix time"),
        ("d2", "PermanentError", "status: ts 'x' is not a unix time"),
        ("d3", "Conflict", "incoming 5001: text 'a' / 'b'"),
        ("d4", "DataError", "PostgreSQL refused the row"),
        ("d5", "PermanentError", "cannot decode: body is not valid utf-8"),
    ]
    for rid, error_class, reason in rows:
        db.execute(
            UPSERT_DEAD_LETTER,
            {
                "account": "default",
                "request_id": rid,
                "job_id": "job-1",
                "kind": "status",
                "event_ref": "1001",
                "phone": "79998887766",
                "error_class": error_class,
                "reason": reason,
                "raw": Jsonb(raw(rid).to_json()),
                "received_at": datetime.now(UTC),
            },
        )
    db.execute("UPDATE dead_letters SET replayed_at = now(), replay_job_id = 'j2' WHERE request_id = 'd5'")


WAITING = {"Conflict": 1, "DataError": 1, "PermanentError": 2}


def redis_info(redis: Redis) -> dict[str, int]:
    """The Redis health figures, read independently of the product: CONFIG and INFO."""
    return {
        "aof_enabled": int(redis.config_get("appendonly")["appendonly"] == "yes"),
        "aof_last_write_ok": int(redis.info("persistence")["aof_last_write_status"] == "ok"),
        "evicted_keys": int(redis.info("stats")["evicted_keys"]),
    }


def test_the_state_reader_reads_exactly_the_known_content(
    deployment: Settings, redis_db: Redis, db: Any
) -> None:
    """Queue length, the oldest live job's age, live registry entries, live workers, waiting dead
    letters by class: expired and replayed entries are not counted."""
    enqueued_at = fill_queue(deployment, redis_db)
    dead_letters(db)
    reader = StateReader(deployment)
    before = datetime.now(UTC) - enqueued_at
    state = reader.read()
    after = datetime.now(UTC) - enqueued_at
    reader.close()
    assert state.redis_error is None
    assert state.postgres_error is None
    assert state.redis is not None
    assert state.postgres is not None
    assert before.total_seconds() <= state.redis.oldest_job_age <= after.total_seconds()
    info = redis_info(redis_db)
    assert state.redis == RedisState(
        **QUEUE_STATE,
        oldest_job_age=state.redis.oldest_job_age,
        aof_enabled=bool(info["aof_enabled"]),
        aof_last_write_ok=bool(info["aof_last_write_ok"]),
        evicted_keys=info["evicted_keys"],
    )
    assert state.postgres.dead_letters == WAITING
    assert state.postgres.activity is None


def test_an_empty_deployment_reads_as_zeros(deployment: Settings, redis_db: Redis, db: Any) -> None:
    """No queue, no worker, no dead letter: zeros, and the dead-letter classes the workers write at 0."""
    reader = StateReader(deployment)
    state = reader.read()
    reader.close()
    assert state.redis is not None
    assert state.postgres is not None
    assert (state.redis.queued, state.redis.oldest_job_age, state.redis.workers_alive) == (0, 0.0, 0)
    assert (state.redis.started, state.redis.scheduled, state.redis.failed) == (0, 0, 0)
    assert state.postgres.dead_letters == {"Conflict": 0, "PermanentError": 0}


class Exporter:
    """`smsc-ingest exporter` on a free loopback port, as an operator runs it."""

    def __init__(self, **overrides: str) -> None:
        self.port = free_port()
        args = [COMMAND, "exporter", "--port", str(self.port)]
        self.proc = spawn(args, environment(SMSC_QUEUE=QUEUE, **overrides))
        wait_until(lambda: port_open(self.port), 20, "the exporter")

    def scrape(self) -> dict[str, float]:
        """One scrape: every sample, named with its labels as Prometheus shows it."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=60) as answer:
            text = answer.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples


def test_a_scrape_shows_exactly_the_known_content(deployment: Settings, redis_db: Redis, db: Any) -> None:
    """Every series of the exporter, over real HTTP, equals what was put in Redis and PostgreSQL."""
    enqueued_at = fill_queue(deployment, redis_db)
    dead_letters(db)
    exporter = Exporter()
    before = (datetime.now(UTC) - enqueued_at).total_seconds()
    samples = exporter.scrape()
    after = (datetime.now(UTC) - enqueued_at).total_seconds()
    assert before <= samples.pop("smsc_queue_oldest_job_age_seconds") <= after
    info = redis_info(redis_db)
    assert samples == {
        "smsc_redis_up": 1,
        "smsc_postgres_up": 1,
        "smsc_queue_jobs": 4,
        'smsc_queue_registry_jobs{registry="started"}': 1,
        'smsc_queue_registry_jobs{registry="scheduled"}': 2,
        'smsc_queue_registry_jobs{registry="failed"}': 1,
        "smsc_workers_alive": 1,
        "smsc_redis_aof_enabled": info["aof_enabled"],
        "smsc_redis_aof_last_write_ok": info["aof_last_write_ok"],
        "smsc_redis_evicted_keys_total": info["evicted_keys"],
        'smsc_dead_letters_waiting{error_class="Conflict"}': 1,
        'smsc_dead_letters_waiting{error_class="DataError"}': 1,
        'smsc_dead_letters_waiting{error_class="PermanentError"}': 2,
        f'smsc_build_info{{component="exporter",version="{version("smsc-ingest")}"}}': 1,
    }
    # Values are read at each scrape, never kept: a job more, a dead letter replayed.
    with redis_db.pipeline() as pipe:
        stage_job(pipe, build_job([raw("later")], deployment), deployment)
        pipe.execute()
    db.execute("UPDATE dead_letters SET replayed_at = now() WHERE error_class = 'Conflict'")
    again = exporter.scrape()
    assert again["smsc_queue_jobs"] == 5
    assert again['smsc_dead_letters_waiting{error_class="Conflict"}'] == 0


REDIS_SERIES = {
    "smsc_queue_jobs",
    "smsc_queue_oldest_job_age_seconds",
    'smsc_queue_registry_jobs{registry="started"}',
    'smsc_queue_registry_jobs{registry="scheduled"}',
    'smsc_queue_registry_jobs{registry="failed"}',
    "smsc_workers_alive",
    "smsc_redis_aof_enabled",
    "smsc_redis_aof_last_write_ok",
    "smsc_redis_evicted_keys_total",
}
POSTGRES_SERIES = {
    'smsc_dead_letters_waiting{error_class="Conflict"}',
    'smsc_dead_letters_waiting{error_class="DataError"}',
    'smsc_dead_letters_waiting{error_class="PermanentError"}',
}


def test_redis_stalled_then_down_leaves_the_postgresql_numbers(
    throwaway_redis: ThrowawayRedis, deployment: Settings, db: Any
) -> None:
    """A Redis with AOF shows AOF on and its last write ok; stalled or killed, it shows smsc_redis_up 0
    and none of its series (no stale numbers), while the dead letters are still there."""
    dead_letters(db)
    exporter = Exporter(REDIS_URL=throwaway_redis.url)
    samples = exporter.scrape()
    assert set(samples) >= REDIS_SERIES | POSTGRES_SERIES
    assert (samples["smsc_redis_up"], samples["smsc_postgres_up"]) == (1, 1)
    assert (samples["smsc_redis_aof_enabled"], samples["smsc_redis_aof_last_write_ok"]) == (1, 1)
    assert samples["smsc_redis_evicted_keys_total"] == 0

    throwaway_redis.pause()
    stalled = exporter.scrape()
    assert (stalled["smsc_redis_up"], stalled["smsc_postgres_up"]) == (0, 1)
    assert REDIS_SERIES & set(stalled) == set()
    assert {k: v for k, v in stalled.items() if k in POSTGRES_SERIES} == {
        f'smsc_dead_letters_waiting{{error_class="{c}"}}': n for c, n in WAITING.items()
    }
    throwaway_redis.resume()
    wait_until(lambda: exporter.scrape()["smsc_redis_up"] == 1, 30, "Redis to answer the exporter again")

    client = Redis.from_url(throwaway_redis.url)
    client.config_set("appendonly", "no")
    client.close()
    assert exporter.scrape()["smsc_redis_aof_enabled"] == 0

    throwaway_redis.kill()
    down = exporter.scrape()
    assert (down["smsc_redis_up"], down["smsc_postgres_up"]) == (0, 1)
    assert REDIS_SERIES & set(down) == set()
    assert set(down) >= POSTGRES_SERIES


def closed_port_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/smsc"


def test_postgresql_unreachable_leaves_the_redis_numbers(deployment: Settings, redis_db: Redis) -> None:
    """PostgreSQL refusing connections: smsc_postgres_up 0, no dead-letter series, the queue still read."""
    fill_queue(deployment, redis_db)
    samples = Exporter(DATABASE_URL=closed_port_url()).scrape()
    assert (samples["smsc_redis_up"], samples["smsc_postgres_up"]) == (1, 0)
    assert not any(name.startswith("smsc_dead_letters_waiting") for name in samples)
    assert samples["smsc_queue_jobs"] == QUEUE_STATE["queued"]
    assert samples["smsc_workers_alive"] == QUEUE_STATE["workers_alive"]


# ---- smsc-ingest stats ----

INSERT_STATUS = """
INSERT INTO status_events (message_id, phone, status, params, request_id, received_at, stored_at)
VALUES (%(id)s, '79998887766', 1, '{}', %(rid)s,
        now() - %(age)s * interval '1 second' - %(lag)s * interval '1 second',
        now() - %(age)s * interval '1 second')
"""
INSERT_INCOMING = """
INSERT INTO incoming_messages (id, phone, to_phone, text, params, request_id, received_at, stored_at)
VALUES (%(id)s, '79998887766', '79001234567', 'hi', '{}', %(rid)s,
        now() - %(age)s * interval '1 second' - %(lag)s * interval '1 second',
        now() - %(age)s * interval '1 second')
"""
INSERT_CALL = """
INSERT INTO call_confirmations (phone, called_at, params, request_id, received_at, stored_at)
VALUES ('79998887766', now() - %(id)s * interval '1 second', '{}', %(rid)s,
        now() - %(age)s * interval '1 second' - %(lag)s * interval '1 second',
        now() - %(age)s * interval '1 second')
"""
INSERT_MESSAGE = """
INSERT INTO messages (message_id, phone, status, updated_at)
VALUES (%(id)s, '79998887766', %(status)s, now() - %(age)s * interval '1 second')
"""

MINUTE, HOUR = 60, 3600
# Each window's edges, 30 s inside and outside (the command runs within seconds of the inserts).
INSIDE_5M, OUTSIDE_5M = 5 * MINUTE - 30, 5 * MINUTE + 30
INSIDE_1H, OUTSIDE_1H = HOUR - 30, HOUR + 30
INSIDE_24H, OUTSIDE_24H = 24 * HOUR - 30, 24 * HOUR + 30
# Lags of the events stored in the last 5 min, over the three tables; p50 and p99 computed here.
LAGS = list(range(1, 101))


def nearest_rank(values: list[int], fraction: float) -> float:
    """The nearest-rank percentile: the value at rank ceil(fraction * n), counting from 1."""
    ordered = sorted(values)
    return float(ordered[math.ceil(round(fraction * len(ordered), 9)) - 1])


def activity(db: Any) -> None:
    """Events at chosen ages and lags, messages in chosen states (see the expected figures below)."""
    # 98 statuses, 1 incoming SMS, 1 call stored 4.5 min ago, with lags 1..100 s.
    for i, lag in enumerate(LAGS[:98], start=1):
        db.execute(INSERT_STATUS, {"id": i, "rid": f"s{i}", "age": INSIDE_5M, "lag": lag})
    db.execute(INSERT_INCOMING, {"id": 1, "rid": "i1", "age": INSIDE_5M, "lag": LAGS[98]})
    db.execute(INSERT_CALL, {"id": 1, "rid": "c1", "age": INSIDE_5M, "lag": LAGS[99]})
    # Older statuses, each with a lag that would change both percentiles if it counted.
    for i, age in enumerate((OUTSIDE_5M, INSIDE_1H, OUTSIDE_1H, 2 * HOUR, INSIDE_24H, OUTSIDE_24H), 101):
        db.execute(INSERT_STATUS, {"id": i, "rid": f"s{i}", "age": age, "lag": 10_000})
    db.execute(INSERT_INCOMING, {"id": 2, "rid": "i2", "age": 2 * HOUR, "lag": 1})
    db.execute(INSERT_CALL, {"id": 2, "rid": "c2", "age": OUTSIDE_24H, "lag": 1})
    # Messages as the worker leaves them: updated with the status event that moved them.
    settled = {1: 1, 2: 2, 3: 4, 4: 3, 5: 20, 6: 25, 7: 0, 8: -1}  # message id -> current status
    for message_id, status in settled.items():
        db.execute(INSERT_MESSAGE, {"id": message_id, "status": status, "age": INSIDE_5M})
    db.execute(INSERT_MESSAGE, {"id": 104, "status": 23, "age": 2 * HOUR})  # failed 2 h ago: counts
    db.execute(INSERT_MESSAGE, {"id": 106, "status": 1, "age": OUTSIDE_24H})  # delivered 24 h ago: not


EXPECTED_STATS: dict[str, Any] = {
    "account": None,
    "redis": {"up": True, "error": None},  # AOF figures added from the server's own CONFIG and INFO
    "postgres": {"up": True, "error": None},
    "queue": {"name": QUEUE, "jobs": 4},  # the oldest job's age checked on its own
    "workers_alive": 1,
    "registries": {"started": 1, "scheduled": 2, "failed": 1},
    "dead_letters": {
        "waiting": 4,
        "by_error_class": WAITING,
        "commonest_reasons": [
            {"error_class": "PermanentError", "reason": "status: ts 'x' is not a unix time", "count": 2},
            {"error_class": "Conflict", "reason": "incoming 5001: text 'a' / 'b'", "count": 1},
            {"error_class": "DataError", "reason": "PostgreSQL refused the row", "count": 1},
        ],
    },
    "events_stored": {
        "status": {"5m": 98, "1h": 100, "24h": 103},
        "incoming": {"5m": 1, "1h": 1, "24h": 2},
        "call": {"5m": 1, "1h": 1, "24h": 1},
    },
    "lag_seconds": {"events": 100, "p50": nearest_rank(LAGS, 0.5), "p99": nearest_rank(LAGS, 0.99)},
    "messages_24h": {"delivered": 3, "failed": 4},
}


def stats(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, "stats", *args],
        env=environment(SMSC_QUEUE=QUEUE, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stats_json_gives_every_figure_exactly(deployment: Settings, redis_db: Redis, db: Any) -> None:
    """`stats --json`: one object with stable keys; windows at their edges, the lag percentiles,
    delivered and failed messages, the queue and the dead letters, all exact; exit code 0."""
    enqueued_at = fill_queue(deployment, redis_db)
    dead_letters(db)
    activity(db)
    before = (datetime.now(UTC) - enqueued_at).total_seconds()
    done = stats("--json")
    after = (datetime.now(UTC) - enqueued_at).total_seconds()
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    age = figures["queue"].pop("oldest_job_age_seconds")
    assert round(before, 3) <= age <= round(after, 3)
    info = redis_info(redis_db)
    expected = json.loads(json.dumps(EXPECTED_STATS))
    expected["redis"].update({k: bool(v) if k != "evicted_keys" else v for k, v in info.items()})
    assert figures == expected
    assert list(figures) == list(EXPECTED_STATS)
    # One older row counted by mistake would move both percentiles.
    assert nearest_rank([*LAGS, 10_000], 0.5) != expected["lag_seconds"]["p50"]
    assert nearest_rank([*LAGS, 10_000], 0.99) != expected["lag_seconds"]["p99"]


def test_stats_text_shows_the_same_figures_aligned(deployment: Settings, redis_db: Redis, db: Any) -> None:
    """The text form: one aligned line per figure, the same numbers as the JSON."""
    fill_queue(deployment, redis_db)
    dead_letters(db)
    activity(db)
    done = stats()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Redis                   up (AOF ")
    assert lines[1:] == [
        "PostgreSQL              up",
        "",
        f"Queue                   {QUEUE}: 4 jobs, oldest 2.0 h",
        "Workers alive           1",
        "RQ registries           started 1, scheduled 2 (retries), failed 1 (retries exhausted)",
        "Dead letters waiting    4 (PermanentError 2, Conflict 1, DataError 1)",
        "  commonest reasons          2  PermanentError: status: ts 'x' is not a unix time",
        "                             1  Conflict: incoming 5001: text 'a' / 'b'",
        "                             1  DataError: PostgreSQL refused the row",
        "Events stored               5 min      1 h     24 h",
        "  status                       98      100      103",
        "  incoming                      1        1        2",
        "  call                          1        1        1",
        "Lag, last 5 min         p50 50.0 s, p99 99.0 s (100 events)",
        "Messages, last 24 h     delivered 3, failed 4",
    ]


@pytest.mark.parametrize("down", ["REDIS_URL", "DATABASE_URL"])
def test_stats_prints_what_it_could_read_and_exits_1(
    deployment: Settings, redis_db: Redis, db: Any, down: str
) -> None:
    """One server unreachable: its figures are null (DOWN in the text), the other's are there, exit 1."""
    fill_queue(deployment, redis_db)
    dead_letters(db)
    url = f"redis://127.0.0.1:{free_port()}/0" if down == "REDIS_URL" else closed_port_url()
    done = stats("--json", **{down: url})
    assert done.returncode == 1
    figures = json.loads(done.stdout)
    if down == "REDIS_URL":
        assert figures["redis"]["up"] is False
        assert "Connection" in figures["redis"]["error"]
        assert (figures["queue"]["jobs"], figures["workers_alive"]) == (None, None)
        assert figures["dead_letters"]["by_error_class"] == WAITING
        assert figures["events_stored"]["status"] == {"5m": 0, "1h": 0, "24h": 0}
    else:
        assert figures["postgres"]["up"] is False
        assert "Connection refused" in figures["postgres"]["error"]
        assert (figures["queue"]["jobs"], figures["workers_alive"]) == (4, 1)
        assert figures["dead_letters"] == {"waiting": None, "by_error_class": None, "commonest_reasons": None}
        assert figures["events_stored"] is None
    text = stats(**{down: url})
    assert text.returncode == 1
    shown = "Redis" if down == "REDIS_URL" else "PostgreSQL"
    assert f"{shown:<24}DOWN: " in text.stdout
    assert ("Workers alive           1" in text.stdout) == (down == "DATABASE_URL")
    assert ("Dead letters waiting    4 (" in text.stdout) == (down == "REDIS_URL")


def test_the_stats_queries_read_only_the_newest_rows_of_big_tables(db: Any) -> None:
    """With a year of statuses in their month partitions, and messages, the windows of the last 24 h
    are found through each partition's stored_at index and the messages by primary key: no partition
    holding rows, and not messages, is read whole."""
    db.execute(
        "SELECT smsc_ensure_partition('status_events', m) "
        "FROM generate_series(now() - interval '1 year', now(), interval '1 month') AS m"
    )
    db.execute(
        """
        INSERT INTO status_events (message_id, phone, status, status_at, params, request_id, received_at,
            stored_at)
        SELECT i, '79998887766', 1, t, '{}', 'r' || i, t, t
        FROM generate_series(1, 240000) AS i,
             LATERAL (SELECT now() - (240000 - i) * interval '131 seconds') AS s(t)
        """
    )
    db.execute(
        """
        INSERT INTO messages (message_id, phone, status, updated_at)
        SELECT i, '79998887766', 1, now() - (240000 - i) * interval '131 seconds'
        FROM generate_series(1, 240000) AS i
        """
    )
    for table in ("status_events", "messages"):
        db.execute(f"VACUUM ANALYZE {table}")  # what autovacuum does to a table growing like this
    holding = {
        name
        for (name,) in db.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM status_events WHERE status_at IS NOT NULL"
        )
    }
    assert len(holding) >= 12, holding

    plans = {}
    for name, query, params in (
        ("events", EVENTS_STORED, {"account": None}),
        ("lag", LAG, {"account": None}),
        (
            "messages",
            MESSAGES_SETTLED,
            {"account": None, "delivered": [1, 2, 4], "failed": [3, 20, 22, 23, 24, 25]},
        ),
    ):
        plans[name] = "\n".join(row[0] for row in db.execute("EXPLAIN " + query, params))
    for plan in plans.values():
        read_whole = set(re.findall(r"Seq Scan on (status_events\w*)", plan))
        assert not read_whole & holding, plan
        assert "Seq Scan on messages" not in plan, plan
        for partition in holding:
            assert f"Bitmap Index Scan on {partition}_stored_at_idx" in plan, plan
    assert "Index Scan using messages_pkey on messages" in plans["messages"], plans["messages"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "0"], {}, "'0' is not a port (1-65535)"),
        ([], {"SMSC_EXPORTER_PORT": "http"}, "SMSC_EXPORTER_PORT: 'http' is not a port (1-65535)"),
    ],
)
def test_a_bad_exporter_port_is_refused_with_exit_code_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    """A port outside 1-65535, given or from the environment: one line on stderr, exit code 2."""
    done = subprocess.run(
        [COMMAND, "exporter", *args], env=environment(**env), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_the_exporter_stops_on_sigterm_and_says_when_its_port_is_taken(deployment: Settings) -> None:
    """A second exporter on a taken port exits 1 saying so; the first stops on SIGTERM with 0."""
    first = Exporter()
    second = subprocess.run(
        [COMMAND, "exporter", "--port", str(first.port)],
        env=environment(SMSC_QUEUE=QUEUE),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{first.port}: Address already in use" in second.stderr
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0


def test_a_blocked_postgresql_read_is_cut_by_its_statement_timeout(deployment: Settings, db: Any) -> None:
    """A table locked by someone else: the read gives up (PostgreSQL down, saying why) instead of
    hanging the scrape, and the next read after the lock is gone answers."""
    dead_letters(db)
    reader = StateReader(deployment)
    with db.transaction():
        db.execute("LOCK TABLE dead_letters IN ACCESS EXCLUSIVE MODE")
        blocked = reader.read()
    assert blocked.postgres is None
    assert blocked.postgres_error is not None
    assert "statement timeout" in blocked.postgres_error
    assert blocked.redis is not None
    state = reader.read()
    reader.close()
    assert state.postgres is not None
    assert state.postgres.dead_letters == WAITING
