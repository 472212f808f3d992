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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from smsc.exceptions import PermanentError, TransientError
from smsc.protocol.decode import peek
from smsc.protocol.raw import RawRequest
from smsc.queue import build_job, stage_job
from smsc.redisconn import close, sync_client
from smsc.settings import Settings
from smsc.text import one_line
from workers.db import connect
from workers.failures import failure_of

_COLUMNS = """
SELECT dead_letter_id, job_id, kind, event_ref, phone, error_class, reason, attempts, raw,
       first_failed_at, failed_at, replayed_at
FROM dead_letters
"""

_MATCHING = """
WHERE (%(include_replayed)s OR replayed_at IS NULL)
  AND (%(reason)s::text IS NULL OR position(lower(%(reason)s) IN lower(reason)) > 0)
  AND (%(error_class)s::text IS NULL OR error_class = %(error_class)s)
  AND (%(job)s::text IS NULL OR job_id = %(job)s)
  AND (%(id)s::bigint IS NULL OR dead_letter_id = %(id)s)
  AND (%(since)s::timestamptz IS NULL OR failed_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR failed_at < %(until)s)
  AND (%(account)s::text IS NULL OR account = %(account)s)
"""

SELECT_DEAD_LETTERS = _COLUMNS + _MATCHING + "ORDER BY dead_letter_id"
SELECT_OF_REQUEST = _COLUMNS + "WHERE request_id = %(rid)s"
SELECT_OF_PHONE = (
    _COLUMNS
    + """WHERE phone = ANY(%(phones)s) AND (%(event_ref)s::text IS NULL OR event_ref = %(event_ref)s)
  AND (%(account)s::text IS NULL OR account = %(account)s)
ORDER BY failed_at DESC LIMIT %(limit)s
"""
)

# The next chunk to replay, locked until its transaction ends. Rows a worker is re-dead-lettering
# at this moment are skipped, not waited for: a replay never waits, so it never deadlocks.
LOCK_CHUNK = (
    _COLUMNS
    + _MATCHING
    + """  AND dead_letter_id > %(after)s
ORDER BY dead_letter_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
)

MARK_REPLAYED = """
UPDATE dead_letters SET replayed_at = now(), replay_job_id = %(replay_job_id)s
WHERE dead_letter_id = ANY(%(ids)s)
"""

# How many requests one replay job carries.
REPLAY_BATCH = 100

# The id of a PostgreSQL dead letter: a positive bigint, in ASCII digits.
_ROW_ID = re.compile(r"[0-9]{1,19}")
BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class Filter:
    """Which dead letters to list or replay; every given criterion must hold."""

    reason: str | None = None
    error_class: str | None = None
    job: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    id: str | None = None
    # A failed RQ job matches if any of its requests is of this account, and is replayed whole.
    account: str | None = None
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


@dataclass(frozen=True)
class Replayed:
    """One replay job: the dead letters it carries, and why they are not marked replayed, if not."""

    letters: list[DeadLetter]
    job_id: str
    unmarked: str | None = None


def row_id(text: str) -> int | None:
    """`text` as the id of a PostgreSQL dead letter, or None if it cannot be one."""
    if not _ROW_ID.fullmatch(text):
        return None
    value = int(text)
    return value if value <= BIGINT_MAX else None


def find(settings: Settings, flt: Filter) -> list[DeadLetter]:
    """Every dead letter matching `flt`, PostgreSQL's first, then Redis's.

    Raises TransientError when PostgreSQL or Redis cannot be reached.
    """
    with translated():
        return [*_from_postgres(settings, flt), *_from_redis(settings, flt)]


def replay(settings: Settings, flt: Filter) -> Iterator[Replayed]:
    """Requeue the raw requests of every dead letter matching `flt`, yielding each new job.

    Raises TransientError, before queueing the chunk at hand, when PostgreSQL or Redis cannot be
    reached. Dead letters whose job is queued but that cannot be marked replayed are yielded with
    the reason: replaying them again is harmless.
    """
    redis = sync_client(settings.redis_url)
    try:
        with translated():
            yield from _replay_rows(settings, flt, redis)
            yield from _replay_jobs(settings, flt, redis)
    finally:
        close(redis)


def of_request(cur: psycopg.Cursor[dict[str, Any]], rid: str) -> DeadLetter | None:
    """The PostgreSQL dead letter of request `rid`, replayed or not."""
    row = cur.execute(SELECT_OF_REQUEST, {"rid": rid}).fetchone()
    return _row_letter(row) if row else None


def of_phone(
    cur: psycopg.Cursor[dict[str, Any]],
    phones: list[str],
    event_ref: str | None,
    limit: int,
    account: str | None = None,
) -> list[DeadLetter]:
    """The newest PostgreSQL dead letters whose phone (as read) is one of `phones`, replayed or not;
    of `account` only, if given."""
    params = {"phones": phones, "event_ref": event_ref, "limit": limit, "account": account}
    return [_row_letter(row) for row in cur.execute(SELECT_OF_PHONE, params).fetchall()]


def _replay_rows(settings: Settings, flt: Filter, redis: Redis) -> Iterator[Replayed]:
    """One transaction per chunk, in dead_letter_id order: lock, enqueue, mark, commit."""
    if not _in_postgres(flt):
        return
    after = 0
    while True:
        queued: Job | None = None
        unmarked = None
        with connect(settings.database_url) as conn:
            try:
                with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                    params = {**_params(flt), "after": after, "limit": REPLAY_BATCH}
                    letters = [_row_letter(row) for row in cur.execute(LOCK_CHUNK, params).fetchall()]
                    if not letters:
                        return
                    job = build_job([r for letter in letters for r in letter.requests], settings)
                    with redis.pipeline(transaction=True) as pipe:
                        stage_job(pipe, job, settings)
                        pipe.execute()
                    queued = job
                    ids = [int(letter.id) for letter in letters]
                    cur.execute(MARK_REPLAYED, {"replay_job_id": job.id, "ids": ids})
            except psycopg.Error as e:
                if queued is None:
                    raise
                unmarked = one_line(f"{type(e).__name__}: {e}")
        after = int(letters[-1].id)
        yield Replayed(letters, queued.id, unmarked)


def _replay_jobs(settings: Settings, flt: Filter, redis: Redis) -> Iterator[Replayed]:
    """Each failed RQ job of ours is replaced by a new job, in one MULTI/EXEC."""
    for letter, failed in _failed_jobs(settings, flt, redis):
        if not letter.requests:
            continue  # not a job of ours: nothing that could be stored
        job = build_job(letter.requests, settings)
        with redis.pipeline(transaction=True) as pipe:
            stage_job(pipe, job, settings)
            # Given the pipeline, RQ deletes the job and its registry entries inside the MULTI.
            failed.delete(pipeline=pipe)
            pipe.execute()
        yield Replayed([letter], job.id)


def _from_postgres(settings: Settings, flt: Filter) -> list[DeadLetter]:
    if not _in_postgres(flt):
        return []
    with connect(settings.database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(SELECT_DEAD_LETTERS, _params(flt)).fetchall()
    return [_row_letter(row) for row in rows]


def _in_postgres(flt: Filter) -> bool:
    """False when `flt` names a dead letter by an id that only Redis can hold (an RQ job id)."""
    return flt.id is None or row_id(flt.id) is not None


def _params(flt: Filter) -> dict[str, Any]:
    return {
        "include_replayed": flt.include_replayed,
        "reason": flt.reason,
        "error_class": flt.error_class,
        "job": flt.job,
        "id": row_id(flt.id) if flt.id is not None else None,
        "since": flt.since,
        "until": flt.until,
        "account": flt.account,
    }


def _row_letter(row: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
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
        ids=[_stored_ids(row)],
    )


def _stored_ids(row: dict[str, Any]) -> dict[str, str]:
    """What the worker could read of the request when it dead-lettered it."""
    named = {"kind": row["kind"], "id": row["event_ref"], "phone": row["phone"]}
    return {k: v for k, v in named.items() if v}


def _from_redis(settings: Settings, flt: Filter) -> list[DeadLetter]:
    redis = sync_client(settings.redis_url)
    try:
        return [letter for letter, _ in _failed_jobs(settings, flt, redis)]
    finally:
        close(redis)


def _failed_jobs(settings: Settings, flt: Filter, redis: Redis) -> list[tuple[DeadLetter, Job]]:
    queue = Queue(settings.queue, connection=redis, serializer=JSONSerializer)
    ids = FailedJobRegistry(queue=queue).get_job_ids()
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)
    pairs = [(_job_letter(job, settings), job) for job in jobs if job is not None]
    return [(letter, job) for letter, job in pairs if _matches(letter, flt)]


def _job_letter(job: Job, settings: Settings) -> DeadLetter:
    failure = failure_of(job)
    try:
        (args,) = job.args
        requests = [RawRequest.from_json(item) for item in args]
    except (ValueError, TypeError, PermanentError):
        requests = []
    return DeadLetter(
        id=job.id,
        where="redis",
        job_id=job.id,
        error_class=failure.error_class,
        reason=failure.reason,
        attempts=failure.attempts,
        failed_at=failure.failed_at,
        first_failed_at=failure.first_failed_at,
        requests=requests,
        ids=[peek(r.body, r.query, r.content_type, settings.default_charset) for r in requests],
    )


def _matches(letter: DeadLetter, flt: Filter) -> bool:
    failed_at = letter.failed_at
    return (
        (flt.reason is None or flt.reason.lower() in letter.reason.lower())
        and (flt.error_class is None or flt.error_class == letter.error_class)
        and (flt.job is None or flt.job == letter.job_id)
        and (flt.id is None or flt.id == letter.id)
        and (flt.since is None or (failed_at is not None and failed_at >= flt.since))
        and (flt.until is None or (failed_at is not None and failed_at < flt.until))
        and (flt.account is None or any(r.account == flt.account for r in letter.requests))
    )


@contextmanager
def translated() -> Iterator[None]:
    """Driver errors leave as TransientError: the operator's command (dead-letter, replay, trace) can
    say so in one line."""
    try:
        yield
    except psycopg.Error as e:
        raise TransientError(one_line(f"PostgreSQL: {type(e).__name__}: {e}")) from e
    except RedisError as e:
        raise TransientError(one_line(f"Redis: {type(e).__name__}: {e}")) from e
