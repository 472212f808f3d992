"""The real commands as separate processes: `serve`, `worker --burst`, `migrate`."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.procs import COMMAND, Ingress, environment, post_all, run_workers
from tests.payloads import SAMPLES, build


@pytest.fixture
def ingress(redis_db: Any, db: Any) -> Iterator[str]:
    """A real `smsc-ingest serve` process; yields its base URL and checks it exits cleanly on SIGTERM."""
    server = Ingress()
    yield server.base
    assert server.stop() == 0


def count(db: Any, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_mixed_batch_end_to_end(ingress: str, db: Any) -> None:
    """A mixed batch through a real ingress and a real worker: every event stored once."""
    requests = [
        *(
            build("status", fmt, params={**SAMPLES["status"], "id": str(100 + i)})
            for i, fmt in enumerate(("form", "xml", "json"))
        ),
        *(
            build("incoming", fmt, charset, params={**SAMPLES["incoming"], "id": str(200 + i)})
            for i, (fmt, charset) in enumerate(
                (("form", "koi8-r"), ("json", "utf-8"), ("xml", "windows-1251"))
            )
        ),
        *(build("call", params={**SAMPLES["call"], "ts": str(1_700_000_000 + i)}) for i in range(3)),
    ]
    assert await post_all(ingress, requests) == [200] * len(requests)
    run_workers(1)
    assert [count(db, t) for t in ("status_events", "incoming_messages", "call_confirmations")] == [3, 3, 3]
    texts = db.execute("SELECT DISTINCT text FROM incoming_messages").fetchall()
    assert texts == [(SAMPLES["incoming"]["mes"],)]


async def test_fifty_copies_two_workers_one_row(ingress: str, db: Any) -> None:
    """50 copies of each event, sent concurrently and drained by two worker processes at once: one row."""
    sequence = [
        build("status", params={"id": "31", "phone": "79990000003", "status": str(code), "ts": str(ts)})
        for code, ts in ((0, 1_700_000_000), (1, 1_700_000_060), (2, 1_700_000_120))
    ]
    events = [*sequence, build("incoming"), build("call")]
    copies = [r for r in events for _ in range(50)]
    random.Random(3).shuffle(copies)
    assert await post_all(ingress, copies) == [200] * len(copies)
    run_workers(2)
    assert count(db, "status_events") == 3
    assert count(db, "incoming_messages") == 1
    assert count(db, "call_confirmations") == 1
    assert db.execute("SELECT status FROM messages").fetchall() == [(2,)]


def test_migrate_twice_is_harmless(db: Any) -> None:
    """`smsc-ingest migrate` can run again on a live schema without error or data loss."""
    db.execute(
        "INSERT INTO call_confirmations (phone, called_at, params, request_id, received_at)"
        " VALUES ('1', now(), '{}', 'r', now())"
    )
    for _ in range(2):
        subprocess.run([COMMAND, "migrate"], env=environment(), check=True, capture_output=True, timeout=60)
    assert count(db, "call_confirmations") == 1


def test_serve_refuses_without_secret() -> None:
    """`serve` without SMSC_SECRET exits non-zero and says why."""
    proc = subprocess.run(
        [COMMAND, "serve"], env=environment(SMSC_SECRET=""), capture_output=True, timeout=30
    )
    assert proc.returncode == 2
    assert b"SMSC_SECRET" in proc.stderr


async def test_prefork_ingress_shares_the_port(redis_db: Any, db: Any) -> None:
    """`serve --workers 2` runs two processes on one port; both store, and SIGTERM stops all cleanly."""
    server = Ingress(processes=2)
    try:
        children = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(children) == 2
        sent = [build("call", params={**SAMPLES["call"], "ts": str(1_700_000_000 + i)}) for i in range(100)]
        assert await post_all(server.base, sent) == [200] * 100
    finally:
        assert server.stop() == 0
    run_workers(1)
    assert count(db, "call_confirmations") == 100
