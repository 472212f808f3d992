"""Phones in the log lines of real processes: masked to their last 4 characters by default, in full
with SMSC_LOG_PHONES=full; the tables keep them in full either way."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.batches import http
from tests.integration.procs import start_worker
from tests.integration.servers import wait_until
from tests.integration.test_ingress_process_logs import LoggedIngress
from tests.payloads import SAMPLES, build

# One status to each kind of recipient a status may have, and the phone as a masked line shows it.
RECIPIENTS = {
    "79998887766": "*******7766",
    "+79001234567": "********4567",
    "ivan.petrov@example.ru": "******************e.ru",
    "@ivan_petrov": "********trov",
}


def logged(lines: list[str], event: str) -> list[dict[str, Any]]:
    return [entry for entry in map(json.loads, lines) if entry["event"] == event]


@pytest.mark.parametrize(("setting", "masked"), [("", True), ("masked", True), ("full", False)])
@pytest.mark.usefixtures("redis_db")
def test_ingress_and_worker_lines_mask_phones(tmp_path: Path, db: Any, setting: str, masked: bool) -> None:
    """request_stored (ingress) and event_stored (worker) show each phone as SMSC_LOG_PHONES says."""
    requests = [
        build("status", params={**SAMPLES["status"], "id": str(100 + i), "phone": phone})
        for i, phone in enumerate(RECIPIENTS)
    ]
    expected = {phone: shown if masked else phone for phone, shown in RECIPIENTS.items()}
    ingress = LoggedIngress(tmp_path / "ingress.log", SMSC_LOG_PHONES=setting)
    try:
        for r in requests:
            assert ingress.send(http(r)).startswith(b"HTTP/1.1 200")
        wait_until(lambda: len(logged(ingress.lines(), "request_stored")) == len(requests), 20, "the log")
    finally:
        assert ingress.stop() == 0
    worker = start_worker("--burst", log=subprocess.PIPE, SMSC_LOG_PHONES=setting)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0

    for lines, event in ((ingress.lines(), "request_stored"), (err.decode().splitlines(), "event_stored")):
        entries = logged(lines, event)
        assert sorted(entry["phone"] for entry in entries) == sorted(expected.values())
        if masked:
            assert not any(phone in line for line in lines for phone in RECIPIENTS), event
    stored = db.execute("SELECT phone FROM status_events ORDER BY message_id").fetchall()
    assert stored == [(phone,) for phone in RECIPIENTS]
