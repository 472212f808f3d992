"""3. End to end: `serve` + 1 `worker` under a paced load; events/s stored and receipt-to-row lag."""

from __future__ import annotations

import time
from pathlib import Path

from bench import logscan, stores
from bench.config import (
    E2E_CONNECTIONS,
    E2E_DRAIN_SECONDS,
    E2E_RATE,
    E2E_SECONDS,
    E2E_WAIT_SECONDS,
    E2E_WINDOWS,
    HOST,
    QUEUE,
    SMSC_INGEST,
    product_env,
)
from bench.payloads import write_wrk_file
from bench.procs import Processes, free_port
from bench.report import Column, Results, Section
from bench.wrk import TAIL_SECONDS, WrkResult, run_wrk

FIRST_EVENT = 30_000_000
ROW = "serve_1w"
LABEL = "serve + 1 worker, per window"


def run(procs: Processes, results: Results, workdir: Path) -> None:
    """One sustained run; its figures are taken per window of time (E2E_WINDOWS figures from one run)."""
    window = E2E_SECONDS / E2E_WINDOWS
    section = Section(
        "e2e",
        f"3. End to end: `serve` + 1 `worker`, {E2E_RATE} req/s offered for {E2E_SECONDS} s",
        [
            Column("stored", "stored events/s", 0),
            Column("lag_p50_ms", "lag p50 ms", 1),
            Column("lag_p99_ms", "lag p99 ms", 1),
        ],
    )
    section.notes += [
        f"load: wrk -t1 -c{E2E_CONNECTIONS}, bench/wrk/load.lua pacing a schedule (request n due at "
        f"start + n/{E2E_RATE} s, open loop while a connection is free); every event distinct",
        f"figures per {window:g}-s window of the run: events stored in it (by stored_at), and the lag "
        "stored_at - received_at of the events received in it (stored_at: now() of the storing transaction)",
    ]
    results.sections.append(section)
    client = stores.redis()
    payloads = write_wrk_file(workdir / "e2e.tsv", FIRST_EVENT, E2E_RATE * E2E_SECONDS + 1000)
    port = free_port()
    with stores.database() as conn:
        stores.empty(conn, client)
        serve = procs.serve(
            [SMSC_INGEST, "serve", "--host", HOST, "--port", str(port)], product_env(), port, "e2e-serve"
        )
        worker = procs.start([SMSC_INGEST, "worker"], product_env(), "e2e-worker")
        try:
            print(f"  wrk paced at {E2E_RATE}/s for {E2E_SECONDS} s ...", flush=True)
            began = time.time()
            result = run_wrk(port, payloads, E2E_SECONDS * 1000, E2E_CONNECTIONS, rate=E2E_RATE)
            # wrk returns TAIL_SECONDS after the last request was started: the load stopped about then.
            stored, waited = _wait_stored(conn, result.ok, time.monotonic() - TAIL_SECONDS)
        finally:
            # SIGTERM: the worker finishes the job it is in, the rest stays queued.
            procs.stop(worker)
            procs.stop(serve)
        # Counted again now that the worker is stopped: it may have stored more after the wait.
        stored_at_stop = stores.scalar(conn, stores.COUNT_EVENTS)
        queue_left = stores.queued(client, QUEUE)
        left = queue_left.requests
        jobs = stores.finished_jobs(client, QUEUE) + queue_left.jobs
        for k in range(E2E_WINDOWS):
            start = began + k * window
            row = conn.execute(stores.WINDOW, {"start": start, "end": start + window}).fetchone()
            if row is None:
                continue
            _, stored_in, lag = row
            section.add(ROW, LABEL, stored=stored_in / window)
            if lag:
                section.add(ROW, LABEL, lag_p50_ms=lag[0] * 1000, lag_p99_ms=lag[1] * 1000)
        span = conn.execute(stores.EVENT_SPAN).fetchone()
        dead = stores.scalar(conn, stores.COUNT_DEAD_LETTERS)
        failed = stores.failed_jobs(client, QUEUE)
        stores.empty(conn, client)
    # How long after the last receipt the last event was stored (when all were).
    drain = float(span[2]) - float(span[1]) if span and span[2] is not None and stored == result.ok else None
    kept_up = drain is not None and drain <= E2E_DRAIN_SECONDS
    section.notes += [_wrk_line(result), _verdict(kept_up, stored, result.ok, drain, waited, dead)]
    section.notes.append(
        f"the ingress wrote {jobs} jobs for {result.ok} requests: {result.ok / max(jobs, 1):.1f} requests/job"
    )
    if left:
        section.notes.append(f"  {left} requests were still queued when the worker was stopped")
    if stored < result.ok:
        section.notes.append("  lag figures cover only the events stored by then: the rest waited longer")
    results.meta["e2e"] = {
        "offered_rps": E2E_RATE,
        "achieved_rps": result.rps,
        "answers_2xx": result.ok,
        "stored": stored,
        "left_queued": left,
        "jobs": jobs,
        "drain_seconds": drain,
        "kept_up": kept_up,
    }
    if result.non_2xx or result.socket_errors:
        results.problem(f"end to end: {result.non_2xx} non-2xx answers, {result.socket_errors} socket errors")
    if stored_at_stop + left != result.ok or dead or failed:
        results.problem(
            f"end to end LOST OR DUPLICATED EVENTS: {result.ok} answers 2xx, but {stored_at_stop} events "
            f"stored + {left} still queued; {dead} dead letters, {failed} failed jobs"
        )
    for name in ("e2e-serve", "e2e-worker"):
        if found := logscan.complaints(name):
            results.problem(f"end to end, {name} logged warnings/errors: {logscan.summary(found)}")


def _wait_stored(conn: stores.Connection, expected: int, stopped: float) -> tuple[int, float]:
    """Poll until `expected` events are stored or E2E_WAIT_SECONDS after the load stopped.

    Returns how many were stored and how long after the load stopped that was seen.
    """
    while True:
        stored = stores.scalar(conn, stores.COUNT_EVENTS)
        waited = time.monotonic() - stopped
        if stored >= expected or waited >= E2E_WAIT_SECONDS:
            return stored, waited
        time.sleep(0.1)


def _wrk_line(result: WrkResult) -> str:
    return (
        f"wrk: {result.requests} requests, {result.rps:,.0f}/s achieved of {E2E_RATE}/s offered; "
        f"{result.non_2xx} non-2xx, {result.socket_errors} socket errors; "
        f"answer p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
    )


def _verdict(kept_up: bool, stored: int, ok: int, drain: float | None, waited: float, dead: int) -> str:
    if kept_up and drain is not None:
        return (
            f"KEPT UP: all {ok} events stored, the last {drain:.1f} s after the last receipt "
            f"(bound {E2E_DRAIN_SECONDS:g} s); {dead} dead letters"
        )
    if drain is not None:
        return (
            f"DID NOT KEEP UP: all {ok} events stored, but the last {drain:.1f} s after the last receipt "
            f"(bound {E2E_DRAIN_SECONDS:g} s); {dead} dead letters"
        )
    return (
        f"DID NOT KEEP UP: {stored} of {ok} events stored {waited:.0f} s after the load stopped "
        f"(backlog {ok - stored}); {dead} dead letters"
    )
