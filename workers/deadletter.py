"""Dead letters: what could not be stored, why, and replaying it after a fix.

They live in two places, on purpose:
- PostgreSQL `dead_letters`: requests that failed for good (undecodable, a value that cannot be
  normalized, a row PostgreSQL refuses), written in the same transaction as their neighbours.
- RQ's failed job registry in Redis: jobs whose transient failures (database down) outlasted
  every retry. PostgreSQL was likely unreachable then, so they stay where they already are.
A replay puts the raw requests on the queue again as a new job; events already stored are
deduplicated like any copy, so replaying twice is harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from smsc.exceptions import PermanentError
from smsc.protocol.decode import peek
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.settings import Settings
from workers.db import connect

SELECT_DEAD_LETTERS = """
SELECT dead_letter_id, job_id, kind, event_ref, phone, error_class, reason, attempts, raw,
       first_failed_at, failed_at, replayed_at
FROM dead_letters
WHERE (%(include_replayed)s OR replayed_at IS NULL)
  AND (%(reason)s::text IS NULL OR position(lower(%(reason)s) IN lower(reason)) > 0)
  AND (%(error_class)s::text IS NULL OR error_class = %(error_class)s)
  AND (%(job)s::text IS NULL OR job_id = %(job)s)
  AND (%(id)s::bigint IS NULL OR dead_letter_id = %(id)s)
  AND (%(since)s::timestamptz IS NULL OR failed_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR failed_at < %(until)s)
ORDER BY dead_letter_id
"""

MARK_REPLAYED = """
UPDATE dead_letters SET replayed_at = now(), replay_job_id = %(replay_job_id)s
WHERE dead_letter_id = ANY(%(ids)s)
"""

# How many requests one replay job carries.
REPLAY_BATCH = 100

# The last line of a traceback names the exception: `smsc.exceptions.TransientError: database: ...`.
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Z]\w*)(?::|$)")
# RQ's own words for a job whose worker died: `Moved to FailedJobRegistry, due to AbandonedJobError`.
_DUE_TO = re.compile(r"due to (\w+)")


@dataclass(frozen=True)
class Filter:
    """Which dead letters to list or replay; every given criterion must hold."""

    reason: str | None = None
    error_class: str | None = None
    job: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    id: str | None = None
    include_replayed: bool = False


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: a PostgreSQL row (numeric id) or a failed RQ job (its job id)."""

    id: str
    where: str
    job_id: str
    error_class: str
    reason: str
    attempts: int
    failed_at: datetime | None
    first_failed_at: datetime | None
    requests: list[RawRequest]
    replayed_at: datetime | None = None
    ids: list[dict[str, str]] = field(default_factory=list)


def find(settings: Settings, flt: Filter) -> list[DeadLetter]:
    """Every dead letter matching `flt`, PostgreSQL's first, then Redis's."""
    return [*_from_postgres(settings, flt), *_from_redis(settings, flt)]


def replay(settings: Settings, flt: Filter) -> list[tuple[DeadLetter, str]]:
    """Requeue the raw requests of every dead letter matching `flt`; return each with its new job id."""
    replayed: list[tuple[DeadLetter, str]] = []
    redis = Redis.from_url(settings.redis_url)
    letters = _from_postgres(settings, flt)
    with connect(settings.database_url) as conn:
        for start in range(0, len(letters), REPLAY_BATCH):
            chunk = letters[start : start + REPLAY_BATCH]
            job = build_job([r for letter in chunk for r in letter.requests], settings)
            with redis.pipeline(transaction=True) as pipe:
                stage_job(pipe, job, settings)
                pipe.execute()
            # Enqueued first, marked second: a crash in between only means a harmless second replay.
            conn.execute(MARK_REPLAYED, {"replay_job_id": job.id, "ids": [int(x.id) for x in chunk]})
            replayed += [(letter, job.id) for letter in chunk]
    registry = _failed_registry(settings, redis)
    for letter in _from_redis(settings, flt, redis):
        if not letter.requests:
            continue  # not a job of ours: nothing that could be stored
        failed = Job.fetch(letter.job_id, connection=redis, serializer=JSONSerializer)
        job = build_job(letter.requests, settings)
        # One MULTI/EXEC: the new job is queued exactly when the failed one leaves the registry.
        with redis.pipeline(transaction=True) as pipe:
            stage_job(pipe, job, settings)
            registry.remove(failed, pipeline=pipe, delete_job=True)
            pipe.execute()
        replayed.append((letter, job.id))
    redis.close()
    return replayed


def _from_postgres(settings: Settings, flt: Filter) -> list[DeadLetter]:
    if flt.id is not None and not flt.id.isdigit():
        return []
    params = {
        "include_replayed": flt.include_replayed,
        "reason": flt.reason,
        "error_class": flt.error_class,
        "job": flt.job,
        "id": int(flt.id) if flt.id is not None else None,
        "since": flt.since,
        "until": flt.until,
    }
    with connect(settings.database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(SELECT_DEAD_LETTERS, params).fetchall()
    return [
        DeadLetter(
            id=str(row["dead_letter_id"]),
            where="postgres",
            job_id=row["job_id"],
            error_class=row["error_class"],
            reason=row["reason"],
            attempts=row["attempts"],
            failed_at=row["failed_at"],
            first_failed_at=row["first_failed_at"],
            requests=[RawRequest.from_json(row["raw"])],
            replayed_at=row["replayed_at"],
            # What the worker could read of the request when it dead-lettered it.
            ids=[
                {
                    k: v
                    for k, v in (("kind", row["kind"]), ("id", row["event_ref"]), ("phone", row["phone"]))
                    if v
                }
            ],
        )
        for row in rows
    ]


def _stored_ids(row: dict[str, Any]) -> dict[str, str]:
    """What the worker could read of the request when it dead-lettered it."""
    named = {"kind": row["kind"], "id": row["event_ref"], "phone": row["phone"]}
    return {k: v for k, v in named.items() if v}


def _from_redis(settings: Settings, flt: Filter, redis: Redis | None = None) -> list[DeadLetter]:
    client = redis or Redis.from_url(settings.redis_url)
    try:
        ids = _failed_registry(settings, client).get_job_ids()
        jobs = Job.fetch_many(ids, connection=client, serializer=JSONSerializer)
        letters = [_job_letter(job, settings) for job in jobs if job is not None]
    finally:
        if redis is None:
            client.close()
    return [letter for letter in letters if _matches(letter, flt)]


def _job_letter(job: Job, settings: Settings) -> DeadLetter:
    result = job.latest_result()
    error_class, reason = _exception(
        (result.exc_string if result is not None else None) or job.exc_info or ""
    )
    try:
        (args,) = job.args
        requests = [RawRequest.from_json(item) for item in args]
    except (ValueError, TypeError, PermanentError):
        requests = []
    return DeadLetter(
        id=job.id,
        where="redis",
        job_id=job.id,
        error_class=error_class,
        reason=reason,
        # retries_left counts down from the number of retry intervals the job was given.
        attempts=len(job.retry_intervals or []) - (job.retries_left or 0) + 1,
        failed_at=job.ended_at,
        first_failed_at=job.enqueued_at,
        requests=requests,
        ids=[peek(r.body, r.query, r.content_type, settings.default_charset) for r in requests],
    )


def _exception(text: str) -> tuple[str, str]:
    """The exception class and message at the end of an RQ failure text."""
    lines = text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION_LINE.match(lines[i])
        if match:
            message = " ".join(line.strip() for line in lines[i:])
            return match.group(1), message.split(": ", 1)[-1] if ": " in message else message
    due = _DUE_TO.search(text)
    return (due.group(1) if due else "unknown"), (lines[-1] if lines else "unknown")


def _matches(letter: DeadLetter, flt: Filter) -> bool:
    failed_at = letter.failed_at
    return (
        (flt.reason is None or flt.reason.lower() in letter.reason.lower())
        and (flt.error_class is None or flt.error_class == letter.error_class)
        and (flt.job is None or flt.job == letter.job_id)
        and (flt.id is None or flt.id == letter.id)
        and (flt.since is None or (failed_at is not None and failed_at >= flt.since))
        and (flt.until is None or (failed_at is not None and failed_at < flt.until))
    )


def _failed_registry(settings: Settings, redis: Redis) -> FailedJobRegistry:
    queue = Queue(settings.queue, connection=redis, serializer=JSONSerializer)
    return FailedJobRegistry(queue=queue)
