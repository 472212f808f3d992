"""The ingress against crafted HTTP: compressed bodies, odd paths and methods, broken framing, slow
headers, bytes PostgreSQL cannot store, and the secret inside a body. Real ingress, real Redis."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import defusedxml.ElementTree as SafeET
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from redis import Redis
from rq import Queue

from ingress.app import create_app
from tests.integration.test_ingress import settings_with, status_line, stored_requests
from tests.payloads import SAMPLES, SECRET, Request, build


def wire(r: Request, target: bytes = b"/smsc", method: bytes = b"POST", headers: bytes = b"") -> bytes:
    """`r` as raw bytes on the wire, to `target` exactly as given (no client normalizes it)."""
    if target.startswith((b"/", b"http://")) and r.query:
        target += b"?" + r.query.encode("ascii")
    return (
        method + b" " + target + b" HTTP/1.1\r\nHost: smsc.test\r\nConnection: close\r\n"
        b"Content-Type: " + r.content_type.encode("latin-1") + b"\r\n"
        b"Content-Length: %d\r\n" % len(r.body) + headers + b"\r\n" + r.body
    )


async def code(client: TestClient[Any, Any], raw: bytes) -> int:
    """The status code the ingress answers to `raw`."""
    line = await status_line(client, raw)
    assert line.startswith(b"HTTP/1."), line
    return int(line.split(b" ")[1])


@pytest_asyncio.fixture
async def short(redis_db: Redis, db: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """A real ingress with SMSC_READ_TIMEOUT=1."""
    async with TestClient(TestServer(create_app(settings_with(SMSC_READ_TIMEOUT="1")))) as c:
        yield c


# --- Compressed bodies --------------------------------------------------------------------------

BOMB = gzip.compress(b"\0" * (32 << 20))  # 32 MiB of zeros in about 32 KB

# aiohttp answers `br` and `zstd` itself with 400 when it would decompress them (neither library is
# installed): 415 for them also shows that aiohttp never builds a decompressor.
ENCODINGS = {
    "gzip-bomb": (b"Content-Encoding: gzip\r\n", BOMB),
    "deflate": (b"Content-Encoding: deflate\r\n", zlib.compress(build("status").body)),
    "br": (b"Content-Encoding: br\r\n", b"\x0b\x02\x80hello\x03"),
    "zstd": (b"Content-Encoding: zstd\r\n", b"\x28\xb5\x2f\xfd"),
    "gzip-identity": (b"Content-Encoding: gzip, identity\r\n", BOMB),
    "upper-case": (b"Content-Encoding: GZIP\r\n", BOMB),
    "second-header": (b"Content-Encoding: identity\r\nContent-Encoding: gzip\r\n", BOMB),
}


@pytest.mark.parametrize(("header", "body"), ENCODINGS.values(), ids=ENCODINGS.keys())
async def test_a_compressed_body_is_refused_with_415(
    header: bytes, body: bytes, client: TestClient[Any, Any], queue: Queue
) -> None:
    """Any Content-Encoding but identity is answered 415 and nothing is queued."""
    r = build("status")
    assert await code(client, wire(Request(body, r.query, r.content_type), headers=header)) == 415
    assert queue.count == 0


async def test_a_compressed_body_is_refused_before_it_is_sent(client: TestClient[Any, Any]) -> None:
    """The 415 comes although the announced body never arrives: it is not read, let alone inflated."""
    head = b"POST /smsc HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 32768\r\n\r\n"
    assert (await status_line(client, head)).startswith(b"HTTP/1.1 415")


@pytest.mark.parametrize("header", [b"Content-Encoding: identity\r\n", b"Content-Encoding: \r\n"])
async def test_identity_is_not_compression(header: bytes, client: TestClient[Any, Any], queue: Queue) -> None:
    """`identity` (or an empty Content-Encoding) is an ordinary body: stored as sent."""
    r = build("call")
    assert await code(client, wire(r, headers=header)) == 200
    (raw,) = stored_requests(queue)
    assert base64.b64decode(raw["body"]) == r.body


# --- Paths and methods: never 404 ---------------------------------------------------------------

HANDLER_VARIANTS = [
    b"/smsc",
    b"/smsc/",
    b"//smsc",
    b"/smsc//",
    b"/x/../smsc",
    b"/smsc/.",
    b"/./smsc/./",
    b"/sms%63",
    b"/../smsc",
    b"http://smsc.test/smsc",
    b"http://smsc.test//smsc/",
]


@pytest.mark.parametrize("target", HANDLER_VARIANTS, ids=lambda t: t.decode())
async def test_a_variant_of_the_handler_path_is_the_handler(
    target: bytes, client: TestClient[Any, Any], queue: Queue
) -> None:
    """A path that is /smsc once slashes, `.` and `..` are resolved reaches the handler: stored."""
    assert await code(client, wire(build("status"), target)) == 200
    assert queue.count == 1


ELSEWHERE = {
    "semicolon": (b"POST", b"/smsc;x", 400),
    "trailing-space": (b"POST", b"/smsc%20", 400),
    "unknown": (b"POST", b"/callback", 400),
    "root": (b"POST", b"/", 400),
    "php": (b"POST", b"/smsc.php", 400),
    "above-root": (b"GET", b"/../../etc/passwd", 400),
    "asterisk": (b"OPTIONS", b"*", 400),
    "connect-authority": (b"CONNECT", b"smsc.test:443", 400),
    "absolute-without-path": (b"POST", b"http://smsc.test", 400),
    **{
        f"{method.decode().lower()}-handler": (method, b"/smsc", 405)
        for method in (b"GET", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE", b"PROPFIND")
    },
    # A method aiohttp's parser does not know is refused by aiohttp itself, with 400.
    "unknown-method": (b"BREW", b"/smsc", 400),
    "get-handler-variant": (b"GET", b"//smsc/", 405),
    "connect-handler": (b"CONNECT", b"/smsc", 405),
    "post-healthz": (b"POST", b"/healthz", 405),
    "healthz": (b"GET", b"/healthz", 200),
    "readyz": (b"GET", b"/readyz", 200),
    "healthz-variant": (b"GET", b"/healthz/", 200),
}


@pytest.mark.parametrize(("method", "target", "expected"), ELSEWHERE.values(), ids=ELSEWHERE.keys())
async def test_no_path_and_no_method_is_ever_404(
    method: bytes, target: bytes, expected: int, client: TestClient[Any, Any], queue: Queue
) -> None:
    """Unknown paths get 400, other methods on a known path 405, the health checks still answer."""
    assert await code(client, wire(build("status"), target, method)) == expected
    assert queue.count == 0


async def test_405_names_the_allowed_method(client: TestClient[Any, Any]) -> None:
    """A 405 on the handler says that POST is what it takes."""
    resp = await client.put("/smsc")
    assert (resp.status, resp.headers["Allow"]) == (405, "POST")


# --- Broken bodies: 400, never 500 --------------------------------------------------------------


async def test_a_bad_chunk_after_the_headers_is_never_500(short: TestClient[Any, Any], queue: Queue) -> None:
    """Chunked framing that breaks once the handler is reading the body gets no 500: aiohttp's C
    parser drops the body without telling the handler, which then answers 408 after
    SMSC_READ_TIMEOUT (the pure-Python parser's error gives 400 at once: see the process tests)."""
    reader, writer = await asyncio.open_connection(short.host, short.port)
    try:
        writer.write(
            b"POST /smsc HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        # The 100 Continue comes once the handler was chosen: the bad chunk then breaks a body in flight.
        assert (await asyncio.wait_for(reader.readline(), 20)).startswith(b"HTTP/1.1 100")
        await reader.readline()
        writer.write(b"3\r\nid=\r\nzz\r\n")
        answer = await asyncio.wait_for(reader.readline(), 20)
    finally:
        writer.close()
    assert answer.split(b" ")[1] in (b"400", b"408"), answer
    assert queue.count == 0


BROKEN_FRAMING = {
    "bad-chunk-size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nid=1\r\n0\r\n\r\n",
    "chunk-longer-than-said": b"Transfer-Encoding: chunked\r\n\r\n2\r\nid=1\r\n0\r\n\r\n",
    "two-lengths": b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nid=1",
    "length-and-chunked": b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\nid=1",
    "negative-length": b"Content-Length: -1\r\n\r\nid=1",
}


@pytest.mark.parametrize("rest", BROKEN_FRAMING.values(), ids=BROKEN_FRAMING.keys())
async def test_broken_framing_is_400(rest: bytes, client: TestClient[Any, Any], queue: Queue) -> None:
    """A body whose framing is broken is answered 400 and not queued."""
    assert await code(client, b"POST /smsc HTTP/1.1\r\nHost: x\r\n" + rest) == 400
    assert queue.count == 0


# --- Slow headers ------------------------------------------------------------------------------


async def closed_without_answer(client: TestClient[Any, Any], sent: bytes) -> bytes:
    """Send `sent` on a new connection and read until the server closes it; return what came."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(sent)
        # aiohttp's own keep-alive default is 75 s: the test's wait is well below it.
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /smsc HTTP/1.1\r\n", b"POST /smsc HTTP/1.1\r\nHost: x\r\nContent-Le"],
    ids=["nothing", "request-line", "half-a-header"],
)
async def test_unfinished_headers_are_cut_off(sent: bytes, short: TestClient[Any, Any]) -> None:
    """A connection that has not finished its headers within SMSC_READ_TIMEOUT is closed, unanswered."""
    assert await closed_without_answer(short, sent) == b""


async def test_an_idle_keep_alive_connection_is_closed(short: TestClient[Any, Any]) -> None:
    """After an answer, a connection that sends no further request is closed after SMSC_READ_TIMEOUT."""
    answer = await closed_without_answer(short, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"alive\n")


# --- Text PostgreSQL can store ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "stored"),
    [
        (
            b"application/x-www-form-urlencoded; x=\xd0\x9f\xff",
            "application/x-www-form-urlencoded; x=\xd0\x9f\xff",
        ),
        (b"application/x-www-form-urlencoded;\tx=\x80", "application/x-www-form-urlencoded;\tx=\x80"),
    ],
    ids=["utf-8-and-ff", "tab-and-80"],
)
async def test_content_type_is_stored_as_latin_1(
    header: bytes, stored: str, client: TestClient[Any, Any], queue: Queue
) -> None:
    """A Content-Type with bytes over 0x7F is stored one character per byte, never as lone surrogates."""
    r = build("status")
    assert await code(client, wire(Request(r.body, r.query, header.decode("latin-1")))) == 200
    (raw,) = stored_requests(queue)
    assert raw["content_type"] == stored


async def test_query_is_stored_as_sent_when_printable(client: TestClient[Any, Any], queue: Queue) -> None:
    """A query string of printable ASCII (escapes included) is stored byte for byte, hash redacted."""
    r = build("status", "form", "windows-1251")
    odd = "&x=%CF%00&y=a+b&z=%zz"
    assert await code(client, wire(Request(r.body, r.query + odd, r.content_type))) == 200
    (raw,) = stored_requests(queue)
    assert raw["query"] == r.query.replace(f"md5={SECRET}", "md5=redacted") + odd


# --- The secret is never stored ----------------------------------------------------------------


def with_secret(fmt: str, secret: str = SECRET) -> Request:
    """A signed status carrying the secret itself as the value of a body parameter (`sha1`)."""
    return build("status", fmt, params={**SAMPLES["status"], "sha1": secret})


def body_value(raw: dict[str, Any], fmt: str, name: str) -> str:
    """The value of `name` in a stored body, read with the standard library."""
    body = base64.b64decode(raw["body"]).decode("utf-8")
    if fmt == "form":
        return dict(parse_qsl(body))[name]
    if fmt == "json":
        return str(json.loads(body)[name])
    return SafeET.fromstring(body).findtext(name) or ""


@pytest.mark.parametrize("secret", [SECRET, SECRET.upper()], ids=["as-is", "upper-case"])
@pytest.mark.parametrize("fmt", ["form", "json", "xml"])
async def test_a_body_parameter_holding_the_secret_is_redacted(
    fmt: str, secret: str, client: TestClient[Any, Any], queue: Queue, redis_db: Redis
) -> None:
    """`sha1=<secret>` in a signed body is stored as `sha1=redacted`, the rest as sent."""
    r = with_secret(fmt, secret)
    assert secret.encode() in r.body
    assert await code(client, wire(r)) == 200
    (raw,) = stored_requests(queue)
    assert base64.b64decode(raw["body"]) == r.body.replace(secret.encode(), b"redacted")
    assert body_value(raw, fmt, "sha1") == "redacted"
    assert body_value(raw, fmt, "id") == SAMPLES["status"]["id"]
    assert SECRET.lower().encode() not in redis_dump(redis_db).lower()


async def test_a_query_parameter_holding_the_secret_is_redacted(
    client: TestClient[Any, Any], queue: Queue
) -> None:
    """The secret in another parameter of the handler URL is redacted too."""
    r = build("call", url_params={"account": SECRET})
    assert await code(client, wire(r)) == 200
    (raw,) = stored_requests(queue)
    assert dict(parse_qsl(raw["query"]))["account"] == "redacted"
    assert SECRET not in raw["query"]


# The secret's first letter, `t`, escaped so that its bytes do not show.
ENCODED = {
    "form-percent": ("form", SECRET.encode(), b"%74" + SECRET[1:].encode()),
    "json-escape": ("json", SECRET.encode(), b"\\u0074" + SECRET[1:].encode()),
    "xml-reference": ("xml", SECRET.encode(), b"&#116;" + SECRET[1:].encode()),
}


@pytest.mark.parametrize(("fmt", "plain", "encoded"), ENCODED.values(), ids=ENCODED.keys())
async def test_an_encoded_secret_in_a_parameter_is_400(
    fmt: str, plain: bytes, encoded: bytes, client: TestClient[Any, Any], queue: Queue
) -> None:
    """A parameter that holds the secret in an escaped form, which cannot be redacted, is refused."""
    r = with_secret(fmt)
    body = r.body.replace(plain, encoded)
    assert plain not in body
    assert await code(client, wire(Request(body, r.query, r.content_type))) == 400
    assert queue.count == 0


def redis_dump(redis_db: Redis) -> bytes:
    """Every hash field in our Redis database, RQ's compressed job data inflated."""
    return b"".join(
        zlib.decompress(v) if k == b"data" else v
        for key in redis_db.keys("*")
        if redis_db.type(key) == b"hash"
        for k, v in redis_db.hgetall(key).items()
    )
