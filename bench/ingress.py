"""1. Ingress: wrk against `smsc-ingest serve` (1 and N processes) and three reference servers."""

from __future__ import annotations

import http.client
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue

from bench import logscan, stores
from bench.config import (
    HOST,
    INGRESS_PAYLOADS,
    LOG_DIR,
    QUEUE,
    R2_LIST,
    REF_QUEUE,
    RUNS,
    SMSC_INGEST,
    WRK_CONNECTIONS,
    WRK_WINDOW_MS,
    product_env,
)
from bench.payloads import MIX, write_wrk_file
from bench.procs import BenchError, Processes, free_port, group_cpu_seconds, listening_sockets, wait_until
from bench.refs import DESCRIPTIONS
from bench.report import Column, Ratio, Results, Section
from bench.wrk import WrkResult, run_wrk

# A payload set apart from the other sections' event numbers.
FIRST_EVENT = 10_000_000
METRICS_OFF = "SMSC_METRICS=off smsc-ingest"


@dataclass(frozen=True)
class Server:
    key: str
    label: str
    short: str
    argv: list[str]
    env: dict[str, str]
    product: bool
    processes: int = 1


def serve_workers_supported() -> bool:
    """Does this `smsc-ingest serve` take --workers N?"""
    done = subprocess.run(
        [SMSC_INGEST, "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=product_env(),
        check=False,
    )
    return "--workers" in done.stdout


def servers(port: int, workers: bool) -> list[Server]:
    """The product (each right before itself without metrics, SMSC_METRICS=off), then the references."""
    serve = [SMSC_INGEST, "serve", "--host", HOST, "--port", str(port)]
    off = product_env(SMSC_METRICS="off")
    found = [
        Server("serve", "smsc-ingest serve", "serve", serve, product_env(), True),
        Server("serve_nometrics", f"{METRICS_OFF} serve", "without metrics", serve, off, True),
    ]
    if workers:
        w2 = [*serve, "--workers", "2"]
        found += [
            Server("serve_w2", "smsc-ingest serve --workers 2", "serve -w2", w2, product_env(), True, 2),
            Server(
                "serve_w2_nometrics", f"{METRICS_OFF} serve --workers 2", "without metrics", w2, off, True, 2
            ),
        ]
    for name, text in DESCRIPTIONS.items():
        argv = [sys.executable, "-m", "bench.refs", name, "--port", str(port)]
        found.append(Server(name, f"{name} {text}", name, argv, product_env(), False))
    return found


def run(procs: Processes, results: Results, workdir: Path) -> None:
    """Each server in turn, RUNS wrk runs each, Redis flushed before every run and checked after it."""
    workers = serve_workers_supported()
    section = Section(
        "ingress",
        f"1. Ingress: wrk -t1 -c{WRK_CONNECTIONS}, {WRK_WINDOW_MS / 1000:g} s per run, unpaced",
        [
            Column("rps", "req/s", 0),
            Column("p50_ms", "p50 ms", 2),
            Column("p99_ms", "p99 ms", 2),
            Column("requests_per_job", "requests/job", 1),
            Column("cpu_us", "CPU µs/req", 1),
        ],
    )
    results.sections.append(section)
    section.notes.append(f"{INGRESS_PAYLOADS} signed callbacks cycled, the same file for every server: {MIX}")
    if not workers:
        section.notes.append("`smsc-ingest serve --workers` not available in this version: 1 process only")
    payloads = write_wrk_file(workdir / "ingress.tsv", FIRST_EVENT, INGRESS_PAYLOADS)
    port = free_port()
    for server in servers(port, workers):
        print(f"  {server.label} ...", flush=True)
        _measure(server, port, payloads, procs, section, results)
    for num in ("serve", "serve_w2") if workers else ("serve",):
        # The cost of the metrics: the issue allows 5% of the throughput (a ratio of 0.95 or more).
        section.ratios += [
            Ratio(num, f"{num}_nometrics", "rps"),
            *(Ratio(num, ref, "rps") for ref in DESCRIPTIONS),
            # Less moved by the rest of the machine's load than req/s: what a request costs the server.
            Ratio(num, f"{num}_nometrics", "cpu_us"),
        ]


def _measure(
    server: Server, port: int, payloads: Path, procs: Processes, section: Section, results: Results
) -> None:
    """Start `server`, run wrk RUNS times with Redis flushed before each run and checked after it."""
    client = stores.redis()
    log_name = f"ingress-{server.key}"
    section.row(server.key, server.label, server.short)
    proc = procs.serve(server.argv, server.env, port, log_name)
    try:
        if server.processes > 1:
            # wrk opens its connections once: every process must listen before it starts.
            try:
                wait_until(lambda: listening_sockets(port) >= server.processes, 15, "every process to listen")
            except BenchError:
                section.notes.append(f"{server.label}: only {listening_sockets(port)} socket(s) listening")
        answered = 0
        for _ in range(RUNS):
            client.flushdb()
            cpu = group_cpu_seconds(proc.pid)
            result = run_wrk(port, payloads, WRK_WINDOW_MS, WRK_CONNECTIONS)
            cpu = group_cpu_seconds(proc.pid) - cpu
            section.add(
                server.key,
                server.label,
                rps=result.rps,
                p50_ms=result.p50_ms,
                p99_ms=result.p99_ms,
                cpu_us=cpu / max(result.requests, 1) * 1e6,
            )
            _check(server, result, client, section, results)
            answered += result.ok
        if server.product and server.env.get("SMSC_METRICS") != "off":
            _check_metrics(server, port, answered, results)
    finally:
        procs.stop(proc)
        client.flushdb()
    if server.product and (found := logscan.complaints(log_name)):
        log_path = LOG_DIR / f"{log_name}.log"
        results.problem(f"{server.label} logged warnings/errors: {logscan.summary(found)} (see {log_path})")


def _check_metrics(server: Server, port: int, answered: int, results: Results) -> None:
    """The scrape after the runs counts every 200 wrk got, over all processes."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counted = sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "smsc_ingress_requests_total" and s.labels.get("code") == "200"
    )
    if counted != answered:
        results.problem(f"{server.label}: /metrics counts {counted:.0f} answers 200, wrk got {answered}")


def _check(server: Server, result: WrkResult, client: Redis, section: Section, results: Results) -> None:
    """Every 200 must be queued, exactly once; a run that loses requests is a failure."""
    if result.non_2xx or result.socket_errors:
        results.problem(
            f"{server.label}: {result.non_2xx} non-2xx answers and {result.socket_errors} socket errors "
            f"out of {result.requests} requests"
        )
    if server.product:
        q = stores.queued(client, QUEUE)
        section.add(server.key, server.label, jobs=q.jobs, requests_per_job=q.requests / max(q.jobs, 1))
        if q.requests != result.ok or q.distinct_rids != q.requests:
            results.problem(
                f"{server.label} LOST OR DUPLICATED REQUESTS: wrk got {result.ok} answers 2xx, "
                f"Redis holds {q.requests} raw requests ({q.distinct_rids} distinct) in {q.jobs} jobs"
            )
        return
    held = {"R2": lambda: int(client.llen(R2_LIST)), "R3": lambda: Queue(REF_QUEUE, connection=client).count}
    if server.key in held and (n := held[server.key]()) != result.ok:
        results.problem(f"reference {server.label}: {result.ok} answers 2xx but {n} requests in Redis")
