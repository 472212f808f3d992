"""Month partitions of the event tables: made ahead of need by `migrate` and by the workers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

# Tables partitioned by month, and the time of the event each is partitioned by.
PARTITIONED = {
    "status_events": "status_at",
    "incoming_messages": "server_received_at",
    "call_confirmations": "called_at",
}
# The current month and the next two: a worker that cannot make them for weeks still has a home for
# every event, and events of a month without a partition land in the default one meanwhile.
MONTHS_AHEAD = 3


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
