"""Running wrk with bench/wrk/load.lua and reading what it printed."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.config import HOST, WRK_SCRIPT
from bench.procs import BenchError

# After the window, wrk waits this long for the answers of the requests still in flight.
TAIL_SECONDS = 0.5


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: answers within the window, how many were not 2xx, latency percentiles."""

    requests: int
    window_seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    duration_seconds: float  # from wrk's start to its end: with a limit, to the last answer

    @property
    def ok(self) -> int:
        """Answers 2xx: every answer that was not an error status."""
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        """Answers per second over the window in which requests were started."""
        return self.requests / self.window_seconds


def wrk_argv(
    port: int, payloads: Path, window_ms: int, connections: int, rate: int = 0, limit: int = 0
) -> list[str]:
    """`wrk -t1` on POST /smsc of 127.0.0.1:port, cycling through `payloads`; `rate` 0 = unpaced;
    `limit` above 0: that many requests at most, wrk ending once they are all answered."""
    return [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{wrk_seconds(window_ms)}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        f"http://{HOST}:{port}/smsc",
        "--",
        str(payloads),
        str(window_ms),
        str(rate),
        str(limit),
    ]


def wrk_seconds(window_ms: int) -> int:
    """wrk's -d: the window and the time to answer the requests still in flight at its end."""
    return math.ceil(window_ms / 1000 + TAIL_SECONDS)


def run_wrk(
    port: int, payloads: Path, window_ms: int, connections: int, rate: int = 0, limit: int = 0
) -> WrkResult:
    """Run wrk (see `wrk_argv`) and read its figures."""
    argv = wrk_argv(port, payloads, window_ms, connections, rate, limit)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=wrk_seconds(window_ms) + 30, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout, window_ms)


def parse_wrk(output: str, window_ms: int) -> WrkResult:
    """The figures of the JSON line bench/wrk/load.lua's done() printed."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"wrk printed no figures: {output.strip()[-500:]}")
    data = json.loads(lines[-1])
    return WrkResult(
        requests=int(data["requests"]),
        window_seconds=window_ms / 1000,
        non_2xx=int(data["non_2xx"]),
        socket_errors=sum(
            int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        p50_ms=int(data["p50_us"]) / 1000,
        p99_ms=int(data["p99_us"]) / 1000,
        duration_seconds=int(data["duration_us"]) / 1e6,
    )
