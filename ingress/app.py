"""The aiohttp application: POST /smsc, GET /healthz, GET /readyz."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from ingress.backpressure import QueueWatch
from ingress.enqueue import Enqueuer
from smsc.constants import REDIS_CONNECT_TIMEOUT_SECONDS, REDIS_SOCKET_TIMEOUT_SECONDS
from smsc.exceptions import BadRequest, InvalidSignature
from smsc.protocol import RawRequest, decode, verify
from smsc.protocol.fields import log_ids
from smsc.protocol.raw import redact_query
from smsc.queue import queue_key
from smsc.settings import Settings

log = structlog.get_logger("smsc.ingress")

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
ENQUEUER = web.AppKey("enqueuer", Enqueuer)
WATCH = web.AppKey("watch", QueueWatch)


def create_app(settings: Settings) -> web.Application:
    """The ingress for `settings`; refuses to build without a secret unless unsigned is allowed."""
    settings.require_secret()
    app = web.Application(client_max_size=settings.max_body)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_redis_client)
    # Never 404 on the handler: a 404 stops the gateway's retries for good.
    for path in ("/smsc", "/smsc/"):
        app.router.add_post(path, receive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _redis_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
    )
    app[REDIS] = client
    app[ENQUEUER] = Enqueuer(client, settings)
    app[WATCH] = watch = QueueWatch(client, queue_key(settings), settings.max_queue)
    task = asyncio.create_task(watch.run())
    yield
    watch.stop()
    await task
    await client.aclose()


async def receive(request: web.Request) -> web.Response:
    """Verify one callback, store it raw as an RQ job, and answer 200 only once Redis has it."""
    settings = request.app[SETTINGS]
    rid = uuid.uuid4().hex
    received_at = time.time()
    bound = log.bind(rid=rid, peer=request.remote)
    if request.app[WATCH].full:
        bound.warning("request_not_stored", code=503, reason="queue full", length=request.app[WATCH].length)
        return web.Response(status=503, text="temporarily unavailable: queue full\n")
    too_large = f"body over {settings.max_body} bytes"
    if (request.content_length or 0) > settings.max_body:
        bound.warning("request_rejected", code=413, reason=too_large)
        refused = web.Response(status=413, text=f"{too_large}\n")
        # The body is left unread: the connection is not kept alive for another request.
        refused.force_close()
        return refused
    try:
        body = await _read_body(request, settings.read_timeout)
    except web.HTTPRequestEntityTooLarge:
        bound.warning("request_rejected", code=413, reason=too_large)
        return web.Response(status=413, text=f"{too_large}\n")
    except TimeoutError:
        bound.warning("request_rejected", code=408, reason=f"body not received in {settings.read_timeout} s")
        return web.Response(status=408, text="body too slow\n")
    query = request.rel_url.raw_query_string
    content_type = request.headers.get("Content-Type", "")
    try:
        decoded = decode(body, query, content_type, settings.default_charset)
        bound = bound.bind(kind=decoded.kind.value, fmt=decoded.fmt.value, **log_ids(decoded.params))
        if settings.secret:
            verify(decoded, settings.hash_algorithm, settings.secret)
    except BadRequest as e:
        bound.warning("request_rejected", code=400, reason=e.reason)
        return web.Response(status=400, text=f"bad request: {e.reason}\n")
    except InvalidSignature as e:
        bound.warning("request_rejected", code=403, reason=e.reason)
        return web.Response(status=403, text="forbidden: invalid signature\n")
    except Exception:  # noqa: BLE001 - the outermost catch; logged with its traceback
        # A bug of ours: the gateway retries anything but 200/404, so ask it to come back later.
        bound.exception("request_failed", code=503)
        return web.Response(status=503, text="temporarily unavailable\n")
    raw = RawRequest(
        rid=rid,
        received_at=received_at,
        query=redact_query(query),
        content_type=content_type,
        body=body,
    )
    try:
        job_id = await request.app[ENQUEUER].submit(raw)
    except (RedisError, OSError) as e:
        bound.error("request_not_stored", code=503, reason=f"redis: {type(e).__name__}: {e}")
        return web.Response(status=503, text="temporarily unavailable\n")
    bound.info("request_stored", code=200, job=job_id)
    return web.Response(text="OK\n")


async def _read_body(request: web.Request, timeout: float) -> bytes:
    # A callback's body nearly always arrives with its headers: no timer is needed for it then.
    if request.content.is_eof():
        return await request.read()
    async with asyncio.timeout(timeout):
        return await request.read()


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.Response(text="alive\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers: a load balancer sends callbacks only to instances that can store."""
    try:
        await request.app[REDIS].ping()
    except (RedisError, OSError) as e:
        log.warning("not_ready", reason=f"redis: {type(e).__name__}")
        return web.Response(status=503, text="redis unreachable\n")
    return web.Response(text="ready\n")
