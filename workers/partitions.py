"""Month partitions of the event tables: made ahead of need by `migrate` and by the workers, dropped
past the retention by `prune`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from psycopg import sql

from smsc.exceptions import TransientError

log = structlog.get_logger("smsc.partitions")

# Tables partitioned by month, and the time of the event each is partitioned by.
PARTITIONED = {
    "status_events": "status_at",
    "incoming_messages": "server_received_at",
    "call_confirmations": "called_at",
}
# The current month and the next two: a worker that cannot make them for weeks still has a home for
# every event, and events of a month without a partition land in the default one meanwhile.
MONTHS_AHEAD = 3
# Dropping a partition takes an ACCESS EXCLUSIVE lock on its table. Queued behind a long reader, the
# DROP would hold every worker's insert behind it: it gives up the wait after DROP_LOCK_TIMEOUT (so the
# workers wait at most that long) and tries again after a pause, DROP_ATTEMPTS times in all.
DROP_LOCK_TIMEOUT = "2s"
DROP_ATTEMPTS = 5
DROP_PAUSE_SECONDS = 5.0


def months_from(start: datetime, count: int) -> list[datetime]:
    """The first instants (UTC) of `count` months, from the one holding `start`."""
    first = start.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return [
        first.replace(year=first.year + (first.month - 1 + i) // 12, month=(first.month - 1 + i) % 12 + 1)
        for i in range(count)
    ]


def ensure_ahead(conn: psycopg.Connection[Any], now: datetime | None = None) -> list[str]:
    """Make the partitions of this month and the next ones where missing; return those made."""
    made = []
    with conn.transaction():
        for table in PARTITIONED:
            for month in months_from(now or datetime.now(UTC), MONTHS_AHEAD):
                row = conn.execute("SELECT smsc_ensure_partition(%s, %s)", (table, month)).fetchone()
                if row is not None and row[0]:
                    made.append(f"{table}_p{month:%Y%m}")
    return made


@dataclass(frozen=True)
class Partition:
    """A month's partition of an event table, and PostgreSQL's estimate of its rows (None: the table
    was never analyzed). `lower` is None for a partition made by hand FROM (MINVALUE)."""

    table: str
    name: str
    lower: datetime | None
    upper: datetime
    rows: int | None


# Monthly partitions of the event tables whose upper bound is at or before the cutoff, oldest first.
# The bounds are read back from PostgreSQL's own text of them (`FOR VALUES FROM ('...') TO ('...')`,
# timestamptz literals with their offset), so a partition made by hand under another name is seen
# too; the default partition has no bounds and never matches.
EXPIRED = r"""
SELECT parent.relname, child.relname, bounds.lower, bounds.upper, child.reltuples
FROM pg_inherits AS i
JOIN pg_class AS parent ON parent.oid = i.inhparent
JOIN pg_class AS child ON child.oid = i.inhrelid
CROSS JOIN LATERAL (
    SELECT substring(pg_get_expr(child.relpartbound, child.oid) FROM $$FROM \('([^']+)'\)$$)::timestamptz,
           substring(pg_get_expr(child.relpartbound, child.oid) FROM $$TO \('([^']+)'\)$$)::timestamptz
) AS bounds (lower, upper)
WHERE i.inhparent = ANY(%(tables)s::text[]::regclass[]) AND bounds.upper <= %(cutoff)s
ORDER BY bounds.upper, parent.relname
"""

# IF EXISTS: a prune running elsewhere at the same time may have dropped it first.
DROP = sql.SQL("DROP TABLE IF EXISTS {}")


def expired(conn: psycopg.Connection[Any], cutoff: datetime) -> list[Partition]:
    """The monthly partitions of the event tables that end at or before `cutoff`, oldest first."""
    rows = conn.execute(EXPIRED, {"tables": list(PARTITIONED), "cutoff": cutoff}).fetchall()
    return [
        Partition(table, name, lower, upper, None if estimate < 0 else round(estimate))
        for table, name, lower, upper, estimate in rows
    ]


def drop(conn: psycopg.Connection[Any], partition: Partition) -> None:
    """Drop a whole partition (its rows go with it, no row is deleted one by one); retried while
    its table's lock does not come within DROP_LOCK_TIMEOUT. Raises TransientError if it never did."""
    for attempt in range(1, DROP_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (DROP_LOCK_TIMEOUT,))
                conn.execute(DROP.format(sql.Identifier(partition.name)))
            return
        except psycopg.errors.LockNotAvailable:
            log.warning(
                "partition_drop_waiting", partition=partition.name, attempt=attempt, attempts=DROP_ATTEMPTS
            )
            if attempt < DROP_ATTEMPTS:
                time.sleep(DROP_PAUSE_SECONDS)
    raise TransientError(
        f"{partition.name}: {partition.table} stayed locked by other sessions "
        f"({DROP_ATTEMPTS} waits of {DROP_LOCK_TIMEOUT}); run prune again later"
    )
