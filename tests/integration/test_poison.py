"""A poisoned request costs its own row and nothing else: its neighbours in the job are stored, it
waits as its own dead letter, and RQ's failed registry stays empty."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from ingress.app import create_app
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from tests.integration.batches import fate, http, post_as_one_job, queued, rid_of
from tests.integration.conftest import service_env
from tests.integration.procs import run_workers
from tests.integration.servers import ThrowawayRedis
from tests.payloads import SAMPLES, Request, build
from workers import jobs
from workers.runner import run


@pytest.fixture
def one_job(throwaway_redis: ThrowawayRedis, db: Any) -> Settings:
    """Settings on a Redis of our own that the test may pause, so that requests share one job."""
    return Settings.from_env(service_env(REDIS_URL=throwaway_redis.url))


def jobs_left(settings: Settings) -> int:
    """Jobs not finished: queued, waiting for a retry (scheduled) or given up (failed)."""
    client = Redis.from_url(settings.redis_url)
    try:
        queue = Queue(settings.queue, connection=client, serializer=JSONSerializer)
        return int(
            queue.count + ScheduledJobRegistry(queue=queue).count + FailedJobRegistry(queue=queue).count
        )
    finally:
        client.close()


def statuses(count: int) -> list[Request]:
    return [build("status", params={**SAMPLES["status"], "id": str(9000 + i)}) for i in range(count)]


def incoming_json_with_id(id_json: bytes) -> Request:
    """A correctly signed incoming SMS as JSON whose `id` (not covered by the hash) is `id_json`."""
    r = build("incoming", fmt="json")
    assert b'"id": "5001"' in r.body
    return Request(r.body.replace(b'"id": "5001"', b'"id": ' + id_json), r.query, r.content_type)


def enqueue(settings: Settings, raws: list[RawRequest]) -> None:
    """Queue `raws` as one job, exactly as the ingress writes one (for payloads no ingress would make)."""
    client = Redis.from_url(settings.redis_url)
    with client.pipeline(transaction=True) as pipe:
        stage_job(pipe, build_job(raws, settings), settings)
        pipe.execute()
    client.close()


def raw(r: Request, rid: str, *, query: str | None = None, content_type: str | None = None) -> RawRequest:
    return RawRequest(
        rid, time.time(), r.query if query is None else query, content_type or r.content_type, r.body
    )


@pytest.mark.parametrize(
    "id_json",
    [b'"\\ud800"', b'"\\udfff"', b'"\\u0000"', b'"1\\u0000"', b'"\\u001b[31m"', b'"1\\r\\n2"', b"1" * 400],
    ids=["high-surrogate", "low-surrogate", "nul", "digit-nul", "escape", "crlf", "huge"],
)
async def test_signed_sms_with_unstorable_id_costs_only_itself(
    one_job: Settings, throwaway_redis: ThrowawayRedis, db: Any, id_json: bytes
) -> None:
    """The issue's case: an incoming SMS signed correctly (its hash covers phone:mes:to, not id) with an
    id PostgreSQL cannot hold, in one job with 14 signed statuses: the statuses are stored, the SMS is
    dead-lettered alone with a storable one-line reason, and the job finished."""
    poison = incoming_json_with_id(id_json)
    good = statuses(14)
    async with TestClient(TestServer(create_app(one_job))) as client:
        first, codes = await post_as_one_job(
            client, throwaway_redis, http(build("call")), [http(r) for r in [*good, poison]]
        )
    assert (first, codes) == (200, [200] * 15)
    jobs = queued(one_job)
    assert sorted(len(job) for job in jobs) == [1, 15]
    run(one_job, burst=True)
    assert jobs_left(one_job) == 0
    for r in good:
        assert fate(db, rid_of(jobs, r.body)) == ["status_events"]
    assert fate(db, rid_of(jobs, poison.body)) == ["dead_letters"]
    ((kind, error_class, reason),) = db.execute(
        "SELECT kind, error_class, reason FROM dead_letters"
    ).fetchall()
    assert (kind, error_class) == ("incoming", "PermanentError")
    assert reason.startswith("incoming: id ")
    assert "\n" not in reason


@pytest.mark.parametrize(
    ("query", "content_type"),
    [
        ("charset=utf-8&note=\x00", "application/x-www-form-urlencoded"),
        ("charset=utf-8&note=\udcff\udcfe", "application/x-www-form-urlencoded"),
        ("charset=utf-8", "application/x-www-form-urlencoded; x=\x00"),
        ("charset=utf-8", "application/x-www-form-urlencoded; x=\udcc3\udca9\ud800"),
        ("charset=utf-8", "text/plain\r\nX-Injected: 1"),
    ],
    ids=["nul-query", "surrogate-query", "nul-content-type", "surrogate-content-type", "crlf-content-type"],
)
def test_a_dead_letter_holding_unstorable_text_is_still_written(
    settings: Settings, db: Any, query: str, content_type: str
) -> None:
    """A raw request whose query string or Content-Type holds what PostgreSQL refuses (as a job of an
    older ingress could) is dead-lettered with that text made storable; its neighbour is stored."""
    bad = build("status", params={**SAMPLES["status"], "ts": "not a time"})
    call = build("call")
    enqueue(
        settings,
        [raw(bad, "bad", query=f"{query}&md5=redacted", content_type=content_type), raw(call, "good")],
    )
    run(settings, burst=True)
    assert jobs_left(settings) == 0
    assert fate(db, "good") == ["call_confirmations"]
    assert fate(db, "bad") == ["dead_letters"]
    ((stored_query, stored_type),) = db.execute(
        "SELECT raw->>'query', raw->>'content_type' FROM dead_letters"
    ).fetchall()
    assert "\x00" not in stored_query + stored_type
    assert "\ufffd" in stored_query + stored_type or "\r\n" in stored_type


def test_a_refused_row_gets_a_one_line_reason(settings: Settings, db: Any) -> None:
    """PostgreSQL's multi-line refusal (message, DETAIL, CONTEXT) is kept as one line."""
    enqueue(
        settings,
        [
            raw(build("status", params={**SAMPLES["status"], "cost": "1e200000"}), "big"),
            raw(build("call"), "ok"),
        ],
    )
    run(settings, burst=True)
    ((error_class, reason),) = db.execute("SELECT error_class, reason FROM dead_letters").fetchall()
    assert error_class == "NumericValueOutOfRange"
    assert reason.startswith("database refused the row: NumericValueOutOfRange: ")
    assert "\n" not in reason
    assert fate(db, "ok") == ["call_confirmations"]


def test_a_refused_dead_letter_leaves_a_minimal_one(settings: Settings, db: Any) -> None:
    """If PostgreSQL refuses even the dead letter (here a constraint the test adds), a minimal one is
    written: request id, raw request and reason class; the neighbours are stored and no job fails."""
    db.execute("ALTER TABLE dead_letters ADD CONSTRAINT refuse_known_kinds CHECK (kind IS NULL)")
    try:
        bad = build("status", params={**SAMPLES["status"], "ts": "not a time"})
        enqueue(settings, [raw(build("call"), "ok"), raw(bad, "bad"), raw(statuses(1)[0], "ok2")])
        run(settings, burst=True)
    finally:
        db.execute("ALTER TABLE dead_letters DROP CONSTRAINT refuse_known_kinds")
    assert jobs_left(settings) == 0
    assert (fate(db, "ok"), fate(db, "ok2")) == (["call_confirmations"], ["status_events"])
    rows = db.execute(
        "SELECT request_id, kind, error_class, reason, raw->>'rid' FROM dead_letters"
    ).fetchall()
    assert rows == [("bad", None, "CheckViolation", "dead letter refused: CheckViolation", "bad")]


def forged(id_: str, **changes: str) -> Request:
    """An incoming SMS correctly signed over its own phone:mes:to, under another message's id."""
    return build("incoming", params={**SAMPLES["incoming"], "id": id_, **changes})


def test_an_incoming_id_stored_with_other_content_is_a_conflict(settings: Settings, db: Any) -> None:
    """A second SMS under a stored id, with another phone and text, is not dropped as a duplicate: it
    waits as a `Conflict` dead letter naming both versions, and the stored row is unchanged; an exact
    copy is a duplicate and nothing more."""
    genuine = build("incoming")
    enqueue(settings, [raw(genuine, "genuine")])
    run(settings, burst=True)
    other = forged("5001", phone="79110000000", mes="Send money")
    enqueue(settings, [raw(other, "forged"), raw(genuine, "copy")])
    run(settings, burst=True)
    assert db.execute("SELECT phone, text, request_id FROM incoming_messages").fetchall() == [
        ("79998887766", "Привет, мир!", "genuine")
    ]
    ((request_id, error_class, reason),) = db.execute(
        "SELECT request_id, error_class, reason FROM dead_letters"
    ).fetchall()
    assert (request_id, error_class) == ("forged", "Conflict")
    assert "incoming SMS id 5001 is already stored with other content (request genuine)" in reason
    assert "phone stored '79998887766', here '79110000000'" in reason
    assert "text stored 'Привет, мир!', here 'Send money'" in reason
    assert "to_phone" not in reason


def test_conflicts_hold_under_concurrent_workers(settings: Settings, db: Any) -> None:
    """Genuine and forged versions of 150 ids, in separate jobs worked by three processes at once: one
    row per id, and exactly one conflict per id, whichever version came first."""
    ids = [str(70_000 + i) for i in range(150)]
    for start in range(0, len(ids), 50):
        chunk = ids[start : start + 50]
        enqueue(settings, [raw(forged(i), f"g{i}") for i in chunk])
        enqueue(settings, [raw(forged(i, mes="forged"), f"f{i}") for i in reversed(chunk)])
    run_workers(3)
    assert db.execute("SELECT count(*), count(DISTINCT id) FROM incoming_messages").fetchone() == (150, 150)
    conflicts = db.execute("SELECT event_ref, error_class FROM dead_letters ORDER BY event_ref").fetchall()
    assert conflicts == [(i, "Conflict") for i in ids]
    assert jobs_left(settings) == 0


def test_a_bug_of_ours_costs_only_the_request_it_meets(
    settings: Settings, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while reading one request (a bug, simulated in normalize) dead-letters
    that request with the exception's class, for a replay after the fix; its neighbours are stored."""
    real = jobs.normalize

    def buggy(decoded: Any, *args: Any) -> Any:
        if decoded.params.get("id") == "9000":
            raise RuntimeError("a bug")
        return real(decoded, *args)

    monkeypatch.setattr(jobs, "normalize", buggy)
    enqueue(settings, [raw(r, f"r{i}") for i, r in enumerate(statuses(3))])
    run(settings, burst=True)
    assert jobs_left(settings) == 0
    assert (fate(db, "r0"), fate(db, "r1"), fate(db, "r2")) == (
        ["dead_letters"],
        ["status_events"],
        ["status_events"],
    )
    assert db.execute("SELECT reason FROM dead_letters").fetchall() == [
        ("internal error: RuntimeError: a bug",)
    ]
