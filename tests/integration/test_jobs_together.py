"""Jobs waiting in the queue together are stored in one transaction, and each still finishes or
fails on its own: its requests' outcomes, its own job id on its dead letters and copies."""

from __future__ import annotations

import time
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from tests.payloads import SAMPLES, Request, build
from workers.runner import run


def raw(rid: str, request: Request) -> RawRequest:
    return RawRequest(rid, time.time(), request.query, request.content_type, request.body)


def enqueue(redis_db: Redis, settings: Settings, *jobs: Job) -> list[str]:
    with redis_db.pipeline(transaction=True) as pipe:
        for job in jobs:
            stage_job(pipe, job, settings)
        pipe.execute()
    return [job.id for job in jobs]


def not_raw_requests(settings: Settings) -> Job:
    """A job of our function whose argument is no list of raw requests."""
    job = build_job([], settings)
    job.args = [[{"not": "a raw request"}]]
    job.retries_left = None
    return job


async def test_jobs_queued_together_share_a_commit_and_keep_their_own_outcomes(
    settings: Settings, db: Any, redis_db: Redis
) -> None:
    """Three queued jobs: every event stored once, in one transaction; the copy in the second job is
    recorded under that job's id, the unreadable status of the third is its dead letter; all three
    jobs finish."""
    status, call, sms = build("status"), build("call"), build("incoming")
    bad = build("status", params={**SAMPLES["status"], "id": "7", "ts": "x"})
    ids = enqueue(
        redis_db,
        settings,
        build_job([raw("a1", status), raw("a2", call)], settings),
        build_job([raw("b1", status), raw("b2", sms)], settings),
        build_job([raw("c1", bad)], settings),
    )
    run(settings, burst=True)

    assert db.execute("SELECT request_id FROM status_events").fetchall() == [("a1",)]
    assert db.execute("SELECT request_id FROM call_confirmations").fetchall() == [("a2",)]
    assert db.execute("SELECT request_id FROM incoming_messages").fetchall() == [("b2",)]
    transactions = db.execute(
        "SELECT xmin::text FROM status_events UNION SELECT xmin::text FROM call_confirmations "
        "UNION SELECT xmin::text FROM incoming_messages"
    ).fetchall()
    assert len(transactions) == 1
    assert db.execute("SELECT request_id, first_request_id, job_id FROM duplicate_requests").fetchall() == [
        ("b1", "a1", ids[1])
    ]
    assert db.execute("SELECT request_id, job_id FROM dead_letters").fetchall() == [("c1", ids[2])]
    queue = Queue(settings.queue, connection=redis_db, serializer=JSONSerializer)
    assert sorted(FinishedJobRegistry(queue=queue).get_job_ids()) == sorted(ids)
    assert FailedJobRegistry(queue=queue).count == 0


async def test_a_job_that_holds_no_raw_requests_fails_alone(
    settings: Settings, db: Any, redis_db: Redis
) -> None:
    """A job whose argument is not a list of raw requests, queued between two good ones, fails on
    its own; the events of the jobs before and after it are stored and those jobs finish."""
    first, poisoned, last = enqueue(
        redis_db,
        settings,
        build_job([raw("a1", build("call"))], settings),
        not_raw_requests(settings),
        build_job([raw("c1", build("incoming"))], settings),
    )
    run(settings, burst=True)

    assert db.execute("SELECT request_id FROM call_confirmations").fetchall() == [("a1",)]
    assert db.execute("SELECT request_id FROM incoming_messages").fetchall() == [("c1",)]
    statuses = {
        job_id: Job.fetch(job_id, connection=redis_db, serializer=JSONSerializer).get_status()
        for job_id in (first, poisoned, last)
    }
    assert statuses == {first: JobStatus.FINISHED, poisoned: JobStatus.FAILED, last: JobStatus.FINISHED}
    queue = Queue(settings.queue, connection=redis_db, serializer=JSONSerializer)
    assert FailedJobRegistry(queue=queue).get_job_ids() == [poisoned]
