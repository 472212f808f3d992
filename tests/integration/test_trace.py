"""`smsc-ingest trace` on requests sent through the real ingress and stored by real workers: which
request stored a row first, which copies were duplicates, a dead letter's reason, the RQ job holding a
request; and `duplicate_requests`, one row per copy however many workers or replays see it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from psycopg.types.json import Jsonb
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from cli.trace import request_lines
from ingress.app import create_app
from smsc.settings import Settings
from tests.integration.batches import queued
from tests.integration.conftest import service_env
from tests.integration.procs import COMMAND, environment, run_workers
from tests.integration.servers import wait_until
from tests.integration.test_ingress import post
from tests.payloads import SAMPLES, Request, build
from workers.deadletter import Filter, find, replay
from workers.runner import run
from workers.trace import trace_request

Drain = Callable[[], None]
PHONE = SAMPLES["status"]["phone"]
# A port where no PostgreSQL listens: every job fails with a TransientError.
NO_DATABASE = "postgresql://postgres@127.0.0.1:1/none"


def trace(*args: str) -> tuple[int, list[str]]:
    """`smsc-ingest trace args` as a process: its exit code and the lines it printed."""
    done = subprocess.run(
        [COMMAND, "trace", *args], env=environment(), capture_output=True, timeout=60, check=False
    )
    return done.returncode, done.stdout.decode().splitlines()


async def send(client: TestClient[Any, Any], settings: Settings, *requests: Request) -> list[str]:
    """POST each request (each 200); return the request ids the ingress gave them, in order."""
    before = {r["rid"] for job in queued(settings) for r in job}
    for r in requests:
        assert (await post(client, r))[0] == 200
    # Requests posted one after another each go out in a job of their own, in order.
    rids = [str(r["rid"]) for job in queued(settings) for r in job if r["rid"] not in before]
    assert len(rids) == len(requests)
    return rids


def status(**params: str) -> Request:
    return build("status", params={**SAMPLES["status"], **params})


def duplicates(db: Any) -> dict[str, str]:
    """duplicate_requests as {copy's request id: the request that stored the event first}."""
    return dict(db.execute("SELECT request_id, first_request_id FROM duplicate_requests").fetchall())


async def test_three_copies_name_the_first_request_and_the_two_duplicates(
    client: TestClient[Any, Any], settings: Settings, drain: Drain, db: Any
) -> None:
    """An event sent 3 times: trace by each rid names the request that stored it first and both copies."""
    first, second, third = await send(client, settings, status(), status(), status())
    drain()
    assert db.execute("SELECT request_id FROM status_events").fetchall() == [(first,)]
    assert duplicates(db) == {second: first, third: first}
    row = (
        f"status_events message_id=1001 phone={PHONE} status=1 status_at=2023-11-14T22:13:20+00:00 err=- "
        "account=default"
    )

    code, lines = trace(first)
    assert code == 0
    assert lines[1].startswith(f"  stored first by this request: {row} (received ")
    assert lines[2] == "    duplicates: 2"
    assert [line.split()[:2] for line in lines[3:5]] == [["request", second], ["request", third]]
    assert "  job: none holds it now (not queued, started, scheduled or failed)" in lines

    for copy in (second, third):
        code, lines = trace(copy)
        assert code == 0
        assert lines[1].startswith(
            f"  a duplicate, not stored: copy of the status stored first by request {first} (noted "
        )
        assert lines[2].startswith(f"    that row: {row} (received ")
        assert lines[2].endswith(f": first stored by request {first}")
        assert lines[3] == "      duplicates: 2"
        assert [line.split()[:2] for line in lines[4:6]] == [["request", second], ["request", third]]
        assert not any("stored first by this request" in line for line in lines)


UNTIMED_STATUS = {k: v for k, v in SAMPLES["status"].items() if k not in ("ts", "time")}


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(status(), id="status"),
        pytest.param(build("status", params=UNTIMED_STATUS), id="status-without-any-time"),
        pytest.param(build("incoming"), id="incoming"),
        pytest.param(build("call"), id="call"),
    ],
)
async def test_each_copy_of_each_kind_is_recorded_once(
    client: TestClient[Any, Any], settings: Settings, drain: Drain, db: Any, event: Request
) -> None:
    """Three copies of one event of any kind: one row, and two records naming the request that stored it."""
    first, second, third = await send(client, settings, event, event, event)
    drain()
    drain()  # nothing left: a second pass changes nothing
    assert duplicates(db) == {second: first, third: first}


async def test_status_history_of_a_message_and_phone(
    client: TestClient[Any, Any], settings: Settings, drain: Drain, db: Any
) -> None:
    """trace --id --phone: the message's state now, and its statuses oldest first, each with the
    request that stored it first and its duplicates."""
    queued_rid, delivered_rid, copy_rid = await send(
        client, settings, status(status="0"), status(status="1", ts="1700000100"), status(status="0")
    )
    drain()
    code, lines = trace("--id", "1001", "--phone", PHONE)
    assert code == 0
    assert lines[0].startswith(
        f"message 1001 to {PHONE}: now status 1 at 2023-11-14T22:15:00+00:00, err -, updated "
    )
    assert lines[1] == "statuses, oldest first (2)"
    assert lines[2].startswith(f"  status_events message_id=1001 phone={PHONE} status=0 ")
    assert lines[2].endswith(f"first stored by request {queued_rid}")
    assert lines[3] == "    duplicates: 1"
    assert lines[4].startswith(f"      request {copy_rid} received ")
    assert lines[5].startswith(f"  status_events message_id=1001 phone={PHONE} status=1 ")
    assert lines[5].endswith(f"first stored by request {delivered_rid}")
    assert lines[6] == "    duplicates: none"
    # The number as written with a leading +: the same phone.
    assert trace("--id", "1001", "--phone", f"+{PHONE}")[1][1:7] == lines[1:7]


async def test_incoming_and_calls_of_a_phone_newest_first(
    client: TestClient[Any, Any], settings: Settings, drain: Drain, db: Any
) -> None:
    """trace --phone: the phone's incoming SMS and calls, newest first, within --limit."""
    calls = [build("call", params={**SAMPLES["call"], "ts": str(1700000200 + i)}) for i in range(3)]
    incoming_rid, *call_rids = await send(client, settings, build("incoming"), *calls)
    drain()
    code, lines = trace("--phone", PHONE, "--limit", "2")
    assert code == 0
    assert lines[0] == f"incoming SMS from {PHONE}, newest first (1)"
    assert lines[1].startswith(f"  incoming_messages id=5001 phone={PHONE} to_phone=79001234567 ")
    assert lines[1].endswith(f"first stored by request {incoming_rid}")
    assert lines[3] == f"calls from {PHONE}, newest first (2; more exist, raise --limit (now 2))"
    assert lines[4].startswith(f"  call_confirmations phone={PHONE} called_at=2023-11-14T22:16:42+00:00 ")
    assert lines[4].endswith(f"first stored by request {call_rids[2]}")
    assert lines[6].endswith(f"first stored by request {call_rids[1]}")
    assert lines[-1] == "dead letters, newest first (0)"
    assert trace("--phone", "79990000000")[0] == 1


async def test_a_dead_lettered_request_shows_its_reason(
    client: TestClient[Any, Any], settings: Settings, drain: Drain, db: Any
) -> None:
    """A request that cannot be stored: trace names its dead letter and the reason, by rid and by phone."""
    (rid,) = await send(client, settings, status(ts="x"))
    drain()
    code, lines = trace(rid)
    assert code == 0
    (letter,) = [line for line in lines if line.startswith("  dead letter: ")]
    assert letter.endswith(
        "x1 PermanentError: status: ts 'x' is not a unix time "
        "(account=default kind=status id=1001 phone=79998887766)"
    )
    assert "    replayed: no" in lines
    assert not any("stored first" in line for line in lines)
    code, lines = trace("--id", "1001", "--phone", PHONE)
    assert code == 0
    assert lines[-1].endswith(
        "status: ts 'x' is not a unix time (account=default kind=status id=1001 phone=79998887766)"
    )


async def test_a_request_not_yet_worked_on_is_queued_in_its_job(
    client: TestClient[Any, Any], settings: Settings, queue: Queue
) -> None:
    """No worker ran: the request is in a queued job, named by its id; nothing is stored yet."""
    (rid,) = await send(client, settings, status())
    (job_id,) = queue.get_job_ids()
    code, lines = trace(rid)
    assert code == 0
    assert lines[1].startswith(f"  job: queued {job_id}, enqueued ")
    assert lines[2] == "  RQ jobs read: all 1 (started 0/0, scheduled 0/0, queued 1/1, failed 0/0)"


async def test_a_job_waiting_for_a_retry_then_failed_shows_why(settings: Settings, redis_db: Redis) -> None:
    """PostgreSQL unreachable: the job is scheduled for a retry, then failed once its one retry is
    spent; trace shows each state with the failure's reason."""
    one_retry = Settings.from_env(service_env(SMSC_RETRY_INTERVALS="1"))
    async with TestClient(TestServer(create_app(one_retry))) as client:
        (rid,) = await send(client, one_retry, status())
    unreachable = Settings.from_env(service_env(DATABASE_URL=NO_DATABASE))
    run(unreachable, burst=True)
    queue = Queue(settings.queue, connection=redis_db, serializer=JSONSerializer)
    (job_id,) = ScheduledJobRegistry(queue=queue).get_job_ids()
    code, lines = trace(rid)
    assert code == 0
    assert lines[1].startswith(f"  job: scheduled {job_id}, enqueued ")
    assert ", retry at " in lines[1]
    assert "; TransientError: database: OperationalError: " in lines[1]
    assert " (1 failure(s), last " in lines[1]

    # The scheduler moves it back to the queue once its retry time has come.
    def retried() -> bool:
        run(unreachable, burst=True)
        return FailedJobRegistry(queue=queue).get_job_ids() == [job_id]

    wait_until(retried, 30, "the retry to fail")
    code, lines = trace(rid)
    assert code == 0
    assert lines[1].startswith(f"  job: failed {job_id}, enqueued ")
    assert "; TransientError: database: OperationalError: " in lines[1]
    assert " (2 failure(s), last " in lines[1]


async def test_a_scan_cut_short_says_so(client: TestClient[Any, Any], settings: Settings) -> None:
    """Past its bound, the search of RQ's jobs stops, newest first, and says a job not read may hold it."""
    older, newer = await send(client, settings, status(), status(id="2"))
    lines = request_lines(trace_request(settings, older, max_jobs=1))
    assert lines[1:] == [
        "  job: none holds it now (not queued, started, scheduled or failed)",
        "  RQ jobs read: 1 of 2 (started 0/0, scheduled 0/0, queued 1/2, failed 0/0); stopped early at the "
        "limit, newest first: a job not read may hold it",
        "  nothing found: no row, duplicate, dead letter or job holds it (in what was read)",
    ]
    assert request_lines(trace_request(settings, newer, max_jobs=1))[1].startswith("  job: queued ")


@pytest.mark.usefixtures("db", "redis_db")
def test_an_unknown_request_is_not_found() -> None:
    """A request id nobody stored, dead-lettered or queued: exit code 1, and it says so."""
    code, lines = trace("0123456789abcdef0123456789abcdef")
    assert code == 1
    assert lines[-1] == "  nothing found: no row, duplicate, dead letter or job holds it"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="nothing"),
        pytest.param(["r1", "--phone", PHONE], id="rid-and-phone"),
        pytest.param(["--id", "1001"], id="id-without-phone"),
        pytest.param(["bad id"], id="rid-with-space"),
        pytest.param(["--phone", PHONE, "--id", "x"], id="id-not-a-number"),
        pytest.param(["--phone", PHONE, "--limit", "0"], id="limit-zero"),
    ],
)
@pytest.mark.usefixtures("db", "redis_db")
def test_bad_arguments_are_refused(args: list[str]) -> None:
    """Options that name no request or event: exit code 2, nothing looked up."""
    assert trace(*args) == (2, [])


async def test_one_duplicate_row_per_copy_with_concurrent_workers_and_replays(
    client: TestClient[Any, Any], settings: Settings, db: Any
) -> None:
    """Copies of each event in jobs of their own, taken by 3 workers at once: each copy is one row of
    duplicate_requests naming the request whose row is stored. Replaying the dead letter of a stored
    request and of a duplicate adds nothing and breaks nothing."""
    events = [build("status", params={**SAMPLES["status"], "id": str(7000 + i)}) for i in range(10)] + [
        build("incoming", params={**SAMPLES["incoming"], "id": str(8000 + i)}) for i in range(10)
    ]
    copies = 3
    rids = await send(client, settings, *(event for event in events for _ in range(copies)))
    raws = {r["rid"]: r for job in queued(settings) for r in job}
    run_workers(3)
    stored = dict(
        db.execute(
            "SELECT request_id, 'status' FROM status_events UNION ALL "
            "SELECT request_id, 'incoming' FROM incoming_messages"
        ).fetchall()
    )
    found = duplicates(db)
    assert len(stored) == len(events)
    assert len(found) == len(events) * (copies - 1)
    assert set(stored) | set(found) == set(rids)
    assert not set(stored) & set(found)
    for i in range(len(events)):
        group = rids[i * copies : (i + 1) * copies]
        (first,) = [rid for rid in group if rid in stored]
        assert {found[rid] for rid in group if rid != first} == {first}

    # A stored request and a duplicate left as dead letters (as by a job that failed after its
    # commit), then replayed: the requests are written again, and their records stay as they are.
    replayed = (rids[0], rids[1])
    for rid in replayed:
        db.execute(
            "INSERT INTO dead_letters (request_id, job_id, error_class, reason, raw, received_at) "
            "VALUES (%s, 'lost', 'TransientError', 'test', %s, now())",
            (rid, Jsonb(raws[rid])),
        )
    assert [len(done.letters) for done in replay(settings, Filter())] == [len(replayed)]
    run_workers(3)
    assert duplicates(db) == found
    assert db.execute("SELECT count(*) FROM status_events").fetchone() == (10,)
    assert find(settings, Filter()) == []


async def test_old_duplicate_records_are_purged_with_the_dead_letters(
    client: TestClient[Any, Any], settings: Settings, drain: Drain, db: Any
) -> None:
    """Records of copies older than SMSC_DEAD_LETTER_DAYS are deleted by the workers' purge; newer stay."""
    first, old_copy = await send(client, settings, status(), status())
    drain()
    assert duplicates(db) == {old_copy: first}
    db.execute("UPDATE duplicate_requests SET stored_at = now() - interval '31 days'")
    (new_copy,) = await send(client, settings, status())
    drain()
    assert duplicates(db) == {new_copy: first}
