"""Dead letters: a request that cannot be stored waits with its reason until it is replayed."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from rq import Queue
from rq.registry import FailedJobRegistry

from ingress.app import create_app
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from tests.integration.conftest import service_env
from tests.integration.procs import COMMAND, environment
from tests.integration.test_ingress import post
from tests.payloads import SAMPLES, build
from workers.deadletter import Filter, find, replay
from workers.runner import run


async def ingest(settings: Settings, *requests: Any) -> None:
    async with TestClient(TestServer(create_app(settings))) as client:
        for r in requests:
            assert (await post(client, r))[0] == 200


def count(db: Any, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def replayed(settings: Settings, flt: Filter) -> list[str]:
    """Replay what `flt` selects; return the ids of the dead letters requeued."""
    return [letter.id for done in replay(settings, flt) for letter in done.letters]


async def test_poison_is_dead_lettered_alone_then_replayed_after_a_fix(settings: Settings, db: Any) -> None:
    """A worker misconfigured for utf-8 dead-letters windows-1251 SMS, not their neighbours; after the
    fix a replay stores each once, and a second replay adds nothing."""
    sms = build("incoming", charset="windows-1251", url_params={"charset": ""})
    call = build("call")
    await ingest(settings, sms, call)
    wrong = Settings.from_env(service_env(SMSC_CHARSET="utf-8"))
    run(wrong, burst=True)
    assert (count(db, "incoming_messages"), count(db, "call_confirmations")) == (0, 1)
    (letter,) = find(wrong, Filter())
    assert letter.where == "postgres"
    assert letter.error_class == "PermanentError"
    assert "cannot decode: body is not valid utf-8" in letter.reason
    assert letter.ids == [{"kind": "incoming", "id": "5001", "phone": "79998887766"}]

    assert replayed(settings, Filter(reason="utf-8")) == [letter.id]
    run(settings, burst=True)
    assert db.execute("SELECT text FROM incoming_messages").fetchall() == [(SAMPLES["incoming"]["mes"],)]
    assert find(settings, Filter()) == []
    (done,) = find(settings, Filter(include_replayed=True))
    assert done.replayed_at is not None

    replayed(settings, Filter(include_replayed=True))
    run(settings, burst=True)
    assert count(db, "incoming_messages") == 1


async def test_replay_that_fails_again_rearms_the_same_dead_letter(settings: Settings, db: Any) -> None:
    """Replaying a payload that is still bad keeps one dead letter, its attempts counted."""
    await ingest(settings, build("status", params={**SAMPLES["status"], "ts": "yesterday"}))
    run(settings, burst=True)
    replayed(settings, Filter())
    run(settings, burst=True)
    (letter,) = find(settings, Filter())
    assert (letter.attempts, letter.replayed_at) == (2, None)
    assert letter.reason == "status: ts 'yesterday' is not a unix time"


async def test_filters_select_what_is_listed_and_replayed(settings: Settings, db: Any) -> None:
    """--reason, --error-class, --job, --id and a time range pick dead letters; the rest stay."""
    bad_ts = build("status", params={**SAMPLES["status"], "ts": "soon"})
    bad_status = build("status", params={**SAMPLES["status"], "id": "2", "status": "x"})
    await ingest(settings, bad_ts, bad_status)
    before = time.time()
    run(settings, burst=True)
    letters = find(settings, Filter())
    assert len(letters) == 2
    assert [x.reason for x in find(settings, Filter(reason="UNIX TIME"))] == [
        "status: ts 'soon' is not a unix time"
    ]
    assert find(settings, Filter(error_class="TransientError")) == []
    assert len(find(settings, Filter(job=letters[0].job_id))) == 1
    assert [x.id for x in find(settings, Filter(id=letters[1].id))] == [letters[1].id]
    future = datetime.fromtimestamp(before, UTC) + timedelta(hours=1)
    assert find(settings, Filter(since=future)) == []
    assert len(find(settings, Filter(until=future))) == 2
    replayed(settings, Filter(reason="unix time"))
    assert [x.reason for x in find(settings, Filter())] == ["status: status 'x' is not a whole number"]


async def test_transient_failures_retry_then_wait_in_redis_for_replay(
    settings: Settings, db: Any, redis_db: Any
) -> None:
    """With PostgreSQL unreachable a job is retried, then kept in RQ's failed registry with the class,
    one-line reason and first and last times of its failures; the replay stores it once PostgreSQL
    is back."""
    unreachable = Settings.from_env(
        service_env(DATABASE_URL="postgresql://postgres@127.0.0.1:1/smsc_test", SMSC_RETRY_INTERVALS="1,1")
    )
    before = datetime.now(UTC)
    await ingest(unreachable, build("call"))
    queue = Queue(settings.queue, connection=redis_db)
    failed = FailedJobRegistry(queue=queue)
    deadline = time.monotonic() + 30
    while failed.count == 0 and time.monotonic() < deadline:
        run(unreachable, burst=True)
        time.sleep(0.5)
    assert failed.count == 1
    assert count(db, "call_confirmations") == 0
    (letter,) = find(settings, Filter())
    assert (letter.where, letter.error_class, letter.attempts) == ("redis", "TransientError", 3)
    assert letter.ids == [{"kind": "call", "phone": "79998887766"}]
    # psycopg's message has two lines: "... Connection refused\n\tIs the server running ...".
    assert letter.reason.startswith(
        'database: OperationalError: connection failed: connection to server at "127'
    )
    assert letter.reason.endswith(
        "Connection refused Is the server running on that host and accepting TCP/IP connections?"
    )
    assert letter.first_failed_at is not None
    assert letter.failed_at is not None
    assert before < letter.first_failed_at
    # Three failures: the first recorded is the first, not the last try's enqueue time.
    assert letter.first_failed_at < letter.failed_at
    listing = subprocess.run(
        [COMMAND, "dead-letter", "list"], env=environment(), capture_output=True, timeout=60
    )
    assert listing.stdout.decode().splitlines()[1:] == ["1 dead letter(s)"]

    assert replayed(settings, Filter(error_class="TransientError")) == [letter.id]
    assert failed.count == 0
    run(settings, burst=True)
    assert count(db, "call_confirmations") == 1


async def test_cli_lists_shows_and_replays(settings: Settings, db: Any) -> None:
    """`dead-letter list`, `dead-letter show ID` and `replay --dry-run` / `replay` speak plainly."""
    await ingest(settings, build("status", params={**SAMPLES["status"], "cost": "free"}))
    run(settings, burst=True)
    env = environment()

    def cli(*args: str) -> str:
        done = subprocess.run([COMMAND, *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listing = cli("dead-letter", "list")
    assert "cost 'free' is not a number" in listing
    assert "kind=status id=1001 phone=79998887766" in listing
    (letter,) = find(settings, Filter())
    shown = cli("dead-letter", "show", letter.id)
    assert "attempts:   1" in shown
    assert "cost=free" in shown
    assert "1 dead letter(s) would be replayed" in cli("replay", "--dry-run")
    assert count(db, "dead_letters WHERE replayed_at IS NULL") == 1
    assert "1 dead letter(s) replayed" in cli("replay", "--reason", "cost")
    assert "0 dead letter(s)" in cli("dead-letter", "list")


async def test_a_row_postgres_refuses_is_dead_lettered_alone(
    settings: Settings, db: Any, redis_db: Any
) -> None:
    """In one job, a status whose cost overflows PostgreSQL's numeric is dead-lettered alone; its
    neighbour is stored."""
    too_big = build("status", params={**SAMPLES["status"], "cost": "1e200000"})
    call = build("call")
    raws = [
        RawRequest(f"r{i}", time.time(), r.query, r.content_type, r.body)
        for i, r in enumerate((too_big, call))
    ]
    with redis_db.pipeline(transaction=True) as pipe:
        stage_job(pipe, build_job(raws, settings), settings)
        pipe.execute()
    run(settings, burst=True)
    assert (count(db, "status_events"), count(db, "call_confirmations")) == (0, 1)
    (letter,) = find(settings, Filter())
    assert letter.error_class == "NumericValueOutOfRange"
    assert letter.reason.startswith("database refused the row")


async def test_old_dead_letters_are_purged(settings: Settings, db: Any) -> None:
    """Dead letters older than SMSC_DEAD_LETTER_DAYS are deleted by the workers; newer ones stay."""
    await ingest(settings, build("status", params={**SAMPLES["status"], "ts": "x"}))
    run(settings, burst=True)
    db.execute("UPDATE dead_letters SET failed_at = now() - interval '31 days'")
    await ingest(settings, build("status", params={**SAMPLES["status"], "id": "2", "ts": "y"}))
    run(settings, burst=True)
    assert [x.reason for x in find(settings, Filter())] == ["status: ts 'y' is not a unix time"]
