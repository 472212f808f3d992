"""`smsc-ingest serve | worker | migrate | prune | replay | dead-letter | trace | stats | exporter | dev |
simulate`: the one console command."""

from __future__ import annotations

import argparse
import io
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from cli import arguments, simulate, stats, trace
from cli.render import details, printable, summary
from smsc import logs
from smsc.accounts import load as load_accounts
from smsc.exceptions import ConfigError, TransientError
from smsc.settings import LogPhones, Settings

if TYPE_CHECKING:
    from workers.deadletter import Filter

log = structlog.get_logger("smsc")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, configure logging and run the chosen command."""
    # Whatever the terminal's or pipe's encoding, what cannot be written comes out escaped.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader left (`dead-letter list | head`): nothing more to say, and nothing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    logs.configure()
    try:
        settings = Settings.from_env()
        # Now that the secret is known, no line of this process or its children can show it.
        logs.configure(secrets=[settings.secret], mask_phones=settings.log_phones is not LogPhones.FULL)
        if args.command == "serve":
            from ingress.serve import serve

            accounts = load_accounts(settings)
            logs.hide(accounts.secrets)
            port = arguments.from_env(args.port, "SMSC_PORT", "8080", arguments.port)
            processes = arguments.from_env(args.workers, "SMSC_INGRESS_PROCESSES", "1", arguments.processes)
            host = arguments.from_env(args.host, "SMSC_HOST", "127.0.0.1", str)
            return serve(settings, accounts, host, port, processes)
        elif args.command == "worker":
            from workers.runner import run

            run(settings, burst=args.burst, metrics_at=_metrics_at(settings, args.metrics_port))
        elif args.command == "simulate":
            return simulate.run(settings, args)
        elif args.command == "stats":
            return stats.run(settings, args)
        elif args.command == "exporter":
            from workers.exporter import run as export

            port = arguments.from_env(args.port, "SMSC_EXPORTER_PORT", "9110", arguments.port)
            host = arguments.from_env(args.host, "SMSC_EXPORTER_HOST", "127.0.0.1", str)
            export(settings, host, port)
        elif args.command == "trace":
            return trace.run(settings, args)
        elif args.command == "migrate":
            _migrate(settings, args.status)
        elif args.command == "prune":
            return _prune(settings, args.older_than, dry_run=args.dry_run)
        elif args.command == "dev":
            from cli import dev

            if args.check_embedded:
                return 1 if dev.needs_embedded(os.environ) else 0
            data = Path(args.data or os.environ.get("SMSC_DEV_DATA") or ".smsc-dev")
            port = arguments.from_env(args.port, "SMSC_PORT", "8080", arguments.port)
            host = arguments.from_env(args.host, "SMSC_HOST", "127.0.0.1", str)
            return dev.run(host, port, data)
        elif args.command == "replay":
            return _replay(settings, _filter(args), dry_run=args.dry_run)
        elif args.action == "list":
            _list(settings, _filter(args, include_replayed=args.all))
        else:
            return _show(settings, args.id)
    except ConfigError as e:
        log.error("refusing_to_start", reason=e.reason)
        print(f"smsc-ingest: {printable(e.reason)}", file=sys.stderr)
        return 2
    except TransientError as e:
        print(f"smsc-ingest: {printable(e.reason)}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    # Defaults from the environment are read after parsing, for the command that uses them only.
    parser = arguments.Parser(prog="smsc-ingest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="run the HTTP ingress")
    serving.add_argument("--host", help="address to listen on (SMSC_HOST, default 127.0.0.1)")
    serving.add_argument("--port", type=arguments.port, help="1-65535 (SMSC_PORT, default 8080)")
    serving.add_argument(
        "--workers",
        type=arguments.processes,
        help="processes sharing the port (SO_REUSEPORT; SMSC_INGRESS_PROCESSES, default 1); "
        "one per core is a good start",
    )
    working = commands.add_parser("worker", help="run one RQ worker that stores events in PostgreSQL")
    working.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    working.add_argument(
        "--metrics-port",
        type=arguments.port_or_off,
        help="serve this process's metrics on this port, on SMSC_METRICS_HOST (default 127.0.0.1); "
        "one port per worker process (SMSC_METRICS_PORT; default 0: none)",
    )
    migrating = commands.add_parser(
        "migrate", help="create the database if missing, apply the pending migrations, make partitions ahead"
    )
    migrating.add_argument(
        "--status", action="store_true", help="list the migrations and when each was applied"
    )
    pruning = commands.add_parser(
        "prune", help="drop the event tables' monthly partitions past the retention, whole"
    )
    pruning.add_argument(
        "--older-than",
        type=arguments.retention_days,
        metavar="DAYS",
        help="drop the months that ended at least DAYS days ago (SMSC_RETENTION_DAYS; no default)",
    )
    pruning.add_argument("--dry-run", action="store_true", help="list what would be dropped, drop nothing")
    simulate.register(commands)
    stats.register(commands)
    exporting = commands.add_parser(
        "exporter", help="serve the queue state (Redis, RQ, dead letters) to Prometheus; one per deployment"
    )
    exporting.add_argument("--host", help="address to listen on (SMSC_EXPORTER_HOST, default 127.0.0.1)")
    exporting.add_argument("--port", type=arguments.port, help="1-65535 (SMSC_EXPORTER_PORT, default 9110)")
    trace.register(commands)
    developing = commands.add_parser(
        "dev",
        help="development: Redis and PostgreSQL (embedded ones if none answers), the schema, "
        "one worker and the ingress, until Ctrl-C",
    )
    developing.add_argument("--host", help="the ingress's address (SMSC_HOST, default 127.0.0.1)")
    developing.add_argument(
        "--port", type=arguments.port, help="the ingress's port (SMSC_PORT, default 8080)"
    )
    developing.add_argument(
        "--data", help="folder of the embedded servers' data (SMSC_DEV_DATA, default .smsc-dev)"
    )
    developing.add_argument(
        "--check-embedded",
        action="store_true",
        help="start nothing; exit 1 if the embedded servers are needed and not installed",
    )
    replay = commands.add_parser("replay", help="requeue dead-lettered requests (after a fix)")
    _filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed, change nothing")
    dead = commands.add_parser("dead-letter", help="inspect dead letters").add_subparsers(
        dest="action", required=True
    )
    listing = dead.add_parser("list", help="what is there and why")
    _filters(listing)
    listing.add_argument("--all", action="store_true", help="include dead letters already replayed")
    dead.add_parser("show", help="one dead letter in full").add_argument(
        "id", type=arguments.dead_letter_id, help="its number (PostgreSQL) or RQ job id (Redis)"
    )
    return parser


def _metrics_at(settings: Settings, given: int | None) -> tuple[str, int] | None:
    """Where a worker serves its metrics: nowhere unless a port is given and SMSC_METRICS is not off."""
    port = arguments.from_env(given, "SMSC_METRICS_PORT", "0", arguments.port_or_off)
    if port == 0 or not settings.metrics:
        return None
    return arguments.from_env(None, "SMSC_METRICS_HOST", "127.0.0.1", str), port


def _migrate(settings: Settings, show_status: bool) -> None:
    from workers.db import create_database_if_missing
    from workers.schema import migrate, status

    if show_status:
        for state in status(settings.database_url):
            when = state.applied_at.isoformat(timespec="seconds") if state.applied_at else "pending"
            print(f"{state.migration.version:04d}  {state.migration.name:<32} {when}")
        return
    created = create_database_if_missing(settings.database_url)
    applied = migrate(settings.database_url)
    log.info("schema_migrated", database_created=created, applied=[m.path.name for m in applied])


def _prune(settings: Settings, older_than: int | None, *, dry_run: bool) -> int:
    """Exit code 1 if a partition could not be dropped (its table stayed locked): the others are
    dropped all the same, and running it again finishes the job."""
    from workers.db import connect
    from workers.deadletter import translated
    from workers.partitions import drop, expired

    if older_than is None and not os.environ.get("SMSC_RETENTION_DAYS"):
        raise ConfigError("prune needs a retention: --older-than DAYS or SMSC_RETENTION_DAYS")
    days = arguments.from_env(older_than, "SMSC_RETENTION_DAYS", "", arguments.retention_days)
    cutoff = datetime.now(UTC) - timedelta(days=days)
    failed = 0
    with translated(), connect(settings.database_url) as conn:
        partitions = expired(conn, cutoff)
        for partition in partitions:
            rows = "rows unknown (never analyzed)" if partition.rows is None else f"~{partition.rows} rows"
            lower = "..." if partition.lower is None else f"{partition.lower:%Y-%m-%d}"
            line = f"{partition.name}  {lower} to {partition.upper:%Y-%m-%d}  {rows}"
            if dry_run:
                print(f"would drop {line}")
                continue
            try:
                drop(conn, partition)
            except TransientError as e:
                print(f"smsc-ingest: not dropped: {printable(e.reason)}", file=sys.stderr)
                failed += 1
                continue
            print(f"dropped {line}")
            log.info(
                "partition_dropped",
                partition=partition.name,
                table=partition.table,
                upper=partition.upper.isoformat(),
                rows_estimate=partition.rows,
                older_than_days=days,
            )
    done = len(partitions) - failed
    print(
        f"{done} partition(s) {'would be ' if dry_run else ''}dropped, older than {cutoff:%Y-%m-%d %H:%M} UTC"
    )
    return 1 if failed else 0


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason", type=arguments.search_text, help="only those whose reason contains this text"
    )
    parser.add_argument(
        "--error-class",
        type=arguments.search_text,
        help="only those of this error class (e.g. PermanentError)",
    )
    parser.add_argument("--job", type=arguments.job_id, help="only those of this RQ job id")
    parser.add_argument("--id", type=arguments.dead_letter_id, help="only this dead letter")
    parser.add_argument(
        "--since", type=arguments.timestamp, help="failed at or after (ISO 8601, UTC if no zone)"
    )
    parser.add_argument("--until", type=arguments.timestamp, help="failed before (ISO 8601, UTC if no zone)")
    parser.add_argument(
        "--account",
        type=arguments.account,
        help="only those of this account (`default`: POST /smsc); a failed RQ job holding requests of "
        "several accounts matches if one is of it, and is replayed whole",
    )


def _filter(args: argparse.Namespace, include_replayed: bool = False) -> Filter:
    from workers.deadletter import Filter

    return Filter(
        reason=args.reason,
        error_class=args.error_class,
        job=args.job,
        id=args.id,
        since=args.since,
        until=args.until,
        account=args.account,
        include_replayed=include_replayed,
    )


def _replay(settings: Settings, flt: Filter, *, dry_run: bool) -> int:
    """Exit code 0 once a job is queued, even if its dead letters could not be marked replayed (they
    will only be replayed again, harmlessly) or a later chunk could not be queued (said on stderr);
    1 only if nothing could be queued."""
    from workers.deadletter import find, replay

    if dry_run:
        letters = find(settings, flt)
        for letter in letters:
            print(f"would replay {summary(letter)}")
        print(f"{len(letters)} dead letter(s) would be replayed")
        return 0
    count = 0
    try:
        for done in replay(settings, flt):
            for letter in done.letters:
                print(f"replayed as job {done.job_id}: {summary(letter)}")
                log.info("dead_letter_replayed", dead_letter=letter.id, where=letter.where, job=done.job_id)
            if done.unmarked is not None:
                log.warning("dead_letters_not_marked_replayed", job=done.job_id, reason=done.unmarked)
                print(
                    f"job {done.job_id} is queued, but its {len(done.letters)} dead letter(s) could not "
                    f"be marked replayed ({printable(done.unmarked)}): a later replay repeats them harmlessly"
                )
            count += len(done.letters)
    except TransientError as e:
        print(f"{count} dead letter(s) replayed")
        print(
            f"smsc-ingest: replay stopped, run it again for the rest: {printable(e.reason)}", file=sys.stderr
        )
        return 0 if count else 1
    print(f"{count} dead letter(s) replayed")
    return 0


def _list(settings: Settings, flt: Filter) -> None:
    from workers.deadletter import find

    letters = find(settings, flt)
    for letter in letters:
        print(summary(letter))
    print(f"{len(letters)} dead letter(s)")


def _show(settings: Settings, id_: str) -> int:
    from workers.deadletter import Filter, find

    letters = find(settings, Filter(id=id_, include_replayed=True))
    if not letters:
        print(f"no dead letter {id_}", file=sys.stderr)
        return 1
    for letter in letters:
        print("\n".join(details(letter)))
    return 0
