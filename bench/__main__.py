"""`python -m bench [--only SECTION ...]`: run the benchmark, print the table, write bench-results/."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import e2e, ingress, replicas, report, stores, workers
from bench.config import ROOT, SMSC_INGEST, product_env
from bench.procs import BenchError, Processes, interrupt_on_signals

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
    interrupt_on_signals()
    began = time.monotonic()
    subprocess.run([SMSC_INGEST, "migrate"], env=product_env(), check=True, timeout=120, capture_output=True)
    results = report.Results(meta=report.machine())
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
                    workers.run(procs, results, Path(tmp))
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


if __name__ == "__main__":
    sys.exit(main())
