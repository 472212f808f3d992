"""The HTTP ingress: what it answers, and that only accepted requests reach the queue."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from ingress.app import REDIS, create_app
from smsc.exceptions import ConfigError
from smsc.settings import Settings
from tests.integration.conftest import service_env
from tests.payloads import ALGORITHMS, CHARSETS, FORMATS, KINDS, SAMPLES, SECRET, Request, build, sign

CASES = [
    (kind, fmt, charset, algorithm)
    for kind in KINDS
    for fmt in FORMATS
    for charset in CHARSETS
    if fmt == "form" or charset != "koi8-r"  # the vendor: with fmt, koi8-r is not used
    for algorithm in ALGORITHMS
]


async def post(client: TestClient[Any, Any], r: Request, path: str = "/smsc") -> tuple[int, str]:
    resp = await client.post(f"{path}?{r.query}", data=r.body, headers={"Content-Type": r.content_type})
    return resp.status, await resp.text()


async def status_line(client: TestClient[Any, Any], raw: bytes, timeout: float = 20) -> bytes:
    """Write `raw` bytes on a new connection and return the answer's status line only: after an
    early answer aiohttp may linger reading a body that is never sent."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=timeout)
    finally:
        writer.close()


def stored_requests(queue: Queue) -> list[dict[str, Any]]:
    """The raw requests of every job on the queue, as the worker will receive them."""
    found = []
    for job in queue.get_jobs():
        (requests,) = job.args
        found.extend(requests)
    return found


def settings_with(**overrides: str) -> Settings:
    return Settings.from_env(service_env(**overrides))


@pytest.mark.parametrize(("kind", "fmt", "charset", "algorithm"), CASES, ids="-".join)
async def test_signed_callback_is_stored_raw(
    kind: str, fmt: str, charset: str, algorithm: str, redis_db: Redis, db: Any
) -> None:
    """Every kind × transport × charset × hash is answered 200 and queued as the exact raw body."""
    settings = settings_with(SMSC_HASH=algorithm)
    r = build(kind, fmt, charset, algorithm)
    async with TestClient(TestServer(create_app(settings))) as client:
        status, text = await post(client, r)
    assert (status, text) == (200, "OK\n")
    (raw,) = stored_requests(Queue(settings.queue, connection=redis_db, serializer=JSONSerializer))
    assert base64.b64decode(raw["body"]) == r.body
    assert raw["content_type"] == r.content_type
    assert f"{algorithm}=redacted" in raw["query"]
    assert raw["rid"]
    assert raw["received_at"] > 0


@pytest.mark.parametrize("crc_form", ["unsigned", "signed", "hex"])
async def test_crc32_forms_accepted(crc_form: str, redis_db: Redis, db: Any) -> None:
    """crc32 is accepted as unsigned decimal (PHP), signed decimal and 8 hex digits."""
    settings = settings_with(SMSC_HASH="crc32")
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await post(client, build("status", algorithm="crc32", crc_form=crc_form)))[0] == 200


async def test_handler_url_parameters_are_kept(client: TestClient[Any, Any], queue: Queue) -> None:
    """Parameters of the handler URL travel with the request."""
    r = build("call", url_params={"account": "shop-1"})
    assert (await post(client, r))[0] == 200
    (raw,) = stored_requests(queue)
    assert "account=shop-1" in raw["query"]


async def test_secret_never_reaches_redis_or_logs(
    client: TestClient[Any, Any], redis_db: Redis, capfd: pytest.CaptureFixture[str]
) -> None:
    """The secret the handler URL carries is redacted before storing, and never logged."""
    r = build("status")
    assert SECRET in r.query
    assert (await post(client, r))[0] == 200
    dump = b"".join(
        zlib.decompress(v) if k == b"data" else v
        for key in redis_db.keys("*")
        if redis_db.type(key) == b"hash"
        for k, v in redis_db.hgetall(key).items()
    )
    assert SECRET.encode() not in dump
    assert SECRET not in capfd.readouterr().err


def _forged(kind: str = "status") -> Request:
    r = build(kind)
    return Request(r.body.replace(b"md5=", b"md5=0"), r.query, r.content_type)


def _without_hash() -> Request:
    return build("status", algorithm=None)


def _other_algorithm() -> Request:
    return build("status", algorithm="crc32")


def _raw_secret() -> Request:
    r = build("status", algorithm=None)
    return Request(r.body + f"&md5={SECRET}".encode(), r.query, r.content_type)


def _wrong_secret() -> Request:
    return build("incoming", secret="another-secret")


def _form(body: bytes, query: str = "") -> Request:
    return Request(body, query, "application/x-www-form-urlencoded")


def _missing(kind: str, field: str) -> Request:
    params = {k: v for k, v in SAMPLES[kind].items() if k != field}
    return build(kind, params=params)


REJECTIONS = {
    "forged-hash": (_forged(), 403),
    "forged-incoming-hash": (_forged("incoming"), 403),
    "missing-hash": (_without_hash(), 403),
    "other-algorithm-crc32": (_other_algorithm(), 403),
    "raw-secret-as-hash": (_raw_secret(), 403),
    "wrong-secret": (_wrong_secret(), 403),
    "unknown-charset-query": (_form(b"id=1&phone=7&status=1", "charset=klingon"), 400),
    "unknown-charset-content-type": (
        Request(b"id=1&phone=7&status=1", "", "application/x-www-form-urlencoded; charset=ebcdic-xx"),
        400,
    ),
    "invalid-utf8": (_form(b"id=1&phone=7&status=1&mes=\xff\xfe", "charset=utf-8"), 400),
    "garbage-bytes": (_form(b"\x00\x01\x02\xff garbage"), 400),
    "empty-body": (_form(b""), 400),
    "truncated-json": (Request(b'{"id": "1", "phone": ', "fmt=3", "application/json"), 400),
    "json-array": (Request(b"[1, 2, 3]", "fmt=3", "application/json"), 400),
    "truncated-xml": (Request(b"<result><id>1</id><phone>", "fmt=2", "text/xml"), 400),
    "xml-billion-laughs": (
        Request(
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b"<r><id>&b;</id></r>",
            "fmt=2",
            "text/xml",
        ),
        400,
    ),
    "xml-external-entity": (
        Request(
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r><id>&x;</id></r>',
            "fmt=2",
            "text/xml",
        ),
        400,
    ),
    **{f"status-without-{f}": (_missing("status", f), 400) for f in ("id", "phone", "status")},
    **{f"incoming-without-{f}": (_missing("incoming", f), 400) for f in ("id", "phone", "to")},
    **{f"call-without-{f}": (_missing("call", f), 400) for f in ("phone", "ts")},
}


@pytest.mark.parametrize(("request_", "code"), REJECTIONS.values(), ids=REJECTIONS.keys())
async def test_rejected_and_nothing_queued(
    request_: Request, code: int, client: TestClient[Any, Any], queue: Queue
) -> None:
    """A request that fails the hash gets 403, one that cannot be read 400; neither is queued."""
    status, text = await post(client, request_)
    assert status == code, text
    assert queue.count == 0


async def test_incoming_without_mes_is_a_status_without_fields(client: TestClient[Any, Any]) -> None:
    """Without `mes` an incoming SMS is read as a status, which then lacks `status`: 400."""
    assert (await post(client, _missing("incoming", "mes")))[0] == 400


async def test_oversize_body_is_413(redis_db: Redis, db: Any) -> None:
    """A body over SMSC_MAX_BODY is refused with 413 and not queued."""
    settings = settings_with(SMSC_MAX_BODY="1024")
    r = build("incoming", params={**SAMPLES["incoming"], "mes": "x" * 2000})
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await post(client, r))[0] == 413
    assert Queue(settings.queue, connection=redis_db).count == 0


async def test_handler_path_never_404(client: TestClient[Any, Any]) -> None:
    """The handler answers on /smsc and /smsc/, and a GET is 405, never 404."""
    assert (await post(client, build("call"), "/smsc/"))[0] == 200
    assert (await client.get("/smsc")).status == 405


async def test_health_and_readiness(client: TestClient[Any, Any]) -> None:
    """/healthz says alive; /readyz says ready while Redis answers."""
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_redis_unreachable_gives_503(db: Any) -> None:
    """With Redis unreachable the callback gets 503 (the gateway retries) and /readyz fails."""
    settings = settings_with(REDIS_URL="redis://127.0.0.1:1/0")
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await post(client, build("status")))[0] == 503
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1,127.0.0.1:2/smsc/0"],
    ids=["redis", "sentinel"],
)
async def test_the_ingress_never_retries_redis(url: str, db: Any) -> None:
    """Neither Redis nor a Sentinel is tried again: a failure is a 503 at once. redis-py's default
    for a client it makes (3 more tries, backing off 1, 2 and 4 s), as for the Sentinels, held every
    request about 12 s while Redis was unreachable, past the load balancer's patience (make
    test-scale, scenario 5)."""
    async with TestClient(TestServer(create_app(settings_with(REDIS_URL=url)))) as client:
        redis = client.app[REDIS]
        sentinels = getattr(redis.connection_pool, "sentinel_manager", None)
        tries = {
            "redis": redis.connection_pool.make_connection().retry.get_retries(),
            **{
                f"sentinel {i}": sentinel.connection_pool.make_connection().retry.get_retries()
                for i, sentinel in enumerate(sentinels.sentinels if sentinels else [])
            },
        }
    assert tries == dict.fromkeys(tries, 0)
    assert len(tries) == (3 if sentinels else 1)


def test_refuses_to_start_without_secret() -> None:
    """No SMSC_SECRET: the ingress will not start unless unsigned callbacks are allowed on purpose."""
    with pytest.raises(ConfigError, match="SMSC_SECRET"):
        create_app(settings_with(SMSC_SECRET=""))


async def test_unsigned_mode_accepts_unsigned(redis_db: Redis, db: Any) -> None:
    """With SMSC_ALLOW_UNSIGNED=1 and no secret, an unsigned callback is stored."""
    settings = settings_with(SMSC_SECRET="", SMSC_ALLOW_UNSIGNED="1")
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await post(client, build("status", algorithm=None)))[0] == 200
    assert Queue(settings.queue, connection=redis_db).count == 1


def test_sign_helper_is_independent() -> None:
    """The test helper's md5 matches a literal computed by hand (guards the helper itself)."""
    assert (
        sign("call", {"phone": "79998887766", "ts": "1"}, "md5", "s")
        == hashlib.md5(b"79998887766:1:s").hexdigest()
    )


async def test_back_pressure_answers_503_above_the_queue_limit(redis_db: Redis, db: Any) -> None:
    """Past SMSC_MAX_QUEUE queued jobs the ingress answers 503 without storing; below it, 200 again."""
    settings = settings_with(SMSC_MAX_QUEUE="2")
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await post(client, build("call")))[0] == 200
        assert (await post(client, build("status")))[0] == 200
        await asyncio.sleep(1.2)  # the queue length is read in the background, twice a second
        status, text = await post(client, build("incoming"))
        assert (status, text) == (503, "temporarily unavailable: queue full\n")
        assert Queue(settings.queue, connection=redis_db).count == 2
        redis_db.delete(f"rq:queue:{settings.queue}")
        await asyncio.sleep(1.2)
        assert (await post(client, build("incoming")))[0] == 200


async def test_slow_body_is_cut_off_with_408(redis_db: Redis, db: Any) -> None:
    """A client that does not send its announced body within SMSC_READ_TIMEOUT gets 408, nothing queued."""
    settings = settings_with(SMSC_READ_TIMEOUT="1")
    async with TestClient(TestServer(create_app(settings))) as client:
        answer = await status_line(
            client, b"POST /smsc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nid=1&phone="
        )
    assert answer.startswith(b"HTTP/1.1 408")
    assert Queue(settings.queue, connection=redis_db).count == 0


async def test_announced_oversize_body_is_refused_before_reading(redis_db: Redis, db: Any) -> None:
    """A Content-Length over the limit gets 413 at once, though the body is never sent."""
    settings = settings_with(SMSC_MAX_BODY="1024")
    async with TestClient(TestServer(create_app(settings))) as client:
        answer = await status_line(
            client, b"POST /smsc HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
        )
    assert answer.startswith(b"HTTP/1.1 413")
