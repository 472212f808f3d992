"""The queries of README's "Querying the data": each reads an index and only the partitions of the
months it asks about (EXPLAIN on a database holding six months of rows)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.types.json import Json

from tests.integration.test_partitions import clear_months, make, month, monthly

# The four queries, as README's "Querying the data" shows them.
HISTORY = """
SELECT phone, status, status_at, err FROM status_events
WHERE account = %(account)s AND message_id = %(message_id)s
ORDER BY status_at, status
"""
PHONE = """
SELECT message_id, status, status_at, err FROM status_events
WHERE account = %(account)s AND phone = %(phone)s
  AND status_at >= %(since)s AND status_at < %(until)s
ORDER BY status_at
"""
FAILED_PER_DAY = """
SELECT date_trunc('day', status_at, 'UTC') AS day, count(*) FROM status_events
WHERE account = %(account)s AND status IN (3, 20, 22, 23, 24, 25)
  AND status_at >= %(since)s AND status_at < %(until)s
GROUP BY day ORDER BY day
"""
INCOMING_TO = """
SELECT phone, text, server_received_at FROM incoming_messages
WHERE account = %(account)s AND to_phone = %(to)s
  AND server_received_at >= %(since)s AND server_received_at < %(until)s
ORDER BY server_received_at
"""

# Rows spread evenly from five months back to now: 400 phones, one status in 50 a failure (20);
# incoming SMS to 50 numbers of ours; a few statuses without a time, in the default partition.
FILL = (
    """
INSERT INTO status_events (account, message_id, phone, status, status_at, params, request_id, received_at)
SELECT 'default', i / 3, '7999' || lpad((i %% 400)::text, 7, '0'), CASE WHEN i %% 50 = 0 THEN 20 ELSE 1 END,
       %(since)s + (%(until)s - %(since)s) * (i::float8 / %(rows)s), %(params)s, 's' || i, now()
FROM generate_series(1, %(rows)s) AS i
""",
    """
INSERT INTO status_events (account, message_id, phone, status, status_at, params, request_id, received_at)
SELECT 'default', 1000000 + i, '79990000001', 1, NULL, %(params)s, 'n' || i, now()
FROM generate_series(1, 30) AS i
""",
    """
INSERT INTO incoming_messages (
    account, id, phone, to_phone, text, server_received_at, params, request_id, received_at
)
SELECT 'default', i, '79990000001', '7900' || lpad((i %% 50)::text, 7, '0'), 'hi',
       %(since)s + (%(until)s - %(since)s) * (i::float8 / %(rows)s), %(params)s, 'i' || i, now()
FROM generate_series(1, %(rows)s) AS i
""",
)
ROWS = 36_000

# The partition (table) each index of `parent_index`'s partitions belongs to.
PARTITION_INDEXES = """
SELECT t.relname, c.relname FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
JOIN pg_index AS x ON x.indexrelid = c.oid
JOIN pg_class AS t ON t.oid = x.indrelid
WHERE i.inhparent = %s::regclass
"""


@pytest.fixture
def months_of_rows(db: Any) -> Any:
    """Six months of status rows and incoming SMS (five past and this one), analyzed."""
    clear_months(db)
    make(db, *(month(m) for m in range(-5, 0)))
    now = datetime.now(UTC)
    for statement in FILL:
        db.execute(statement, {"since": month(-5), "until": now, "rows": ROWS, "params": Json({})})
    db.execute("ANALYZE status_events, incoming_messages")
    return db


def reads(
    node: dict[str, Any], owner: str | None = None, found: dict[str, set[str]] | None = None
) -> dict[str, set[str]]:
    """How a plan reads each relation: the indexes it scans, or `Seq Scan`. A Bitmap Index Scan
    names no relation: it belongs to the Bitmap Heap Scan above it."""
    found = {} if found is None else found
    owner = node.get("Relation Name", owner)
    if "Index Name" in node:
        found.setdefault(str(owner), set()).add(node["Index Name"])
    elif node["Node Type"] == "Seq Scan":
        found.setdefault(str(owner), set()).add("Seq Scan")
    for child in node.get("Plans", []):
        reads(child, owner, found)
    return found


def plan(db: Any, query: str, params: dict[str, Any]) -> tuple[dict[str, set[str]], str]:
    """What the plan of `query` reads, and the plan itself (to show when it is not what a test expects)."""
    (document,) = db.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    return reads(document[0]["Plan"]), json.dumps(document, indent=1)


def index_on(db: Any, parent_index: str) -> dict[str, str]:
    """Each partition's own index of the partitioned index `parent_index`."""
    return dict(db.execute(PARTITION_INDEXES, (parent_index,)).fetchall())


def partition(table: str, offset: int) -> str:
    return f"{table}_p{month(offset):%Y%m}"


RANGE = {"account": "default", "since": month(-3), "until": month(-1)}
IN_RANGE = (-3, -2)
CASES = [
    # query, its parameters, the index it must use, the table
    (PHONE, {**RANGE, "phone": "79990000042"}, "status_events_phone_idx", "status_events"),
    (FAILED_PER_DAY, RANGE, "status_events_failed_idx", "status_events"),
    (INCOMING_TO, {**RANGE, "to": "79000000007"}, "incoming_messages_to_idx", "incoming_messages"),
]


@pytest.mark.parametrize(("query", "params", "index", "table"), CASES, ids=lambda v: str(v)[:24])
def test_a_query_over_a_time_range_reads_its_months_through_its_index(
    query: str, params: dict[str, Any], index: str, table: str, months_of_rows: Any
) -> None:
    """A query over two months reads those two partitions only, each through its part of the index."""
    indexes = index_on(months_of_rows, index)
    expected = {partition(table, m): {indexes[partition(table, m)]} for m in IN_RANGE}
    found, shown = plan(months_of_rows, query, params)
    assert found == expected, shown


def test_the_history_of_one_message_probes_each_partition_through_the_key(months_of_rows: Any) -> None:
    """With no time given, a message's history reads every partition (any month may hold one of its
    statuses), each holding rows through its part of status_events_event_key: one index probe per
    month. The empty months ahead, and the default partition's few pages, are read whole: nothing to
    read there, and the planner is right that no index beats it."""
    found, shown = plan(months_of_rows, HISTORY, {"account": "default", "message_id": 4242})
    every = monthly(months_of_rows, "status_events") | {"status_events_default"}
    assert set(found) == every, shown
    indexes = index_on(months_of_rows, "status_events_event_key")
    with_rows = [partition("status_events", m) for m in range(-5, 1)]
    assert {p: found[p] for p in with_rows} == {p: {indexes[p]} for p in with_rows}, shown
