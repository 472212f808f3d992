"""Writes of normalized events: one row per real event, deduplicated by PostgreSQL's unique keys.

A job's requests are written together in one transaction. If PostgreSQL refuses any of it, they are
written again one by one, each under a savepoint, so that a poisoned request only ever costs its
own row: it becomes a dead letter, and if even that is refused, a minimal dead letter that cannot be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from smsc import jsondump
from smsc.exceptions import Conflict, PermanentError, TransientError
from smsc.protocol.fields import Kind
from smsc.protocol.normalize import (
    CallConfirmation,
    Event,
    IncomingMessage,
    StatusEvent,
)
from smsc.protocol.raw import RawRequest
from smsc.text import one_line, storable
from workers.db import connect
from workers.partitions import ensure_ahead

# Columns every event table has beside the event's own fields.
_RECEIPT = ("account", "request_id", "received_at")
# An incoming SMS's content: what must be equal for a second copy of its `id` to be a duplicate.
INCOMING_CONTENT = tuple(f.name for f in fields(IncomingMessage) if f.name not in ("id", "params"))


# PostgreSQL's type of an event field, from the field's Python type. A batch travels as one JSON
# array of rows, so that each table gets one statement per job rather than one per row, and the
# driver encodes one text parameter rather than a value per column and row.
_COLUMN_TYPES: dict[Any, str] = {
    int: "bigint",
    str: "text",
    bool: "boolean",
    Decimal: "numeric",
    datetime: "timestamptz",
    timedelta: "interval",
    dict: "jsonb",
}
_RECEIPT_TYPES = {"account": "text", "request_id": "text", "received_at": "timestamptz"}


def _column_types(event: type[Event]) -> dict[str, str]:
    """Each column's type: the dataclass's fields, then the receipt columns."""
    types: dict[str, str] = {}
    for name, hint in get_type_hints(event).items():
        if get_origin(hint) in (UnionType, Union):
            (hint,) = (arg for arg in get_args(hint) if arg is not type(None))
        types[name] = _COLUMN_TYPES[get_origin(hint) or hint]
    return {**types, **_RECEIPT_TYPES}


def _rows_of(types: dict[str, str]) -> sql.Composed:
    """The rows of the JSON parameter %(rows)s, numbered `ord` in the order it gives them."""
    return sql.SQL(
        "ROWS FROM (json_to_recordset(%(rows)s::json) AS ({columns})) WITH ORDINALITY AS e"
    ).format(
        columns=sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in types.items()
        ),
    ) + sql.SQL("({}, ord)").format(sql.SQL(", ").join(map(sql.Identifier, types)))


def _insert(table: str, event: type[Event], conflict: sql.Composable) -> bytes:
    """INSERT of a batch of `event` rows plus their receipt columns, the column list derived from the
    dataclass: a new protocol field costs a field, a column and a test, never a second list here."""
    types = _column_types(event)
    columns = sql.SQL(", ").join(map(sql.Identifier, types))
    insert = sql.SQL(
        "INSERT INTO {table} AS t ({columns}) SELECT {columns} FROM {rows} ORDER BY e.ord "
    ).format(table=sql.Identifier(table), columns=columns, rows=_rows_of(types))
    # Rendered once: composing it again for every job costs more than the statement's whole batch.
    return (insert + conflict).as_bytes(None)


def _content(prefix: str) -> sql.Composed:
    return sql.SQL("({})").format(
        sql.SQL(", ").join(sql.Identifier(prefix, name) for name in INCOMING_CONTENT)
    )


# Each returns the request id of the rows it stored: the others are copies of stored events.
INSERT_STATUS_EVENT = _insert(
    "status_events",
    StatusEvent,
    sql.SQL("ON CONFLICT ON CONSTRAINT status_events_event_key DO NOTHING RETURNING t.request_id"),
)

# A copy of a stored `id` with other content is no duplicate: its id may be forged (the hash does not
# cover it). The no-op update locks the stored row, so a copy arriving concurrently is still compared,
# and returns the stored version; a new row is the one holding this request's id (a partitioned table
# has no xmax to tell). A true copy returns nothing. Rows come back by their key (account, id).
INSERT_INCOMING = _insert(
    "incoming_messages",
    IncomingMessage,
    sql.SQL(
        "ON CONFLICT ON CONSTRAINT incoming_messages_event_key DO UPDATE SET id = t.id "
        "WHERE {} IS DISTINCT FROM {} RETURNING t.account, t.id, t.request_id, {}"
    ).format(
        _content("t"),
        _content("excluded"),
        sql.SQL(", ").join(sql.Identifier("t", name) for name in INCOMING_CONTENT),
    ),
)

INSERT_CALL = _insert(
    "call_confirmations",
    CallConfirmation,
    sql.SQL("ON CONFLICT (account, phone, called_at) DO NOTHING RETURNING t.request_id"),
)


def _record_duplicate(table: str, kind: Kind, match: sql.Composable) -> sql.Composed:
    """Note a request as a copy of the row of `table` matching `match`, unless that row is its own.

    Run after the event's insert, in the same transaction: as a statement of its own it reads a
    snapshot taken after that insert, so it sees the row whether this transaction stored it, or
    another one whose commit the insert waited for. A request written again (a retried job, a
    replay) keeps its one row.
    """
    return sql.SQL(
        "INSERT INTO duplicate_requests (account, request_id, first_request_id, kind, job_id, received_at) "
        "SELECT t.account, %(request_id)s, t.request_id, {kind}, %(job_id)s, %(received_at)s "
        "FROM {table} AS t WHERE {match} AND t.request_id <> %(request_id)s "
        "ON CONFLICT (request_id) DO NOTHING"
    ).format(kind=sql.Literal(kind.value), table=sql.Identifier(table), match=match)


def _equal(*names: str, nullable: tuple[str, ...] = ()) -> sql.Composed:
    """The stored row's key equals the event's, NULL equal to NULL where a column may hold it.

    Spelled `= OR both NULL` rather than IS NOT DISTINCT FROM: on a partition key, PostgreSQL prunes
    with the former (to the event's month and the default partition), never with the latter.
    """
    return sql.SQL(" AND ").join(
        sql.SQL("({t} = {p} OR ({t} IS NULL AND {p} IS NULL))" if name in nullable else "{t} = {p}").format(
            t=sql.Identifier("t", name), p=sql.Placeholder(name)
        )
        for name in names
    )


RECORD_STATUS_DUPLICATE = _record_duplicate(
    "status_events",
    Kind.STATUS,
    _equal("account", "message_id", "phone", "status", "status_at", nullable=("status_at",)),
)
# Only an exact copy is a duplicate: one with other content is a conflict, dead-lettered instead.
RECORD_INCOMING_DUPLICATE = _record_duplicate(
    "incoming_messages", Kind.INCOMING, _equal("account", "id", *INCOMING_CONTENT, nullable=INCOMING_CONTENT)
)
RECORD_CALL_DUPLICATE = _record_duplicate(
    "call_confirmations", Kind.CALL, _equal("account", "phone", "called_at")
)

# An older status arriving late never overwrites a newer one: the row only moves forward in
# (status_at, status), and a status without any time sorts before every dated one.
UPSERT_MESSAGE = """
INSERT INTO messages AS m (account, message_id, phone, status, status_at, err, cost)
SELECT account, message_id, phone, status, status_at, err, cost
FROM ROWS FROM (json_to_recordset(%(rows)s::json) AS (
    account text, message_id bigint, phone text, status integer, status_at timestamptz, err integer,
    cost numeric
)) WITH ORDINALITY AS e(account, message_id, phone, status, status_at, err, cost, ord)
ORDER BY e.ord
ON CONFLICT (account, message_id, phone) DO UPDATE
SET status = EXCLUDED.status, status_at = EXCLUDED.status_at, err = EXCLUDED.err,
    cost = coalesce(EXCLUDED.cost, m.cost), updated_at = now()
WHERE (coalesce(EXCLUDED.status_at, '-infinity'), EXCLUDED.status)
    > (coalesce(m.status_at, '-infinity'), m.status)
"""

MESSAGE_COLUMNS = ("account", "message_id", "phone", "status", "status_at", "err", "cost")

# A replay that fails again re-arms the same row, counting the attempt.
UPSERT_DEAD_LETTER = """
INSERT INTO dead_letters (
    account, request_id, job_id, kind, event_ref, phone, error_class, reason, raw, received_at
) VALUES (
    %(account)s, %(request_id)s, %(job_id)s, %(kind)s, %(event_ref)s, %(phone)s, %(error_class)s,
    %(reason)s, %(raw)s, %(received_at)s
)
ON CONFLICT (request_id) DO UPDATE
SET job_id = EXCLUDED.job_id, error_class = EXCLUDED.error_class, reason = EXCLUDED.reason,
    attempts = dead_letters.attempts + 1, failed_at = now(), replayed_at = NULL, replay_job_id = NULL
"""

PURGE_DEAD_LETTERS = "DELETE FROM dead_letters WHERE failed_at < now() - make_interval(days => %(days)s)"
PURGE_DUPLICATES = "DELETE FROM duplicate_requests WHERE stored_at < now() - make_interval(days => %(days)s)"

# SQLSTATE classes a retry can get past: connection, resources, serialization, deadlock, timeout.
_TRANSIENT_SQLSTATES = ("08", "53", "57", "40001", "40P01", "55P03")


# What a write can raise for one request's own content: PostgreSQL's refusal, or text psycopg cannot
# even encode (a lone surrogate). Anything else is a bug and fails the job, which RQ keeps.
_REFUSALS = (psycopg.Error, ValueError)


@dataclass(frozen=True)
class Pending:
    """One raw request of a job: the event read from it, or why it could not be read."""

    raw: RawRequest
    event: Event | None
    error: PermanentError | None = None
    ids: dict[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened to one request: a new row, a copy of a stored one, a dead letter, or a conflict
    (an incoming SMS whose `id` is stored with other content; it is dead-lettered too)."""

    pending: Pending
    result: str  # "stored" | "duplicate" | "dead_letter" | "conflict"
    reason: str | None = None


@dataclass(frozen=True)
class Purged:
    """How many rows one purge deleted."""

    dead_letters: int
    duplicates: int


class Store:
    """Keeps one connection for the life of the worker and reopens it when it breaks."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def save(self, items: Sequence[Pending], job_id: str | Sequence[str]) -> list[Outcome]:
        """Store the events of a job (or of jobs dequeued together: then `job_id` names each
        request's) and dead-letter the requests that cannot be stored.

        Raises TransientError when a retry may help; a request's own content never fails the job.
        """
        job_ids = [job_id] * len(items) if isinstance(job_id, str) else list(job_id)
        with self._translated():
            outcomes = self._together(items, job_ids)
            if outcomes is None:
                outcomes = self._apart(items, job_ids)
            conflicts = [(o, j) for o, j in zip(outcomes, job_ids, strict=True) if o.result == "conflict"]
            if conflicts:
                aside = [
                    Pending(o.pending.raw, None, Conflict(o.reason or ""), o.pending.ids)
                    for o, _ in conflicts
                ]
                self._apart(aside, [j for _, j in conflicts])
            return outcomes

    def purge(self, days: int) -> Purged:
        """Delete dead letters and records of duplicates older than `days`; return how many."""
        with self._translated(), self._transaction(pipelined=False) as conn, conn.cursor() as cur:
            cur.execute(PURGE_DEAD_LETTERS, {"days": days})
            dead_letters = cur.rowcount
            cur.execute(PURGE_DUPLICATES, {"days": days})
            return Purged(dead_letters=dead_letters, duplicates=cur.rowcount)

    def make_partitions(self) -> list[str]:
        """Make this month's and the next months' partitions where missing; return those made."""
        with self._translated(), self._transaction(pipelined=False) as conn:
            return ensure_ahead(conn)

    def _together(self, items: Sequence[Pending], job_ids: Sequence[str]) -> list[Outcome] | None:
        """The whole job in one pipelined transaction; None if PostgreSQL refused any of it."""
        try:
            with self._transaction(pipelined=True) as conn:
                outcomes = _write(conn, items, job_ids)
            return outcomes
        except _REFUSALS as e:
            _raise_if_transient(e)
            return None

    def _apart(self, items: Sequence[Pending], job_ids: Sequence[str]) -> list[Outcome]:
        """Each request under its own savepoint, in one transaction: a refused row rolls back alone."""
        with self._transaction(pipelined=False) as conn:
            return [_isolated(conn, item, job_id) for item, job_id in zip(items, job_ids, strict=True)]

    @contextmanager
    def _transaction(self, *, pipelined: bool = True) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A transaction; pipelined, BEGIN goes with the block's first statements and COMMIT with
        its last ones, and results (and errors) arrive when the block reads them or ends."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self._url)
        conn = self._conn
        if not pipelined:
            with conn.transaction():
                yield conn
            return
        # Not psycopg's transaction(): in a pipeline it waits for the server at BEGIN, and twice more
        # around COMMIT, where this costs the block's own round trips and one to commit.
        with conn.pipeline():
            conn.execute(b"BEGIN")
            try:
                yield conn
            except BaseException:
                if not conn.broken:
                    conn.rollback()
                raise
            conn.execute(b"COMMIT")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Driver errors leave as TransientError (retry) or PermanentError (the job fails)."""
        try:
            yield
        except psycopg.Error as e:
            if self._conn is not None and self._conn.broken:
                self.close()
            if _is_transient(e):
                raise TransientError(f"database: {type(e).__name__}: {one_line(str(e))}") from e
            raise PermanentError(
                f"database refused a dead letter: {type(e).__name__}: {one_line(str(e))}"
            ) from e


def _is_transient(e: BaseException) -> bool:
    return isinstance(e, psycopg.OperationalError) or (
        isinstance(e, psycopg.Error) and (e.sqlstate or "").startswith(_TRANSIENT_SQLSTATES)
    )


def _raise_if_transient(e: BaseException) -> None:
    if _is_transient(e):
        raise e


def _isolated(conn: psycopg.Connection[tuple[Any, ...]], item: Pending, job_id: str) -> Outcome:
    """Write one request under a savepoint; if refused, its dead letter; if that is refused too, a
    minimal dead letter of plain ASCII and the raw request, which nothing in it can make fail."""
    try:
        return _in_savepoint(conn, item, job_id)
    except _REFUSALS as e:
        _raise_if_transient(e)
        refusal = e
    if item.event is not None:
        reason = f"database refused the row: {type(refusal).__name__}: {refusal}"
        try:
            return _in_savepoint(
                conn, Pending(item.raw, None, PermanentError(reason), item.ids), job_id, refusal
            )
        except _REFUSALS as e:
            _raise_if_transient(e)
            refusal = e
    with conn.transaction():
        conn.execute(UPSERT_DEAD_LETTER, _minimal_row(item, job_id, refusal))
    return Outcome(item, "dead_letter", f"dead letter refused: {type(refusal).__name__}")


def _in_savepoint(
    conn: psycopg.Connection[tuple[Any, ...]], item: Pending, job_id: str, refusal: Exception | None = None
) -> Outcome:
    with conn.transaction():
        return _write(conn, [item], [job_id], type(refusal).__name__ if refusal else "")[0]


def _write(
    conn: psycopg.Connection[tuple[Any, ...]],
    items: Sequence[Pending],
    job_ids: Sequence[str],
    error_class: str = "",
) -> list[Outcome]:
    """Write a batch: one statement per table, rows in key order; then note the copies among them.

    In a pipeline, the writes go in one round trip and the copies' lookups (and the COMMIT) in a
    second. The same key order in every transaction keeps two workers writing copies of the same
    events from deadlocking on each other's unique-index entries.
    """
    outcomes: dict[int, Outcome] = {}
    dead = sorted((i for i, item in enumerate(items) if item.event is None), key=lambda i: items[i].raw.rid)
    if dead:
        conn.cursor().executemany(
            UPSERT_DEAD_LETTER, [_dead_row(items[i], job_ids[i], error_class) for i in dead]
        )
        for i in dead:
            error = items[i].error or PermanentError("unknown")
            outcomes[i] = Outcome(items[i], "dead_letter", one_line(error.reason))
    rows = {i: _row(item) for i, item in enumerate(items) if item.event is not None}
    statuses = sorted(
        (i for i in rows if isinstance(items[i].event, StatusEvent)), key=lambda i: _status_key(rows[i])
    )
    incoming = sorted(
        (i for i in rows if isinstance(items[i].event, IncomingMessage)), key=lambda i: _incoming_key(rows[i])
    )
    calls = sorted(
        (i for i in rows if isinstance(items[i].event, CallConfirmation)), key=lambda i: _call_key(rows[i])
    )
    inserted: list[tuple[list[int], psycopg.Cursor[tuple[Any, ...]]]] = []
    for query, group, key in (
        (INSERT_STATUS_EVENT, statuses, _status_key),
        (INSERT_INCOMING, incoming, _incoming_key),
        (INSERT_CALL, calls, _call_key),
    ):
        for batch in _rounds(group, rows, key, by_request=True):
            cur = conn.cursor()
            cur.execute(query, _json_rows(rows, batch))
            inserted.append((batch, cur))
    by_message = sorted(statuses, key=lambda i: _message_key(rows[i]))
    for batch in _rounds(by_message, rows, _message_key, by_request=False):
        conn.execute(UPSERT_MESSAGE, _json_rows(rows, batch, MESSAGE_COLUMNS))
    copies: list[int] = []
    for batch, cur in inserted:
        returned = {_returned_key(items[batch[0]], r): r for r in cur.fetchall()}
        for i in batch:
            got = returned.get(_batch_key(items[i], rows[i]))
            outcomes[i] = _outcome(items[i], rows[i], got)
            if got is None:
                copies.append(i)
    # A statement of its own after the inserts, so that its snapshot sees the rows of another
    # transaction whose commit an insert waited for; in request id order, so that two jobs carrying
    # the same copies take the same locks in the same order.
    for lookup, kind in (
        (RECORD_STATUS_DUPLICATE, StatusEvent),
        (RECORD_INCOMING_DUPLICATE, IncomingMessage),
        (RECORD_CALL_DUPLICATE, CallConfirmation),
    ):
        group = sorted(
            (i for i in copies if isinstance(items[i].event, kind)), key=lambda i: items[i].raw.rid
        )
        if group:
            conn.cursor().executemany(lookup, [{**rows[i], "job_id": job_ids[i]} for i in group])
    return [outcomes[i] for i in range(len(items))]


def _rounds(
    group: list[int],
    rows: dict[int, dict[str, Any]],
    key: Callable[[dict[str, Any]], Any],
    *,
    by_request: bool,
) -> list[list[int]]:
    """Split a key-ordered group into batches in which no key (nor request id) comes twice.

    One statement cannot insert and then update the same row (PostgreSQL refuses it), and the second
    copy of an event within a job must find the first one stored, as it would in another job.
    """
    seen: list[set[Any]] = []
    batches: list[list[int]] = []
    for i in group:
        marks = {("key", key(rows[i]))}
        if by_request:
            marks.add(("request", rows[i]["request_id"]))
        n = next((n for n, taken in enumerate(seen) if not marks & taken), len(seen))
        if n == len(seen):
            seen.append(set())
            batches.append([])
        seen[n] |= marks
        batches[n].append(i)
    return batches


def _json_rows(
    rows: dict[int, dict[str, Any]], batch: list[int], columns: Sequence[str] | None = None
) -> dict[str, str]:
    """The parameter of a batch statement: its rows as one JSON array, in the batch's order."""
    # A value orjson refuses (a lone surrogate, an integer past 64 bits) is written by the standard
    # library: PostgreSQL then refuses the row, which is dead-lettered, as before.
    if columns is not None:
        chosen = [{name: rows[i][name] for name in columns} for i in batch]
    else:
        chosen = [rows[i] for i in batch]
    return {"rows": jsondump.dumps(chosen, default=_json).decode()}


def _json(value: Any) -> Any:
    """A value as PostgreSQL reads it back from JSON into its column's type, exactly."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    raise TypeError(f"{type(value).__name__} has no JSON form here")


def _batch_key(item: Pending, row: dict[str, Any]) -> Any:
    """What identifies a request's returned row within one batch: for an incoming SMS its key (the
    row returned may be the stored one, holding another request's id), else its request id."""
    if isinstance(item.event, IncomingMessage):
        return (row["account"], row["id"])
    return row["request_id"]


def _returned_key(item: Pending, returned: tuple[Any, ...]) -> Any:
    if isinstance(item.event, IncomingMessage):
        return (returned[0], returned[1])
    return returned[0]


def _outcome(item: Pending, row: dict[str, Any], returned: tuple[Any, ...] | None) -> Outcome:
    if returned is None:
        return Outcome(item, "duplicate")
    if isinstance(item.event, IncomingMessage) and returned[2] != row["request_id"]:
        return Outcome(item, "conflict", _conflict_reason(row, returned[2], returned[3:]))
    return Outcome(item, "stored")


def _conflict_reason(row: dict[str, Any], stored_by: str, stored: Sequence[Any]) -> str:
    differ = [
        f"{name} stored {_shown(old)}, here {_shown(row[name])}"
        for name, old in zip(INCOMING_CONTENT, stored, strict=True)
        if old != row[name]
    ]
    return one_line(
        f"incoming SMS id {row['id']} is already stored with other content (request {stored_by}): "
        + "; ".join(differ)
    )


def _shown(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _row(item: Pending) -> dict[str, Any]:
    event = item.event
    assert event is not None
    # The event's fields as they are (params a plain dict, for the rows' JSON), then the receipt.
    row = dict(vars(event))
    row["account"] = item.raw.account
    row["request_id"] = item.raw.rid
    row["received_at"] = datetime.fromtimestamp(item.raw.received_at, UTC)
    return row


def _dead_row(item: Pending, job_id: str, error_class: str) -> dict[str, Any]:
    """A dead letter of nothing but storable text, whatever bytes arrived."""
    error = item.error or PermanentError("unknown")
    ids = item.ids or {}
    kept = {name: storable(ids[name]) if ids.get(name) else None for name in ("kind", "id", "phone")}
    return {
        **_minimal_row(item, job_id, error),
        "kind": kept["kind"],
        "event_ref": kept["id"],
        "phone": kept["phone"],
        "error_class": storable(error_class or type(error).__name__),
        "reason": one_line(error.reason),
    }


def _minimal_row(item: Pending, job_id: str, refusal: BaseException) -> dict[str, Any]:
    """The request id, the raw request as stored and the reason class: what is left when PostgreSQL
    refused the full dead letter."""
    name = type(refusal).__name__
    raw = {k: storable(v) if isinstance(v, str) else v for k, v in item.raw.to_json().items()}
    return {
        "account": item.raw.account,
        "request_id": storable(item.raw.rid),
        "job_id": storable(job_id),
        "kind": None,
        "event_ref": None,
        "phone": None,
        "error_class": name,
        "reason": f"dead letter refused: {name}",
        "raw": Jsonb(raw),
        "received_at": datetime.fromtimestamp(item.raw.received_at, UTC),
    }


def _incoming_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["account"], row["id"])


def _call_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["account"], row["phone"], row["called_at"])


def _message_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["account"], row["message_id"], row["phone"])


def _status_key(row: dict[str, Any]) -> tuple[Any, ...]:
    at = row["status_at"]
    return (
        row["account"],
        row["message_id"],
        row["phone"],
        row["status"],
        at is not None,
        at.timestamp() if at else 0.0,
    )
