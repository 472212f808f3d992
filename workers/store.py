"""Writes of normalized events: one row per real event, deduplicated by PostgreSQL's unique keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from smsc.exceptions import PermanentError, TransientError
from smsc.protocol.normalize import (
    CallConfirmation,
    Event,
    IncomingMessage,
    StatusEvent,
)
from smsc.protocol.raw import RawRequest
from workers.db import connect

INSERT_STATUS_EVENT = """
INSERT INTO status_events (
    message_id, phone, status, status_at, ts, status_time, err, syserr, cnt, type, cost,
    flag, flag_message_type, flag_second_balance, flag_template, flag_template_kind,
    sender, dtmf, cmt, overtime, imsi, msc, mcc, mnc, cn, net, rcn, rnet,
    calltime, callmenu, ringtime, params, request_id, received_at
) VALUES (
    %(message_id)s, %(phone)s, %(status)s, %(status_at)s, %(ts)s, %(status_time)s, %(err)s,
    %(syserr)s, %(cnt)s, %(type)s, %(cost)s, %(flag)s, %(flag_message_type)s,
    %(flag_second_balance)s, %(flag_template)s, %(flag_template_kind)s, %(sender)s, %(dtmf)s,
    %(cmt)s, %(overtime)s, %(imsi)s, %(msc)s, %(mcc)s, %(mnc)s, %(cn)s, %(net)s, %(rcn)s,
    %(rnet)s, %(calltime)s, %(callmenu)s, %(ringtime)s, %(params)s, %(request_id)s,
    %(received_at)s
)
ON CONFLICT ON CONSTRAINT status_events_event_key DO NOTHING
RETURNING 1
"""

# An older status arriving late never overwrites a newer one: the row only moves forward in
# (status_at, status), and a status without any time sorts before every dated one.
UPSERT_MESSAGE = """
INSERT INTO messages AS m (message_id, phone, status, status_at, err, cost)
VALUES (%(message_id)s, %(phone)s, %(status)s, %(status_at)s, %(err)s, %(cost)s)
ON CONFLICT (message_id, phone) DO UPDATE
SET status = EXCLUDED.status, status_at = EXCLUDED.status_at, err = EXCLUDED.err,
    cost = coalesce(EXCLUDED.cost, m.cost), updated_at = now()
WHERE (coalesce(EXCLUDED.status_at, '-infinity'), EXCLUDED.status)
    > (coalesce(m.status_at, '-infinity'), m.status)
"""

INSERT_INCOMING = """
INSERT INTO incoming_messages (
    id, sms_id, phone, to_phone, text, smsc, sent_at, server_received_at, params,
    request_id, received_at
) VALUES (
    %(id)s, %(sms_id)s, %(phone)s, %(to_phone)s, %(text)s, %(smsc)s, %(sent_at)s,
    %(server_received_at)s, %(params)s, %(request_id)s, %(received_at)s
)
ON CONFLICT (id) DO NOTHING
RETURNING 1
"""

INSERT_CALL = """
INSERT INTO call_confirmations (
    phone, called_at, waitcall, calltime, callmenu, ringtime, params, request_id, received_at
) VALUES (
    %(phone)s, %(called_at)s, %(waitcall)s, %(calltime)s, %(callmenu)s, %(ringtime)s,
    %(params)s, %(request_id)s, %(received_at)s
)
ON CONFLICT (phone, called_at) DO NOTHING
RETURNING 1
"""

# A replay that fails again re-arms the same row, counting the attempt.
UPSERT_DEAD_LETTER = """
INSERT INTO dead_letters (
    request_id, job_id, kind, event_ref, phone, error_class, reason, raw, received_at
) VALUES (
    %(request_id)s, %(job_id)s, %(kind)s, %(event_ref)s, %(phone)s, %(error_class)s, %(reason)s,
    %(raw)s, %(received_at)s
)
ON CONFLICT (request_id) DO UPDATE
SET job_id = EXCLUDED.job_id, error_class = EXCLUDED.error_class, reason = EXCLUDED.reason,
    attempts = dead_letters.attempts + 1, failed_at = now(), replayed_at = NULL, replay_job_id = NULL
"""

PURGE_DEAD_LETTERS = "DELETE FROM dead_letters WHERE failed_at < now() - make_interval(days => %(days)s)"

# SQLSTATE classes a retry can get past: connection, resources, serialization, deadlock, timeout.
_TRANSIENT_SQLSTATES = ("08", "53", "57", "40001", "40P01", "55P03")


@dataclass(frozen=True)
class Pending:
    """One raw request of a job: the event read from it, or why it could not be read."""

    raw: RawRequest
    event: Event | None
    error: PermanentError | None = None
    ids: dict[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened to one request: a new row, a copy of a stored one, or a dead letter."""

    pending: Pending
    result: str  # "stored" | "duplicate" | "dead_letter"
    reason: str | None = None


class Store:
    """Keeps one connection for the life of the worker and reopens it when it breaks."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def save(self, items: Sequence[Pending], job_id: str) -> list[Outcome]:
        """Store the events of a job and dead-letter the requests that cannot be stored.

        All in one transaction; if PostgreSQL refuses a row, each request is written on its own so
        that the bad one alone is dead-lettered. Raises TransientError when a retry may help.
        """
        with self._translated():
            try:
                with self._transaction() as conn:
                    written = _write(conn, items, job_id)
                return written()
            except psycopg.Error as e:
                if _is_transient(e) or (len(items) == 1 and items[0].event is None):
                    raise
            outcomes = []
            for item in items:
                try:
                    with self._transaction() as conn:
                        written = _write(conn, [item], job_id)
                    outcomes += written()
                except psycopg.Error as e:
                    if _is_transient(e):
                        raise
                    refused = Pending(
                        item.raw, None, PermanentError(f"database refused the row: {e}"), item.ids
                    )
                    with self._transaction() as conn:
                        written = _write(conn, [refused], job_id, type(e).__name__)
                    outcomes += written()
            return outcomes

    def purge_dead_letters(self, days: int) -> int:
        """Delete dead letters older than `days`; return how many."""
        with self._translated(), self._transaction() as conn, conn.cursor() as cur:
            cur.execute(PURGE_DEAD_LETTERS, {"days": days})
        return cur.rowcount

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A transaction in pipeline mode: BEGIN, every statement and COMMIT go in one round trip,
        and results (and errors) arrive when the block ends."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self._url)
        with self._conn.pipeline(), self._conn.transaction():
            yield self._conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Driver errors leave as TransientError (retry) or PermanentError (dead letter)."""
        try:
            yield
        except psycopg.Error as e:
            if self._conn is not None and self._conn.broken:
                self.close()
            if _is_transient(e):
                raise TransientError(f"database: {type(e).__name__}: {e}") from e
            raise PermanentError(f"database refused a dead letter: {type(e).__name__}: {e}") from e


def _is_transient(e: psycopg.Error) -> bool:
    return isinstance(e, psycopg.OperationalError) or (e.sqlstate or "").startswith(_TRANSIENT_SQLSTATES)


def _write(
    conn: psycopg.Connection[tuple[Any, ...]], items: Sequence[Pending], job_id: str, error_class: str = ""
) -> Callable[[], list[Outcome]]:
    """Queue a batch's statements: one per table, rows in key order; return what reads the outcomes
    once the pipeline has synced.

    The same key order in every transaction keeps two workers writing copies of the same events
    from deadlocking on each other's unique-index entries.
    """
    outcomes: dict[int, Outcome] = {}
    dead = sorted((i for i, item in enumerate(items) if item.event is None), key=lambda i: items[i].raw.rid)
    if dead:
        conn.cursor().executemany(
            UPSERT_DEAD_LETTER, [_dead_row(items[i], job_id, error_class) for i in dead]
        )
        for i in dead:
            error = items[i].error or PermanentError("unknown")
            outcomes[i] = Outcome(items[i], "dead_letter", error.reason)
    rows = {i: _row(item) for i, item in enumerate(items) if item.event is not None}
    statuses = sorted(
        (i for i in rows if isinstance(items[i].event, StatusEvent)), key=lambda i: _status_key(rows[i])
    )
    incoming = sorted(
        (i for i in rows if isinstance(items[i].event, IncomingMessage)), key=lambda i: rows[i]["id"]
    )
    calls = sorted(
        (i for i in rows if isinstance(items[i].event, CallConfirmation)),
        key=lambda i: (rows[i]["phone"], rows[i]["called_at"]),
    )
    inserted: list[tuple[list[int], psycopg.Cursor[tuple[Any, ...]]]] = []
    for sql, group in ((INSERT_STATUS_EVENT, statuses), (INSERT_INCOMING, incoming), (INSERT_CALL, calls)):
        if group:
            cur = conn.cursor()
            cur.executemany(sql, [rows[i] for i in group], returning=True)
            inserted.append((group, cur))
    if statuses:
        by_message = sorted(statuses, key=lambda i: (rows[i]["message_id"], rows[i]["phone"]))
        conn.cursor().executemany(UPSERT_MESSAGE, [rows[i] for i in by_message])

    def read() -> list[Outcome]:
        for group, cur in inserted:
            for i, _ in zip(group, cur.results(), strict=True):
                outcomes[i] = Outcome(items[i], "stored" if cur.fetchone() else "duplicate")
        return [outcomes[i] for i in range(len(items))]

    return read


def _row(item: Pending) -> dict[str, Any]:
    event = item.event
    assert event is not None
    row = {f.name: getattr(event, f.name) for f in fields(event)}
    row["params"] = Jsonb(event.params)
    row["request_id"] = item.raw.rid
    row["received_at"] = datetime.fromtimestamp(item.raw.received_at, UTC)
    return row


def _dead_row(item: Pending, job_id: str, error_class: str) -> dict[str, Any]:
    error = item.error or PermanentError("unknown")
    ids = item.ids or {}
    return {
        "request_id": item.raw.rid,
        "job_id": job_id,
        "kind": ids.get("kind"),
        "event_ref": ids.get("id"),
        "phone": ids.get("phone"),
        "error_class": error_class or type(error).__name__,
        "reason": error.reason,
        "raw": Jsonb(item.raw.to_json()),
        "received_at": datetime.fromtimestamp(item.raw.received_at, UTC),
    }


def _status_key(row: dict[str, Any]) -> tuple[Any, ...]:
    at = row["status_at"]
    return (row["message_id"], row["phone"], row["status"], at is not None, at.timestamp() if at else 0.0)
