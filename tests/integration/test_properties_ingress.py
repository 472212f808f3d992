"""Properties of the real ingress on generated HTTP requests: what it may answer, and what it queues.

Requests go over a raw socket, so that the method, the request target, the headers and the framing
(Content-Length, chunked, no body, an announced oversize body) are exactly what was generated;
`Connection: close` ends each one.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from smsc.settings import Settings
from tests.fuzz import examples
from tests.integration.conftest import service_env
from tests.integration.test_ingress import status_line
from tests.payloads import CHARSETS, FORMATS, KINDS, PY_CODEC, SAMPLES, build

ANSWERS = {200, 400, 403, 405, 408, 413, 415}
PROPERTY = hypothesis.settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def settings(redis_db: Redis) -> Settings:
    """The signed md5 deployment of conftest on a queue of its own, so that no worker started elsewhere
    on the test queue takes a job from under the count."""
    return Settings.from_env(service_env(SMSC_QUEUE="smsc-test-properties"))


@dataclass(frozen=True)
class Wire:
    """One generated HTTP request, before framing."""

    method: bytes
    target: bytes
    content_type: bytes | None
    body: bytes
    # "length" (Content-Length), "chunked", "none" (no body at all) or "oversize" (see `excess`).
    framing: str
    # How far past the limit an "oversize" request's announced Content-Length goes.
    excess: int = 0


async def send(client: TestClient[Any, Any], wire: Wire, max_body: int) -> int:
    """Send `wire` on a new connection and return the status code of the answer."""
    head = [wire.method + b" " + wire.target + b" HTTP/1.1", b"Host: smsc.test", b"Connection: close"]
    if wire.content_type is not None:
        head.append(b"Content-Type: " + wire.content_type)
    payload = b""
    if wire.framing == "length":
        head.append(b"Content-Length: %d" % len(wire.body))
        payload = wire.body
    elif wire.framing == "oversize":
        # Announced, not sent: the ingress must answer before reading it.
        head.append(b"Content-Length: %d" % (max_body + wire.excess))
    elif wire.framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        half = len(wire.body) // 2
        chunks = [c for c in (wire.body[:half], wire.body[half:]) if c]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    answer = await status_line(client, b"\r\n".join(head) + b"\r\n\r\n" + payload, timeout=10)
    version, code, *_ = answer.split(b" ", 2)
    assert version.startswith(b"HTTP/1."), answer
    return int(code)


def signed(
    kind: str, fmt: str, charset: str, values: dict[str, str], url: dict[str, str]
) -> tuple[bytes, str, str]:
    """Body, query and Content-Type of a callback signed with the test secret, as the gateway sends it."""
    codec = PY_CODEC[charset]

    def fit(params: dict[str, str]) -> dict[str, str]:
        return {k: v.encode(codec, errors="replace").decode(codec) for k, v in params.items()}

    r = build(kind, fmt, charset, "md5", fit({**SAMPLES[kind], **values}), url_params=fit(url))
    return r.body, r.query, r.content_type


TOKENS = st.sampled_from(
    ["&", "=", "%", "%D0%9F", "%ff", "%00", "+", "fmt=3", "charset=utf-8", "md5=", "id=1"]
)
QUERY_TEXT = st.lists(
    TOKENS | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=6), max_size=8
).map("".join)
VALUES = st.text(max_size=20) | st.from_regex(r"[0-9]{1,25}", fullmatch=True)
SIGNED = st.builds(
    signed,
    st.sampled_from(KINDS),
    st.sampled_from(FORMATS),
    st.sampled_from(CHARSETS),
    st.dictionaries(
        st.sampled_from(["id", "phone", "status", "mes", "to", "ts", "time", "cost", "x"]), VALUES
    ),
    st.dictionaries(st.sampled_from(["account", "charset", "fmt", "md5", "sha1"]), VALUES, max_size=2),
)


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """A signed callback with one stretch of its body replaced by random bytes."""
    body, query, content_type = draw(SIGNED)
    start = draw(st.integers(0, len(body)))
    end = draw(st.integers(start, len(body)))
    return body[:start] + draw(st.binary(max_size=6)) + body[end:], query, content_type


GARBAGE = st.tuples(
    st.binary(max_size=200) | st.sampled_from([b"", b"{}", b"[]", b"<r/>", b"id=1&phone=7&status=1"]),
    QUERY_TEXT,
    st.sampled_from(["", "application/json", "text/xml; charset=koi8-r", "text/plain; charset=klingon"]),
)
OTHER_METHODS = st.sampled_from(
    [b"GET", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"CONNECT"]
) | st.from_regex(rb"[A-Z]{1,8}", fullmatch=True)
# The handler's path as clients may spell it, and paths that are not the handler's (nor any other route:
# GET /metrics answers 200 without a job).
PATHS = st.sampled_from([b"/smsc", b"/smsc", b"/smsc/", b"//smsc", b"/smsc//", b"/x/../smsc", b"/smsc/."]) | (
    st.sampled_from([b"/smsc;x", b"/smsc%20", b"/", b"/callback"])
)
# Bytes a query string may not hold (the HTTP parser, not the handler, refuses them), and oddities.
TARGET_NOISE = st.sampled_from([b" ", b"\x01", b"\xff", b"#frag", b"?", b"%zz", b"/.."])
# Header values may carry obs-text; aiohttp hands them over as surrogate escapes.
HEADER_NOISE = st.binary(max_size=30).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F)) | st.just(
    b"a; charset=\xd0\x9f"
)


def rarely(draw: st.DrawFn, strategy: st.SearchStrategy[Any], usual: Any) -> Any:
    """About one draw in four from `strategy`, else `usual`."""
    return draw(strategy) if draw(st.sampled_from([False, False, False, True])) else usual


@st.composite
def wires(draw: st.DrawFn) -> Wire:
    """Any request to the handler path or near it: signed, damaged or garbage; any method, header and
    framing."""
    source = draw(st.sampled_from([SIGNED, SIGNED, damaged(), GARBAGE]))
    body, query, content_type = draw(source)
    method = rarely(draw, OTHER_METHODS, b"POST")
    header = rarely(draw, HEADER_NOISE, draw(st.sampled_from([content_type.encode("latin-1"), None])))
    framing = draw(st.sampled_from(["length", "length", "length", "chunked", "none", "oversize"]))
    if framing in ("none", "oversize"):
        body = b""
    excess = draw(st.integers(1, 10**9)) if framing == "oversize" else 0
    query_part = query.encode("ascii") + rarely(draw, TARGET_NOISE, b"")
    target = draw(PATHS) + (b"?" + query_part if query_part else b"")
    return Wire(method, target, header, body, framing, excess)


def newest_requests(queue: Queue) -> list[dict[str, Any]]:
    """The raw requests of the job put on the queue last."""
    job_id = queue.connection.lindex(queue.key, -1).decode()
    (requests,) = Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer).args
    return list(requests)


async def assert_healthy(client: TestClient[Any, Any]) -> None:
    """The ingress still answers its liveness check."""
    resp = await client.get("/healthz")
    assert resp.status == 200


@PROPERTY
@given(wire=wires())
async def test_any_request_gets_a_known_answer_and_the_server_stays_up(
    wire: Wire, client: TestClient[Any, Any], settings: Settings
) -> None:
    """Any request is answered 200, 400, 403, 405, 408, 413 or 415 (never 404 or 5xx),
    and /healthz still answers 200 after it."""
    status = await send(client, wire, settings.max_body)
    assert status in ANSWERS, wire
    await assert_healthy(client)


@PROPERTY
@given(wire=wires())
async def test_a_job_is_queued_exactly_when_the_answer_is_200(
    wire: Wire, client: TestClient[Any, Any], queue: Queue, settings: Settings
) -> None:
    """A request answered 200 adds exactly one job to the queue, holding that request's body, and any
    other answer adds none."""
    before = queue.count
    status = await send(client, wire, settings.max_body)
    assert queue.count == before + (status == 200), (status, wire)
    if status == 200:
        (raw,) = newest_requests(queue)
        assert base64.b64decode(raw["body"]) == wire.body


@hypothesis.settings(PROPERTY, max_examples=20)
@example(hash_value="\ud800")
@given(hash_value=st.builds("{}{}".format, st.characters(categories=["Cs"]), st.text(max_size=4)))
async def test_hash_with_a_lone_surrogate_gets_403(
    hash_value: str, client: TestClient[Any, Any], queue: Queue, settings: Settings
) -> None:
    """A JSON callback whose md5 holds a lone surrogate escape is refused with 403 and not queued."""
    record = {"id": "1001", "phone": "79998887766", "status": "1", "md5": hash_value}
    wire = Wire(
        b"POST", b"/smsc?fmt=3&charset=utf-8", b"application/json", json.dumps(record).encode(), "length"
    )
    assert await send(client, wire, settings.max_body) == 403
    assert queue.count == 0
