"""`python -m bench.migration [--rows N]` (`make bench-migration`): how long `migrate` takes on a released
database holding N status events (1 million by default, over 12 months, plus messages, incoming SMS
and calls in proportion), and how long an INSERT from another connection waits for migration 2's lock.

It makes its own database (--database-url, default smsc_bench_migration), dropped at the end.
"""

from __future__ import annotations

import argparse
import threading
import time
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from workers.schema import MIGRATIONS_DIR, migrate

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/smsc_bench_migration"

# Rows shaped as the released workers wrote them: a status event's usual fields and its parameters.
FILL = (
    """
INSERT INTO status_events (message_id, phone, status, status_at, ts, err, cnt, type, cost, flag, sender,
                           params, request_id, received_at)
SELECT g / 2, phone, g %% 2 + 1, at, at, 0, 1, 0, 1.25, 0, 'SMSC.RU',
       jsonb_build_object('id', (g / 2)::text, 'phone', phone, 'status', (g %% 2 + 1)::text,
                          'ts', extract(epoch FROM at)::bigint::text, 'cnt', '1', 'type', '0',
                          'cost', '1.25', 'flag', '0', 'sender', 'SMSC.RU'),
       md5(g::text), at
FROM generate_series(1, %(rows)s) AS g,
     LATERAL (SELECT now() - interval '365 days' + g * (interval '365 days' / %(rows)s),
                     '7900' || lpad(((g / 2) %% 1000000)::text, 7, '0')) AS t(at, phone)
""",
    """
INSERT INTO messages (message_id, phone, status, status_at, cost)
SELECT DISTINCT ON (message_id, phone) message_id, phone, status, status_at, cost
FROM status_events ORDER BY message_id, phone, status_at DESC
""",
    """
INSERT INTO incoming_messages (id, phone, to_phone, text, server_received_at, params, request_id, received_at)
SELECT g, '79000000000', '79001234567', 'Привет ' || g, at, jsonb_build_object('id', g::text),
       md5(g::text), at
FROM generate_series(1, %(rows)s / 10) AS g,
     LATERAL (SELECT now() - interval '365 days' + g * (interval '365 days' / (%(rows)s / 10))) AS t(at)
""",
    """
INSERT INTO call_confirmations (phone, called_at, waitcall, params, request_id, received_at)
SELECT '7900' || lpad(g::text, 7, '0'), at, 1, jsonb_build_object('ts', g::text), md5(g::text), at
FROM generate_series(1, %(rows)s / 20) AS g,
     LATERAL (SELECT now() - interval '365 days' + g * (interval '365 days' / (%(rows)s / 20))) AS t(at)
""",
)

# What a worker writes while the migration runs (with the account, as this release does).
PROBE = """
INSERT INTO status_events (account, message_id, phone, status, status_at, params, request_id, received_at)
VALUES ('default', -1, '79000000000', 1, now(), '{}', 'bench-probe', now())
"""
LOCKED = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock' AND granted
  AND relation = to_regclass('status_events')
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.migration", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="status events (default 1000000)")
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help=f"made and dropped (default {DEFAULT_URL})"
    )
    args = parser.parse_args(argv)
    url = args.database_url
    name = urlsplit(url).path.lstrip("/")
    admin = urlsplit(url)._replace(path="/postgres").geturl()
    _admin(admin, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    _admin(admin, "CREATE DATABASE {}", name)
    try:
        began = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((MIGRATIONS_DIR / "0001_released.sql").read_text(encoding="utf-8").encode())
            for statement in FILL:
                conn.execute(statement, {"rows": args.rows})
            conn.execute("VACUUM ANALYZE")
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
        print(
            f"released database: {args.rows} status events, {size and size[0]}, filled in "
            f"{time.monotonic() - began:.0f} s"
        )
        probe = Probe(url)
        probe.start()
        began = time.monotonic()
        applied = migrate(url)
        total = time.monotonic() - began
        probe.join(timeout=600)
        print(f"migrate ({', '.join(m.path.name for m in applied)}): {total:.1f} s")
        if probe.locked_at is None or probe.waited is None:
            print("the probe never saw migration 2's lock")
            return 1
        print(f"lock on the event tables taken {probe.locked_at - began:.1f} s after the start")
        print(f"an INSERT into status_events from another connection waited {probe.waited:.1f} s")
        return 0
    finally:
        _admin(admin, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


class Probe(threading.Thread):
    """Waits for migration 2's lock on status_events, then times one INSERT from its own connection."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.locked_at: float | None = None
        self.waited: float | None = None

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                row = conn.execute(LOCKED).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.01)
            else:
                return
            self.locked_at = time.monotonic()
            conn.execute(PROBE)
            self.waited = time.monotonic() - self.locked_at


def _admin(url: str, statement: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(name)))


if __name__ == "__main__":
    raise SystemExit(main())
