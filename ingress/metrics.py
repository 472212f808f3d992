"""The ingress's metrics, and their exposition on GET /metrics.

With `serve --workers N` every process writes its values to files of one directory (prometheus_client's
multiprocess mode) and whichever process a scrape reaches answers with the sum of all of them; with
one process they stay in memory. The metrics are built per application, after the fork, so that the
supervising process never writes values of its own.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from smsc.metrics import JOB_REQUESTS_BUCKETS, build_info

# An event's kind before the request could be decoded.
UNKNOWN_KIND = "unknown"

# Seconds: callbacks are answered in milliseconds; the Redis timeout (2 s) and the body's read
# timeout bound the slowest answers.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def use_multiprocess(directory: str) -> None:
    """Make the metrics built from now on in this process write their values under `directory`.

    prometheus_client picks its value class from PROMETHEUS_MULTIPROC_DIR when it is first imported,
    which in `serve` has long happened; metrics look the class up when they are built, so setting
    both here (the files' place is read from the variable) switches the mode for what follows.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    # The process's id, read once: by default every increment asks the kernel (a system call per
    # value written, the larger part of the metrics' cost), to notice a fork the ingress never does.
    pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]


class IngressMetrics:
    """The ingress's metrics on a registry of their own (one per application)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self.registry = registry = CollectorRegistry()
        build_info("ingress", registry)
        self.requests = Counter(
            "smsc_ingress_requests",
            "Answers of the ingress, by HTTP code, event kind, the reason class of a refusal and account "
            "(`unknown` for any the deployment does not know).",
            ["code", "kind", "reason", "account"],
            registry=registry,
        )
        self.duration = Histogram(
            "smsc_ingress_request_duration_seconds",
            "Time from a POST to the handler until its answer.",
            registry=registry,
            buckets=_DURATION_BUCKETS,
        )
        self.redis_write = Histogram(
            "smsc_ingress_redis_write_duration_seconds",
            "Time of one MULTI/EXEC writing a job.",
            registry=registry,
            buckets=_WRITE_BUCKETS,
        )
        self.job_requests = Histogram(
            "smsc_ingress_job_requests",
            "Requests per job written to Redis.",
            registry=registry,
            buckets=JOB_REQUESTS_BUCKETS,
        )
        self.backpressure = Gauge(
            "smsc_ingress_backpressure",
            "1 while the ingress answers 503 because the queue is full.",
            registry=registry,
            multiprocess_mode="max",
        )
        self.redis_up = Gauge(
            "smsc_ingress_redis_up",
            "1 when the ingress's last poll of Redis was answered.",
            registry=registry,
            multiprocess_mode="min",
        )
        # One child per label set, looked up by a tuple: `labels()` costs more than the increment.
        self._answers: dict[tuple[int, str, str, str], Counter] = {}

    def answered(self, code: int, kind: str, reason: str, account: str) -> None:
        """Count one answer; `account` is a known account's name or `unknown`, never any other."""
        key = (code, kind, reason, account)
        child = self._answers.get(key)
        if child is None:
            child = self._answers[key] = self.requests.labels(str(code), kind, reason, account)
        child.inc()

    def written(self, requests: int, seconds: float) -> None:
        """Note one job written to Redis."""
        self.redis_write.observe(seconds)
        self.job_requests.observe(requests)

    def polled(self, *, redis_up: bool, full: bool) -> None:
        """Note a poll of the queue's length: whether Redis answered, whether back-pressure is on."""
        self.redis_up.set(1 if redis_up else 0)
        self.backpressure.set(1 if full else 0)

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's values, or every process's with `--workers N`."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
