"""Names, sizes and durations of the benchmark, in one place."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIR: Final = ROOT / "bench-results"
LOG_DIR: Final = RESULTS_DIR / "logs"
WRK_SCRIPT: Final = Path(__file__).resolve().parent / "wrk" / "load.lua"
SMSC_INGEST: Final = str(Path(sys.executable).with_name("smsc-ingest"))

# Our own PostgreSQL database and Redis database number: the benchmark empties these, nothing else.
DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/smsc_bench"
REDIS_URL: Final = "redis://127.0.0.1:6379/14"
HOST: Final = "127.0.0.1"
SECRET: Final = "bench-Secret_7"  # noqa: S105 - the benchmark's own, protects nothing
QUEUE: Final = "bench"  # SMSC_QUEUE of the product under test
REF_QUEUE: Final = "bench-ref"  # the RQ references' queue
R2_LIST: Final = "bench:r2"  # where reference R2 LPUSHes

RUNS: Final = 3

# 1. Ingress: wrk starts requests for WRK_WINDOW_MS, then waits for the answers of those in flight.
WRK_CONNECTIONS: Final = 64
WRK_WINDOW_MS: Final = 4500
INGRESS_PAYLOADS: Final = 2000

# 2. Workers. The headline: a queue filled through `smsc-ingest serve` by FILL_CONNECTIONS senders in a
# closed loop, FILL_EVENTS distinct events each sent once, drained by one worker. The secondary row: a
# pre-filled queue of WORKER_EVENTS raw requests in jobs of JOB_SIZE, which the ingress rarely makes.
FILL_EVENTS: Final = 32_000
FILL_CONNECTIONS: Final = 32
FILL_TIMEOUT_SECONDS: Final = 120
WORKER_EVENTS: Final = 40_000
JOB_SIZE: Final = 100
REF_JOBS: Final = 2000
CEILING_ROWS: Final = 20_000
CEILING_BATCH: Final = 500
WORKER_TIMEOUT_SECONDS: Final = 90.0
# Issue 13's targets for one worker on jobs made by the ingress.
TARGET_EVENTS_PER_SECOND: Final = 5000
TARGET_RATIO_RQ_INSERT: Final = 30

# 3. End to end: wrk paced at E2E_RATE for E2E_SECONDS, cut into E2E_WINDOWS for the figures.
E2E_RATE: Final = 3000
E2E_SECONDS: Final = 60  # the target: keep up for 60 s
E2E_WINDOWS: Final = 3
E2E_CONNECTIONS: Final = 64
E2E_DRAIN_SECONDS: Final = 5.0  # all events stored within this after the load stops: it kept up
E2E_WAIT_SECONDS: Final = 10.0  # how long to wait for the backlog at most

# `make bench-history`: the workers' events/s into an empty database and into one holding a year of
# statuses. Its own databases and Redis database number: it empties these, nothing else.
HISTORY_EMPTY_URL: Final = "postgresql://postgres@127.0.0.1:5432/smsc_bench_empty"
HISTORY_FULL_URL: Final = "postgresql://postgres@127.0.0.1:5432/smsc_bench_history"
HISTORY_REDIS_URL: Final = "redis://127.0.0.1:6379/8"
HISTORY_ROWS: Final = 20_000_000  # the "at least 20 million status rows"; a fuller one is reused
HISTORY_MONTHS: Final = 12
# 2.5 statuses per message on average: 12 x 1.7 M rows, a margin over HISTORY_ROWS for the row
# estimate the reuse check reads.
HISTORY_MESSAGES_PER_MONTH: Final = 680_000

# `make soak`: one `serve` and one `worker` under a steady paced load for SOAK_SECONDS, their RSS
# sampled every SOAK_SAMPLE_SECONDS; growth = the last minute's RSS over the RSS at the end of the
# warm-up, SOAK_MAX_GROWTH or more fails. Its own database and Redis database number: it empties these.
SOAK_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/smsc_bench_soak"
SOAK_REDIS_URL: Final = "redis://127.0.0.1:6379/12"
SOAK_SECONDS: Final = 600
SOAK_WARMUP_SECONDS: Final = 120
SOAK_SAMPLE_SECONDS: Final = 10
SOAK_RATE: Final = 1000
SOAK_CONNECTIONS: Final = 32
SOAK_COPY_EVERY: Final = 10  # every SOAK_COPY_EVERY-th request resends an earlier event, as the gateway does
SOAK_MAX_GROWTH: Final = 0.10
SOAK_DRAIN_SECONDS: Final = 30.0  # how long the queue may take to drain once the load stops


def product_env(**overrides: str) -> dict[str, str]:
    """The environment of a product process: ours, less any SMSC_* setting of the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSC_")}
    env.update(
        SMSC_SECRET=SECRET,
        SMSC_HASH="md5",
        SMSC_QUEUE=QUEUE,
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
    )
    env.update(overrides)
    return env
