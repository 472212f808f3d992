"""Versioned migrations: numbered SQL files in workers/migrations/, applied in order and recorded.

A small runner of our own rather than yoyo-migrations or alembic: the files are plain SQL either way,
and what we need beside them is a PostgreSQL advisory lock around the whole run (two hosts migrating
together), one transaction per migration, and the partitions made ahead after it. yoyo locks with a
row of its own table and a timeout; alembic brings SQLAlchemy for none of its features.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg

from smsc.exceptions import ConfigError
from workers.db import connect
from workers.partitions import ensure_ahead

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only keeps two `migrate` runs from interleaving.
_MIGRATE_LOCK = 7_362_001
_FILE = re.compile(r"(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql")

_RECORDS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,   -- sha256 of the file: a released migration is never edited
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @cached_property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class State:
    """One migration and when it was applied (None: pending)."""

    migration: Migration
    applied_at: datetime | None


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations shipped, in order; numbered 1, 2, 3... without a gap or a stray file."""
    found = []
    for path in sorted(directory.iterdir()):
        match = _FILE.fullmatch(path.name)
        if match is None:
            raise ConfigError(f"{path.name} in {directory} is not a migration (NNNN_name.sql)")
        found.append(Migration(int(match["version"]), match["name"], path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ConfigError(f"migration {expected} is missing before {migration.path.name}")
    return found


def status(url: str, directory: Path = MIGRATIONS_DIR) -> list[State]:
    """Every shipped migration with when it was applied."""
    with connect(url) as conn:
        applied = _applied(conn)
    return [State(m, applied[m.version][1] if m.version in applied else None) for m in available(directory)]


def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply the pending migrations in order, each in its own transaction, then make the coming
    months' partitions; return the migrations applied. A failed migration is rolled back whole and
    raised: the ones before it stay applied, the database as they left it."""
    migrations = available(directory)
    with connect(url) as conn:
        # A session lock: held across the migrations' transactions, released if the connection dies.
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
        try:
            conn.execute(_RECORDS)
            applied = _applied(conn)
            _check_unchanged(migrations, applied)
            done = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                with conn.transaction():
                    conn.execute(migration.text.encode("utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                done.append(migration)
            ensure_ahead(conn)
            return done
        finally:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))


def _applied(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, datetime]]:
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return {}
    rows = conn.execute("SELECT version, checksum, applied_at FROM schema_migrations").fetchall()
    return {version: (checksum, applied_at) for version, checksum, applied_at in rows}


def _check_unchanged(migrations: list[Migration], applied: dict[int, tuple[str, datetime]]) -> None:
    """Refuse to go on when an applied migration's file has changed or is gone: the database would not
    be what the files say."""
    shipped = {m.version: m for m in migrations}
    for version, (checksum, _) in sorted(applied.items()):
        if version not in shipped:
            raise ConfigError(f"the database has migration {version}, which this release does not know")
        if shipped[version].checksum != checksum:
            raise ConfigError(f"migration {shipped[version].path.name} changed after it was applied")
