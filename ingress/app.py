"""The aiohttp application: POST /smsc and /smsc/{account}, GET /healthz, GET /readyz, GET /metrics."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_urldispatcher import MatchInfoError
from prometheus_client import CONTENT_TYPE_LATEST
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ingress.accounts import AccountBook
from ingress.backpressure import QueueWatch
from ingress.enqueue import Enqueuer, ReplicasMissing
from ingress.metrics import UNKNOWN_KIND, IngressMetrics
from ingress.wire import HANDLER_PATH, account_of, compression, content_type_text, query_text, target_path
from smsc.accounts import Account, Accounts, load
from smsc.constants import REDIS_CONNECT_TIMEOUT_SECONDS, REDIS_SOCKET_TIMEOUT_SECONDS, UNKNOWN_ACCOUNT
from smsc.exceptions import BadRequest, InvalidSignature
from smsc.protocol import Decoded, RawRequest, decode
from smsc.protocol.fields import log_ids
from smsc.protocol.raw import redact_query, redact_secret
from smsc.protocol.signature import verify_any
from smsc.queue import queue_key
from smsc.redisconn import aclose, async_client
from smsc.settings import Settings

log = structlog.get_logger("smsc.ingress")

SETTINGS = web.AppKey("settings", Settings)
ACCOUNTS = web.AppKey("accounts", AccountBook)
REDIS = web.AppKey("redis", aioredis.Redis)
ENQUEUER = web.AppKey("enqueuer", Enqueuer)
WATCH = web.AppKey("watch", QueueWatch)
# None when SMSC_METRICS=off.
METRICS = web.AppKey[IngressMetrics | None]("metrics")

# What `_receive` answers: the response, the event's kind and the reason class of the answer.
Answer = tuple[web.Response, str, str]
# The fields of a request's one log line, gathered as it is read: a dict, not a chain of structlog
# binds, each of which copies the context into a new logger.
Line = dict[str, Any]


def create_app(
    settings: Settings, metrics_dir: str | None = None, accounts: Accounts | None = None
) -> web.Application:
    """The ingress for `settings`; refuses to build without a secret unless unsigned is allowed.

    `metrics_dir` is the directory the processes of `serve --workers N` share their metrics in;
    `accounts` those read at start (else read here, from SMSC_ACCOUNTS_FILE).
    """
    settings.require_secret()
    app = web.Application(
        client_max_size=settings.max_body,
        middlewares=[_never_404],
        # Set here, not by the runner, so that every way of serving the app (run_app, the tests'
        # servers, each process of `serve --workers N`) gets them.
        handler_args={
            # A compressed body is refused, never inflated (a 64 KB gzip bomb costs CPU at once).
            "auto_decompress": False,
            # aiohttp closes a connection whose handler waits for a request past this: one that has
            # not finished its headers in time, and an idle keep-alive connection alike.
            "keepalive_timeout": settings.read_timeout,
            # A client leaving mid-body does not cancel the handler, which logs it as any bad body.
            "handler_cancellation": False,
        },
    )
    app[SETTINGS] = settings
    app[ACCOUNTS] = AccountBook(settings, load(settings) if accounts is None else accounts)
    app[METRICS] = IngressMetrics(metrics_dir) if settings.metrics else None
    app.cleanup_ctx.append(_redis_client)
    # Never 404 on the handler: a 404 stops the gateway's retries for good.
    for path in (
        HANDLER_PATH,
        f"{HANDLER_PATH}/",
        f"{HANDLER_PATH}/{{account}}",
        f"{HANDLER_PATH}/{{account}}/",
    ):
        app.router.add_post(path, receive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", scrape)
    return app


async def _redis_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    timeouts = {
        "socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS,
        # No retry: redis-py's default (3 more tries, backing off 1, 2, 4 s) held every request about
        # 12 s when Redis was unreachable (make test-scale, scenario 5). A fast 503 is the better
        # answer: the load balancer tries the other ingress host and the gateway resends.
        "retry": Retry(NoBackoff(), 0),
    }
    client = async_client(settings.redis_url, **timeouts)
    # The writes' own connection: each WAIT must follow its MULTI/EXEC on it (see Enqueuer).
    writer = async_client(settings.redis_url, max_connections=1, **timeouts)
    app[REDIS] = client
    app[ENQUEUER] = Enqueuer(writer, settings, app[METRICS])
    app[WATCH] = watch = QueueWatch(client, queue_key(settings), settings.max_queue, app[METRICS])
    task = asyncio.create_task(watch.run())
    yield
    watch.stop()
    await task
    await aclose(writer)
    await aclose(client)


async def receive(request: web.Request) -> web.Response:
    """Verify one callback, store it raw as an RQ job, and answer 200 only once Redis has it."""
    started = time.perf_counter()
    # 128 random bits, as hex: uuid4's randomness (less its 6 fixed bits), at a fifth of its cost.
    rid = os.urandom(16).hex()
    # Looked up once: a reload while the body arrives changes nothing for this request.
    accounts = request.app[ACCOUNTS].current
    name = account_of(target_path(request)) or UNKNOWN_ACCOUNT
    account = accounts.get(name)
    line: Line = {"rid": rid, "peer": request.remote, "account": name[:80]}
    try:
        response, kind, reason = await _receive(request, rid, line, account)
    except Exception:  # the outermost catch; logged with its traceback
        # A bug of ours: the gateway retries anything but 200/404, so ask it to come back later.
        log.exception("request_failed", **line, code=503)
        response = web.Response(status=503, text="temporarily unavailable\n")
        kind, reason = UNKNOWN_KIND, "internal"
    metrics = request.app[METRICS]
    if metrics is not None:
        metrics.answered(response.status, kind, reason, accounts.label(name))
        metrics.duration.observe(time.perf_counter() - started)
    return response


async def _receive(request: web.Request, rid: str, line: Line, account: Account | None) -> Answer:
    settings = request.app[SETTINGS]
    received_at = time.time()
    if account is None:
        # 403 as for a wrong hash, never 404: the gateway keeps retrying while the file is fixed.
        log.warning("request_rejected", **line, code=403, reason="unknown account")
        return _unread(web.Response(status=403, text="forbidden: unknown account\n")), UNKNOWN_KIND, "account"
    if request.app[WATCH].full:
        log.warning(
            "request_not_stored", **line, code=503, reason="queue full", length=request.app[WATCH].length
        )
        return (
            web.Response(status=503, text="temporarily unavailable: queue full\n"),
            UNKNOWN_KIND,
            "queue_full",
        )
    encoding = compression(request)
    if encoding is not None:
        log.warning("request_rejected", **line, code=415, reason=f"Content-Encoding {encoding[:40]!r}")
        return (
            _unread(web.Response(status=415, text="compressed bodies are not accepted\n")),
            UNKNOWN_KIND,
            "compressed",
        )
    too_large = f"body over {settings.max_body} bytes"
    if (request.content_length or 0) > settings.max_body:
        log.warning("request_rejected", **line, code=413, reason=too_large)
        return _unread(web.Response(status=413, text=f"{too_large}\n")), UNKNOWN_KIND, "too_large"
    try:
        body = await _read_body(request, settings.read_timeout)
    except web.HTTPRequestEntityTooLarge:
        log.warning("request_rejected", **line, code=413, reason=too_large)
        return web.Response(status=413, text=f"{too_large}\n"), UNKNOWN_KIND, "too_large"
    except TimeoutError:
        log.warning(
            "request_rejected", **line, code=408, reason=f"body not received in {settings.read_timeout} s"
        )
        return web.Response(status=408, text="body too slow\n"), UNKNOWN_KIND, "slow_body"
    except (RequestPayloadError, ConnectionError) as e:
        # Broken chunked framing, a body shorter than announced, a client gone: aiohttp's own
        # error text may quote the body, so only its class is kept.
        log.warning(
            "request_rejected", **line, code=400, reason=f"body broken: {type(e.__cause__ or e).__name__}"
        )
        return web.Response(status=400, text="bad request: body broken\n"), UNKNOWN_KIND, "body_broken"
    # Decoded and verified from exactly the text that is stored (see ingress/wire.py).
    query = query_text(request)
    content_type = content_type_text(request)
    kind = UNKNOWN_KIND
    try:
        decoded = decode(body, query, content_type, account.charset)
        kind = decoded.kind.value
        line.update(kind=kind, fmt=decoded.fmt.value, **log_ids(decoded.params))
        if account.secrets:
            position = verify_any(decoded, account.hash_algorithm, account.secrets)
            if len(account.secrets) > 1:
                # During a rotation: once no line shows the old one's number, it can go.
                line["secret_no"] = position + 1
        body, query = _without_secret(body, query, content_type, decoded, account)
    except BadRequest as e:
        log.warning("request_rejected", **line, code=400, reason=e.reason)
        return web.Response(status=400, text=f"bad request: {e.reason}\n"), kind, "bad_request"
    except InvalidSignature as e:
        log.warning("request_rejected", **line, code=403, reason=e.reason)
        return web.Response(status=403, text="forbidden: invalid signature\n"), kind, "signature"
    raw = RawRequest(
        rid=rid,
        received_at=received_at,
        query=query,
        content_type=content_type,
        body=body,
        account=account.name,
    )
    try:
        job_id = await request.app[ENQUEUER].submit(raw)
    except ReplicasMissing as e:
        log.error("request_not_stored", **line, code=503, reason=f"replicas: {e}")
        return web.Response(status=503, text="temporarily unavailable\n"), kind, "replicas"
    except (RedisError, OSError) as e:
        log.error("request_not_stored", **line, code=503, reason=f"redis: {type(e).__name__}: {e}")
        return web.Response(status=503, text="temporarily unavailable\n"), kind, "redis"
    log.info("request_stored", **line, code=200, job=job_id)
    return web.Response(text="OK\n"), kind, "ok"


def _unread(refused: web.Response) -> web.Response:
    # The body is left unread: the connection is not kept alive for another request.
    refused.force_close()
    return refused


async def _read_body(request: web.Request, timeout: float) -> bytes:
    # A callback's body nearly always arrives with its headers: no timer is needed for it then.
    if request.content.is_eof():
        return await request.read()
    async with asyncio.timeout(timeout):
        return await request.read()


def _without_secret(
    body: bytes, query: str, content_type: str, decoded: Decoded, account: Account
) -> tuple[bytes, str]:
    """The body and query string to store: the hash values and the bytes of every secret of the
    account redacted.

    A parameter that still holds a secret afterwards (percent- or entity-encoded, so that its
    bytes do not show) cannot be stored: BadRequest.
    """
    hashless = redact_query(query)
    stored_body, stored_query = body, hashless
    # The longest first: a secret inside another must not leave the other's remainder behind.
    secrets = sorted(account.secrets, key=len, reverse=True)
    for secret in secrets:
        stored_body = redact_secret(stored_body, secret)
        stored_query = redact_secret(stored_query.encode("ascii"), secret).decode("ascii")
    if stored_body == body and stored_query == hashless and not _holds_secret(decoded, secrets):
        return body, hashless
    stored = decode(stored_body, stored_query, content_type, account.charset)
    if _holds_secret(stored, secrets):
        raise BadRequest("a parameter holds the secret")
    return stored_body, stored_query


def _holds_secret(decoded: Decoded, secrets: list[str]) -> bool:
    # One text to search: a secret (latin letters, digits, - and _) never holds the NUL between.
    texts = "\x00".join(text for pair in decoded.params.items() for text in pair).lower()
    return any(secret.lower() in texts for secret in secrets)


@web.middleware
async def _never_404(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No route matched exactly (a path variant, another method, an odd target): see `elsewhere`."""
    if isinstance(request.match_info, MatchInfoError):
        return await elsewhere(request)
    return await handler(request)


async def elsewhere(request: web.Request) -> web.StreamResponse:
    """Never 404, which would stop the gateway's retries: a variant of a known path is that path,
    another method on it 405, any other path 400."""
    path = target_path(request)
    route = ROUTES.get(HANDLER_PATH if account_of(path) is not None else path)
    line: Line = {"peer": request.remote, "method": request.method[:20], "path": path[:200]}
    metrics = request.app[METRICS]
    if route is None:
        log.warning("request_rejected", **line, code=400, reason="unknown path")
        if metrics is not None:
            metrics.answered(400, UNKNOWN_KIND, "unknown_path", UNKNOWN_ACCOUNT)
        return web.Response(status=400, text="bad request: unknown path\n")
    methods, handler = route
    if request.method not in methods:
        log.warning("request_rejected", **line, code=405, reason="method not allowed")
        if metrics is not None:
            metrics.answered(405, UNKNOWN_KIND, "method", UNKNOWN_ACCOUNT)
        return web.Response(status=405, headers={"Allow": ", ".join(methods)}, text="method not allowed\n")
    return await handler(request)


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


async def scrape(request: web.Request) -> web.Response:
    """Prometheus's scrape: every process's values with `serve --workers N`."""
    recorded = request.app[METRICS]
    if recorded is None:
        # A comment is a valid exposition: the scrape succeeds and shows that nothing is measured.
        return web.Response(text="# metrics are off (SMSC_METRICS=off)\n", content_type="text/plain")
    return web.Response(body=recorded.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# Every path the ingress answers on, with its methods: what `elsewhere` compares a normalized path to.
ROUTES: dict[str, tuple[tuple[str, ...], Handler]] = {
    HANDLER_PATH: (("POST",), receive),
    "/healthz": (("GET", "HEAD"), healthz),
    "/readyz": (("GET", "HEAD"), readyz),
    "/metrics": (("GET", "HEAD"), scrape),
}
