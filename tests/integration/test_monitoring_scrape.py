"""Every metric the alert rules and the dashboard name is in a real scrape after real traffic (issue 10:
"peers' dashboards ship names their code no longer exports"). A real `serve --workers 2`, a real
`worker --metrics-port` and a real `exporter`, as processes on a queue of their own; the traffic makes
every labelled series the rules and panels select with `=` or `!=` (a 200 and a 403 of each kind, a
copy, a dead letter, a failed job)."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from tests.integration.procs import COMMAND, Ingress, environment, post_all, spawn
from tests.integration.servers import free_port, wait_until
from tests.monitoring import Use, all_expressions, uses
from tests.payloads import SAMPLES, build

QUEUE = "smsc-test-monitoring"
# Labels Prometheus adds to a target's series, not the process.
TARGET_LABELS = {"job", "instance"}

Samples = dict[str, list[dict[str, str]]]


def scrape(port: int) -> Samples:
    """GET /metrics on a loopback port: the label sets of each sample name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode("utf-8")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return samples


def satisfied(use: Use, samples: Samples) -> bool:
    """Some sample of the selector's name has labels its `=` and `!=` matchers accept.

    A regex matcher (`code=~"5.."`) selects a class of values; its name must be there, its values need
    not all have been produced."""
    checks = [(label, op, value) for label, op, value in use.matchers if label not in TARGET_LABELS]
    return any(
        all(
            (labels.get(label, "") == value) == (op == "=")
            for label, op, value in checks
            if op in ("=", "!=")
        )
        for labels in samples.get(use.name, [])
    )


def selectors() -> dict[str, Use]:
    """Every selector of the rules and panels but Prometheus's own `up`, shown as in PromQL."""
    found: dict[str, Use] = {}
    for expr in all_expressions().values():
        for use in uses(expr):
            if use.name != "up":
                shown = use.name + "{" + ",".join(f'{k}{op}"{v}"' for k, op, v in use.matchers) + "}"
                found.setdefault(shown.removesuffix("{}"), use)
    return found


def count(db: Any, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def started(args: list[str], port: int, log: Path, **overrides: str) -> None:
    """Start `smsc-ingest args` and wait until it listens on `port`; if it exits first (a command or
    an option it does not know), fail with the end of its log."""
    with log.open("wb") as out:
        proc = spawn([COMMAND, *args], environment(**overrides), out.fileno())
    deadline = time.monotonic() + 20
    while not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise AssertionError(f"{' '.join(args)} is not listening (exit code {proc.returncode}):\n{tail}")
        time.sleep(0.1)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def test_every_metric_of_the_rules_and_dashboard_is_scraped(
    redis_db: Redis, db: Any, tmp_path: Path
) -> None:
    """After real traffic, each selector of alerts.yml and the dashboard finds a sample in the scrape
    of the ingress, the worker or the exporter."""
    wanted = selectors()
    ingress = Ingress(processes=2, SMSC_QUEUE=QUEUE)
    worker_port, exporter_port = free_port(), free_port()
    started(
        ["worker", "--metrics-port", str(worker_port)], worker_port, tmp_path / "worker.log", SMSC_QUEUE=QUEUE
    )
    started(
        ["exporter", "--port", str(exporter_port)], exporter_port, tmp_path / "exporter.log", SMSC_QUEUE=QUEUE
    )

    status = build("status", params={**SAMPLES["status"], "id": "7001"})
    sent = [
        status,
        build("incoming"),
        build("call"),
        build("status", params={**SAMPLES["status"], "id": "7002", "status": "x"}),  # dead letter
        build("incoming", secret="rotated-on-one-side-only"),
        build("status", params={"id": "7003", "status": "1"}),  # no phone
    ]
    assert await post_all(ingress.base, sent) == [200, 200, 200, 200, 403, 400]
    wait_until(
        lambda: (
            [
                count(db, t)
                for t in ("status_events", "incoming_messages", "call_confirmations", "dead_letters")
            ]
            == [1, 1, 1, 1]
        ),
        30,
        "the events and the dead letter stored",
    )
    assert await post_all(ingress.base, [status]) == [200]  # a copy of a stored event
    # A job that is not ours fails for good and lands in RQ's failed registry.
    Queue(QUEUE, connection=redis_db, serializer=JSONSerializer).enqueue(
        "workers.jobs.process", [{"not": "a raw request"}]
    )

    missing = list(wanted)
    deadline = time.monotonic() + 30
    while missing and time.monotonic() < deadline:
        samples: Samples = {}
        for port in (ingress.port, worker_port, exporter_port):
            for name, labels in scrape(port).items():
                samples.setdefault(name, []).extend(labels)
        missing = [shown for shown, use in wanted.items() if not satisfied(use, samples)]
        time.sleep(0.5)
    assert missing == [], f"named by a rule or a panel, absent from every scrape: {missing}"


@pytest.mark.parametrize(
    ("selector", "found"),
    [
        ('smsc_worker_events_total{outcome="stored"}', True),
        ('smsc_worker_events_total{outcome="dead-letter"}', False),  # a typo of a label value
        ('smsc_worker_events_total{outcome!="stored"}', False),
        ('smsc_worker_events_total{job="smsc-worker", kind="status"}', True),  # job: Prometheus's label
        ('smsc_worker_events_total{outcome=~"dead_letter|conflict"}', True),  # a class: its name suffices
        ("smsc_worker_event_total", False),
    ],
)
def test_a_selector_needs_a_sample_its_matchers_accept(selector: str, found: bool) -> None:
    """The scrape check can fail: a name or an `=`/`!=` label value the scrape lacks is missing."""
    samples: Samples = {"smsc_worker_events_total": [{"kind": "status", "outcome": "stored"}]}
    assert satisfied(uses(selector)[0], samples) is found
