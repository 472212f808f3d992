"""`smsc-ingest serve | worker | migrate`: the one console command."""

from __future__ import annotations

import argparse
import os
import sys

import structlog

from smsc import logs
from smsc.exceptions import ConfigError
from smsc.settings import Settings

log = structlog.get_logger("smsc")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, configure logging and run the chosen command."""
    parser = argparse.ArgumentParser(prog="smsc-ingest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP ingress")
    serve.add_argument("--host", default=os.environ.get("SMSC_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("SMSC_PORT", "8080")))
    worker = commands.add_parser("worker", help="run one RQ worker that stores events in PostgreSQL")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    commands.add_parser("migrate", help="create the database if missing and apply schema.sql")
    args = parser.parse_args(argv)

    logs.configure()
    try:
        settings = Settings.from_env()
        if args.command == "serve":
            _serve(settings, args.host, args.port)
        elif args.command == "worker":
            _worker(settings, burst=args.burst)
        else:
            _migrate(settings)
    except ConfigError as e:
        log.error("refusing_to_start", reason=e.reason)
        print(f"smsc-ingest: {e.reason}", file=sys.stderr)
        return 2
    return 0


def _serve(settings: Settings, host: str, port: int) -> None:
    from aiohttp import web

    from ingress.app import create_app

    app = create_app(settings)
    log.info(
        "ingress_starting",
        host=host,
        port=port,
        hash=settings.hash_algorithm.value,
        signed=bool(settings.secret),
        queue=settings.queue,
    )
    # aiohttp's access log prints the query string, which holds the secret: our own line replaces it.
    web.run_app(app, host=host, port=port, access_log=None, print=None)


def _worker(settings: Settings, *, burst: bool) -> None:
    from workers.runner import run

    run(settings, burst=burst)


def _migrate(settings: Settings) -> None:
    from workers.db import create_database_if_missing, migrate

    created = create_database_if_missing(settings.database_url)
    migrate(settings.database_url)
    log.info("schema_applied", database_created=created)
