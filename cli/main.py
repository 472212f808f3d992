"""`smsc-ingest serve | worker | migrate | replay | dead-letter`: the one console command."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from smsc import logs
from smsc.exceptions import ConfigError
from smsc.settings import Settings

if TYPE_CHECKING:
    from workers.deadletter import DeadLetter, Filter

log = structlog.get_logger("smsc")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, configure logging and run the chosen command."""
    parser = argparse.ArgumentParser(prog="smsc-ingest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="run the HTTP ingress")
    serving.add_argument("--host", default=os.environ.get("SMSC_HOST", "127.0.0.1"))
    serving.add_argument("--port", type=int, default=int(os.environ.get("SMSC_PORT", "8080")))
    serving.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SMSC_INGRESS_PROCESSES", "1")),
        help="processes sharing the port (SO_REUSEPORT); one per core is a good start",
    )
    working = commands.add_parser("worker", help="run one RQ worker that stores events in PostgreSQL")
    working.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    commands.add_parser("migrate", help="create the database if missing and apply schema.sql")
    replay = commands.add_parser("replay", help="requeue dead-lettered requests (after a fix)")
    _filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed, change nothing")
    dead = commands.add_parser("dead-letter", help="inspect dead letters").add_subparsers(
        dest="action", required=True
    )
    listing = dead.add_parser("list", help="what is there and why")
    _filters(listing)
    listing.add_argument("--all", action="store_true", help="include dead letters already replayed")
    dead.add_parser("show", help="one dead letter in full").add_argument("id")
    args = parser.parse_args(argv)

    logs.configure()
    try:
        settings = Settings.from_env()
        if args.command == "serve":
            from ingress.serve import serve

            return serve(settings, args.host, args.port, max(1, args.workers))
        elif args.command == "worker":
            from workers.runner import run

            run(settings, burst=args.burst)
        elif args.command == "migrate":
            _migrate(settings)
        elif args.command == "replay":
            _replay(settings, _filter(args), dry_run=args.dry_run)
        elif args.action == "list":
            _list(settings, _filter(args, include_replayed=args.all))
        else:
            return _show(settings, args.id)
    except ConfigError as e:
        log.error("refusing_to_start", reason=e.reason)
        print(f"smsc-ingest: {e.reason}", file=sys.stderr)
        return 2
    return 0


def _migrate(settings: Settings) -> None:
    from workers.db import create_database_if_missing, migrate

    created = create_database_if_missing(settings.database_url)
    migrate(settings.database_url)
    log.info("schema_applied", database_created=created)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", help="only those whose reason contains this text")
    parser.add_argument("--error-class", help="only those of this error class (e.g. PermanentError)")
    parser.add_argument("--job", help="only those of this RQ job id")
    parser.add_argument("--id", help="only this dead letter")
    parser.add_argument("--since", type=_timestamp, help="failed at or after (ISO 8601, UTC if no zone)")
    parser.add_argument("--until", type=_timestamp, help="failed before (ISO 8601, UTC if no zone)")


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _filter(args: argparse.Namespace, include_replayed: bool = False) -> Filter:
    from workers.deadletter import Filter

    return Filter(
        reason=args.reason,
        error_class=args.error_class,
        job=args.job,
        id=args.id,
        since=args.since,
        until=args.until,
        include_replayed=include_replayed,
    )


def _replay(settings: Settings, flt: Filter, *, dry_run: bool) -> None:
    from workers.deadletter import find, replay

    if dry_run:
        letters = find(settings, flt)
        for letter in letters:
            print(f"would replay {_line(letter)}")
        print(f"{len(letters)} dead letter(s) would be replayed")
        return
    replayed = replay(settings, flt)
    for letter, job_id in replayed:
        print(f"replayed as job {job_id}: {_line(letter)}")
        log.info("dead_letter_replayed", dead_letter=letter.id, where=letter.where, job=job_id)
    print(f"{len(replayed)} dead letter(s) replayed")


def _list(settings: Settings, flt: Filter) -> None:
    from workers.deadletter import find

    letters = find(settings, flt)
    for letter in letters:
        print(_line(letter))
    print(f"{len(letters)} dead letter(s)")


def _show(settings: Settings, id_: str) -> int:
    from workers.deadletter import Filter, find

    letters = find(settings, Filter(id=id_, include_replayed=True))
    if not letters:
        print(f"no dead letter {id_}", file=sys.stderr)
        return 1
    (letter,) = letters
    print(f"dead letter {letter.id} (in {letter.where}, job {letter.job_id})")
    print(f"  error:      {letter.error_class}: {letter.reason}")
    print(f"  attempts:   {letter.attempts}")
    print(f"  first/last: {letter.first_failed_at} / {letter.failed_at}")
    print(f"  replayed:   {letter.replayed_at or 'no'}")
    for raw, ids in zip(letter.requests, letter.ids, strict=True):
        received = datetime.fromtimestamp(raw.received_at, UTC).isoformat()
        print(f"  request {raw.rid} received {received}: {_ids(ids)}")
        print(f"    content-type: {raw.content_type}")
        print(f"    query:        {raw.query}")
        print(f"    body:         {raw.body.decode('latin-1')[:2000]!r}")
    return 0


def _line(letter: DeadLetter) -> str:
    when = letter.failed_at.isoformat(timespec="seconds") if letter.failed_at else "-"
    what = "; ".join(_ids(ids) for ids in letter.ids) or "unreadable"
    head = f"{letter.id} [{letter.where}] {when} x{letter.attempts}"
    return f"{head} {letter.error_class}: {letter.reason} ({what})"


def _ids(ids: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in ids.items()) or "unreadable"
