"""`python -m bench.soak [--seconds N]` (`make soak`): do the ingress's and the worker's memory stay flat?

One `smsc-ingest serve` and one `smsc-ingest worker` under a steady paced load below capacity for
SOAK_SECONDS (10 minutes), the resident memory (VmRSS) of both sampled every SOAK_SAMPLE_SECONDS. After
a warm-up, the growth is the last minute's RSS over the RSS at the end of the warm-up; 10% or more
for either process fails, and so does any event lost. A table is printed and bench-results/soak.json
written (its `prev` column compares with the soak.json that was there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rq import Queue, Worker

from bench import logscan, payloads, report, stores
from bench.config import (
    HOST,
    QUEUE,
    RESULTS_DIR,
    ROOT,
    SMSC_INGEST,
    SOAK_CONNECTIONS,
    SOAK_COPY_EVERY,
    SOAK_DATABASE_URL,
    SOAK_DRAIN_SECONDS,
    SOAK_MAX_GROWTH,
    SOAK_RATE,
    SOAK_REDIS_URL,
    SOAK_SAMPLE_SECONDS,
    SOAK_SECONDS,
    SOAK_WARMUP_SECONDS,
    product_env,
)
from bench.procs import (
    BenchError,
    Processes,
    free_port,
    group_cpu_seconds,
    interrupt_on_signals,
    memory_mib,
    wait_until,
)
from bench.report import Column, Results, Section
from bench.wrk import WrkResult, parse_wrk, wrk_argv

LOG_DIR = RESULTS_DIR / "logs-soak"  # apart from `make bench`'s, which each run of it empties
FIRST_EVENT = 60_000_000
# One wrk run per segment of the load: each loads only its own callbacks, and the soak's progress
# shows between them.
SEGMENT_SECONDS = 60
LAST_MINUTE = 60.0
# The RSS at the end of the warm-up: the median of the samples of its last WARMUP_TAIL seconds (of its
# second half on a shorter warm-up, so that the sample taken before any load is never one).
WARMUP_TAIL = 30.0
PROCESSES = {"serve": "smsc-ingest serve (1 process)", "worker": "smsc-ingest worker"}


@dataclass(frozen=True)
class Segment:
    path: Path
    seconds: int
    requests: int


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the load started
    serve_mib: float
    worker_mib: float
    stored: int
    queued_jobs: int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("SOAK_SECONDS", SOAK_SECONDS)),
        help=f"how long the load lasts (env SOAK_SECONDS; default {SOAK_SECONDS})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help=f"seconds not judged at the start (default {SOAK_WARMUP_SECONDS}, "
        f"or what leaves a last minute after it on a shorter run)",
    )
    parser.add_argument("--rate", type=int, default=SOAK_RATE, help=f"requests/s (default {SOAK_RATE})")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(SOAK_WARMUP_SECONDS, args.seconds - 60)
    if warmup < SOAK_SAMPLE_SECONDS or args.seconds - warmup < LAST_MINUTE or args.rate < 1:
        parser.error(
            f"--seconds must leave a warm-up of at least {SOAK_SAMPLE_SECONDS} s and a last minute after "
            f"it (--seconds {args.seconds}, --warmup {warmup}), and --rate must be positive"
        )
    interrupt_on_signals()
    began = time.monotonic()
    env = product_env(DATABASE_URL=SOAK_DATABASE_URL, REDIS_URL=SOAK_REDIS_URL)
    # `migrate` creates the database if missing.
    subprocess.run([SMSC_INGEST, "migrate"], env=env, check=True, timeout=120, capture_output=True)
    results = Results(meta={**report.machine(), "runs": 1})
    results.meta["soak"] = {"seconds": args.seconds, "warmup_seconds": warmup, "rate": args.rate}
    previous = report.load_previous("soak.json")
    client = stores.redis(SOAK_REDIS_URL)
    samples: list[Sample] = []
    try:
        with (
            Processes(LOG_DIR) as procs,
            tempfile.TemporaryDirectory(prefix="smsc-soak-") as tmp,
            stores.database(SOAK_DATABASE_URL) as conn,
        ):
            stores.empty(conn, client)
            _soak(procs, conn, env, Path(tmp), args.seconds, warmup, args.rate, results, samples)
    except BenchError as e:
        results.problem(f"soak aborted: {e}")
    except KeyboardInterrupt:
        print("\ninterrupted: every process the soak started is stopped; nothing written", file=sys.stderr)
        return 130
    finally:
        with stores.database(SOAK_DATABASE_URL) as conn:
            stores.empty(conn, client)
    results.meta["seconds"] = round(time.monotonic() - began, 1)
    results.meta["load_average_at_end"] = round(os.getloadavg()[0], 2)
    results.meta["samples"] = [asdict(s) for s in samples]
    table = report.render(results, previous, "soak.json")
    print("\n" + table)
    path = report.save_as(results, table, "soak.json")
    print(f"\n{results.meta['seconds']:.0f} s; written to {path.relative_to(ROOT)}")
    return 1 if results.problems else 0


def _soak(
    procs: Processes,
    conn: stores.Connection,
    env: dict[str, str],
    workdir: Path,
    seconds: int,
    warmup: int,
    rate: int,
    results: Results,
    samples: list[Sample],
) -> None:
    """Write the load, start both processes, run the load while sampling, wait for the backlog, judge."""
    print(f"writing {seconds * rate} signed callbacks ...", flush=True)
    segments, distinct = _write_segments(workdir, seconds, rate)
    client = stores.redis(SOAK_REDIS_URL)
    port = free_port()
    serve = procs.serve([SMSC_INGEST, "serve", "--host", HOST, "--port", str(port)], env, port, "soak-serve")
    worker = procs.start([SMSC_INGEST, "worker"], env, "soak-worker")
    queue = Queue(QUEUE, connection=client)
    wait_until(
        lambda: Worker.count(connection=client, queue=queue) >= 1 or worker.poll() is not None,
        30,
        "the worker to register",
    )
    if worker.poll() is not None:
        raise BenchError(f"the worker exited with {worker.returncode}: see {LOG_DIR}/soak-worker.log")

    def sample(t: float) -> Sample:
        s = Sample(
            t=round(t, 1),
            serve_mib=round(memory_mib(serve.pid, "VmRSS"), 1),
            worker_mib=round(memory_mib(worker.pid, "VmRSS"), 1),
            stored=stores.scalar(conn, stores.COUNT_EVENTS),
            queued_jobs=int(queue.count),
        )
        print(
            f"  {s.t:6.0f} s  serve {s.serve_mib:7.1f} MiB  worker {s.worker_mib:7.1f} MiB  "
            f"{s.stored:8d} events stored  {s.queued_jobs:5d} jobs queued",
            flush=True,
        )
        return s

    cpu = {"serve": group_cpu_seconds(serve.pid), "worker": group_cpu_seconds(worker.pid)}
    print(
        f"load: {rate} req/s for {seconds} s, warm-up {warmup} s; RSS every {SOAK_SAMPLE_SECONDS} s",
        flush=True,
    )
    start = time.monotonic()
    runs: list[WrkResult] = []
    next_sample = start
    for k, segment in enumerate(segments):
        name = f"soak-wrk-{k}"
        argv = wrk_argv(port, segment.path, segment.seconds * 1000, SOAK_CONNECTIONS, rate, segment.requests)
        wrk = procs.start(argv, dict(os.environ), name)
        deadline = time.monotonic() + segment.seconds + 30
        while wrk.poll() is None:
            if time.monotonic() >= next_sample:
                samples.append(sample(next_sample - start))
                next_sample += SOAK_SAMPLE_SECONDS
            if time.monotonic() > deadline:
                raise BenchError(f"wrk of segment {k} still running {segment.seconds + 30} s after its start")
            time.sleep(0.05)
        procs.stop(wrk)
        runs.append(parse_wrk((LOG_DIR / f"{name}.log").read_text(encoding="utf-8"), segment.seconds * 1000))
    loaded = time.monotonic() - start
    if next_sample - start <= seconds:
        samples.append(sample(loaded))
    # The backlog drains, then the last counts and each process's peak, read before stopping it.
    try:
        wait_until(
            lambda: (
                stores.scalar(conn, stores.COUNT_EVENTS) >= distinct
                and stores.queued(client, QUEUE).jobs == 0
            ),
            SOAK_DRAIN_SECONDS,
            "the backlog to drain",
            interval=0.5,
        )
    except BenchError as e:
        results.problem(str(e))
    used = {
        "serve": group_cpu_seconds(serve.pid) - cpu["serve"],
        "worker": group_cpu_seconds(worker.pid) - cpu["worker"],
    }
    peaks = {"serve": memory_mib(serve.pid), "worker": memory_mib(worker.pid)}
    procs.stop(worker)
    procs.stop(serve)
    stored = stores.scalar(conn, stores.COUNT_EVENTS)
    left = stores.queued(client, QUEUE)
    dead = stores.scalar(conn, stores.COUNT_DEAD_LETTERS)
    failed = stores.failed_jobs(client, QUEUE)
    _judge(results, samples, seconds, warmup, rate, peaks, used, runs, segments, distinct, stored, loaded)
    if stored != distinct or left.requests or dead or failed:
        results.problem(
            f"soak LOST OR DUPLICATED EVENTS: {distinct} distinct events sent, {stored} stored, "
            f"{left.requests} requests still queued, {dead} dead letters, {failed} failed jobs"
        )
    for name in ("soak-serve", "soak-worker"):
        if found := logscan.complaints(name, LOG_DIR):
            results.problem(f"{name} logged warnings/errors: {logscan.summary(found)}")


def _write_segments(workdir: Path, seconds: int, rate: int) -> tuple[list[Segment], int]:
    """The load, SEGMENT_SECONDS a file: new events, but every SOAK_COPY_EVERY-th request resends the
    event sent about a second before (as the gateway resends one it got no answer for). Returns the
    segments and the number of distinct events."""
    segments: list[Segment] = []
    new = 0
    back = max(1, rate * (SOAK_COPY_EVERY - 1) // SOAK_COPY_EVERY)  # the new events of about a second
    done = 0
    while done < seconds:
        length = min(SEGMENT_SECONDS, seconds - done)
        path = workdir / f"soak-{len(segments)}.tsv"
        count = length * rate
        with path.open("wb") as f:
            for k in range(count):
                line = done * rate + k
                if line % SOAK_COPY_EVERY == SOAK_COPY_EVERY - 1 and new > back:
                    n = FIRST_EVENT + new - back
                else:
                    n = FIRST_EVENT + new
                    new += 1
                _, r = payloads.callback(n)
                f.write(f"/smsc?{r.query}\t{r.content_type}\t".encode("ascii") + r.body + b"\n")
        segments.append(Segment(path, length, count))
        done += length
    return segments, new


def _judge(
    results: Results,
    samples: list[Sample],
    seconds: int,
    warmup: int,
    rate: int,
    peaks: dict[str, float],
    used: dict[str, float],
    runs: list[WrkResult],
    segments: list[Segment],
    distinct: int,
    stored: int,
    loaded: float,
) -> None:
    """The table's rows and notes, and a problem for every process that grew too much or request lost."""
    tail = min(WARMUP_TAIL, warmup / 2)
    section = Section(
        "soak",
        f"Soak: `serve` + 1 `worker`, {rate} req/s offered for {seconds} s, "
        f"RSS every {SOAK_SAMPLE_SECONDS} s",
        [
            Column("rss_last_minute", "RSS MiB, last minute", 1),
            Column("rss_warm", "RSS MiB, end of warm-up", 1),
            Column("growth_pct", "growth %", 1),
            Column("peak_mib", "peak RSS MiB", 1),
            Column("cpu_us", "CPU µs/req", 1),
        ],
    )
    results.sections.append(section)
    requests = sum(r.requests for r in runs)
    sent = sum(s.requests for s in segments)
    non_2xx = sum(r.non_2xx for r in runs)
    errors = sum(r.socket_errors for r in runs)
    p99 = max((r.p99_ms for r in runs), default=0.0)
    section.notes += [
        f"load: wrk -t1 -c{SOAK_CONNECTIONS}, bench/wrk/load.lua pacing a schedule ({rate} req/s), "
        f"one wrk run per {SEGMENT_SECONDS} s; every {SOAK_COPY_EVERY}th request a copy of the event "
        "sent about a second before, the rest new events",
        "RSS: VmRSS of /proc/<pid>/status; end of warm-up: the median of the samples of "
        f"{warmup - tail:g}–{warmup} s; last minute: the median of those of the last "
        f"{LAST_MINUTE:g} s of the load; growth: last minute over end of warm-up, {SOAK_MAX_GROWTH:.0%} "
        "or more fails; peak: VmHWM before the process is stopped",
        f"wrk: {requests} answers of {sent} requests in {loaded:.0f} s ({requests / max(loaded, 1):,.0f}/s), "
        f"{non_2xx} non-2xx, {errors} socket errors, answer p99 at most {p99:.1f} ms in a segment",
        f"events: {distinct} distinct sent, {stored} stored",
    ]
    if requests != sent or non_2xx or errors:
        results.problem(
            f"soak: {requests} answers of {sent} requests, {non_2xx} non-2xx, {errors} socket errors"
        )
    for key, label in PROCESSES.items():
        values = {s.t: s.serve_mib if key == "serve" else s.worker_mib for s in samples}
        warm = [v for t, v in values.items() if warmup - tail <= t <= warmup]
        last = [v for t, v in values.items() if t >= seconds - LAST_MINUTE]
        if not warm or not last:
            results.problem(f"soak: too few RSS samples of {label} to judge its growth")
            continue
        at_warm, at_end = statistics.median(warm), statistics.median(last)
        growth = at_end / at_warm - 1
        section.add(
            key,
            label,
            rss_last_minute=at_end,
            rss_warm=at_warm,
            growth_pct=growth * 100,
            peak_mib=peaks[key],
            cpu_us=used[key] / max(requests, 1) * 1e6,
        )
        if growth >= SOAK_MAX_GROWTH:
            results.problem(
                f"soak: {label} grew {growth:.1%} after the warm-up ({at_warm:.1f} -> {at_end:.1f} MiB), "
                f"the bound is {SOAK_MAX_GROWTH:.0%}"
            )
    grew = [p for p in results.problems if " grew " in p]
    section.footer.append(
        f"memory {'GREW' if grew else 'FLAT'}: growth under {SOAK_MAX_GROWTH:.0%} after the warm-up "
        f"{'missed' if grew else 'met'} (issue 13)"
    )


if __name__ == "__main__":
    sys.exit(main())
