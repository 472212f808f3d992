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
    port: int
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


def servers(ports: tuple[int, int], workers: bool) -> list[list[Server]]:
    """Groups of servers measured together, their runs taking turns: the product with and without
    metrics (SMSC_METRICS=off), so that both meet the same load from the rest of the machine; then
    each reference alone."""
    on, off = product_env(), product_env(SMSC_METRICS="off")

    def serve(port: int, *more: str) -> list[str]:
        return [SMSC_INGEST, "serve", "--host", HOST, "--port", str(port), *more]

    found = [
        [
            Server("serve", "smsc-ingest serve", "serve", serve(ports[0]), on, True, ports[0]),
            Server(
                "serve_nometrics",
                f"{METRICS_OFF} serve",
                "without metrics",
                serve(ports[1]),
                off,
                True,
                ports[1],
            ),
        ]
    ]
    if workers:
        w2 = ("--workers", "2")
        found.append(
            [
                Server(
                    "serve_w2",
                    "smsc-ingest serve --workers 2",
                    "serve -w2",
                    serve(ports[0], *w2),
                    on,
                    True,
                    ports[0],
                    2,
                ),
                Server(
                    "serve_w2_nometrics",
                    f"{METRICS_OFF} serve --workers 2",
                    "without metrics",
                    serve(ports[1], *w2),
                    off,
                    True,
                    ports[1],
                    2,
                ),
            ]
        )
    for name, text in DESCRIPTIONS.items():
        argv = [sys.executable, "-m", "bench.refs", name, "--port", str(ports[0])]
        found.append([Server(name, f"{name} {text}", name, argv, on, False, ports[0])])
    return found


# What every ingress row reports: section 1 and section 1b alike.
INGRESS_COLUMNS = [
    Column("rps", "req/s", 0),
    Column("p50_ms", "p50 ms", 2),
    Column("p99_ms", "p99 ms", 2),
    Column("requests_per_job", "requests/job", 1),
    Column("cpu_us", "CPU µs/req", 1),
]


def run(procs: Processes, results: Results, workdir: Path) -> None:
    """Each group of servers in turn, RUNS wrk runs each, Redis flushed before every run and checked
    after it."""
    workers = serve_workers_supported()
    section = Section(
        "ingress",
        f"1. Ingress: wrk -t1 -c{WRK_CONNECTIONS}, {WRK_WINDOW_MS / 1000:g} s per run, unpaced",
        INGRESS_COLUMNS,
    )
    results.sections.append(section)
    section.notes.append(f"{INGRESS_PAYLOADS} signed callbacks cycled, the same file for every server: {MIX}")
    if not workers:
        section.notes.append("`smsc-ingest serve --workers` not available in this version: 1 process only")
    payloads = write_wrk_file(workdir / "ingress.tsv", FIRST_EVENT, INGRESS_PAYLOADS)
    ports = (free_port(), free_port())
    while ports[1] == ports[0]:
        ports = (ports[0], free_port())
    for group in servers(ports, workers):
        print(f"  {' / '.join(server.label for server in group)} ...", flush=True)
        measure(group, payloads, procs, section, results)
    for num in ("serve", "serve_w2") if workers else ("serve",):
        # The cost of the metrics: the issue allows 5% of the throughput (a ratio of 0.95 or more).
        section.ratios += [
            Ratio(num, f"{num}_nometrics", "rps"),
            *(Ratio(num, ref, "rps") for ref in DESCRIPTIONS),
            # Less moved by the rest of the machine's load than req/s: what a request costs the server.
            Ratio(num, f"{num}_nometrics", "cpu_us"),
        ]


def measure(
    group: list[Server],
    payloads: Path,
    procs: Processes,
    section: Section,
    results: Results,
    client: Redis | None = None,
) -> None:
    """Start the servers of `group`, then RUNS rounds of one wrk run on each in turn, Redis (`client`,
    the benchmark's database by default) flushed before every run (only the server measured writes)
    and checked after it."""
    client = client or stores.redis()
    started = []
    try:
        for server in group:
            section.row(server.key, server.label, server.short)
            started.append(procs.serve(server.argv, server.env, server.port, f"ingress-{server.key}"))
            if server.processes > 1:
                _wait_listening(server, section)
        answered = dict.fromkeys((server.key for server in group), 0)
        for _ in range(RUNS):
            for server, proc in zip(group, started, strict=True):
                client.flushdb()
                cpu = group_cpu_seconds(proc.pid)
                result = run_wrk(server.port, payloads, WRK_WINDOW_MS, WRK_CONNECTIONS)
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
                answered[server.key] += result.ok
        for server in group:
            if server.product and server.env.get("SMSC_METRICS") != "off":
                _check_metrics(server, answered[server.key], results)
    finally:
        for proc in started:
            procs.stop(proc)
        client.flushdb()
    for server in group:
        log_name = f"ingress-{server.key}"
        if server.product and (found := logscan.complaints(log_name)):
            log_path = LOG_DIR / f"{log_name}.log"
            results.problem(
                f"{server.label} logged warnings/errors: {logscan.summary(found)} (see {log_path})"
            )


def _wait_listening(server: Server, section: Section) -> None:
    """wrk opens its connections once: every process must listen before it starts."""
    try:
        wait_until(lambda: listening_sockets(server.port) >= server.processes, 15, "every process to listen")
    except BenchError:
        section.notes.append(f"{server.label}: only {listening_sockets(server.port)} socket(s) listening")


def _check_metrics(server: Server, answered: int, results: Results) -> None:
    """The scrape after the runs counts every 200 wrk got, over all processes."""
    counted = answers_200(server.port)
    if counted != answered:
        results.problem(f"{server.label}: /metrics counts {counted:.0f} answers 200, wrk got {answered}")


def answers_200(port: int) -> float:
    """The answers 200 that `GET /metrics` of the ingress on `port` counts, over all its processes."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "smsc_ingress_requests_total" and s.labels.get("code") == "200"
    )


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
