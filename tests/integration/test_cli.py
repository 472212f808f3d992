"""`smsc-ingest` as an operator runs it: a real process on the test database and Redis."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from redis import Redis
from rq.job import Job
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer

from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, queue_key, stage_job
from smsc.settings import Settings
from tests.integration.procs import COMMAND, environment
from tests.integration.servers import wait_until
from tests.payloads import build
from workers.store import UPSERT_DEAD_LETTER

INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (request_id, job_id, kind, event_ref, phone, error_class, reason, raw, received_at)
VALUES (%(request_id)s, %(job_id)s, %(kind)s, %(event_ref)s, %(phone)s, %(error_class)s, %(reason)s,
        %(raw)s, %(received_at)s)
RETURNING dead_letter_id
"""

# Characters that act on a terminal, each as it must be printed instead.
HOSTILE = {
    "\x1b[31m": "\\x1b[31m",  # C0: ESC starts a colour
    "\x07": "\\x07",  # BEL
    "\x7f": "\\x7f",  # DEL
    "\x9b": "\\x9b",  # C1: CSI
    "\u202e": "\\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2028": "\\u2028",  # LINE SEPARATOR
    "\n": "\\n",
    "\r": "\\r",
}
EVIL = "".join(HOSTILE)
ESCAPED = "".join(HOSTILE.values())


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run `smsc-ingest args` with the test deployment's environment plus `env`; output as bytes."""
    return subprocess.run([COMMAND, *args], env=environment(**env), capture_output=True, timeout=60)


def said(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    """What the command wrote on stderr for a person, its JSON log lines left out."""
    return [line for line in done.stderr.decode().splitlines() if not line.startswith("{")]


def dead_row(rid: str, body: bytes = b"ts=x", **fields: Any) -> dict[str, Any]:
    """A dead letter's parameters as a worker writes them (UPSERT_DEAD_LETTER's)."""
    raw = RawRequest(rid, 1_700_000_000.0, fields.pop("query", "charset=utf-8"), "text/plain", body)
    return {
        "account": raw.account,
        "request_id": rid,
        "job_id": "job-1",
        "kind": "status",
        "event_ref": "1001",
        "phone": "79998887766",
        "error_class": "PermanentError",
        "reason": "status: ts 'x' is not a unix time",
        "raw": Jsonb(raw.to_json()),
        "received_at": datetime.now(UTC),
        **fields,
    }


def insert(db: Any, rid: str = "r1", body: bytes = b"ts=x", **fields: str) -> str:
    """A dead letter row as a worker writes it; its dead_letter_id."""
    return str(db.execute(INSERT_DEAD_LETTER, dead_row(rid, body, **fields)).fetchone()[0])


BAD_ARGUMENTS = [
    (["serve", "--port", "99999"], {}, "'99999' is not a port (1-65535)"),
    (["serve", "--port", "0"], {}, "'0' is not a port (1-65535)"),
    (["serve", "--port", "８０"], {}, "'８０' is not a port (1-65535)"),
    (["serve", "--workers", "0"], {}, "'0' is not a number of processes (1 or more)"),
    (["serve"], {"SMSC_PORT": "http"}, "SMSC_PORT: 'http' is not a port (1-65535)"),
    (["serve"], {"SMSC_PORT": "70000"}, "SMSC_PORT: '70000' is not a port (1-65535)"),
    (["serve"], {"SMSC_INGRESS_PROCESSES": "two"}, "SMSC_INGRESS_PROCESSES: 'two' is not a number"),
    (["dead-letter", "show", "١٢"], {}, "'١٢' is neither a dead letter number nor an RQ job id"),
    (["dead-letter", "show", "1 2"], {}, "'1 2' is neither a dead letter number nor an RQ job id"),
    (["dead-letter", "show", "9223372036854775808"], {}, "9223372036854775808 is out of range"),
    (["dead-letter", "list", "--id", "²"], {}, "'²' is neither a dead letter number nor an RQ job id"),
    (["dead-letter", "list", "--job", "a:b"], {}, "'a:b' is not an RQ job id"),
    (["replay", "--id", "99999999999999999999"], {}, "99999999999999999999 is out of range"),
    (["replay", "--since", "yesterday"], {}, "'yesterday' is not an ISO 8601 time"),
    (["dead-letter", "list", "--until", "2026-13-01"], {}, "'2026-13-01' is not an ISO 8601 time"),
    (["dead-letter", "show", "\x1b[31m"], {}, "'\\x1b[31m' is neither"),
]


@pytest.mark.parametrize(("args", "env", "message"), BAD_ARGUMENTS)
def test_bad_arguments_get_one_line_and_exit_code_2(
    settings: Settings, args: list[str], env: dict[str, str], message: str
) -> None:
    """A bad argument or setting gets exit code 2 and one plain line naming it, never a traceback."""
    done = cli(*args, **env)
    (line,) = said(done)
    assert (done.returncode, done.stdout) == (2, b""), done.stderr
    assert message in line
    assert "\x1b" not in line


@pytest.mark.parametrize("variable", ["SMSC_PORT", "SMSC_INGRESS_PROCESSES"])
def test_a_bad_serve_setting_leaves_the_other_commands_alone(settings: Settings, variable: str) -> None:
    """A non-numeric SMSC_PORT or SMSC_INGRESS_PROCESSES only concerns `serve`."""
    done = cli("dead-letter", "list", **{variable: "x"})
    assert (done.returncode, done.stdout, done.stderr) == (0, b"0 dead letter(s)\n", b"")


def test_every_printed_field_is_escaped(settings: Settings, db: Any) -> None:
    """`list` and `show` print control, bidi and separator characters of every field as escapes."""
    id_ = insert(
        db,
        rid=f"r{EVIL}",
        body=f"id={EVIL}".encode(),
        query=f"charset={EVIL}",
        job_id=f"j{EVIL}",
        kind=f"k{EVIL}",
        event_ref=f"e{EVIL}",
        phone=f"p{EVIL}",
        error_class=f"c{EVIL}",
        reason=f"line one{EVIL}line two",
    )
    listing = cli("dead-letter", "list")
    shown = cli("dead-letter", "show", id_)
    for done in (listing, shown):
        text = done.stdout.decode("utf-8")
        assert (done.returncode, done.stderr) == (0, b"")
        assert all(ch == "\n" or ch.isprintable() for ch in text), text
    assert listing.stdout.decode().splitlines()[1:] == ["1 dead letter(s)"]
    line = listing.stdout.decode().splitlines()[0]
    assert f"c{ESCAPED}: line one{ESCAPED}line two (kind=k{ESCAPED} id=e{ESCAPED} phone=p{ESCAPED})" in line
    for field in (f"job j{ESCAPED}", f"request r{ESCAPED}", f"charset={ESCAPED}", f"id={ESCAPED}"):
        assert field in shown.stdout.decode()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PYTHONIOENCODING": "ascii"}, b"\\u0444\\u0438\\u0433"),
        ({"PYTHONIOENCODING": "latin-1"}, b"\\u0444\\u0438\\u0433"),
        ({"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": ""}, "фиг".encode()),
        ({"PYTHONIOENCODING": "utf-8"}, "фиг".encode()),
    ],
)
def test_show_writes_whatever_the_output_encoding(
    settings: Settings, db: Any, env: dict[str, str], expected: bytes
) -> None:
    """`show` and `list` never fail on the output's encoding: what it cannot hold comes out escaped."""
    id_ = insert(db, body="mes=фиг".encode(), reason="status: ts 'фиг' is not a unix time", phone="фиг")
    for args in (("dead-letter", "show", id_), ("dead-letter", "list")):
        done = cli(*args, **env)
        assert (done.returncode, done.stderr) == (0, b""), done.stderr
        assert expected in done.stdout


def test_replay_says_so_when_marking_fails_after_queueing(
    settings: Settings, db: Any, redis_db: Redis
) -> None:
    """If PostgreSQL refuses to mark dead letters replayed once their job is queued, replay says so
    in one line and exits 0; the letters stay listed, so a later replay repeats them harmlessly."""
    insert(db, rid="r1")
    insert(db, rid="r2")
    db.execute(
        "CREATE FUNCTION refuse_mark() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'marking refused for the test'; END$$"
    )
    db.execute(
        "CREATE TRIGGER refuse_mark BEFORE UPDATE OF replayed_at ON dead_letters FOR EACH ROW"
        " WHEN (NEW.replayed_at IS NOT NULL) EXECUTE FUNCTION refuse_mark()"
    )
    try:
        done = cli("replay")
    finally:
        db.execute("DROP TRIGGER refuse_mark ON dead_letters")
        db.execute("DROP FUNCTION refuse_mark()")
    out = done.stdout.decode().splitlines()
    assert (done.returncode, said(done)) == (0, []), done.stderr
    (job_id,) = {line.split()[3].rstrip(":") for line in out if line.startswith("replayed as job ")}
    assert [line for line in out if "could not be marked replayed" in line] == [
        f"job {job_id} is queued, but its 2 dead letter(s) could not be marked replayed "
        "(RaiseException: marking refused for the test CONTEXT: PL/pgSQL function refuse_mark() line 1 "
        "at RAISE): a later replay repeats them harmlessly"
    ]
    assert out[-1] == "2 dead letter(s) replayed"
    assert redis_db.lrange(queue_key(settings), 0, -1) == [job_id.encode()]
    assert db.execute("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL").fetchone() == (2,)


def test_a_job_failed_without_our_handler_still_lists(settings: Settings, db: Any, redis_db: Redis) -> None:
    """A job RQ moved to its failed registry by itself (an abandoned job) lists with RQ's last line,
    and `replay --id` with its job id replays it alone."""
    insert(db)
    call = build("call")
    raw = RawRequest("r1", time.time(), call.query, call.content_type, call.body)
    job = build_job([raw], settings)
    with redis_db.pipeline(transaction=True) as pipe:
        stage_job(pipe, job, settings)
        pipe.execute()
    job = Job.fetch(job.id, connection=redis_db, serializer=JSONSerializer)
    with redis_db.pipeline() as pipe:
        record_job_failure(job, "Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-11-29", pipe)
        pipe.execute()
    done = cli("dead-letter", "list", "--id", job.id)
    lines = done.stdout.decode().splitlines()
    assert (done.returncode, done.stderr, len(lines)) == (0, b"", 2), done.stderr
    assert lines[0].startswith(f"{job.id} [redis] {datetime.now(UTC):%Y-%m-%d}")
    assert lines[0].endswith(
        " x1 unknown: Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-11-29"
        " (kind=call phone=79998887766)"
    )
    assert (
        f"dead letter {job.id} (in redis, job {job.id})" in cli("dead-letter", "show", job.id).stdout.decode()
    )
    replayed = cli("replay", "--id", job.id).stdout.decode().splitlines()
    assert (len(replayed), replayed[-1]) == (2, "1 dead letter(s) replayed")
    assert db.execute("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL").fetchone() == (1,)


def test_replay_beside_a_worker_rewriting_the_same_rows_never_waits(
    settings: Settings, db: Any, database: str
) -> None:
    """A worker re-dead-letters rows (in request_id order) while a replay locks them (in
    dead_letter_id order, here the reverse): the replay skips the worker's rows instead of waiting
    for them, so neither deadlocks, and the worker's transaction then completes."""
    count = 200
    # dead_letter_id 1..200 hold request ids r0200..r0001: the two orders are opposite.
    for i in range(count, 0, -1):
        insert(db, rid=f"r{i:04d}")
    rows = [dead_row(f"r{i:04d}", job_id="worker-job") for i in range(1, count + 1)]
    with psycopg.connect(database) as worker, worker.cursor() as cur:
        # The worker's statement, rows in its order; it stops half-way, holding dead letters 200..151.
        cur.executemany(UPSERT_DEAD_LETTER, rows[:50])
        replay = subprocess.Popen(
            [COMMAND, "replay"], env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        wait_until(lambda: replay.poll() is not None or waiting_on_a_lock(db), 60, "the replay")
        # The worker goes on with 150..1: the old replay held some of them while it waited.
        cur.executemany(UPSERT_DEAD_LETTER, rows[50:])
        worker.commit()
        out, err = replay.communicate(timeout=60)
    assert replay.returncode == 0, err.decode()[-1000:]
    # Dead letters 151..200 were the worker's at that moment: skipped, not waited for.
    assert out.decode().splitlines()[-1] == "150 dead letter(s) replayed"
    assert db.execute("SELECT count(*), sum(attempts) FROM dead_letters").fetchone() == (count, 2 * count)


def waiting_on_a_lock(db: Any) -> bool:
    """Whether another session of this database waits for a row lock."""
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return bool(row[0])
