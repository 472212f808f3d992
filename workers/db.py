"""PostgreSQL connections, and the database itself where it is missing."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection in autocommit mode: each write opens its own explicit transaction."""
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def create_database_if_missing(url: str) -> bool:
    """Create the database `url` names, through the server's `postgres` database. True if created."""
    params = conninfo_to_dict(url)
    name = str(params.get("dbname") or "postgres")
    admin = make_conninfo(url, dbname="postgres")
    with connect(admin) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # Another process created it since the check: PostgreSQL names that race DuplicateDatabase, or
        # UniqueViolation when both CREATEs ran at once (two `migrate` on a new deployment).
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False
    return True
