"""The product's own commands run as separate processes, as an operator would run them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.integration.conftest import service_env
from tests.integration.servers import free_port, port_open, wait_until
from tests.payloads import Request

COMMAND = str(Path(sys.executable).with_name("smsc-ingest"))

# Every process a test starts, so that none outlives its test (see `reap`).
STARTED: list[subprocess.Popen[bytes]] = []


def spawn(args: list[str], env: dict[str, str], stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start a process in its own session: its children (RQ's scheduler) die with its group."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    STARTED.append(proc)
    return proc


def reap() -> None:
    """Kill what a test left running (a test that failed half-way), process groups included."""
    while STARTED:
        proc = STARTED.pop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
        if proc.stderr is not None:
            proc.stderr.close()


def environment(**overrides: str) -> dict[str, str]:
    """The process environment plus the test deployment's settings."""
    return {**os.environ, **service_env(**overrides)}


class Ingress:
    """`smsc-ingest serve` on a free loopback port."""

    def __init__(self, processes: int = 1, **overrides: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [COMMAND, "serve", "--port", str(self.port), "--workers", str(processes)]
        self.proc = spawn(args, environment(**overrides))
        wait_until(lambda: port_open(self.port), 20, "the ingress")

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)


def start_worker(*args: str, log: int = subprocess.DEVNULL, **overrides: str) -> subprocess.Popen[bytes]:
    """`smsc-ingest worker [args]`; its log goes to `log` (a pipe the caller reads, or nowhere)."""
    return spawn([COMMAND, "worker", *args], environment(**overrides), log)


def run_workers(count: int, **overrides: str) -> None:
    """Start `count` burst workers at the same moment and wait until all have drained the queue."""
    procs = [start_worker("--burst", log=subprocess.PIPE, **overrides) for _ in range(count)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]


async def post_all(base: str, requests: list[Request], concurrency: int = 32) -> list[int]:
    """POST every request, `concurrency` at a time; return the status codes in order."""
    limit = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, r: Request) -> int:
        try:
            async with (
                limit,
                session.post(
                    f"{base}/smsc?{r.query}", data=r.body, headers={"Content-Type": r.content_type}
                ) as resp,
            ):
                return resp.status
        except aiohttp.ClientError:
            return 0  # no answer at all: the gateway would retry it

    async with aiohttp.ClientSession() as session:
        return await asyncio.gather(*(one(session, r) for r in requests))
