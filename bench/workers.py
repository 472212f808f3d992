"""2. Workers: events/s stored from a pre-filled queue, beside RQ and PostgreSQL references."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from bench import logscan, payloads, stores
from bench.config import (
    CEILING_BATCH,
    CEILING_ROWS,
    JOB_SIZE,
    QUEUE,
    REF_JOBS,
    REF_QUEUE,
    RUNS,
    SMSC_INGEST,
    WORKER_EVENTS,
    WORKER_TIMEOUT_SECONDS,
    product_env,
)
from bench.procs import BenchError, Processes, wait_until
from bench.report import Column, Ratio, Results, Section
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings

FIRST_EVENT = 20_000_000
# key: (label, short label)
REFERENCES = {
    "rq_insert": ("RQ: 1 job per payload, 1 INSERT", "RQ+INSERT"),
    "rq_noop": ("RQ: no-op jobs", "RQ no-op"),
    "ceiling": (f"PostgreSQL: {CEILING_BATCH}-row INSERTs", "PG ceiling"),
}
BATCH_INSERT = sql.SQL(stores.INSERT_REF_COLUMNS + ", ".join([stores.INSERT_REF_BATCH_ROW] * CEILING_BATCH))
CEILING_INSERT = BATCH_INSERT + sql.SQL(" ON CONFLICT DO NOTHING")
ROW_FIELDS = ("id", "phone", "status", "ts", "ts", "err", "cnt", "type", "cost", "flag", "sender", "params")


def check_stored(results: Results, label: str, stored: int, conn: stores.Connection, client: Redis) -> None:
    """A problem unless every queued event was stored, with no dead letter and no failed job."""
    dead = stores.scalar(conn, stores.COUNT_DEAD_LETTERS)
    failed = stores.failed_jobs(client, QUEUE)
    if stored != WORKER_EVENTS or dead or failed:
        results.problem(
            f"{label}: {WORKER_EVENTS} events queued, {stored} stored, {dead} dead letters, "
            f"{failed} failed jobs"
        )


def run(procs: Processes, results: Results) -> None:
    """The product with 1 and 2 burst workers, then the references, RUNS times each."""
    section = Section(
        "workers",
        "2. Workers: events/s stored in PostgreSQL from a pre-filled queue",
        [Column("eps", "events/s", 0), Column("seconds", "seconds", 2)],
    )
    section.notes += [
        f"smsc-ingest: {WORKER_EVENTS} raw requests pre-queued as jobs of {JOB_SIZE} requests each "
        "(smsc.queue.build_job/stage_job), the ingress's payload mix; N x `smsc-ingest worker --burst`",
        f"RQ: {REF_JOBS} jobs, JSON serializer, 1 SimpleWorker in burst; +INSERT: one row into a copy of "
        "status_events per job, in its own transaction, on a kept psycopg connection",
        f"PostgreSQL ceiling: {CEILING_ROWS} status rows in {CEILING_BATCH}-row INSERT ... ON CONFLICT DO "
        "NOTHING statements from one psycopg connection (autocommit), into the same copy of status_events",
        "timed from the moment all workers have registered with RQ (the jobs still queued then are counted) "
        "to the exit of the last one; the ceiling: its INSERTs",
    ]
    results.sections.append(section)
    settings = Settings.from_env(product_env())
    client = stores.redis()
    with stores.database() as conn:
        for workers in (1, 2):
            key, label = f"smsc_{workers}w", f"smsc-ingest worker x{workers}"
            section.row(key, label, f"x{workers}")
            print(f"  {label} ...", flush=True)
            for i in range(RUNS):
                stores.empty(conn, client)
                prefill(client, settings, list(payloads.raw_requests(FIRST_EVENT, WORKER_EVENTS)))
                argv = [SMSC_INGEST, "worker", "--burst"]
                names = [f"workers-{workers}w-{i}-{w}" for w in range(workers)]
                taken, seconds = drain(procs, [argv] * workers, names, client, QUEUE)
                section.add(key, label, eps=taken * JOB_SIZE / seconds, seconds=seconds)
                check_stored(results, label, stores.scalar(conn, stores.COUNT_EVENTS), conn, client)
                for name in names:
                    if found := logscan.complaints(name):
                        results.problem(f"{label} logged warnings/errors: {logscan.summary(found)}")
        stores.create_ref_table(conn)
        for ref, (label, short) in REFERENCES.items():
            section.row(ref, label, short)
            print(f"  {label} ...", flush=True)
            for _ in range(RUNS):
                stores.empty(conn, client)
                events, seconds = _reference(ref, procs, client, conn)
                section.add(ref, label, eps=events / seconds, seconds=seconds)
                # Every job must have written its row; `events` counts only those timed (a job may
                # finish before every worker has registered and the clock starts).
                expected = CEILING_ROWS if ref == "ceiling" else REF_JOBS
                if ref != "rq_noop" and (n := stores.scalar(conn, stores.COUNT_REF_ROWS)) != expected:
                    results.problem(f"reference {label}: {expected} rows expected, {n} in the table")
        stores.empty(conn, client)
    for workers in (1, 2):
        section.ratios += [Ratio(f"smsc_{workers}w", ref, "eps") for ref in REFERENCES]


def prefill(client: Redis, settings: Settings, requests: list[RawRequest]) -> None:
    """Queue `requests` in jobs of JOB_SIZE, as the product writes them."""
    pipe = client.pipeline(transaction=True)
    for start in range(0, len(requests), JOB_SIZE):
        stage_job(pipe, build_job(requests[start : start + JOB_SIZE], settings), settings)
        # Twenty jobs per MULTI/EXEC: a few hundred KB a round trip.
        if len(pipe) >= 60:
            pipe.execute()
    pipe.execute()


def drain(
    procs: Processes,
    argvs: Sequence[list[str]],
    names: Sequence[str],
    client: Redis,
    queue: str,
    env: dict[str, str] | None = None,
) -> tuple[int, float]:
    """Start the workers together and time them once all are up; (jobs taken meanwhile, seconds).

    Timing starts when the last worker registered with RQ, so that one worker importing more slowly
    than another does not count; it ends when the last one has exited.
    """
    q = Queue(queue, connection=client)
    env = env or product_env()
    started = [procs.start(argv, env, name) for argv, name in zip(argvs, names, strict=True)]
    up = wait_until(
        lambda: (
            Worker.count(connection=client, queue=q) >= len(started)
            or any(p.poll() is not None for p in started)
        ),
        30,
        "the workers to register",
        interval=0.002,
    )
    remaining = q.count
    codes = procs.wait(started, WORKER_TIMEOUT_SECONDS)
    seconds = time.monotonic() - up
    if any(codes):
        raise BenchError(f"workers exited with {codes}: see bench-results/logs/{names[0]}.log")
    return remaining, seconds


def _reference(ref: str, procs: Processes, client: Redis, conn: stores.Connection) -> tuple[int, float]:
    """Run one reference; (events handled, seconds)."""
    if ref == "ceiling":
        rows = payloads.status_rows(FIRST_EVENT, CEILING_ROWS)
        started = time.monotonic()
        for start in range(0, len(rows), CEILING_BATCH):
            conn.execute(
                CEILING_INSERT, [v for row in rows[start : start + CEILING_BATCH] for v in _values(row)]
            )
        return len(rows), time.monotonic() - started
    function = "bench.refjobs.insert_one" if ref == "rq_insert" else "bench.refjobs.noop"
    queue = Queue(REF_QUEUE, connection=client, serializer=JSONSerializer)
    queue.enqueue_many(
        [
            Queue.prepare_data(function, args=(row,), result_ttl=60)
            for row in payloads.status_rows(FIRST_EVENT, REF_JOBS)
        ]
    )
    argv = [sys.executable, "-m", "bench.refjobs"]
    return drain(procs, [argv], [f"workers-{ref}"], client, REF_QUEUE)


def _values(row: dict[str, Any]) -> list[Any]:
    return [
        *(Jsonb(row[f]) if f == "params" else row[f] for f in ROW_FIELDS),
        row["request_id"],
        row["received_at"],
    ]
