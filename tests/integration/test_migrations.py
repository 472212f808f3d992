"""Migrations on the real PostgreSQL: schema.sql is what they make, a released database upgrades with
every row kept, two runs at once and a failed run are safe, and workers write throughout one.

Each test makes throwaway databases named after TEST_DATABASE_URL's (`<name>_<suffix>`) and drops
them at its end."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from smsc import devservers
from smsc.exceptions import ConfigError
from smsc.protocol import RawRequest, decode
from smsc.protocol.normalize import Event, normalize
from smsc.protocol.raw import redact_query
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from tests.integration.conftest import TABLES, service_env
from tests.integration.procs import COMMAND, environment, spawn, start_worker
from tests.integration.servers import wait_until
from tests.payloads import build
from workers.partitions import PARTITIONED
from workers.schema import MIGRATIONS_DIR, migrate
from workers.store import Pending, Store

ROOT = Path(__file__).resolve().parents[2]
RELEASED = MIGRATIONS_DIR / "0001_released.sql"
# The commit of the last release before versioned migrations: its schema.sql is migration 1.
RELEASE_COMMIT = "0942bca"
MONTHLY = "*_p[0-9][0-9][0-9][0-9][0-9][0-9]"
RESTRICT = ("\\restrict ", "\\unrestrict ")


def _url(name: str) -> str:
    return urlsplit(service_env()["DATABASE_URL"])._replace(path=f"/{name}").geturl()


def _admin(statement: str, name: str) -> None:
    with psycopg.connect(_url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(name)))


@contextmanager
def throwaway(suffix: str) -> Iterator[str]:
    """An empty database of our own, dropped afterwards (and first, if a killed run left it)."""
    name = f"{urlsplit(service_env()['DATABASE_URL']).path.lstrip('/')}_{suffix}"
    _admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    _admin("CREATE DATABASE {}", name)
    try:
        yield _url(name)
    finally:
        _admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def apply(url: str, text: str) -> None:
    """Run every statement of an SQL file in one call (one implicit transaction), as migrate does."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(text.encode("utf-8"))


def normalized(dump: str) -> str:
    """A `pg_dump` without the lines that differ between two dumps of one schema: pg_dump's
    `\\restrict`/`\\unrestrict` lines carry a random key."""
    return "".join(line for line in dump.splitlines(keepends=True) if not line.startswith(RESTRICT))


def pg_dump(url: str) -> str:
    """A pg_dump as new as the server (pg_dump refuses a newer server): the one on PATH, Debian's of
    each installed version, or the embedded PostgreSQL's (a session on embedded servers, where the
    system may have only an older client, or Debian's wrapper without a cluster to pick from)."""
    with psycopg.connect(url) as conn:
        server = conn.info.server_version // 10000
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), key=lambda p: -int(Path(p).parts[-3]))
    candidates = [shutil.which("pg_dump"), *debian]
    with suppress(ConfigError):
        candidates.append(str(devservers.postgres_bindir(system=False) / "pg_dump"))
    for candidate in filter(None, candidates):
        try:
            printed = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        # "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
        found = re.match(r"pg_dump \(PostgreSQL\) ([0-9]+)", printed.stdout)
        if printed.returncode == 0 and found and int(found[1]) >= server:
            return candidate
    pytest.fail(f"no pg_dump of PostgreSQL {server} or newer among {candidates}")


def schema_of(url: str) -> str:
    """The schema as pg_dump prints it, without the monthly partitions (which of them exist depends
    on the day and the rows) and the migrations' own records."""
    args = [pg_dump(url), "--schema-only", "-T", MONTHLY, "-T", "schema_migrations", "-d", url]
    return normalized(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def versions(url: str) -> list[int]:
    """The migrations recorded as applied."""
    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


@pytest.fixture(scope="module")
def latest() -> str:
    """The schema of a database made from schema.sql."""
    with throwaway("schema_sql") as url:
        apply(url, (ROOT / "schema.sql").read_text(encoding="utf-8"))
        return schema_of(url)


@pytest.mark.parametrize(
    ("dump", "expected"),
    [
        ("CREATE TABLE t ();\n", "CREATE TABLE t ();\n"),
        ("\\restrict abc123\nCREATE TABLE t ();\n\\unrestrict abc123\n", "CREATE TABLE t ();\n"),
        ("-- \\restrict in a comment\n", "-- \\restrict in a comment\n"),
        ("CREATE TABLE t (a int);\n", "CREATE TABLE t (a int);\n"),
    ],
)
def test_normalized_drops_only_the_restrict_lines(dump: str, expected: str) -> None:
    """Only pg_dump's own `\\restrict` and `\\unrestrict` lines go; every line of schema stays."""
    assert normalized(dump) == expected


def test_schema_sql_is_what_the_migrations_make(latest: str) -> None:
    """A database made by `migrate` dumps exactly as one made from schema.sql."""
    with throwaway("migrated") as url:
        migrate(url)
        assert schema_of(url) == latest


def test_a_changed_schema_sql_is_caught(latest: str) -> None:
    """The comparison sees a one-word change of schema.sql (a column's type)."""
    text = (ROOT / "schema.sql").read_text(encoding="utf-8")
    changed = text.replace("    cost                numeric,", "    cost                text,", 1)
    assert changed != text
    with throwaway("changed") as url:
        apply(url, changed)
        assert schema_of(url) != latest


# --- The upgrade from the released schema, with rows ---------------------------------------------

RECEIVED = 1_767_225_600.0  # 2026-01-01 UTC: every event time below is plausible before it
RECEIVED_AT = datetime.fromtimestamp(RECEIVED, UTC)


def raw(kind: str, params: dict[str, str], rid: str) -> RawRequest:
    """A callback as the ingress queued it: signed by tests/payloads.py, its secret redacted."""
    r = build(kind, params=params)
    return RawRequest(rid, RECEIVED, redact_query(r.query), r.content_type, r.body)


def event_of(request: RawRequest) -> Event:
    """The event a worker reads from `request`."""
    settings = Settings.from_env(service_env())
    decoded = decode(request.body, request.query, request.content_type, settings.default_charset)
    return normalize(decoded, settings.tz, RECEIVED_AT)


def status(message_id: int, code: int, ts: int | None = None, time: str | None = None) -> dict[str, str]:
    """A delivery status's parameters, dated by `ts`, `time`, both or neither."""
    params = {"id": str(message_id), "phone": "79998887766", "status": str(code), "cost": "1.5"}
    if ts is not None:
        params["ts"] = str(ts)
    if time is not None:
        params["time"] = time
    return params


# Events of every kind as the gateway sent them: status events over several months, one dated by
# `time` alone, and some with no time at all; incoming SMS with and without their `time`; calls.
EVENTS: list[tuple[str, dict[str, str]]] = [
    ("status", status(1, 1, ts=1_736_000_000)),  # 2025-01
    ("status", status(1, 2, ts=1_741_000_000)),  # 2025-03
    ("status", status(2, 20, ts=1_746_000_000)),  # 2025-04
    ("status", status(3, 1, ts=1_751_000_000)),  # 2025-06
    ("status", status(4, 1, time="14.11.25 22:13:20")),  # 2025-11, Moscow time
    ("status", status(5, -1)),
    ("status", status(5, 0)),
    ("status", status(6, 1)),
    (
        "incoming",
        {"id": "5001", "phone": "79998887766", "mes": "Привет", "to": "79001234567", "time": "1740000000"},
    ),
    ("incoming", {"id": "5002", "phone": "79998887766", "mes": "без времени", "to": "79001234567"}),
    ("call", {"phone": "79998887766", "ts": "1738000000", "waitcall": "1"}),
    ("call", {"phone": "79998887766", "ts": "1760000000", "waitcall": "0"}),
]
KIND_TABLE = {"status": "status_events", "incoming": "incoming_messages", "call": "call_confirmations"}

# The released code's writes (0942bca, workers/store.py): the event's fields and the receipt.
RELEASED_UPSERT_MESSAGE = """
INSERT INTO messages AS m (message_id, phone, status, status_at, err, cost)
VALUES (%(message_id)s, %(phone)s, %(status)s, %(status_at)s, %(err)s, %(cost)s)
ON CONFLICT (message_id, phone) DO UPDATE
SET status = EXCLUDED.status, status_at = EXCLUDED.status_at, err = EXCLUDED.err,
    cost = coalesce(EXCLUDED.cost, m.cost), updated_at = now()
WHERE (coalesce(EXCLUDED.status_at, '-infinity'), EXCLUDED.status)
    > (coalesce(m.status_at, '-infinity'), m.status)
"""
RELEASED_DEAD_LETTER = """
INSERT INTO dead_letters (request_id, job_id, kind, event_ref, phone, error_class, reason, raw, received_at)
VALUES ('released-dead', 'job-1', 'status', '77', '79998887766', 'PermanentError',
        'status: status is not a number', '{"rid": "released-dead", "body": "aWQ9Nzc="}', now())
"""
RELEASED_DUPLICATE = """
INSERT INTO duplicate_requests (request_id, first_request_id, kind, job_id, received_at)
VALUES ('released-copy', 'released-0', 'status', 'job-2', now())
"""


def released_insert(table: str, event: Event) -> sql.Composed:
    """The INSERT the release made of `event`: its fields and the receipt, without an account."""
    columns = [*(f.name for f in fields(event)), "request_id", "received_at"]
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(map(sql.Placeholder, columns)),
    )


def released_row(event: Event, rid: str) -> dict[str, Any]:
    """The parameters of `released_insert` (and of the released messages upsert)."""
    row = {f.name: getattr(event, f.name) for f in fields(event)}
    return {**row, "params": Jsonb(event.params), "request_id": rid, "received_at": RECEIVED_AT}


def rows(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Every row of `table` as JSON text, without the account, in one order."""
    query = sql.SQL("SELECT (to_jsonb(t) - 'account')::text FROM {} AS t ORDER BY 1").format(
        sql.Identifier(table)
    )
    return [text for (text,) in conn.execute(query)]


def released_git_schema() -> str:
    """schema.sql of the release, from git; the test is skipped outside a clone with that commit."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{RELEASE_COMMIT}:schema.sql"], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"not a git clone holding {RELEASE_COMMIT}: {done.stderr.strip()}")
    return done.stdout


def without_header(text: str) -> str:
    """`text` without its leading comment lines."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "".join(lines)


def test_migration_1_is_the_released_schema() -> None:
    """0001_released.sql is schema.sql of the release, but for its header comment."""
    assert without_header(RELEASED.read_text(encoding="utf-8")) == without_header(released_git_schema())


def test_a_released_database_upgrades_with_every_row() -> None:
    """Rows of every table written as the release wrote them are all there after `migrate`, with the
    same values and event ids, in account 'default', each in its month's partition; the same events
    written again by the new Store are duplicates, recorded as such."""
    requests = [raw(kind, params, f"released-{i}") for i, (kind, params) in enumerate(EVENTS)]
    events = [event_of(r) for r in requests]
    with throwaway("released") as url, psycopg.connect(url, autocommit=True) as conn:
        apply(url, RELEASED.read_text(encoding="utf-8"))
        for (kind, _), request, event in zip(EVENTS, requests, events, strict=True):
            row = released_row(event, request.rid)
            conn.execute(released_insert(KIND_TABLE[kind], event), row)
            if kind == "status":
                conn.execute(RELEASED_UPSERT_MESSAGE, row)
        conn.execute(RELEASED_DEAD_LETTER)
        conn.execute(RELEASED_DUPLICATE)
        before = {table: rows(conn, table) for table in TABLES}
        assert all(before.values()), before

        assert [m.version for m in migrate(url)] == [1, 2]

        assert {table: rows(conn, table) for table in TABLES} == before
        for table in TABLES:
            query = sql.SQL("SELECT DISTINCT account FROM {}").format(sql.Identifier(table))
            assert conn.execute(query).fetchall() == [("default",)], table
        for table, key in PARTITIONED.items():
            query = sql.SQL("SELECT tableoid::regclass::text, {} FROM {}").format(
                sql.Identifier(key), sql.Identifier(table)
            )
            for partition, at in conn.execute(query):
                assert partition == (f"{table}_p{at.astimezone(UTC):%Y%m}" if at else f"{table}_default")

        store = Store(url)
        try:
            again = [
                Pending(RawRequest(f"again-{i}", r.received_at, r.query, r.content_type, r.body), e)
                for i, (r, e) in enumerate(zip(requests, events, strict=True))
            ]
            assert [o.result for o in store.save(again, "job-again")] == ["duplicate"] * len(again)
            for table in ("status_events", "incoming_messages", "call_confirmations", "messages"):
                assert rows(conn, table) == before[table], table
            copies = conn.execute(
                "SELECT request_id, first_request_id, account FROM duplicate_requests "
                "WHERE request_id LIKE 'again-%' ORDER BY request_id"
            ).fetchall()
            assert copies == sorted((f"again-{i}", f"released-{i}", "default") for i in range(len(EVENTS)))

            # A new event still gets the next event id.
            fresh = raw("status", status(7, 1, ts=1_760_000_000), "fresh")
            assert [o.result for o in store.save([Pending(fresh, event_of(fresh))], "job-fresh")] == [
                "stored"
            ]
        finally:
            store.close()
        newest = conn.execute(
            "SELECT request_id FROM status_events ORDER BY event_id DESC LIMIT 1"
        ).fetchone()
        assert newest == ("fresh",)


# --- Two at once, a failed one, a changed one, --status -------------------------------------------


@pytest.mark.parametrize("missing", [False, True], ids=["empty", "missing"])
def test_two_migrates_at_once_both_succeed(latest: str, missing: bool) -> None:
    """Two `smsc-ingest migrate` started together on an empty database, or none (both create it),
    both exit 0; each migration is applied once and the schema is schema.sql's."""
    with throwaway("twice") as url:
        if missing:
            _admin("DROP DATABASE {}", urlsplit(url).path.lstrip("/"))
        env = environment(DATABASE_URL=url)
        procs = [spawn([COMMAND, "migrate"], env, subprocess.PIPE) for _ in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode(errors="replace")
        assert versions(url) == [1, 2]
        assert schema_of(url) == latest


def shipped(directory: Path, *broken: str) -> Path:
    """A migrations directory with the shipped ones and, after them, `broken` as the next ones."""
    for migration in sorted(MIGRATIONS_DIR.glob("*.sql")):
        shutil.copy(migration, directory)
    for number, text in enumerate(broken, start=3):
        (directory / f"{number:04d}_next.sql").write_text(text, encoding="utf-8")
    return directory


def test_a_failed_migration_leaves_the_database_as_it_was(tmp_path: Path, latest: str) -> None:
    """A migration that fails half-way raises and leaves nothing of itself: the ones before it are
    applied and recorded, the schema is theirs, and a fixed one applies afterwards."""
    directory = shipped(tmp_path, "CREATE TABLE upgrade_probe (id integer);\nSELECT 1 / 0;\n")
    with throwaway("failed") as url:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(url, directory)
        assert versions(url) == [1, 2]
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('upgrade_probe')").fetchone() == (None,)
        assert schema_of(url) == latest

        (directory / "0003_next.sql").write_text("CREATE TABLE upgrade_probe (id integer);\n")
        assert [m.version for m in migrate(url, directory)] == [3]
        assert versions(url) == [1, 2, 3]


def edit(path: Path) -> None:
    """Append a comment: the file's checksum changes, its SQL does not."""
    path.write_text(path.read_text(encoding="utf-8") + "-- edited\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda d: edit(d / "0002_accounts_partitions.sql"), "changed after it was applied"),
        (lambda d: (d / "0003_next.sql").unlink(), "which this release does not know"),
    ],
    ids=["edited", "gone"],
)
def test_an_applied_migration_changed_or_gone_is_refused(
    tmp_path: Path, change: Callable[[Path], object], refusal: str
) -> None:
    """After an applied migration's file is edited or removed, migrate refuses and applies nothing."""
    directory = shipped(tmp_path, "CREATE TABLE upgrade_probe (id integer);\n")
    with throwaway("changed_file") as url:
        migrate(url, directory)
        change(directory)
        with pytest.raises(ConfigError, match=refusal):
            migrate(url, directory)
        assert versions(url) == [1, 2, 3]


def migrate_status(url: str) -> list[list[str]]:
    """The words of each line `smsc-ingest migrate --status` prints."""
    done = subprocess.run(
        [COMMAND, "migrate", "--status"], env=environment(DATABASE_URL=url), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def test_migrate_status_lists_applied_and_pending() -> None:
    """`migrate --status` prints each migration with when it was applied, or `pending`."""
    with throwaway("status") as url:
        assert migrate_status(url) == [
            ["0001", "released", "pending"],
            ["0002", "accounts_partitions", "pending"],
        ]
        migrate(url)
        applied = migrate_status(url)
        assert [line[:2] for line in applied] == [["0001", "released"], ["0002", "accounts_partitions"]]
        for line in applied:
            datetime.fromisoformat(line[2])  # a time, not `pending`
        # Migrate stops at no version short of the latest: a record forgotten stands for one pending.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM schema_migrations WHERE version = 2")
        assert migrate_status(url)[1] == ["0002", "accounts_partitions", "pending"]


# --- Migrating under load -------------------------------------------------------------------------

HISTORY_ROWS = 100_000
# Status events over 12 months of 2025, messages for them, and some incoming SMS and calls.
FILL = f"""
INSERT INTO status_events (message_id, phone, status, status_at, ts, params, request_id, received_at)
SELECT g, '7900' || lpad((g % 100000)::text, 7, '0'), g % 4,
       timestamptz '2025-01-01 00:00+00' + (g % 365) * interval '1 day' + g * interval '1 second',
       timestamptz '2025-01-01 00:00+00' + (g % 365) * interval '1 day' + g * interval '1 second',
       jsonb_build_object('id', g::text), 'history-' || g, timestamptz '2025-01-01 00:00+00'
FROM generate_series(1, {HISTORY_ROWS}) AS g;
INSERT INTO messages (message_id, phone, status, status_at)
SELECT message_id, phone, status, status_at FROM status_events;
INSERT INTO incoming_messages (id, phone, to_phone, text, server_received_at, params, request_id, received_at)
SELECT g, '79000000000', '79001234567', 'text ' || g,
       timestamptz '2025-01-01 00:00+00' + g * interval '1 minute', '{{}}', 'history-in-' || g,
       timestamptz '2025-01-01 00:00+00'
FROM generate_series(1, {HISTORY_ROWS // 20}) AS g;
INSERT INTO call_confirmations (phone, called_at, params, request_id, received_at)
SELECT '79000000000', timestamptz '2025-01-01 00:00+00' + g * interval '1 minute', '{{}}',
       'history-call-' || g, timestamptz '2025-01-01 00:00+00'
FROM generate_series(1, {HISTORY_ROWS // 20}) AS g;
"""
# The first message id of the events sent during the migration: above every stored one.
SENT_BASE = 10_000_000
PER_JOB = 4  # three new events and a copy of an earlier one
MAX_JOBS = 2_000
MAX_SECONDS = 120


class Feeder(threading.Thread):
    """Enqueues jobs steadily, as the ingress does, until stopped (or at most MAX_JOBS / MAX_SECONDS)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.stop = threading.Event()
        self.events = 0
        self.copies = 0
        self.error: Exception | None = None

    def run(self) -> None:
        client = Redis.from_url(self.settings.redis_url)
        deadline = time.monotonic() + MAX_SECONDS
        try:
            for job in range(MAX_JOBS):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                batch = [self._new(job * 3 + i) for i in range(3)]
                batch.append(self._copy(job * 3 // 2, f"copy-{job}"))
                pipe = client.pipeline(transaction=True)
                stage_job(pipe, build_job(batch, self.settings), self.settings)
                pipe.execute()
                self.stop.wait(0.02)
        except Exception as e:  # noqa: BLE001 - the test's thread asserts on it
            self.error = e
        finally:
            client.close()

    def _new(self, n: int) -> RawRequest:
        self.events += 1
        return self._status(n, f"sent-{n}")

    def _copy(self, n: int, rid: str) -> RawRequest:
        self.copies += 1
        return self._status(n, rid)

    def _status(self, n: int, rid: str) -> RawRequest:
        params = status(SENT_BASE + n, 1, ts=1_760_000_000 + n)
        r = build("status", params=params)
        return RawRequest(rid, time.time(), redact_query(r.query), r.content_type, r.body)


def holds_event_tables(url: str) -> Callable[[], bool]:
    """True once another session holds migration 2's lock on status_events (it renames it first)."""

    def check() -> bool:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock'"
                " AND granted AND relation = to_regclass('status_events')"
            ).fetchone()
        return row is not None and row[0] > 0

    return check


@pytest.mark.timeout(600)
def test_workers_write_throughout_a_migration(tmp_path: Path, redis_db: Redis) -> None:
    """With jobs enqueued steadily before, during and after `migrate` of a released database holding
    100k status events, and two workers started while migration 2 holds its lock: every event sent is
    stored exactly once, every copy is recorded as one, and no job fails or dead-letters."""
    with throwaway("load") as url, ExitStack() as files:
        apply(url, RELEASED.read_text(encoding="utf-8"))
        apply(url, FILL)
        settings = Settings.from_env(service_env(DATABASE_URL=url))
        feeder = Feeder(settings)
        feeder.start()
        migrating = spawn([COMMAND, "migrate"], environment(DATABASE_URL=url), subprocess.PIPE)
        # Workers of this release write the account column: they start once the tables they write
        # are locked by the migration, and their jobs wait for it (README, "Upgrading").
        wait_until(lambda: migrating.poll() is not None or holds_event_tables(url)(), 60, "migration lock")
        assert migrating.returncode is None, "migrate ended before its lock was seen: no load to test"
        logs = [files.enter_context((tmp_path / f"worker-{i}.log").open("wb")) for i in range(2)]
        workers = [start_worker(log=log.fileno(), DATABASE_URL=url) for log in logs]
        _, err = migrating.communicate(timeout=300)
        assert migrating.returncode == 0, err.decode(errors="replace")
        sent_during = feeder.events
        wait_until(
            lambda: feeder.events >= sent_during + 60 or not feeder.is_alive(), 60, "jobs after migrate"
        )
        feeder.stop.set()
        feeder.join(timeout=30)
        assert feeder.error is None, feeder.error

        queue = Queue(settings.queue, connection=redis_db, serializer=JSONSerializer)
        # A job retried after a transient failure (a timeout on the lock) waits in the scheduled registry.
        pending = (StartedJobRegistry(queue=queue), ScheduledJobRegistry(queue=queue))
        wait_until(lambda: queue.count == 0 and not any(r.count for r in pending), 240, "drained queue")
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=60)

        assert FailedJobRegistry(queue=queue).count == 0
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
            stored = conn.execute(
                "SELECT count(*), count(DISTINCT (message_id, phone, status, status_at)),"
                " min(message_id), max(message_id) FROM status_events WHERE message_id >= %s",
                (SENT_BASE,),
            ).fetchone()
            assert stored == (feeder.events, feeder.events, SENT_BASE, SENT_BASE + feeder.events - 1)
            # A copy may be stored first when its job runs beside the original's: one of the two is
            # recorded either way.
            copies = conn.execute("SELECT count(*) FROM duplicate_requests").fetchone()
            assert copies == (feeder.copies,)
            assert conn.execute("SELECT count(*) FROM status_events").fetchone() == (
                HISTORY_ROWS + feeder.events,
            )
