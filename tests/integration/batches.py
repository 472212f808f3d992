"""Requests posted through the real ingress so that they travel to the worker in one job, and what
became of each of them in PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp.test_utils import TestClient
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from smsc.settings import Settings
from tests.integration.servers import ThrowawayRedis
from tests.integration.test_ingress import status_line
from tests.payloads import Request


def http(r: Request, content_type: bytes | None = None) -> bytes:
    """`r` as one HTTP/1.1 POST to the handler; `content_type` replaces its Content-Type header."""
    header = r.content_type.encode("latin-1") if content_type is None else content_type
    return (
        b"POST /smsc?%s HTTP/1.1\r\nHost: smsc.test\r\nConnection: close\r\n"
        b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
    ) % (r.query.encode("ascii"), header, len(r.body), r.body)


async def send(client: TestClient[Any, Any], request: bytes) -> int:
    """The status code the ingress answers `request` with."""
    line = await status_line(client, request)
    return int(line.split(b" ", 2)[1])


async def post_as_one_job(
    client: TestClient[Any, Any], server: ThrowawayRedis, first: bytes, batch: list[bytes]
) -> tuple[int, list[int]]:
    """Post `first`, whose write hangs in the paused Redis, then `batch`, whose requests all wait for
    the next write (group commit) and go out as one job. Returns the status codes."""
    server.pause()
    try:
        head = asyncio.create_task(send(client, first))
        await asyncio.sleep(0.2)  # the first write is in flight, stuck in the paused Redis
        rest = [asyncio.create_task(send(client, r)) for r in batch]
        await asyncio.sleep(0.3)  # every request of the batch is read and verified by now
    finally:
        server.resume()
    return await head, [await task for task in rest]


def queued(settings: Settings) -> list[list[dict[str, Any]]]:
    """The raw requests of each queued job."""
    client = Redis.from_url(settings.redis_url)
    try:
        queue = Queue(settings.queue, connection=client, serializer=JSONSerializer)
        return [list(job.args[0]) for job in queue.get_jobs()]
    finally:
        client.close()


def rid_of(jobs: list[list[dict[str, Any]]], body: bytes) -> str:
    """The request id the ingress gave the request whose body is `body` (bodies are unique)."""
    encoded = base64.b64encode(body).decode("ascii")
    (rid,) = [r["rid"] for job in jobs for r in job if r["body"] == encoded]
    return str(rid)


def fate(db: Any, rid: str) -> list[str]:
    """Where request `rid` ended: the tables holding a row it stored, and `dead_letters` if it is one."""
    found = []
    for table in ("status_events", "incoming_messages", "call_confirmations", "dead_letters"):
        if db.execute(f"SELECT 1 FROM {table} WHERE request_id = %s", (rid,)).fetchone():
            found.append(table)
    return found
