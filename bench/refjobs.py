"""RQ reference jobs and their worker: `python -m bench.refjobs` works the reference queue in burst mode.

`insert_one` is the one-job-per-payload design: one INSERT per job on a connection kept by the process.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from bench.config import DATABASE_URL, REDIS_URL, REF_QUEUE
from bench.stores import INSERT_REF_ONE

_connection: list[psycopg.Connection[tuple[Any, ...]]] = []


def noop(raw: dict[str, Any]) -> None:
    """Does nothing: what RQ itself costs per job."""


def insert_one(row: dict[str, Any]) -> None:
    """Insert one status row (its own transaction) on the process's kept connection."""
    if not _connection:
        _connection.append(psycopg.connect(DATABASE_URL, autocommit=True))
    _connection[0].execute(INSERT_REF_ONE, {**row, "params": Jsonb(row["params"])})


def main() -> None:
    connection = Redis.from_url(REDIS_URL)
    queue = Queue(REF_QUEUE, connection=connection, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=connection, serializer=JSONSerializer)
    worker.work(burst=True, logging_level="WARNING")


if __name__ == "__main__":
    main()
