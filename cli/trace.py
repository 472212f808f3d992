"""`smsc-ingest trace`: where a request or an event is, printed for a person.

Looked up in PostgreSQL and Redis (workers/trace.py); every value came from the network, so each
line goes through `printable` before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cli import arguments
from cli.render import printable, summary
from smsc.settings import Settings

if TYPE_CHECKING:
    from workers.trace import Duplicate, EventTrace, HeldJob, RequestTrace, Row, Scan

# A request id as the ingress logs it (32 hex digits); any RQ-job-id-like text, for ids of other origins.
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A phone may be a number, an alphanumeric sender, an e-mail address or a Telegram @name
# (smsc/protocol/fields.py); the longest is an e-mail address.
_PHONE_MAX = 254
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def register(commands: argparse._SubParsersAction[arguments.Parser]) -> None:
    """Add the `trace` subcommand and its options."""
    parser = commands.add_parser(
        "trace",
        help="where a request (its rid) or an event (--phone, with --id for a message) is: its rows, "
        "copies, dead letter and RQ job",
    )
    parser.add_argument("rid", nargs="?", type=request_id, help="a request id: the rid of the ingress log")
    parser.add_argument(
        "--phone", type=phone, help="the events of this phone: incoming SMS and calls, or with --id statuses"
    )
    parser.add_argument(
        "--id", type=message_id, help="with --phone: the message of this id (its statuses and state)"
    )
    parser.add_argument(
        "--account",
        type=arguments.account,
        help="with --phone: the events of this account only (default: every account's)",
    )
    parser.add_argument(
        "--limit",
        type=limit,
        default=DEFAULT_LIMIT,
        help=f"at most this many of each kind of row, newest first (default {DEFAULT_LIMIT})",
    )


def request_id(text: str) -> str:
    """A request id."""
    if not _REQUEST_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a request id")
    return text


def phone(text: str) -> str:
    """A phone as the gateway sends it; any text, since senders may be names."""
    text = arguments.search_text(text).strip()
    if not text or len(text) > _PHONE_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a phone (1-{_PHONE_MAX} characters)")
    return text


def message_id(text: str) -> int:
    """A message id: a bigint in ASCII digits."""
    from workers.deadletter import row_id

    value = row_id(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a message id")
    return value


def limit(text: str) -> int:
    """How many rows of each kind to show."""
    if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a limit (1-{MAX_LIMIT})")
    return int(text)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Print what is known; exit code 0 if anything was found, 1 if nothing, 2 for bad options."""
    from workers.trace import trace_events, trace_request

    if (args.rid is None) == (args.phone is None) or (
        args.rid is not None and (args.id is not None or args.account is not None)
    ):
        print(
            "smsc-ingest trace: give a request id, or --phone (with --id for a message's statuses) "
            "(see smsc-ingest trace -h)",
            file=sys.stderr,
        )
        return 2
    if args.rid is not None:
        found = trace_request(settings, args.rid)
        _print(request_lines(found))
        return 0 if found.found else 1
    events = trace_events(settings, args.phone, args.id, args.limit, args.account)
    _print(event_lines(events, args.phone, args.id))
    return 0 if events.found else 1


def request_lines(t: RequestTrace) -> list[str]:
    """What became of one request."""
    lines = [f"request {t.rid}"]
    for row in t.rows:
        lines.append(f"  stored first by this request: {_event(row)}")
        lines += _copies(row)
    if t.duplicate is not None:
        lines.append(
            f"  a duplicate, not stored: copy of the {t.duplicate.kind} stored first by request "
            f"{t.duplicate.first_request_id} (noted {_at(t.duplicate.stored_at)}, job {t.duplicate.job_id})"
        )
        if t.original is not None:
            lines.append(f"    that row: {_row(t.original)}")
            lines += ["  " + line for line in _copies(t.original)]
    if t.dead_letter is not None:
        lines.append(f"  dead letter: {summary(t.dead_letter)}")
        replayed = t.dead_letter.replayed_at
        lines.append(f"    replayed: {_at(replayed) if replayed else 'no'}")
    lines += [f"  job: {_job(job)}" for job in t.jobs]
    if not t.jobs:
        lines.append("  job: none holds it now (not queued, started, scheduled or failed)")
    lines.append(f"  {_scan(t.scan)}")
    if not t.found:
        lines.append(
            "  nothing found: no row, duplicate, dead letter or job holds it"
            + ("" if t.scan.complete else " (in what was read)")
        )
    return lines


def event_lines(t: EventTrace, phone: str, message_id: int | None) -> list[str]:
    """The events of a phone, or of a message and phone."""
    lines: list[str] = []
    if message_id is not None:
        lines += [
            f"message {message_id} to {phone}: now status {m['status']} at {_at(m['status_at'])}, "
            f"err {_value(m['err'])}, updated {_at(m['updated_at'])}, account {m['account']}"
            for m in t.messages
        ] or [f"message {message_id} to {phone}: no state stored"]
        lines += _section(t, "status", "statuses, oldest first", t.statuses)
    lines += _section(t, "incoming", f"incoming SMS from {phone}, newest first", t.incoming)
    if message_id is None:
        lines += _section(t, "call", f"calls from {phone}, newest first", t.calls)
    lines.append(f"dead letters, newest first ({len(t.dead_letters)}{_more(t, 'dead_letter')})")
    lines += [f"  {summary(letter)}" for letter in t.dead_letters]
    if not t.found:
        lines.append("nothing found")
    return lines


def _section(t: EventTrace, kind: str, title: str, rows: list[Row]) -> list[str]:
    lines = [f"{title} ({len(rows)}{_more(t, kind)})"]
    for row in rows:
        lines.append(f"  {_row(row)}")
        lines += _copies(row)
    return lines


def _event(row: Row) -> str:
    fields = " ".join(f"{name}={_value(value)}" for name, value in row.fields.items())
    return f"{row.table} {fields} (received {_at(row.received_at)}, stored {_at(row.stored_at)})"


def _more(t: EventTrace, kind: str) -> str:
    return f"; more exist, raise --limit (now {t.limit})" if t.more.get(kind) else ""


def _row(row: Row) -> str:
    return f"{_event(row)}: first stored by request {row.request_id}"


def _copies(row: Row) -> list[str]:
    if not row.copies:
        return ["    duplicates: none"]
    return [f"    duplicates: {len(row.copies)}"] + [f"      {_copy(dup)}" for dup in row.copies]


def _copy(dup: Duplicate) -> str:
    return f"request {dup.request_id} received {_at(dup.received_at)} (job {dup.job_id})"


def _job(job: HeldJob) -> str:
    text = f"{job.state} {job.job_id}"
    if job.enqueued_at is not None:
        text += f", enqueued {_at(job.enqueued_at)}"
    if job.worker is not None:
        text += f", on worker {job.worker}"
    if job.scheduled_for is not None:
        text += f", retry at {_at(job.scheduled_for)}"
    if job.failure is not None:
        f = job.failure
        last = f", last {_at(f.failed_at)}" if f.failed_at else ""
        text += f"; {f.error_class}: {f.reason} ({f.attempts} failure(s){last})"
    return text


def _scan(scan: Scan) -> str:
    places = ", ".join(f"{place} {scan.read[place]}/{scan.present[place]}" for place in scan.present)
    read, present = sum(scan.read.values()), sum(scan.present.values())
    if scan.complete:
        return f"RQ jobs read: all {present} ({places})"
    return (
        f"RQ jobs read: {read} of {present} ({places}); stopped early at the limit, newest first: "
        "a job not read may hold it"
    )


def _at(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "-"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return _at(value)
    return str(value)


def _print(lines: list[str]) -> None:
    for line in lines:
        print(printable(line))
