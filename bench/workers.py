"""2. Workers: events/s one worker stores from a queue the real ingress filled, beside the same worker
on pre-filled jobs of 100 and RQ and PostgreSQL references; CPU per stored event and peak RSS (2b)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    FILL_CONNECTIONS,
    FILL_EVENTS,
    FILL_TIMEOUT_SECONDS,
    HOST,
    JOB_SIZE,
    QUEUE,
    REF_JOBS,
    REF_QUEUE,
    RUNS,
    SMSC_INGEST,
    TARGET_EVENTS_PER_SECOND,
    TARGET_RATIO_RQ_INSERT,
    WORKER_EVENTS,
    WORKER_TIMEOUT_SECONDS,
    product_env,
)
from bench.ingress import answers_200
from bench.procs import BenchError, Processes, free_port, group_cpu_seconds, memory_mib, wait_until
from bench.report import Column, Ratio, Results, Section
from bench.wrk import WrkResult, run_wrk
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings

FIRST_EVENT = 20_000_000
INGRESS_ROW = "smsc_ingress_jobs"
PREFILLED_ROW = "smsc_1w"  # the key of the former headline row, so that `prev` still compares with it
# key: (label, short label)
REFERENCES = {
    "rq_insert": ("RQ: 1 job per payload, 1 INSERT", "RQ+INSERT"),
    "rq_noop": ("RQ: no-op jobs", "RQ no-op"),
    "ceiling": (f"PostgreSQL: {CEILING_BATCH}-row INSERTs", "PG ceiling"),
}
# Section 2b, one figure a row so that each gets its `prev`: key: label.
PER_EVENT = {
    "ingress_cpu": "ingress CPU µs/event: `serve` during the fill",
    "worker_cpu": "worker CPU µs/event: `worker --burst` during the drain",
    "ingress_rss": "ingress peak RSS MiB: `serve` after every fill",
    "worker_rss": "worker peak RSS MiB: `worker --burst` before its exit",
}
BATCH_INSERT = sql.SQL(stores.INSERT_REF_COLUMNS + ", ".join([stores.INSERT_REF_BATCH_ROW] * CEILING_BATCH))
CEILING_INSERT = BATCH_INSERT + sql.SQL(" ON CONFLICT DO NOTHING")
ROW_FIELDS = ("id", "phone", "status", "ts", "ts", "err", "cnt", "type", "cost", "flag", "sender", "params")
WORKER = [SMSC_INGEST, "worker", "--burst"]


@dataclass(frozen=True)
class Drain:
    """Burst workers emptying a queue, timed from the moment all had registered with RQ to their exit."""

    jobs: int  # jobs still queued when the clock started
    events: int  # events stored while the clock ran (the jobs' count where nothing counts events)
    seconds: float
    cpu_seconds: float  # the workers' CPU time (user + system) while the clock ran
    peak_rss_mib: float  # the largest peak RSS among the workers

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / max(self.events, 1) * 1e6

    def figures(self, requests_per_job: float) -> dict[str, float]:
        """A worker row's columns."""
        return {
            "eps": self.events / self.seconds,
            "seconds": self.seconds,
            "requests_per_job": requests_per_job,
            "cpu_us": self.cpu_us_per_event,
            "rss_mib": self.peak_rss_mib,
        }


@dataclass(frozen=True)
class Round:
    """What every run of section 2 works with."""

    procs: Processes
    conn: stores.Connection
    client: Redis
    results: Results
    section: Section
    per_event: Section


def check_stored(
    results: Results,
    label: str,
    stored: int,
    conn: stores.Connection,
    client: Redis,
    expected: int = WORKER_EVENTS,
) -> None:
    """A problem unless every queued event was stored, with no dead letter and no failed job."""
    dead = stores.scalar(conn, stores.COUNT_DEAD_LETTERS)
    failed = stores.failed_jobs(client, QUEUE)
    if stored != expected or dead or failed:
        results.problem(
            f"{label}: {expected} events queued, {stored} stored, {dead} dead letters, {failed} failed jobs"
        )


def run(procs: Processes, results: Results, workdir: Path) -> None:
    """RUNS rounds, each one run of every row in turn (so that all meet about the same load from the
    rest of the machine): the worker on a queue the ingress filled, on pre-filled jobs of 100, then
    the references. One `serve` fills the queue for every round."""
    section = Section(
        "workers",
        "2. Workers: events/s stored in PostgreSQL by one worker",
        [
            Column("eps", "events/s", 0),
            Column("seconds", "seconds", 2),
            Column("requests_per_job", "requests/job", 1),
            Column("cpu_us", "CPU µs/event", 1),
            Column("rss_mib", "peak RSS MiB", 1),
        ],
    )
    section.notes += [
        f"headline: `smsc-ingest serve` (one process, metrics and logs as shipped) fed by wrk -t1 "
        f"-c{FILL_CONNECTIONS} in a closed loop (each connection sends its next request once answered), "
        f"{FILL_EVENTS} distinct signed events each sent once; then 1 `smsc-ingest worker --burst` drains "
        "the jobs the ingress made; requests/job: the raw requests over the jobs in Redis after the fill",
        f"secondary: {WORKER_EVENTS} raw requests pre-queued as jobs of {JOB_SIZE} requests each "
        "(smsc.queue.build_job/stage_job), the same payload mix, which the ingress rarely makes",
        f"RQ: {REF_JOBS} jobs, JSON serializer, 1 SimpleWorker in burst; +INSERT: one row into a copy of "
        "status_events per job, in its own transaction, on a kept psycopg connection",
        f"PostgreSQL ceiling: {CEILING_ROWS} status rows in {CEILING_BATCH}-row INSERT ... ON CONFLICT DO "
        "NOTHING statements from one psycopg connection (autocommit), into the same copy of status_events",
        "timed from the moment the worker has registered with RQ (what was stored before is not counted) "
        "to its exit; the ceiling: its INSERTs. CPU µs/event: the worker's user + system time over the "
        "same span (/proc at registration, wait4() at exit) per event stored in it; peak RSS: its VmHWM "
        "(/proc/<pid>/status), last read before it exits",
    ]
    per_event = Section(
        "per_event",
        "2b. Per stored event, on jobs made by the ingress (section 2's headline runs)",
        [Column("value", "figure", 1)],
    )
    per_event.notes += [
        "CPU: user + system time of the process group (/proc/<pid>/stat; the worker's as in section 2) "
        "over the events stored; the ingress's during each fill, the worker's during each drain",
        f"peak RSS: the ingress's VmHWM (/proc/<pid>/status) just before it is stopped, after all "
        f"{RUNS} fills ({RUNS * FILL_EVENTS} requests): one figure; the worker's as in section 2",
    ]
    results.sections += [section, per_event]
    for key, label in PER_EVENT.items():
        per_event.row(key, label)
    section.row(INGRESS_ROW, "smsc-ingest worker, jobs made by the ingress", "ingress jobs")
    section.row(
        PREFILLED_ROW, f"smsc-ingest worker, pre-filled jobs of {JOB_SIZE} (secondary)", "jobs of 100"
    )
    for ref, (label, short) in REFERENCES.items():
        section.row(ref, label, short)
    settings = Settings.from_env(product_env())
    client = stores.redis()
    wrk_file = payloads.write_wrk_file(workdir / "workers.tsv", FIRST_EVENT, FILL_EVENTS)
    port = free_port()
    fills: list[WrkResult] = []
    loads: list[float] = []
    with stores.database() as conn:
        r = Round(procs, conn, client, results, section, per_event)
        stores.empty(conn, client)
        stores.create_ref_table(conn)
        serve = procs.serve(
            [SMSC_INGEST, "serve", "--host", HOST, "--port", str(port)], product_env(), port, "workers-serve"
        )
        try:
            for i in range(RUNS):
                loads.append(round(os.getloadavg()[0], 2))
                print(f"  round {i + 1} of {RUNS} (load average {loads[-1]}) ...", flush=True)
                fills.append(_ingress_made(r, i, serve.pid, port, wrk_file))
                _prefilled(r, i, settings)
                for ref in REFERENCES:
                    stores.empty(conn, client)
                    _reference(r, ref)
            answered = sum(f.ok for f in fills)
            if (counted := answers_200(port)) != answered:
                results.problem(
                    f"workers-serve: /metrics counts {counted:.0f} answers 200, wrk got {answered}"
                )
            per_event.add("ingress_rss", PER_EVENT["ingress_rss"], value=memory_mib(serve.pid))
        finally:
            procs.stop(serve)
        stores.empty(conn, client)
    if found := logscan.complaints("workers-serve"):
        results.problem(f"workers-serve logged warnings/errors: {logscan.summary(found)}")
    section.notes += [
        _fill_line(fills),
        f"load average (1 min) before each round: {', '.join(map(str, loads))} on {os.cpu_count()} CPUs",
    ]
    for row in (INGRESS_ROW, PREFILLED_ROW):
        section.ratios += [Ratio(row, ref, "eps") for ref in REFERENCES]
    section.footer.append(_targets(section))


def _ingress_made(r: Round, i: int, serve: int, port: int, wrk_file: Path) -> WrkResult:
    """Fill the queue through `serve` (a closed loop of distinct events), then drain it with one worker."""
    procs, conn, client = r.procs, r.conn, r.client
    results, section, per_event = r.results, r.section, r.per_event
    label = section.row(INGRESS_ROW, "").label
    stores.empty(conn, client)
    cpu = group_cpu_seconds(serve)
    fill = run_wrk(port, wrk_file, FILL_TIMEOUT_SECONDS * 1000, FILL_CONNECTIONS, limit=FILL_EVENTS)
    ingress_cpu = group_cpu_seconds(serve) - cpu
    if fill.requests != FILL_EVENTS or fill.non_2xx or fill.socket_errors:
        results.problem(
            f"{label}, fill: {fill.requests} answers of {FILL_EVENTS} requests, {fill.non_2xx} non-2xx, "
            f"{fill.socket_errors} socket errors"
        )
    q = stores.queued(client, QUEUE)
    if q.requests != fill.ok or q.distinct_rids != q.requests:
        results.problem(
            f"{label} LOST OR DUPLICATED REQUESTS: wrk got {fill.ok} answers 2xx, "
            f"Redis holds {q.requests} raw requests ({q.distinct_rids} distinct) in {q.jobs} jobs"
        )
    name = f"workers-ingress-jobs-{i}"
    d = drain(procs, [WORKER], [name], client, QUEUE, stored=lambda: stores.scalar(conn, stores.COUNT_EVENTS))
    stored = stores.scalar(conn, stores.COUNT_EVENTS)
    check_stored(results, label, stored, conn, client, expected=fill.ok)
    _check_log(results, label, name)
    section.add(INGRESS_ROW, label, **d.figures(requests_per_job=q.requests / max(q.jobs, 1)))
    per_event.add("ingress_cpu", PER_EVENT["ingress_cpu"], value=ingress_cpu / max(stored, 1) * 1e6)
    per_event.add("worker_cpu", PER_EVENT["worker_cpu"], value=d.cpu_us_per_event)
    per_event.add("worker_rss", PER_EVENT["worker_rss"], value=d.peak_rss_mib)
    return fill


def _prefilled(r: Round, i: int, settings: Settings) -> None:
    """The secondary row: the worker on WORKER_EVENTS requests pre-queued in jobs of JOB_SIZE."""
    procs, conn, client, results, section = r.procs, r.conn, r.client, r.results, r.section
    label = section.row(PREFILLED_ROW, "").label
    stores.empty(conn, client)
    prefill(client, settings, list(payloads.raw_requests(FIRST_EVENT, WORKER_EVENTS)))
    name = f"workers-prefilled-{i}"
    d = drain(procs, [WORKER], [name], client, QUEUE, stored=lambda: stores.scalar(conn, stores.COUNT_EVENTS))
    check_stored(results, label, stores.scalar(conn, stores.COUNT_EVENTS), conn, client)
    _check_log(results, label, name)
    section.add(PREFILLED_ROW, label, **d.figures(requests_per_job=JOB_SIZE))


def _check_log(results: Results, label: str, name: str) -> None:
    if found := logscan.complaints(name):
        results.problem(f"{label} logged warnings/errors: {logscan.summary(found)}")


def _fill_line(fills: list[WrkResult]) -> str:
    if not fills:
        return "fill: no run"
    rates = sorted(f.requests / f.duration_seconds for f in fills)
    p99 = sorted(f.p99_ms for f in fills)
    return (
        f"fill through the ingress: {rates[len(rates) // 2]:,.0f} req/s [{rates[0]:,.0f}–{rates[-1]:,.0f}], "
        f"answer p99 {p99[len(p99) // 2]:.1f} ms [{p99[0]:.1f}–{p99[-1]:.1f}]"
    )


def _targets(section: Section) -> str:
    """Issue 13's targets for one worker on jobs made by the ingress, each met or missed."""
    eps = section.median(INGRESS_ROW, "eps")
    ref = section.median("rq_insert", "eps")
    ratio = eps / ref if eps is not None and ref else None

    def verdict(value: float | None, target: float, text: str) -> str:
        if value is None:
            return "not measured"
        return f"{text.format(value)}, {'met' if value >= target else 'MISSED'}"

    return (
        "targets (issue 13), one worker on jobs made by the ingress: "
        f">= {TARGET_EVENTS_PER_SECOND:,} events/s: {verdict(eps, TARGET_EVENTS_PER_SECOND, '{:,.0f}')}; "
        f">= {TARGET_RATIO_RQ_INSERT}x RQ+INSERT: {verdict(ratio, TARGET_RATIO_RQ_INSERT, '{:.2f}x')}"
    )


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
    stored: Callable[[], int] | None = None,
) -> Drain:
    """Start the workers together and time them once all are up.

    Timing starts when the last worker registered with RQ, so that one worker importing more slowly
    than another does not count; it ends when the last one has exited. `stored` counts the events
    stored so far: the events of the drain are those stored meanwhile (else: the jobs queued at the start).
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
    cpu_at_start = sum(group_cpu_seconds(p.pid) for p in started)
    remaining = q.count
    before = stored() if stored else 0
    usages = procs.reap(started, WORKER_TIMEOUT_SECONDS)
    seconds = time.monotonic() - up
    if any(u.code for u in usages):
        raise BenchError(
            f"workers exited with {[u.code for u in usages]}: see bench-results/logs/{names[0]}.log"
        )
    return Drain(
        jobs=remaining,
        events=stored() - before if stored else remaining,
        seconds=seconds,
        cpu_seconds=sum(u.cpu_seconds for u in usages) - cpu_at_start,
        peak_rss_mib=max(u.peak_rss_mib for u in usages),
    )


def _reference(r: Round, ref: str) -> None:
    """Run one reference once and record it."""
    procs, conn, client, results, section = r.procs, r.conn, r.client, r.results, r.section
    label = section.row(ref, "").label
    if ref == "ceiling":
        rows = payloads.status_rows(FIRST_EVENT, CEILING_ROWS)
        started = time.monotonic()
        for start in range(0, len(rows), CEILING_BATCH):
            conn.execute(
                CEILING_INSERT, [v for row in rows[start : start + CEILING_BATCH] for v in _values(row)]
            )
        seconds = time.monotonic() - started
        section.add(ref, label, eps=len(rows) / seconds, seconds=seconds)
    else:
        d = _rq_reference(ref, procs, client)
        section.add(ref, label, **d.figures(requests_per_job=1))
    # Every job must have written its row; the events timed are fewer when a job finished before
    # the worker registered and the clock started.
    expected = CEILING_ROWS if ref == "ceiling" else REF_JOBS
    if ref != "rq_noop" and (n := stores.scalar(conn, stores.COUNT_REF_ROWS)) != expected:
        results.problem(f"reference {label}: {expected} rows expected, {n} in the table")


def _rq_reference(ref: str, procs: Processes, client: Redis) -> Drain:
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
