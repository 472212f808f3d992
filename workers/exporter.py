"""`smsc-ingest exporter`: the queue state for Prometheus, once per deployment.

A collector reads Redis and PostgreSQL at each scrape (workers/state.py), so a value is never older
than the scrape that shows it; a server that cannot be read exports `smsc_<server>_up 0` and none of
its other series, rather than stale numbers. The state belongs to the deployment, not to a process:
run one exporter (two for redundancy, combined with max() in rules and dashboards, never sum()).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import FrameType

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smsc.exceptions import TransientError
from smsc.metrics import build_info
from smsc.settings import Settings
from workers.state import State, StateReader

log = structlog.get_logger("smsc.exporter")


class StateCollector(Collector):
    """The metrics of the spec's "Queue state", from one reading of both servers per scrape."""

    def __init__(self, reader: StateReader) -> None:
        self._reader = reader

    def collect(self) -> Iterator[Metric]:
        state = self._reader.read()
        for server, error in (("redis", state.redis_error), ("postgres", state.postgres_error)):
            if error is not None:
                log.warning("state_unreadable", server=server, reason=error)
        yield from _metrics(state)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _metrics(state: State) -> Iterator[Metric]:
    yield _gauge(
        "smsc_redis_up", "1 if Redis answered this scrape's reads, else 0", int(state.redis is not None)
    )
    yield _gauge(
        "smsc_postgres_up",
        "1 if PostgreSQL answered this scrape's reads, else 0",
        int(state.postgres is not None),
    )
    if (redis := state.redis) is not None:
        yield _gauge("smsc_queue_jobs", "Jobs queued (the RQ queue's length)", redis.queued)
        yield _gauge(
            "smsc_queue_oldest_job_age_seconds",
            "Age of the oldest queued job (since it was enqueued); 0 when the queue is empty",
            redis.oldest_job_age,
        )
        registries = GaugeMetricFamily(
            "smsc_queue_registry_jobs",
            "Jobs in RQ's registries of the queue: started (running, worker alive), scheduled "
            "(waiting for a retry), failed (retries exhausted, kept for replay)",
            labels=["registry"],
        )
        registries.add_metric(["started"], redis.started)
        registries.add_metric(["scheduled"], redis.scheduled)
        registries.add_metric(["failed"], redis.failed)
        yield registries
        yield _gauge(
            "smsc_workers_alive",
            "RQ workers registered on the queue whose heartbeat is current",
            redis.workers_alive,
        )
        yield _gauge("smsc_redis_aof_enabled", "1 if Redis's append-only file is on", int(redis.aof_enabled))
        yield _gauge(
            "smsc_redis_aof_last_write_ok",
            "1 if Redis's last append-only file write succeeded (aof_last_write_status ok)",
            int(redis.aof_last_write_ok),
        )
        yield CounterMetricFamily(
            "smsc_redis_evicted_keys",
            "Keys Redis evicted for memory since it started",
            value=redis.evicted_keys,
        )
    if (postgres := state.postgres) is not None:
        waiting = GaugeMetricFamily(
            "smsc_dead_letters_waiting",
            "Dead letters in PostgreSQL not replayed, by error class",
            labels=["error_class"],
        )
        for error_class, count in sorted(postgres.dead_letters.items()):
            waiting.add_metric([error_class], count)
        yield waiting


def registry(reader: StateReader) -> CollectorRegistry:
    """A registry holding the exporter's build_info and the state read at each scrape."""
    metrics = CollectorRegistry()
    metrics.register(StateCollector(reader))
    build_info("exporter", metrics)
    return metrics


def run(settings: Settings, host: str, port: int) -> None:
    """Serve the metrics on host:port until SIGTERM or SIGINT."""
    reader = StateReader(settings)
    try:
        server, _ = start_http_server(port, host, registry(reader))
    except OSError as e:
        reader.close()
        raise TransientError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    log.info("exporter_listening", host=host, port=port, queue=settings.queue)
    stop.wait()
    server.shutdown()
    server.server_close()
    reader.close()
    log.info("exporter_stopped")
