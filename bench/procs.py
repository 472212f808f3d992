"""Processes the benchmark starts: each in its own process group, every one ended on the way out."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from bench.config import HOST, LOG_DIR, ROOT

STOP_SECONDS = 15.0


class BenchError(Exception):
    """The benchmark cannot go on: a process did not start, a run lost requests, ..."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll `check` until true (bounded by `timeout`); return the moment it was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout} s waiting for {what}")


def http_ok(port: int, path: str) -> bool:
    """GET http://127.0.0.1:port/path answered 200 (no proxy, unlike urllib)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the live processes of process group `pgid`, from /proc."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that has just exited
            # After "pid (command)": state, ppid, pgrp, ...; utime and stime are stat's 14th and 15th.
            fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of /proc/<pid>/status in MiB: VmHWM (peak RSS so far) or VmRSS (now); 0 if gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # in kB
    return 0.0


@dataclass(frozen=True)
class Usage:
    """What a process used over its life: CPU time from wait4() as it is reaped, peak RSS from /proc."""

    code: int
    cpu_seconds: float  # user + system, its own and its reaped children's
    peak_rss_mib: float  # its VmHWM, last read before it exited


def listening_sockets(port: int) -> int:
    """TCP sockets listening on `port` (one per process of a SO_REUSEPORT server), from /proc/net."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                # local_address is ADDR:PORT in hex; state 0A is LISTEN.
                if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


class Processes:
    """Starts processes in new sessions and, on exit or Ctrl-C, ends every one still running."""

    def __init__(self, log_dir: Path = LOG_DIR) -> None:
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        for old in log_dir.glob("*.log"):
            old.unlink()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in list(self._running.values()):
            self.stop(proc)

    def start(self, argv: Sequence[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        """Start `argv` with stdout and stderr appended to bench-results/logs/<log_name>.log."""
        with (self.log_dir / f"{log_name}.log").open("ab") as log:
            proc = subprocess.Popen(
                list(argv), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._running[proc.pid] = proc
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
        """Signal the process group `proc` leads, wait, SIGKILL it if it lingers; the exit code."""
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, sig)
                try:
                    proc.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=STOP_SECONDS)
            # Children of a multi-process server may outlive their parent: they share its group.
            _signal_group(proc.pid, signal.SIGKILL)
        finally:
            self._running.pop(proc.pid, None)
        return proc.returncode

    def wait(self, procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[int]:
        """Wait until every one of `procs` has exited (bounded); their exit codes."""
        deadline = time.monotonic() + timeout
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                raise BenchError(f"process {proc.args!r} still running after {timeout} s") from None
            self.stop(proc)
        return codes

    def reap(self, procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[Usage]:
        """Wait until every one of `procs` has exited (bounded); what each used.

        wait4() rather than waitpid(): the kernel hands over the process's CPU time as it reaps it,
        so a process that exits by itself (a burst worker) is measured to its last tick. Not its
        ru_maxrss: at exec() the kernel carries the forking parent's peak RSS into it, and the
        benchmark's own process is larger than a worker. VmHWM is read while it lives instead: it
        only grows, so the last reading is its peak but for its last few milliseconds.
        """
        deadline = time.monotonic() + timeout
        usages = []
        for proc in procs:
            peak = 0.0
            while True:
                peak = max(peak, memory_mib(proc.pid))
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"process {proc.args!r} still running after {timeout} s")
                time.sleep(0.005)
            proc.returncode = os.waitstatus_to_exitcode(status)
            usages.append(Usage(proc.returncode, rusage.ru_utime + rusage.ru_stime, peak))
            self.stop(proc)
        return usages

    def serve(
        self, argv: Sequence[str], env: dict[str, str], port: int, log_name: str
    ) -> subprocess.Popen[bytes]:
        """Start an HTTP server and wait until GET /healthz answers 200."""
        proc = self.start(argv, env, log_name)

        def ready() -> bool:
            if proc.poll() is not None:
                log = self.log_dir / f"{log_name}.log"
                raise BenchError(f"{log_name} exited with {proc.returncode}: see {log}")
            return http_ok(port, "/healthz")

        wait_until(ready, 30, f"{log_name} to answer on port {port}")
        return proc


def interrupt_on_signals() -> None:
    """SIGTERM ends the benchmark like Ctrl-C (even where a shell started it with SIGINT ignored):
    every process it started is stopped on the way out."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
