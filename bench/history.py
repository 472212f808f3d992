"""`python -m bench.history` (`make bench-history`): does a worker slow down as the history grows?

One `smsc-ingest worker --burst` drains the same pre-queued jobs into an empty database and into one
holding a year of delivery statuses (issue 12, "Cost does not grow with history"), in turns; the
table is printed and written to bench-results/history.json. The filled database is kept and reused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from bench import logscan, payloads, report, stores, workers
from bench.config import (
    HISTORY_EMPTY_URL,
    HISTORY_FULL_URL,
    HISTORY_MESSAGES_PER_MONTH,
    HISTORY_MONTHS,
    HISTORY_REDIS_URL,
    HISTORY_ROWS,
    JOB_SIZE,
    QUEUE,
    ROOT,
    RUNS,
    SMSC_INGEST,
    WORKER_EVENTS,
    product_env,
)
from bench.procs import BenchError, Processes, interrupt_on_signals
from bench.report import Column, Ratio, Results, Section
from smsc.settings import Settings

# The run's callbacks: bench/payloads.py's mix from this n on, their message ids above every one of
# the history (SMSC's ids grow with time), so that no run's event is a copy of a stored one.
FIRST_EVENT = 300_000_000
RUN_FIRST_ID = int(payloads.status_params(FIRST_EVENT)["id"])
HISTORY_FIRST_ID = 100_000_000
# The run's events happen from an hour into the current month on, one a second.
RUN_OFFSET_SECONDS = 3600
FILL_CHUNK = 85_000  # messages per INSERT: about 210,000 status rows

# A month's messages [lo, hi) of the history: each a status 0 (passed to the operator) then its
# final status, every other one a -1 (waiting to be sent) before them; 90% delivered, the rest
# failed in the ways the failed-deliveries index covers. Rows are shaped as a worker writes them
# from a form callback, with a random request id; `messages` gets the final status.
FILL = """
WITH m AS (
    SELECT id0 + i AS message_id,
           '79' || lpad(((id0 + i) * 2654435761 %% 1000000000)::text, 9, '0') AS phone,
           %(start)s::timestamptz + make_interval(secs => i * %(step)s) AS sent_at,
           ((id0 + i) * 40503 %% 100)::int AS fate,
           1.25 + (id0 + i) %% 4 * 0.5 AS cost
    FROM (SELECT %(id0)s::bigint AS id0) AS c, generate_series(%(lo)s, %(hi)s - 1) AS i
), f AS (
    SELECT m.*,
           CASE WHEN fate < 90 THEN 1 WHEN fate < 94 THEN 20 WHEN fate < 96 THEN 22
                WHEN fate < 98 THEN 3 WHEN fate < 99 THEN 25 ELSE 24 END AS final,
           date_trunc('second', sent_at + make_interval(secs => 5 + message_id %% 55)) AS final_at
    FROM m
), s AS (
    SELECT f.message_id, f.phone, f.cost,
           CASE k WHEN 1 THEN f.final ELSE k END AS status,
           CASE k WHEN 1 THEN f.final_at ELSE date_trunc('second', f.sent_at) + make_interval(secs => k + 1)
           END AS at
    FROM f CROSS JOIN LATERAL generate_series(CASE WHEN f.message_id %% 2 = 1 THEN -1 ELSE 0 END, 1) AS k
), e AS (
    SELECT s.*, CASE WHEN status IN (3, 20, 22, 23, 24, 25) THEN 1 + message_id %% 8 ELSE 0 END AS err
    FROM s
), inserted AS (
    INSERT INTO status_events (
        message_id, phone, status, status_at, ts, err, cnt, type, cost, flag, flag_message_type,
        flag_second_balance, flag_template, flag_template_kind, sender, params, request_id,
        received_at, stored_at
    )
    SELECT message_id, phone, status, at, at, err, 1, 0, cost, 0, 0, false, false, 0, 'SMSC.RU',
           jsonb_build_object(
               'id', message_id::text, 'phone', phone, 'status', status::text,
               'ts', extract(epoch FROM at)::bigint::text, 'err', err::text, 'cnt', '1', 'type', '0',
               'cost', cost::text, 'flag', '0', 'sender', 'SMSC.RU', 'charset', 'utf-8',
               'md5', md5(message_id::text || status::text)
           ),
           replace(gen_random_uuid()::text, '-', ''), at + interval '0.2 s', at + interval '0.25 s'
    FROM e
)
INSERT INTO messages (message_id, phone, status, status_at, err, cost, updated_at)
SELECT message_id, phone, final, final_at,
       CASE WHEN final IN (3, 20, 22, 23, 24, 25) THEN 1 + message_id %% 8 ELSE 0 END, cost,
       final_at + interval '0.25 s'
FROM f
"""

# The run's rows, removed before each run: the history's stay. The other tables hold run rows only.
DELETE_RUN_STATUSES = (
    "DELETE FROM status_events WHERE account = 'default' AND message_id >= %(id)s AND status_at >= %(month)s"
)
DELETE_RUN_MESSAGES = "DELETE FROM messages WHERE account = 'default' AND message_id >= %(id)s"
EMPTY_OTHERS = "TRUNCATE incoming_messages, call_confirmations, duplicate_requests, dead_letters"
COUNT_RUN = """
SELECT (SELECT count(*) FROM status_events WHERE message_id >= %(id)s AND status_at >= %(month)s)
     + (SELECT count(*) FROM incoming_messages) + (SELECT count(*) FROM call_confirmations)
"""
# The planner's row count of the history's partitions: the fill's last step, VACUUM ANALYZE, sets it
# (an unfinished fill leaves it unknown, -1, or 0 from the partition's creation); the runs' VACUUMs
# keep it.
ESTIMATE = "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class WHERE relname = ANY(%s)"


def main() -> int:
    interrupt_on_signals()
    began = time.monotonic()
    now = datetime.now(UTC)
    months = _months(now)
    results = Results(meta={**report.machine(), "worker_events": WORKER_EVENTS})
    previous = report.load_previous("history.json")
    client = stores.redis(HISTORY_REDIS_URL)
    try:
        with Processes() as procs:
            history = _history(months, results.meta)
            print(f"[{time.monotonic() - began:5.0f} s] workers", flush=True)
            _measure(procs, results, months[-1], history)
    except BenchError as e:
        results.problem(f"benchmark aborted: {e}")
    except KeyboardInterrupt:
        print(
            "\ninterrupted: every process the benchmark started is stopped; nothing written", file=sys.stderr
        )
        return 130
    finally:
        client.flushdb()
    results.meta["seconds"] = round(time.monotonic() - began, 1)
    results.meta["load_average_at_end"] = round(os.getloadavg()[0], 2)
    table = report.render(results, previous, "history.json")
    print("\n" + table)
    path = report.save_as(results, table, "history.json")
    print(f"\n{results.meta['seconds']:.0f} s; written to {path.relative_to(ROOT)}")
    return 1 if results.problems else 0


def _months(now: datetime) -> list[datetime]:
    """The first instants (UTC) of the HISTORY_MONTHS months up to the current one, oldest first."""
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return [
        first.replace(year=first.year + (first.month - 1 - i) // 12, month=(first.month - 1 - i) % 12 + 1)
        for i in reversed(range(HISTORY_MONTHS))
    ]


def _prepare(url: str, afresh: bool = False) -> None:
    """Create the database if missing (dropped first if `afresh`) and migrate it with the product's
    own command."""
    name = url.rsplit("/", 1)[1]
    with stores.database(url.rsplit("/", 1)[0] + "/postgres") as admin:
        if afresh:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(
        [SMSC_INGEST, "migrate"],
        env=product_env(DATABASE_URL=url),
        check=True,
        timeout=120,
        capture_output=True,
    )


def _partitions(months: list[datetime]) -> list[str]:
    return [f"status_events_p{month:%Y%m}" for month in months]


def _history(months: list[datetime], meta: dict[str, Any]) -> int:
    """The filled database: reused if its months hold HISTORY_ROWS statuses, else made again.

    Returns the estimated number of status rows.
    """
    _prepare(HISTORY_FULL_URL)
    with stores.database(HISTORY_FULL_URL) as conn:
        rows = stores.scalar(conn, ESTIMATE, (_partitions(months),))
        if rows >= HISTORY_ROWS:
            print(
                f"  reusing smsc_bench_history: about {rows:,} status rows in {len(months)} months",
                flush=True,
            )
            meta["history_fill"] = "reused"
        else:
            print(
                f"  smsc_bench_history holds about {rows:,} status rows of these months: filled again",
                flush=True,
            )
    if rows < HISTORY_ROWS:
        _prepare(HISTORY_FULL_URL, afresh=True)
        meta["history_fill_seconds"] = round(_fill(months), 1)
        with stores.database(HISTORY_FULL_URL) as conn:
            rows = stores.scalar(conn, ESTIMATE, (_partitions(months),))
    with stores.database(HISTORY_FULL_URL) as conn:
        meta["history_status_rows"] = rows
        meta["history_messages"] = stores.scalar(
            conn, "SELECT reltuples::bigint FROM pg_class WHERE relname = 'messages'"
        )
        meta["history_database_size"] = stores.scalar(conn, "SELECT pg_database_size(current_database())")
    return rows


def _fill(months: list[datetime]) -> float:
    """Fill the history month by month through the production indexes, then VACUUM ANALYZE; seconds."""
    started = time.monotonic()
    with stores.database(HISTORY_FULL_URL) as conn:
        # Nothing is lost that a new fill would not make again.
        conn.execute("SET synchronous_commit = off")
        for j, month in enumerate(months):
            conn.execute("SELECT smsc_ensure_partition('status_events', %s)", (month,))
            end = months[j + 1] if j + 1 < len(months) else datetime.now(UTC)
            step = max((end - month).total_seconds(), 3600) / HISTORY_MESSAGES_PER_MONTH
            for lo in range(0, HISTORY_MESSAGES_PER_MONTH, FILL_CHUNK):
                conn.execute(
                    FILL,
                    {
                        "id0": HISTORY_FIRST_ID + j * HISTORY_MESSAGES_PER_MONTH,
                        "start": month,
                        "step": step,
                        "lo": lo,
                        "hi": min(lo + FILL_CHUNK, HISTORY_MESSAGES_PER_MONTH),
                    },
                )
            print(f"  filled {month:%Y-%m} ({time.monotonic() - started:.0f} s)", flush=True)
        conn.execute("VACUUM ANALYZE")
    print(f"  VACUUM ANALYZE done ({time.monotonic() - started:.0f} s)", flush=True)
    return time.monotonic() - started


def _measure(procs: Processes, results: Results, month: datetime, history_rows: int) -> None:
    """RUNS rounds, each one run into each database, the order swapped every round."""
    section = Section(
        "history",
        "Workers: events/s into an empty database and into one holding a year of statuses",
        [Column("eps", "events/s", 0), Column("seconds", "seconds", 2)],
    )
    meta = results.meta
    section.notes += [
        f"history: {history_rows / 1e6:.1f} M status rows (estimate) over the {HISTORY_MONTHS} months up to "
        f"this one, one partition each, {meta['history_messages'] / 1e6:.1f} M messages rows, "
        f"{meta['history_database_size'] / 1e9:.1f} GB; no run event is a copy of a stored one",
        f"each run: {WORKER_EVENTS} raw requests of this month (the ingress's payload mix, new message ids) "
        f"pre-queued as jobs of {JOB_SIZE} requests (smsc.queue.build_job/stage_job); "
        "1 x `smsc-ingest worker --burst`; before each run: the empty database made afresh; the filled one's "
        "rows of the last run deleted, VACUUM; CHECKPOINT",
        "timed from the moment the worker has registered with RQ to its exit",
    ]
    results.sections.append(section)
    databases = {
        "empty": (HISTORY_EMPTY_URL, "smsc-ingest worker x1, empty database"),
        "full": (HISTORY_FULL_URL, f"smsc-ingest worker x1, {history_rows / 1e6:.1f} M status rows"),
    }
    for key, (_, label) in databases.items():
        section.row(key, label, key)
    section.ratios.append(Ratio("full", "empty", "eps"))
    settings = Settings.from_env(product_env(REDIS_URL=HISTORY_REDIS_URL))
    client = stores.redis(HISTORY_REDIS_URL)
    loads: list[float] = []
    base_ts = int(month.timestamp()) + RUN_OFFSET_SECONDS - FIRST_EVENT
    for i in range(RUNS):
        for key in ("empty", "full") if i % 2 == 0 else ("full", "empty"):
            url, label = databases[key]
            _reset(key, month)
            with stores.database(url) as conn:
                client.flushdb()
                workers.prefill(
                    client, settings, list(payloads.raw_requests(FIRST_EVENT, WORKER_EVENTS, base_ts))
                )
                loads.append(round(os.getloadavg()[0], 2))
                print(f"  {label}, run {i + 1} (load average {loads[-1]}) ...", flush=True)
                name = f"history-{key}-{i}"
                env = product_env(DATABASE_URL=url, REDIS_URL=HISTORY_REDIS_URL)
                d = workers.drain(procs, [[SMSC_INGEST, "worker", "--burst"]], [name], client, QUEUE, env)
                section.add(key, label, eps=d.jobs * JOB_SIZE / d.seconds, seconds=d.seconds)
                stored = stores.scalar(conn, COUNT_RUN, {"id": RUN_FIRST_ID, "month": month})
                workers.check_stored(results, label, stored, conn, client)
                if found := logscan.complaints(name):
                    results.problem(f"{label} logged warnings/errors: {logscan.summary(found)}")
    meta["load_averages_before_runs"] = loads
    section.notes.append(
        f"load average (1 min) before the runs: {min(loads)}–{max(loads)} on {os.cpu_count()} CPUs"
    )
    _reset("full", month)


def _reset(key: str, month: datetime) -> None:
    """Make the database as it was before any run, then CHECKPOINT, so each run meets the same one.

    The empty one is made afresh: a deployment's new partitions have never been vacuumed or
    analyzed (VACUUMed empty, the planner would take them for empty for good where autovacuum is
    off, as on this machine, and scan them). The filled one loses the rows of runs, then VACUUM.
    """
    if key == "empty":
        _prepare(HISTORY_EMPTY_URL, afresh=True)
        with stores.database(HISTORY_EMPTY_URL) as conn:
            conn.execute("CHECKPOINT")
        return
    with stores.database(HISTORY_FULL_URL) as conn:
        conn.execute(DELETE_RUN_STATUSES, {"id": RUN_FIRST_ID, "month": month})
        conn.execute(DELETE_RUN_MESSAGES, {"id": RUN_FIRST_ID})
        conn.execute(EMPTY_OTHERS)
        # INDEX_CLEANUP ON: else VACUUM leaves the index entries of a few deleted rows among many,
        # and the next run's same keys meet them.
        conn.execute(
            sql.SQL("VACUUM (INDEX_CLEANUP ON) {}, messages").format(sql.Identifier(_partitions([month])[0]))
        )
        conn.execute("CHECKPOINT")


if __name__ == "__main__":
    sys.exit(main())
