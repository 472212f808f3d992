"""A worker process's metrics, served on a port of its own (`worker --metrics-port`).

Each worker is a process with its own counts; Prometheus scrapes each one and sums them, so a
port per process is all it takes, with nothing shared between processes that could go stale.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

from smsc.exceptions import ConfigError
from smsc.metrics import JOB_REQUESTS_BUCKETS, build_info

# An event's kind when its request could not be read at all.
UNKNOWN_KIND = "unknown"

EVENTS = Counter(
    "smsc_worker_events",
    "Requests processed, by event kind, outcome (stored, duplicate, dead_letter, conflict) and account "
    "(`unknown` for any the worker's accounts file does not name).",
    ["kind", "outcome", "account"],
)
JOB_DURATION = Histogram(
    "smsc_worker_job_duration_seconds",
    "Time one run of a job took, failed runs included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
JOB_REQUESTS = Histogram(
    "smsc_worker_job_requests",
    "Requests per job run.",
    buckets=JOB_REQUESTS_BUCKETS,
)
JOB_FAILURES = Counter(
    "smsc_worker_job_failures",
    "Failed job runs, by exception class; outcome retry (RQ runs it again) or failed (no retries left).",
    ["error_class", "outcome"],
)
# The gateway retries an unanswered callback for 3 h 20 min (12,000 s): lag up to that is possible.
LAG = Histogram(
    "smsc_worker_lag_seconds",
    "Time from the ingress's receipt of a request to the commit of its stored event.",
    buckets=(
        *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        *(120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 12000.0, 14400.0),
    ),
)


def serve(host: str, port: int) -> None:
    """Answer scrapes of this process's metrics on host:port, from a thread of its own.

    A port already taken (by another worker given the same one) is a configuration error.
    """
    try:
        start_http_server(port, addr=host)
    except OSError as e:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
    build_info("worker")
