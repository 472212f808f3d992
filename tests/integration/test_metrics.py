"""Metrics, scraped from real processes after real traffic: the ingress's GET /metrics, one process or
several, and a worker's --metrics-port. Every count is checked exactly."""

from __future__ import annotations

import asyncio
import gzip
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from ingress.app import create_app
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from tests.integration.conftest import service_env
from tests.integration.procs import COMMAND, Ingress, environment, start_worker
from tests.integration.servers import free_port, wait_until
from tests.integration.test_ingress import status_line
from tests.payloads import SAMPLES, build

VERSION = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - a loopback URL of the test
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        return parse(answer.read().decode())


def status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - a loopback URL of the test
        return int(answer.status)


def by_label(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of `name` as {values of `labels`: value}, zeros left out."""
    return {
        tuple(dict(key)[label] for label in labels): value
        for (sample, key), value in samples.items()
        if sample == name and value
    }


def buckets(samples: Samples, name: str) -> dict[str, float]:
    """A histogram's cumulative buckets as {le: count}."""
    return {dict(key)["le"]: value for (sample, key), value in samples.items() if sample == f"{name}_bucket"}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def each_process(directory: Path, kind: str, sample: str) -> list[float]:
    """The total of `sample` in each process's own file of `kind` (counter, gauge_max, ...)."""
    return [
        sum(
            s.value
            for family in MultiProcessCollector.merge([str(f)])  # type: ignore[no-untyped-call]
            for s in family.samples
            if s.name == sample
        )
        for f in sorted(directory.glob(f"{kind}_*.db"))
    ]


# Requests sent to the ingress, each on a connection of its own (with --workers 2 the kernel spreads
# connections, not requests, over the processes), and the answers expected for them.
def traffic() -> list[tuple[str, str, dict[str, str], bytes, int]]:
    """(method, path?query, headers, body, expected code) of every request the ingress test sends."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    sent: list[tuple[str, str, dict[str, str], bytes, int]] = []
    for i in range(24):
        r = build("status", params={**SAMPLES["status"], "id": str(100 + i)})
        sent.append(("POST", f"/smsc?{r.query}", {"Content-Type": r.content_type}, r.body, 200))
    for i, fmt in enumerate(("xml", "json")):
        r = build("incoming", fmt, params={**SAMPLES["incoming"], "id": str(200 + i)})
        sent.append(("POST", f"/smsc?{r.query}", {"Content-Type": r.content_type}, r.body, 200))
    call = build("call")
    sent.append(("POST", f"//smsc/?{call.query}", {"Content-Type": call.content_type}, call.body, 200))
    forged = build("incoming", secret="not-the-secret")
    sent.append(("POST", f"/smsc?{forged.query}", {"Content-Type": forged.content_type}, forged.body, 403))
    # A status without its `id`: a field its kind needs.
    incomplete = build("status", params={k: v for k, v in SAMPLES["status"].items() if k != "id"})
    sent.append(("POST", f"/smsc?{incomplete.query}", form, incomplete.body, 400))
    sent.append(("POST", "/smsc?charset=utf-8", form, b"x=" + b"a" * 3000, 413))
    gzipped = {**form, "Content-Encoding": "gzip"}
    sent.append(("POST", f"/smsc?{call.query}", gzipped, gzip.compress(call.body), 415))
    sent.append(("POST", "/callback", form, call.body, 400))
    sent.append(("GET", "/smsc", {}, b"", 405))
    return sent


# What GET /metrics must count for `traffic()`: (code, kind, reason) -> requests. The incomplete
# status cannot be decoded, so its kind is unknown; the forged SMS is decoded, then refused.
EXPECTED = {
    ("200", "status", "ok"): 24,
    ("200", "incoming", "ok"): 2,
    ("200", "call", "ok"): 1,
    ("403", "incoming", "signature"): 1,
    ("400", "unknown", "bad_request"): 1,
    ("413", "unknown", "too_large"): 1,
    ("415", "unknown", "compressed"): 1,
    ("400", "unknown", "unknown_path"): 1,
    ("405", "unknown", "method"): 1,
}
# Answered by the handler (the unknown path and the 405 are not): what the duration histogram counts.
HANDLED = 31


async def send(base: str, requests: list[tuple[str, str, dict[str, str], bytes, int]]) -> list[int]:
    """Send every request at once, each on a new connection; return the codes in order."""
    connector = aiohttp.TCPConnector(force_close=True, limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(method: str, target: str, headers: dict[str, str], body: bytes) -> int:
            async with session.request(method, base + target, headers=headers, data=body) as answer:
                await answer.read()
                return answer.status

        return list(await asyncio.gather(*(one(m, t, h, b) for m, t, h, b, _ in requests)))


@pytest.mark.parametrize("processes", [1, 2])
async def test_ingress_counts_every_answer(processes: int, tmp_path: Path, redis_db: Any, db: Any) -> None:
    """After real traffic, one scrape of /metrics shows every answer by code, kind and reason, the
    handler's durations, the jobs written and their requests, with one process or with two, where the
    traffic is spread over both and the directory of their files is removed at exit."""
    server = Ingress(processes, SMSC_MAX_BODY="2000", TMPDIR=str(tmp_path))
    sent = traffic()
    assert await send(server.base, sent) == [code for *_, code in sent]
    # Set by each process's first poll of Redis, in the background.
    wait_until(lambda: value(scrape(f"{server.base}/metrics"), "smsc_ingress_redis_up") == 1, 20, "a poll")

    samples = scrape(f"{server.base}/metrics")
    assert by_label(samples, "smsc_ingress_requests_total", "code", "kind", "reason") == {
        key: float(n) for key, n in EXPECTED.items()
    }
    assert value(samples, "smsc_ingress_request_duration_seconds_count") == HANDLED
    jobs = redis_db.llen("rq:queue:smsc-test")
    assert jobs >= 1
    assert value(samples, "smsc_ingress_job_requests_count") == jobs
    assert value(samples, "smsc_ingress_job_requests_sum") == 27
    assert value(samples, "smsc_ingress_redis_write_duration_seconds_count") == jobs
    assert value(samples, "smsc_ingress_backpressure") == 0
    assert value(samples, "smsc_ingress_redis_up") == 1
    assert value(samples, "smsc_build_info", component="ingress", version=VERSION) == 1
    # Scraping, /healthz and /readyz are no callbacks: a second scrape counts the same.
    assert status(f"{server.base}/readyz") == status(f"{server.base}/healthz") == 200
    again = scrape(f"{server.base}/metrics")
    assert by_label(again, "smsc_ingress_requests_total", "code", "kind", "reason") == by_label(
        samples, "smsc_ingress_requests_total", "code", "kind", "reason"
    )

    made = list(tmp_path.glob("smsc-ingress-metrics-*"))
    if processes == 1:
        assert made == []
    else:
        (directory,) = made
        # Each process's own file: both answered some of the requests, and the scrape is their sum.
        per_process = each_process(directory, "counter", "smsc_ingress_requests_total")
        assert len(per_process) == 2
        assert all(n > 0 for n in per_process)
        assert sum(per_process) == sum(EXPECTED.values())
    assert server.stop() == 0
    assert list(tmp_path.glob("smsc-ingress-metrics-*")) == []


async def post(base: str, kind: str, **params: str) -> int:
    r = build(kind, params={**SAMPLES[kind], **params})
    headers = {"Content-Type": r.content_type}
    return (await send(base, [("POST", f"/smsc?{r.query}", headers, r.body, 0)]))[0]


async def test_backpressure_and_redis_up_are_one_series_across_processes(
    tmp_path: Path, redis_db: Any, db: Any
) -> None:
    """With the queue at SMSC_MAX_QUEUE, both processes of `serve --workers 2` answer 503 and the
    scrape shows back-pressure on and Redis up once, not once per process."""
    server = Ingress(2, SMSC_MAX_QUEUE="1", TMPDIR=str(tmp_path))
    assert await post(server.base, "status") == 200
    (directory,) = tmp_path.glob("smsc-ingress-metrics-*")
    # Each process reads the queue's length on its own: both must have seen it full.
    wait_until(
        lambda: each_process(directory, "gauge_max", "smsc_ingress_backpressure") == [1, 1],
        20,
        "back-pressure",
    )
    assert [await post(server.base, "status", id=str(n)) for n in range(4)] == [503] * 4
    samples = scrape(f"{server.base}/metrics")
    assert by_label(samples, "smsc_ingress_requests_total", "code", "kind", "reason") == {
        ("200", "status", "ok"): 1,
        ("503", "unknown", "queue_full"): 4,
    }
    gauges = {
        key: v
        for key, v in samples.items()
        if key[0] in ("smsc_ingress_backpressure", "smsc_ingress_redis_up")
    }
    assert gauges == {("smsc_ingress_backpressure", ()): 1, ("smsc_ingress_redis_up", ()): 1}
    assert server.stop() == 0


async def test_redis_unreachable_shows_as_redis_down_and_503s(db: Any) -> None:
    """An ingress whose Redis refuses connections counts its 503s under reason redis, with the kind
    it read, and shows Redis down."""
    server = Ingress(1, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert await post(server.base, "call") == 503
    samples = scrape(f"{server.base}/metrics")
    assert by_label(samples, "smsc_ingress_requests_total", "code", "kind", "reason") == {
        ("503", "call", "redis"): 1
    }
    assert value(samples, "smsc_ingress_redis_up") == 0
    assert value(samples, "smsc_ingress_job_requests_count") == 0
    assert server.stop() == 0


def queue_job(settings: Settings, redis_db: Any, *requests: Any, received_at: float) -> None:
    """One RQ job holding `requests` (unsigned: the worker does not check hashes), received at
    `received_at`, written as the ingress writes it."""
    raws = [
        RawRequest(f"r{time.monotonic_ns()}-{i}", received_at, r.query, r.content_type, r.body)
        for i, r in enumerate(requests)
    ]
    with redis_db.pipeline(transaction=True) as pipe:
        stage_job(pipe, build_job(raws, settings), settings)
        pipe.execute()


def event(kind: str, **params: str) -> Any:
    return build(kind, algorithm=None, params={**SAMPLES[kind], **params})


def test_worker_counts_events_jobs_and_lag(settings: Settings, redis_db: Any, db: Any) -> None:
    """A worker with --metrics-port, after two jobs holding new events, a duplicate, a dead letter
    and a conflict: every event by kind and outcome, each job's requests and run, the lag of each
    stored event from its receipt, and no failure."""
    port = free_port()
    start_worker("--metrics-port", str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    received = time.time() - 1000
    queue_job(
        settings,
        redis_db,
        event("status", id="301"),
        event("status", id="302"),
        event("status", id="301"),
        event("status", id="303", status="x"),
        event("incoming"),
        received_at=received,
    )
    queue_job(settings, redis_db, event("incoming", mes="another text"), event("call"), received_at=received)
    total = "smsc_worker_events_total"
    # A job's duration is observed last, once everything else of it is counted.
    wait_until(lambda: value(scrape(url), "smsc_worker_job_duration_seconds_count") == 2, 60, "both jobs")

    samples = scrape(url)
    assert by_label(samples, total, "kind", "outcome") == {
        ("status", "stored"): 2,
        ("status", "duplicate"): 1,
        ("status", "dead_letter"): 1,
        ("incoming", "stored"): 1,
        ("incoming", "conflict"): 1,
        ("call", "stored"): 1,
    }
    assert buckets(samples, "smsc_worker_job_requests") == {
        "1.0": 0,
        "2.0": 1,
        "4.0": 1,
        "8.0": 2,
        "16.0": 2,
        "32.0": 2,
        "64.0": 2,
        "128.0": 2,
        "256.0": 2,
        "+Inf": 2,
    }
    assert value(samples, "smsc_worker_job_requests_sum") == 7
    assert value(samples, "smsc_worker_job_duration_seconds_count") == 2
    # Received 1000 s before the job was queued: each stored event's lag counts from there. Only a
    # lower bound: how soon the worker commits is the bench's business, not a test's.
    lag = buckets(samples, "smsc_worker_lag_seconds")
    assert (lag["600.0"], lag["+Inf"]) == (0, 4)
    assert value(samples, "smsc_worker_lag_seconds_sum") >= 4 * 1000
    assert by_label(samples, "smsc_worker_job_failures_total", "error_class", "outcome") == {}
    assert value(samples, "smsc_build_info", component="worker", version=VERSION) == 1
    assert db.execute("SELECT count(*) FROM status_events").fetchone()[0] == 2


def test_worker_counts_transient_failures_as_retry_then_failed(redis_db: Any, db: Any) -> None:
    """A worker (SMSC_METRICS_PORT) whose PostgreSQL refuses connections: the job's first two runs
    count as failures RQ retries, the third as failed."""
    port = free_port()
    env = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/smsc_test", "SMSC_RETRY_INTERVALS": "1,1"}
    start_worker(SMSC_METRICS_PORT=str(port), **env)
    url = f"http://127.0.0.1:{port}/metrics"
    queue_job(Settings.from_env(service_env(**env)), redis_db, event("call"), received_at=time.time())
    failures = "smsc_worker_job_failures_total"
    wait_until(lambda: ("failed",) in by_label(scrape(url), failures, "outcome"), 60, "the last try")

    samples = scrape(url)
    assert by_label(samples, failures, "error_class", "outcome") == {
        ("TransientError", "retry"): 2,
        ("TransientError", "failed"): 1,
    }
    assert value(samples, "smsc_worker_job_duration_seconds_count") == 3
    assert by_label(samples, "smsc_worker_events_total", "kind", "outcome") == {}
    assert Queue("smsc-test", connection=redis_db).failed_job_registry.count == 1


async def test_metrics_off_measures_nothing(redis_db: Any, db: Any) -> None:
    """With SMSC_METRICS=off the ingress stores as before and /metrics says that nothing is measured."""
    server = Ingress(1, SMSC_METRICS="off")
    assert await post(server.base, "status") == 200
    with urllib.request.urlopen(f"{server.base}/metrics", timeout=10) as answer:  # noqa: S310
        assert answer.read() == b"# metrics are off (SMSC_METRICS=off)\n"
    assert redis_db.llen("rq:queue:smsc-test") == 1
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(["--metrics-port", "70000"], {}, id="flag-out-of-range"),
        pytest.param(["--metrics-port", "x"], {}, id="flag-not-a-number"),
        pytest.param([], {"SMSC_METRICS_PORT": "-1"}, id="variable-negative"),
    ],
)
def test_a_bad_metrics_port_is_refused(args: list[str], env: dict[str, str]) -> None:
    """A metrics port outside 0-65535, given or from the environment, stops the worker with exit code 2."""
    proc = subprocess.run(
        [COMMAND, "worker", "--burst", *args], env=environment(**env), capture_output=True, timeout=60
    )
    assert proc.returncode == 2
    assert b"port" in proc.stderr


def test_a_metrics_port_in_use_is_a_configuration_error() -> None:
    """A worker given a metrics port another process holds says so and exits with code 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [COMMAND, "worker", "--burst", "--metrics-port", str(port)],
            env=environment(),
            capture_output=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}".encode() in proc.stderr


async def test_a_slow_body_counts_as_slow_body(redis_db: Any, db: Any) -> None:
    """A body that does not arrive within SMSC_READ_TIMEOUT is counted as a 408 of reason slow_body."""
    app = create_app(Settings.from_env(service_env(SMSC_READ_TIMEOUT="1")))
    async with TestClient(TestServer(app)) as client:
        answer = await status_line(
            client, b"POST /smsc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nid=1&phone="
        )
        assert answer.startswith(b"HTTP/1.1 408")
        samples = parse((await (await client.get("/metrics")).read()).decode())
    assert by_label(samples, "smsc_ingress_requests_total", "code", "kind", "reason") == {
        ("408", "unknown", "slow_body"): 1
    }
    assert value(samples, "smsc_ingress_request_duration_seconds_count") == 1
