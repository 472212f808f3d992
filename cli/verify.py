"""`simulate --verify`: each acknowledged event stored exactly once and never dead-lettered, read from
the tables by each event's key (the unique keys of schema.sql)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import psycopg

from cli.gateway import RUN_PARAM, Event, Run
from smsc.devservers import shown
from smsc.exceptions import TransientError
from smsc.protocol.fields import Kind
from workers.db import connect

POLL_SECONDS: Final = 1.0
# The dead letters' failed_at is PostgreSQL's clock, the run's start this machine's: allow for skew.
CLOCK_SKEW: Final = timedelta(hours=1)

STATUS_ROWS: Final = """
SELECT message_id, phone, status, count(*) FROM status_events
WHERE message_id = ANY(%(ids)s) GROUP BY message_id, phone, status
"""
INCOMING_ROWS: Final = "SELECT id, count(*) FROM incoming_messages WHERE id = ANY(%(ids)s) GROUP BY id"
CALL_ROWS: Final = """
SELECT phone, extract(epoch FROM called_at)::bigint, count(*) FROM call_confirmations
WHERE phone = ANY(%(phones)s) GROUP BY phone, called_at
"""
# A run's requests carry its handler URL parameter, kept in each dead letter's raw query string.
DEAD_LETTERS: Final = """
SELECT kind, event_ref, phone FROM dead_letters
WHERE failed_at >= %(since)s AND replayed_at IS NULL AND strpos(raw->>'query', %(tag)s) > 0
"""

Key = tuple[Kind, tuple[int | str, ...]]


@dataclass(frozen=True)
class Verdict:
    """Where each acknowledged event of a run is (event numbers)."""

    stored_once: int
    missing: list[int]
    duplicated: list[int]
    dead_lettered: list[int]
    unidentified: int  # dead letters of the run too broken to name their event

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.dead_lettered or self.unidentified)


def judge(
    events: list[Event], rows: dict[Key, int], dead: set[tuple[str, str]], unidentified: int
) -> Verdict:
    """Compare the events with the rows counted under their keys and the dead letters naming them."""
    missing, duplicated, dead_lettered = [], [], []
    for ev in events:
        count = rows.get((ev.kind, ev.key), 0)
        if (ev.kind.value, ev.ref) in dead:
            dead_lettered.append(ev.number)
        elif count == 0:
            missing.append(ev.number)
        elif count > 1:
            duplicated.append(ev.number)
    bad = len(missing) + len(duplicated) + len(dead_lettered)
    return Verdict(len(events) - bad, missing, duplicated, dead_lettered, unidentified)


def verify(
    database_url: str, run: Run, events: list[Event], timeout: float, say: Callable[[str], None]
) -> Verdict:
    """Wait up to `timeout` seconds until no event is missing, then judge."""
    say(f"verify: waiting up to {timeout:g} s for {len(events)} event(s) in {shown(database_url)}")
    deadline = time.monotonic() + timeout
    try:
        with connect(database_url) as conn:
            while True:
                verdict = judge(events, _rows(conn, events), *_dead_letters(conn, run))
                if not verdict.missing or time.monotonic() >= deadline:
                    return verdict
                time.sleep(POLL_SECONDS)
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TransientError(
            f"verify: PostgreSQL at {shown(database_url)} failed: {type(e).__name__} {first}"
        ) from e


def _rows(conn: psycopg.Connection[Any], events: list[Event]) -> dict[Key, int]:
    of = {kind: [ev for ev in events if ev.kind is kind] for kind in Kind}
    rows: dict[Key, int] = {}
    if of[Kind.STATUS]:
        ids = [ev.key[0] for ev in of[Kind.STATUS]]
        for message_id, phone, status, n in conn.execute(STATUS_ROWS, {"ids": ids}):
            rows[(Kind.STATUS, (message_id, phone, status))] = n
    if of[Kind.INCOMING]:
        ids = [ev.key[0] for ev in of[Kind.INCOMING]]
        for id_, n in conn.execute(INCOMING_ROWS, {"ids": ids}):
            rows[(Kind.INCOMING, (id_,))] = n
    if of[Kind.CALL]:
        phones = [ev.key[0] for ev in of[Kind.CALL]]
        for phone, ts, n in conn.execute(CALL_ROWS, {"phones": phones}):
            rows[(Kind.CALL, (phone, ts))] = n
    return rows


def _dead_letters(conn: psycopg.Connection[Any], run: Run) -> tuple[set[tuple[str, str]], int]:
    """(kind, id or a call's phone) of each dead letter of the run, and how many name no event."""
    named: set[tuple[str, str]] = set()
    unidentified = 0
    params = {"since": run.started - CLOCK_SKEW, "tag": f"{RUN_PARAM}={run.tag}"}
    for kind, ref, phone in conn.execute(DEAD_LETTERS, params):
        if kind == Kind.CALL.value and phone:
            named.add((kind, phone))
        elif kind in (Kind.STATUS.value, Kind.INCOMING.value) and ref:
            named.add((kind, ref))
        else:
            unidentified += 1
    return named, unidentified
