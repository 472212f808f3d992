"""The event tables' monthly partitions: made ahead, where events land, deduplication across them,
and `smsc-ingest prune`."""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from redis import Redis

from smsc.exceptions import TransientError
from smsc.protocol.raw import RawRequest, redact_query
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from tests.integration.conftest import service_env
from tests.integration.procs import COMMAND, environment
from tests.payloads import SECRET, Request, build
from workers import partitions
from workers.runner import run
from workers.schema import migrate

TABLES = ("status_events", "incoming_messages", "call_confirmations")


def month(offset: int) -> datetime:
    """The first instant (UTC) of the month `offset` months from now's."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def name(table: str, first: datetime) -> str:
    return f"{table}_p{first:%Y%m}"


def monthly(db: Any, table: str) -> set[str]:
    """The names of `table`'s monthly partitions (the default one left out)."""
    rows = db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass AND c.relname <> %s",
        (table, f"{table}_default"),
    ).fetchall()
    return {r[0] for r in rows}


def make(db: Any, *firsts: datetime) -> None:
    """The partitions of these months, in every event table."""
    for table in TABLES:
        for first in firsts:
            db.execute("SELECT smsc_ensure_partition(%s, %s)", (table, first))


def clear_months(db: Any) -> None:
    """Leave each event table with its default partition and the three months migrate makes ahead
    only: what other tests made is gone."""
    for table in TABLES:
        for partition in monthly(db, table):
            db.execute(f"DROP TABLE {partition}")
    make(db, month(0), month(1), month(2))


@pytest.fixture
def slate(db: Any) -> Any:
    """The event tables emptied, their partitions those of a fresh migration."""
    clear_months(db)
    return db


def event(kind: str, at: datetime | None, key: int = 1) -> Request:
    """A signed event of `kind` with its own time `at` (None: without one), told apart by `key`."""
    unix = None if at is None else str(int(at.timestamp()))
    if kind == "status":
        params = {"id": str(1000 + key), "phone": "79990000001", "status": "1"}
        time_field = "ts"
    elif kind == "incoming":
        params = {"id": str(5000 + key), "phone": "79990000001", "mes": "Привет", "to": "79001234567"}
        time_field = "time"
    else:
        params = {"phone": f"7999{key:07d}", "waitcall": "1"}
        time_field = "ts"
    if unix is not None:
        params[time_field] = unix
    return build(kind, params=params)


def work(settings: Settings, *requests: Request, account: str = "default") -> None:
    """Queue `requests` as one job, as the ingress does for POST /smsc/{account}, and run a worker
    until the queue is empty."""
    raws = [
        RawRequest(uuid.uuid4().hex, time.time(), redact_query(r.query), r.content_type, r.body, account)
        for r in requests
    ]
    client = Redis.from_url(settings.redis_url)
    try:
        with client.pipeline(transaction=True) as pipe:
            stage_job(pipe, build_job(raws, settings), settings)
            pipe.execute()
    finally:
        client.close()
    run(settings, burst=True)


def homes(db: Any, table: str) -> list[str]:
    """The partition of each row of `table`, sorted."""
    return sorted(r[0] for r in db.execute(f"SELECT tableoid::regclass::text FROM {table}").fetchall())


# --- made ahead ----------------------------------------------------------------------------------


def test_migrate_makes_this_month_and_the_next_two(slate: Any, database: str) -> None:
    """With every monthly partition gone, migrate makes this month's and the next two months'."""
    for table in TABLES:
        for partition in monthly(slate, table):
            slate.execute(f"DROP TABLE {partition}")
    migrate(database)
    for table in TABLES:
        assert monthly(slate, table) == {name(table, month(0)), name(table, month(1)), name(table, month(2))}


def test_a_worker_makes_a_missing_partition_at_its_first_job(slate: Any, settings: Settings) -> None:
    """Next month's partitions dropped, a worker's first job makes them again."""
    for table in TABLES:
        slate.execute(f"DROP TABLE {name(table, month(1))}")
    work(settings, event("call", datetime.now(UTC)))
    for table in TABLES:
        assert name(table, month(1)) in monthly(slate, table)
    assert homes(slate, "call_confirmations") == [name("call_confirmations", month(0))]


# --- where events land ---------------------------------------------------------------------------

WITH_PARTITION = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
WITHOUT_PARTITION = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)

LATE = [
    # kind, its time, the partition it lands in
    ("status", WITH_PARTITION, "status_events_p202403"),
    ("status", WITHOUT_PARTITION, "status_events_default"),
    ("status", None, "status_events_default"),
    ("incoming", WITH_PARTITION, "incoming_messages_p202403"),
    ("incoming", WITHOUT_PARTITION, "incoming_messages_default"),
    ("incoming", None, "incoming_messages_default"),
    ("call", WITH_PARTITION, "call_confirmations_p202403"),
    ("call", WITHOUT_PARTITION, "call_confirmations_default"),
]
TABLE_OF = {"status": "status_events", "incoming": "incoming_messages", "call": "call_confirmations"}


@pytest.mark.parametrize(("kind", "at", "partition"), LATE, ids=lambda v: str(v))
def test_a_late_event_lands_in_its_month_or_the_default(
    kind: str, at: datetime | None, partition: str, slate: Any, settings: Settings
) -> None:
    """An event of an old month with a partition lands in it; of a month without one, or without a
    time, in the default partition."""
    make(slate, datetime(2024, 3, 1, tzinfo=UTC))
    work(settings, event(kind, at))
    assert homes(slate, TABLE_OF[kind]) == [partition]


def test_making_a_month_moves_its_rows_out_of_the_default_and_copies_still_add_nothing(
    slate: Any, settings: Settings
) -> None:
    """Events of a month without a partition wait in the default one; making the month's partition
    moves them into it (the timeless ones stay), and their copies sent again store nothing."""
    events = [event(kind, WITHOUT_PARTITION) for kind in TABLE_OF] + [
        event("status", None),
        event("incoming", None),
    ]
    work(settings, *events)
    make(slate, datetime(2024, 1, 1, tzinfo=UTC))
    work(settings, *events)
    assert homes(slate, "status_events") == ["status_events_default", "status_events_p202401"]
    assert homes(slate, "incoming_messages") == ["incoming_messages_default", "incoming_messages_p202401"]
    assert homes(slate, "call_confirmations") == ["call_confirmations_p202401"]
    assert slate.execute("SELECT count(*) FROM duplicate_requests").fetchone() == (len(events),)


# --- deduplication across partitions -------------------------------------------------------------


def test_copies_of_events_of_several_months_make_one_row_each(slate: Any, settings: Settings) -> None:
    """Events of four months and without a time, each sent three times in shuffled jobs, make one
    row each, in their month's partition."""
    make(slate, month(-3), month(-2), month(-1))
    times = [month(m).replace(day=5) for m in (-3, -2, -1)] + [datetime.now(UTC).replace(microsecond=0)]
    originals = [event(kind, at, key) for kind in TABLE_OF for key, at in enumerate(times)]
    originals += [event("status", None, 9), event("incoming", None, 9)]
    copies = originals * 3
    random.Random(12).shuffle(copies)
    for start in range(0, len(copies), 7):
        work(settings, *copies[start : start + 7])
    for table in TABLES:
        expected = [name(table, at.replace(day=1, hour=0, minute=0, second=0)) for at in times]
        if table != "call_confirmations":
            expected.append(f"{table}_default")
        assert homes(slate, table) == sorted(expected)
    assert slate.execute("SELECT count(*) FROM messages").fetchone() == (5,)


@pytest.mark.parametrize("kind", list(TABLE_OF))
def test_the_same_event_in_two_accounts_is_two_rows(
    kind: str, slate: Any, redis_db: Redis, tmp_path: Path
) -> None:
    """One event received for two accounts, twice each, is one row per account."""
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(f'[accounts.shop]\nsecret = "{SECRET}"\n', encoding="utf-8")
    # The workers read their accounts from the file: one they do not know is a dead letter.
    settings = Settings.from_env(service_env(SMSC_ACCOUNTS_FILE=str(accounts)))
    copy = event(kind, month(-1).replace(day=20))
    make(slate, month(-1))
    for _ in range(2):
        work(settings, copy, account="default")
        work(settings, copy, account="shop")
    rows = slate.execute(
        f"SELECT account, tableoid::regclass::text FROM {TABLE_OF[kind]} ORDER BY 1"
    ).fetchall()
    assert rows == [("default", name(TABLE_OF[kind], month(-1))), ("shop", name(TABLE_OF[kind], month(-1)))]


# --- prune ---------------------------------------------------------------------------------------


def prune(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`smsc-ingest prune args` on the test database, with `env` added to its environment."""
    return subprocess.run(
        [COMMAND, "prune", *args], env=environment(**env), capture_output=True, text=True, timeout=60
    )


def everything(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of every partition of the event tables, and of `messages`."""
    found = {}
    for table in TABLES:
        for partition in [*monthly(db, table), f"{table}_default"]:
            found[partition] = db.execute(f"SELECT * FROM {partition} ORDER BY 1, 2, 3").fetchall()
    found["messages"] = db.execute("SELECT * FROM messages ORDER BY 1, 2").fetchall()
    return found


def test_prune_dry_run_lists_the_old_months_then_prune_drops_them_whole(
    slate: Any, settings: Settings
) -> None:
    """With a retention of 365 days (SMSC_RETENTION_DAYS, then --older-than), the months 13 and 14
    back are listed with their row estimates by --dry-run, which drops nothing, then dropped; two
    months back, this month and the next, and the default partition (an event without a time, one
    of a month without a partition) stay, and `messages` is untouched."""
    old, older, recent = month(-13), month(-14), month(-2)
    make(slate, older, old, recent)
    rows_in = {older: 3, old: 2, recent: 1, month(0): 1}
    work(
        settings,
        *[event(kind, first, key) for first, n in rows_in.items() for key in range(n) for kind in TABLE_OF],
        event("status", None, 50),
        event("call", month(-20).replace(day=9), 51),
    )
    slate.execute("ANALYZE")
    before = everything(slate)
    doomed = [name(table, first) for first in (older, old) for table in TABLES]

    dry = prune("--dry-run", SMSC_RETENTION_DAYS="365")
    assert dry.returncode == 0, dry.stderr
    listed = [line for line in dry.stdout.splitlines() if line.startswith("would drop ")]
    assert sorted(line.split()[2] for line in listed) == sorted(doomed)
    for line in listed:
        partition = line.split()[2]
        assert line.endswith(f"~{len(before[partition])} rows"), line
    assert everything(slate) == before

    done = prune("--older-than", "365")
    assert done.returncode == 0, done.stderr
    assert sorted(
        line.split()[1] for line in done.stdout.splitlines() if line.startswith("dropped ")
    ) == sorted(doomed)
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert sorted(e["partition"] for e in logged if e["event"] == "partition_dropped") == sorted(doomed)
    after = everything(slate)
    assert after == {p: rows for p, rows in before.items() if p not in doomed}
    assert after["status_events_default"]
    assert after["call_confirmations_default"]

    again = prune("--older-than", "365")
    assert (again.returncode, again.stdout.splitlines()[0][:2]) == (0, "0 ")


@pytest.mark.parametrize("days", ["0", "-1", "1.5", "400d", "", "123456"])
def test_prune_refuses_a_retention_that_is_not_a_positive_whole_number_of_days(days: str, slate: Any) -> None:
    """--older-than 0 would drop the current month: it, and anything not a whole number of days from
    1 up, is refused with exit code 2 before anything is dropped."""
    make(slate, month(-30))
    refused = prune(f"--older-than={days}")
    assert refused.returncode == 2
    assert "is not a number of days" in refused.stderr
    assert name("status_events", month(-30)) in monthly(slate, "status_events")


def test_prune_needs_a_retention(slate: Any) -> None:
    """Without --older-than or SMSC_RETENTION_DAYS prune drops nothing and says what it needs."""
    make(slate, month(-30))
    refused = prune()
    assert (refused.returncode, refused.stdout) == (2, "")
    assert "--older-than DAYS or SMSC_RETENTION_DAYS" in refused.stderr
    assert name("status_events", month(-30)) in monthly(slate, "status_events")


def test_prune_waits_for_a_reader_of_the_table_then_drops(slate: Any, database: str) -> None:
    """A long reader of status_events makes prune's DROP give up its wait (the workers are never
    queued behind it for long) and try again; once the reader is done, the month is dropped."""
    make(slate, month(-30))
    with psycopg.connect(database) as reader:
        reader.execute("SELECT count(*) FROM status_events").fetchone()  # holds its lock until commit
        proc = subprocess.Popen(
            [COMMAND, "prune", "--older-than", "400"],
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        waited = False
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if '"partition_drop_waiting"' in line:
                    waited = True
                    break
            reader.commit()
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert (waited, proc.returncode) == (True, 0)
    assert f"dropped {name('status_events', month(-30))}" in out
    for table in TABLES:
        assert name(table, month(-30)) not in monthly(slate, table)


def test_a_drop_that_never_gets_its_lock_gives_up(
    slate: Any, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a reader keeps status_events locked, dropping its old month fails after the attempts,
    with a reason, and the partition stays."""
    monkeypatch.setattr(partitions, "DROP_ATTEMPTS", 2)
    monkeypatch.setattr(partitions, "DROP_PAUSE_SECONDS", 0.0)
    make(slate, month(-30))
    with psycopg.connect(database) as reader, psycopg.connect(database, autocommit=True) as conn:
        reader.execute("SELECT count(*) FROM status_events").fetchone()
        (partition,) = [p for p in partitions.expired(conn, month(-29)) if p.table == "status_events"]
        with pytest.raises(TransientError, match="stayed locked"):
            partitions.drop(conn, partition)
    assert name("status_events", month(-30)) in monthly(slate, "status_events")


EXPIRED_AT = [
    # the cutoff, the months (of those made) whose partitions have expired by then
    (datetime(2025, 2, 1, tzinfo=UTC), []),
    (datetime(2025, 3, 1, tzinfo=UTC), ["202502"]),  # a month ending exactly at the cutoff
    (datetime(2025, 3, 31, 23, 59, tzinfo=UTC), ["202502"]),
    (datetime(2025, 4, 1, tzinfo=UTC), ["202502", "202503"]),
]


@pytest.mark.parametrize(("cutoff", "months"), EXPIRED_AT, ids=str)
def test_a_partition_expires_when_its_month_ends_at_or_before_the_cutoff(
    cutoff: datetime, months: list[str], slate: Any
) -> None:
    """The partitions past a cutoff are the months ending at or before it, never the default one."""
    make(slate, datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC))
    found = partitions.expired(slate, cutoff)
    assert sorted(p.name for p in found) == sorted(f"{table}_p{m}" for m in months for table in TABLES)
