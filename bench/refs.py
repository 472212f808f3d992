"""Reference ingress servers, run under the same load as smsc-ingest: `python -m bench.refs NAME --port P`.

R1  aiohttp, reads the body, answers 200 (the floor of any aiohttp handler).
R2  parses the form, checks the md5, one redis.asyncio LPUSH per request; on uvloop.
R3  parses the form, checks the md5, rq's synchronous `Queue.enqueue` in the handler.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl

import redis.asyncio as aioredis
from aiohttp import web
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench.config import HOST, R2_LIST, REDIS_URL, REF_QUEUE, SECRET

DESCRIPTIONS = {
    "R1": "aiohttp: read body, answer 200",
    "R2": "form+md5, redis.asyncio LPUSH, uvloop",
    "R3": "form+md5, rq Queue.enqueue (sync)",
}
CODECS = {"utf-8": "utf-8", "utf8": "utf-8", "windows-1251": "cp1251", "cp1251": "cp1251", "koi8-r": "koi8_r"}
# The vendor's control strings (README "The hash"), chosen by the fields present.
CONTROL = {"incoming": ("phone", "mes", "to"), "call": ("phone", "ts"), "status": ("id", "phone", "status")}
NOOP_JOB = "bench.refjobs.noop"
REDIS_KEY = web.AppKey("redis", aioredis.Redis)
QUEUE_KEY = web.AppKey("queue", Queue)

Handler = Callable[[web.Request], Awaitable[web.Response]]


def verified(body: bytes, query: str) -> bool:
    """The form's md5 matches `<control fields>:<secret>` in the transmission charset."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    codec = CODECS.get(params.get("charset", "windows-1251").lower())
    if codec is None:
        return False
    try:
        params.update(
            parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding=codec, errors="strict")
        )
    except UnicodeDecodeError:
        return False
    kind = "incoming" if "mes" in params else "call" if "waitcall" in params else "status"
    text = ":".join([*(params.get(f, "") for f in CONTROL[kind]), SECRET])
    expected = hashlib.md5(text.encode(codec)).hexdigest()  # noqa: S324 - the gateway's recipe is md5
    return hmac.compare_digest(expected, params.get("md5", "").lower())


def record(body: bytes, query: str, content_type: str) -> dict[str, object]:
    """What the references store per request: the raw request, like the product."""
    return {
        "received_at": time.time(),
        "query": query,
        "content_type": content_type,
        "body": base64.b64encode(body).decode("ascii"),
    }


async def read_only(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="OK\n")


async def verify_and_lpush(request: web.Request) -> web.Response:
    body = await request.read()
    query = request.rel_url.raw_query_string
    if not verified(body, query):
        return web.Response(status=403, text="forbidden\n")
    raw = record(body, query, request.headers.get("Content-Type", ""))
    await request.app[REDIS_KEY].lpush(R2_LIST, json.dumps(raw))
    return web.Response(text="OK\n")


async def verify_and_enqueue(request: web.Request) -> web.Response:
    body = await request.read()
    query = request.rel_url.raw_query_string
    if not verified(body, query):
        return web.Response(status=403, text="forbidden\n")
    # Blocks the event loop for the Redis round trips, as a naive RQ handler would.
    request.app[QUEUE_KEY].enqueue(NOOP_JOB, record(body, query, request.headers.get("Content-Type", "")))
    return web.Response(text="OK\n")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="alive\n")


async def _redis(app: web.Application) -> AsyncIterator[None]:
    client = aioredis.Redis.from_url(REDIS_URL)
    app[REDIS_KEY] = client
    yield
    await client.aclose()


def create_app(name: str) -> web.Application:
    """The reference server `name` (R1, R2 or R3)."""
    handlers: dict[str, Handler] = {"R1": read_only, "R2": verify_and_lpush, "R3": verify_and_enqueue}
    app = web.Application()
    if name == "R2":
        app.cleanup_ctx.append(_redis)
    if name == "R3":
        app[QUEUE_KEY] = Queue(REF_QUEUE, connection=Redis.from_url(REDIS_URL), serializer=JSONSerializer)
    app.router.add_post("/smsc", handlers[name])
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.refs", description=__doc__)
    parser.add_argument("name", choices=sorted(DESCRIPTIONS))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    loop = None
    if args.name == "R2":
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(create_app(args.name), host=HOST, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
