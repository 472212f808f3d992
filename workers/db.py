"""PostgreSQL connections and the schema (schema.sql at the top of the repository)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.sql"
# Any constant works; it only keeps two `migrate` runs from interleaving.
_MIGRATE_LOCK = 7_362_001


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
        except psycopg.errors.DuplicateDatabase:
            return False
    return True


def migrate(url: str) -> None:
    """Apply schema.sql; it is written to be applied any number of times."""
    schema = SCHEMA_PATH.read_text(encoding="utf-8")
    with connect(url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        conn.execute(schema.encode("utf-8"))
