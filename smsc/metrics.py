"""What the metrics of every component share: `smsc_build_info` and the requests-per-job buckets.

Metric names are agreed in one table (README, "Operating it"); each component defines its own
metrics where it records them, and only the shared pieces live here.
"""

from __future__ import annotations

from importlib.metadata import version

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

# Requests per job, at the ingress (written) and at the workers (processed): the ingress's group
# commit writes up to 200 requests per job.
JOB_REQUESTS_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


def build_info(component: str, registry: CollectorRegistry = REGISTRY) -> Gauge:
    """Register `smsc_build_info{version, component}` = 1 on `registry` (once per registry)."""
    # "max": under prometheus_client's multiprocess mode every process reports the same 1.
    gauge = Gauge(
        "smsc_build_info",
        "Always 1; the labels say which version of which component answers.",
        ["version", "component"],
        registry=registry,
        multiprocess_mode="max",
    )
    gauge.labels(version=version("smsc-ingest"), component=component).set(1)
    return gauge
