"""`python -m bench [--only SECTION ...]`: run the benchmark, print the table, write bench-results/."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

from bench import e2e, ingress, replicas, report, stores, workers
from bench.config import JOB_SIZE, ROOT, RUNS, SMSC_INGEST, product_env
from bench.procs import BenchError, Processes

SECTIONS = ("ingress", "replicas", "workers", "e2e")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    args = parser.parse_args(argv)
    chosen = args.only or list(SECTIONS)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (make bench does it)", file=sys.stderr)
        return 2
    # SIGTERM ends the benchmark like Ctrl-C (even where a shell started it with SIGINT ignored):
    # every process it started is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    began = time.monotonic()
    subprocess.run([SMSC_INGEST, "migrate"], env=product_env(), check=True, timeout=120, capture_output=True)
    results = report.Results(meta=_machine())
    previous = report.load_previous()
    try:
        with Processes() as procs, tempfile.TemporaryDirectory(prefix="smsc-bench-") as tmp:
            for name in chosen:
                print(f"[{time.monotonic() - began:5.0f} s] {name}", flush=True)
                if name == "ingress":
                    ingress.run(procs, results, Path(tmp))
                elif name == "replicas":
                    replicas.run(procs, results, Path(tmp))
                elif name == "workers":
                    workers.run(procs, results)
                else:
                    e2e.run(procs, results, Path(tmp))
    except BenchError as e:
        results.problem(f"benchmark aborted: {e}")
    except KeyboardInterrupt:
        print(
            "\ninterrupted: every process the benchmark started is stopped; nothing written", file=sys.stderr
        )
        return 130
    finally:
        with stores.database() as conn:
            stores.empty(conn, stores.redis())
    results.meta["seconds"] = round(time.monotonic() - began, 1)
    results.meta["load_average_at_end"] = round(os.getloadavg()[0], 2)
    table = report.render(results, previous)
    print("\n" + table)
    copy = report.save(results, table)
    print(f"\n{results.meta['seconds']:.0f} s; written to {copy.relative_to(ROOT)} and latest.json beside it")
    return 1 if results.problems else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _machine() -> dict[str, Any]:
    """Where and on what this ran, so that two result files can be compared."""
    commit = _output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    if _output(["git", "status", "--porcelain", "--", "smsc", "ingress", "workers", "schema.sql"]):
        commit += "+changes"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in (_output(["lscpu"]) or "").splitlines()
            if "Model name" in line
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "wrk": _output(["wrk", "-v"], any_exit=True).split(" [")[0],
        "packages": {p: version(p) for p in ("aiohttp", "redis", "rq", "psycopg", "uvloop")},
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "runs": RUNS,
        "worker_job_size": JOB_SIZE,
    }


def _output(argv: list[str], any_exit: bool = False) -> str:
    """What `argv` printed, or "" if it failed (`wrk -v` exits 1 after printing its version)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT, check=False)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 or any_exit else ""


if __name__ == "__main__":
    sys.exit(main())
