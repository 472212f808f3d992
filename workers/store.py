"""Writes of normalized events: one row per real event, deduplicated by PostgreSQL's unique keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
"""

INSERT_CALL = """
INSERT INTO call_confirmations (
    phone, called_at, waitcall, calltime, callmenu, ringtime, params, request_id, received_at
) VALUES (
    %(phone)s, %(called_at)s, %(waitcall)s, %(calltime)s, %(callmenu)s, %(ringtime)s,
    %(params)s, %(request_id)s, %(received_at)s
)
ON CONFLICT (phone, called_at) DO NOTHING
"""

# SQLSTATE classes a retry can get past: connection, resources, serialization, deadlock, timeout.
_TRANSIENT_SQLSTATES = ("08", "53", "57", "40001", "40P01", "55P03")


@dataclass(frozen=True)
class Stored:
    """What happened to one event: a new row, or a copy of one already stored."""

    event: Event
    new: bool


class Store:
    """Keeps one connection for the life of the worker and reopens it when it breaks."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def save(self, batch: Sequence[tuple[RawRequest, Event]]) -> list[Stored]:
        """Store every event of `batch` in one transaction; raise TransientError if a retry may help."""
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                return [Stored(event, _write(cur, raw, event)) for raw, event in batch]
        except psycopg.Error as e:
            if isinstance(e, psycopg.OperationalError) or (e.sqlstate or "").startswith(_TRANSIENT_SQLSTATES):
                if self._conn is not None and self._conn.broken:
                    self.close()
                raise TransientError(f"database: {type(e).__name__}: {e}") from e
            raise PermanentError(f"database refused the rows: {type(e).__name__}: {e}") from e

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self._url)
        return self._conn


def _write(cur: psycopg.Cursor[tuple[Any, ...]], raw: RawRequest, event: Event) -> bool:
    row = asdict(event)
    row["params"] = Jsonb(event.params)
    row["request_id"] = raw.rid
    row["received_at"] = datetime.fromtimestamp(raw.received_at, UTC)
    if isinstance(event, StatusEvent):
        cur.execute(INSERT_STATUS_EVENT, row)
        new = cur.rowcount == 1
        cur.execute(UPSERT_MESSAGE, row)
        return new
    if isinstance(event, IncomingMessage):
        cur.execute(INSERT_INCOMING, row)
    elif isinstance(event, CallConfirmation):
        cur.execute(INSERT_CALL, row)
    return cur.rowcount == 1
