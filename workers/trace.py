"""Where a request or an event is: the rows it stored, its copies, its dead letter, the RQ job holding it.

Everything is read from PostgreSQL and Redis, never from the logs (they mask phone numbers), and
nothing is changed: RQ's registries are read without their cleanup.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import BaseRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from smsc.exceptions import PermanentError
from smsc.protocol.fields import Kind
from smsc.protocol.raw import RawRequest
from smsc.redisconn import close, sync_client
from smsc.settings import Settings
from workers.db import connect
from workers.deadletter import DeadLetter, of_phone, of_request, translated
from workers.failures import Failure, failure_of

# At most this many RQ jobs are read when looking for a request: a backlog of 100,000 jobs must not
# turn a question into minutes of reading Redis.
MAX_SCANNED_JOBS: Final = 10_000
_FETCH_CHUNK: Final = 100

# Each event table, its kind, and the columns that tell a person which event a row is.
TABLES: Final[dict[Kind, tuple[str, tuple[str, ...]]]] = {
    Kind.STATUS: ("status_events", ("message_id", "phone", "status", "status_at", "err", "account")),
    Kind.INCOMING: ("incoming_messages", ("id", "phone", "to_phone", "sent_at", "sms_id", "account")),
    Kind.CALL: ("call_confirmations", ("phone", "called_at", "waitcall", "account")),
}


def _select(kind: Kind, where: str) -> sql.Composed:
    """The columns of `kind`'s table a trace shows, the receipt columns, and `where`."""
    table, columns = TABLES[kind]
    return sql.SQL("SELECT {columns}, request_id, received_at, stored_at FROM {table} {where}").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        table=sql.Identifier(table),
        where=sql.SQL(where),
    )


SELECT_BY_REQUEST: Final = {kind: _select(kind, "WHERE request_id = %(rid)s") for kind in TABLES}
# Newest first, one more than asked: that one only says whether there were more.
SELECT_STATUSES: Final = _select(
    Kind.STATUS,
    "WHERE message_id = %(id)s AND phone = ANY(%(phones)s) "
    "AND (%(account)s::text IS NULL OR account = %(account)s) "
    "ORDER BY status_at DESC NULLS LAST, status DESC LIMIT %(limit)s",
)
SELECT_INCOMING: Final = _select(
    Kind.INCOMING,
    "WHERE phone = ANY(%(phones)s) AND (%(id)s::bigint IS NULL OR id = %(id)s) "
    "AND (%(account)s::text IS NULL OR account = %(account)s) "
    "ORDER BY received_at DESC LIMIT %(limit)s",
)
SELECT_CALLS: Final = _select(
    Kind.CALL,
    "WHERE phone = ANY(%(phones)s) AND (%(account)s::text IS NULL OR account = %(account)s) "
    "ORDER BY called_at DESC LIMIT %(limit)s",
)
SELECT_MESSAGE: Final = """
SELECT message_id, phone, status, status_at, err, cost, updated_at, account FROM messages
WHERE message_id = %(id)s AND phone = ANY(%(phones)s) AND (%(account)s::text IS NULL OR account = %(account)s)
ORDER BY account
"""
_DUPLICATES: Final = """
SELECT request_id, first_request_id, kind, job_id, received_at, stored_at FROM duplicate_requests
"""
SELECT_DUPLICATE: Final = _DUPLICATES + "WHERE request_id = %(rid)s"
SELECT_COPIES: Final = _DUPLICATES + "WHERE first_request_id = ANY(%(rids)s) ORDER BY received_at, request_id"


@dataclass(frozen=True)
class Duplicate:
    """A request whose event was already stored by another one."""

    request_id: str
    first_request_id: str
    kind: str
    job_id: str
    received_at: datetime
    stored_at: datetime


@dataclass(frozen=True)
class Row:
    """A stored event: which, the request that stored it first, and the copies that came after."""

    kind: Kind
    table: str
    fields: dict[str, Any]
    request_id: str
    received_at: datetime
    stored_at: datetime
    copies: list[Duplicate] = field(default_factory=list)


@dataclass(frozen=True)
class HeldJob:
    """An RQ job carrying the request now: queued, started, scheduled (for a retry) or failed."""

    job_id: str
    state: str
    enqueued_at: datetime | None
    scheduled_for: datetime | None = None
    worker: str | None = None
    failure: Failure | None = None


@dataclass(frozen=True)
class Scan:
    """How much of Redis was read: per place, the jobs read and the jobs there."""

    read: dict[str, int]
    present: dict[str, int]

    @property
    def complete(self) -> bool:
        return all(self.read[place] >= self.present[place] for place in self.present)


@dataclass(frozen=True)
class RequestTrace:
    """Everything known of one request id."""

    rid: str
    rows: list[Row]
    duplicate: Duplicate | None
    original: Row | None
    dead_letter: DeadLetter | None
    jobs: list[HeldJob]
    scan: Scan

    @property
    def found(self) -> bool:
        return bool(self.rows or self.duplicate or self.dead_letter or self.jobs)


@dataclass(frozen=True)
class EventTrace:
    """The events of a phone (and a message id): each kind newest first, at most `limit` of each.

    A message id is one message per account: `messages` has the state of each.
    """

    messages: list[dict[str, Any]]
    statuses: list[Row]
    incoming: list[Row]
    calls: list[Row]
    dead_letters: list[DeadLetter]
    limit: int
    more: dict[str, bool]

    @property
    def found(self) -> bool:
        return bool(self.messages or self.statuses or self.incoming or self.calls or self.dead_letters)


def trace_request(settings: Settings, rid: str, max_jobs: int = MAX_SCANNED_JOBS) -> RequestTrace:
    """What became of request `rid`. Raises TransientError when PostgreSQL or Redis cannot be reached."""
    with translated():
        with connect(settings.database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = [
                _row(kind, found)
                for kind in TABLES
                for found in cur.execute(SELECT_BY_REQUEST[kind], {"rid": rid}).fetchall()
            ]
            dup = cur.execute(SELECT_DUPLICATE, {"rid": rid}).fetchone()
            duplicate = Duplicate(**dup) if dup else None
            original = None
            if duplicate is not None:
                kind = Kind(duplicate.kind)
                first = cur.execute(SELECT_BY_REQUEST[kind], {"rid": duplicate.first_request_id}).fetchone()
                original = _with_copies(cur, [_row(kind, first)])[0] if first else None
            rows = _with_copies(cur, rows)
            letter = of_request(cur, rid)
        jobs, scan = _jobs_holding(settings, rid, max_jobs)
    return RequestTrace(rid, rows, duplicate, original, letter, jobs, scan)


def trace_events(
    settings: Settings, phone: str, message_id: int | None, limit: int, account: str | None = None
) -> EventTrace:
    """The events of `phone`: with `message_id`, that message's statuses and state and the incoming SMS
    of that id; without, its incoming SMS and calls; of `account` only, if given, else of every one.
    Raises TransientError as trace_request does."""
    phones = phone_forms(phone)
    params = {"phones": phones, "id": message_id, "limit": limit + 1, "account": account}
    more: dict[str, bool] = {}

    def newest(cur: psycopg.Cursor[dict[str, Any]], kind: Kind, query: sql.Composed) -> list[Row]:
        found = [_row(kind, r) for r in cur.execute(query, params).fetchall()]
        more[kind.value] = len(found) > limit
        return _with_copies(cur, found[:limit])

    with translated(), connect(settings.database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        messages, statuses, calls = [], [], []
        if message_id is not None:
            messages = cur.execute(SELECT_MESSAGE, params).fetchall()
            # A history reads oldest first.
            statuses = newest(cur, Kind.STATUS, SELECT_STATUSES)[::-1]
        incoming = newest(cur, Kind.INCOMING, SELECT_INCOMING)
        if message_id is None:
            calls = newest(cur, Kind.CALL, SELECT_CALLS)
        event_ref = None if message_id is None else str(message_id)
        letters = of_phone(cur, phones, event_ref, limit + 1, account)
        more["dead_letter"] = len(letters) > limit
    return EventTrace(messages, statuses, incoming, calls, letters[:limit], limit, more)


def phone_forms(phone: str) -> list[str]:
    """The ways a number may be stored: as given, and with or without its leading `+`."""
    phone = phone.strip()
    forms = [phone]
    if phone.removeprefix("+").isdigit():
        forms.append(phone[1:] if phone.startswith("+") else "+" + phone)
    return forms


def _row(kind: Kind, found: dict[str, Any]) -> Row:
    table, columns = TABLES[kind]
    return Row(
        kind=kind,
        table=table,
        fields={name: found[name] for name in columns},
        request_id=found["request_id"],
        received_at=found["received_at"],
        stored_at=found["stored_at"],
    )


def _with_copies(cur: psycopg.Cursor[dict[str, Any]], rows: Sequence[Row]) -> list[Row]:
    """`rows` with the duplicates of each, found by the request that stored it first."""
    copies: dict[str, list[Duplicate]] = {}
    if rows:
        rids = [row.request_id for row in rows]
        for dup in cur.execute(SELECT_COPIES, {"rids": rids}).fetchall():
            copies.setdefault(dup["first_request_id"], []).append(Duplicate(**dup))
    return [replace(row, copies=copies.get(row.request_id, [])) for row in rows]


def _jobs_holding(settings: Settings, rid: str, max_jobs: int) -> tuple[list[HeldJob], Scan]:
    """RQ's jobs whose raw requests include `rid`: started, scheduled, queued (newest first), then
    failed (newest first), reading at most `max_jobs` jobs in all."""
    redis = sync_client(settings.redis_url)
    try:
        queue = Queue(settings.queue, connection=redis, serializer=JSONSerializer)
        registries: dict[str, BaseRegistry] = {
            "started": StartedJobRegistry(queue=queue),
            "scheduled": ScheduledJobRegistry(queue=queue),  # type: ignore[no-untyped-call]
        }
        failed = FailedJobRegistry(queue=queue)
        present = {
            **{state: registry.get_job_count(cleanup=False) for state, registry in registries.items()},
            "queued": queue.count,
            "failed": failed.get_job_count(cleanup=False),
        }
        read: dict[str, int] = {}
        held: list[HeldJob] = []
        budget = max_jobs
        for state in present:
            take = min(budget, present[state])
            if state == "queued":
                ids = queue.get_job_ids(offset=present[state] - take, length=take)[::-1] if take else []
            else:
                registry = failed if state == "failed" else registries[state]
                ids = registry.get_job_ids(0, take - 1, desc=True, cleanup=False) if take else []
            read[state] = len(ids)
            budget -= len(ids)
            for job in _fetched(ids, redis):
                if rid in _rids(job):
                    held.append(_held(job, state, registries["scheduled"]))
        return held, Scan(read, present)
    finally:
        close(redis)


def _fetched(ids: list[str], redis: Redis) -> Iterator[Job]:
    for start in range(0, len(ids), _FETCH_CHUNK):
        chunk = ids[start : start + _FETCH_CHUNK]
        yield from (j for j in Job.fetch_many(chunk, connection=redis, serializer=JSONSerializer) if j)


def _rids(job: Job) -> set[str]:
    """The request ids a job carries; none for a job that is not one of ours."""
    try:
        (requests,) = job.args
        return {RawRequest.from_json(item).rid for item in requests}
    except (ValueError, TypeError, PermanentError):
        return set()


def _held(job: Job, state: str, scheduled: BaseRegistry) -> HeldJob:
    when = None
    if state == "scheduled":
        assert isinstance(scheduled, ScheduledJobRegistry)
        when = scheduled.get_scheduled_time(job)
    return HeldJob(
        job_id=job.id,
        state=state,
        enqueued_at=job.enqueued_at,
        scheduled_for=when,
        worker=job.worker_name if state == "started" else None,
        # A job scheduled for a retry has failed before: why is the first question.
        failure=failure_of(job) if state in ("failed", "scheduled") else None,
    )
