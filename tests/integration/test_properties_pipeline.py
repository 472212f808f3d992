"""Properties of the whole pipeline (ingress, job, worker, PostgreSQL) on generated batches: valid
events share one job with requests holding arbitrary text, bytes and headers, signed where the hash
allows. Each valid event is stored, each request answered 200 ends as exactly one row or exactly one
dead letter, and no job fails."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes
from xml.sax.saxutils import escape

import hypothesis
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from redis import Redis

from ingress.app import create_app
from smsc.settings import Settings
from tests.fuzz import examples
from tests.integration.batches import fate, http, post_as_one_job, queued, rid_of
from tests.integration.conftest import TABLES, service_env
from tests.integration.servers import ThrowawayRedis
from tests.integration.test_poison import jobs_left
from tests.payloads import CHARSETS, FORMATS, KINDS, PY_CODEC, SAMPLES, SECRET, Request, build, sign
from workers.runner import run

PROPERTY = hypothesis.settings(
    max_examples=examples(20),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TABLE = {"status": "status_events", "incoming": "incoming_messages", "call": "call_confirmations"}
# Fields the hash does not cover: a captured request lets anyone set them to anything.
UNCOVERED = {
    "status": [
        "ts",
        "time",
        "err",
        "syserr",
        "cnt",
        "type",
        "cost",
        "flag",
        "sender",
        "cmt",
        "mnc",
        "ringtime",
    ],
    "incoming": ["id", "sms_id", "smsc", "sent", "time"],
    "call": ["waitcall", "calltime", "callmenu", "ringtime"],
}
# Unique keys: good events and poisoned ones never meet on a key by chance.
_serial = itertools.count()

NASTY_PIECES = (
    st.characters()
    | st.characters(categories=["Cs"])
    | st.characters(max_codepoint=0x1F)
    | st.sampled_from(["\x00", "\x1b[31m", "\r\n", "\u202e", "\ufeff", ":", "&", "=", "%", "<", '"'])
)


def nasty(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Text with NUL, lone surrogates, control characters, escapes and separators."""
    return st.lists(NASTY_PIECES, min_size=min_size, max_size=max_size).map("".join)


VALUES = st.one_of(
    nasty(0, 30),
    st.integers(-(10**40), 10**40).map(str),
    st.builds(lambda c, n: c * n, st.sampled_from(["9", "x", "\x00", "Я"]), st.integers(1000, 20_000)),
)
NAMES = nasty(1, 8)
# Header bytes: obs-text, a charset name nobody knows, a multipart label, quotes.
CONTENT_TYPES = st.sampled_from(
    [
        b"application/x-www-form-urlencoded; charset=\xd0\x9f",
        b"text/plain\x01",
        b'application/json; q="\\"',
        b"multipart/form-data; boundary=x",
        b"\xff\xfe",
        b"",
    ]
) | st.binary(max_size=30).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F))


@dataclass(frozen=True)
class Poison:
    """A request of the batch that is not a plain valid event."""

    wire: bytes
    body: bytes


def serialize(fmt: str, codec: str, fields: dict[str, str]) -> bytes:
    """A body as the gateway would post it, any text included: JSON escapes keep even surrogates;
    a form or XML body carries what the charset can (the rest is refused at the door, which is fine)."""
    errors = "surrogatepass" if codec == "utf-8" else "replace"
    if fmt == "json":
        return json.dumps(fields).encode("ascii")
    if fmt == "form":
        return "&".join(
            quote_from_bytes(k.encode(codec, errors)) + "=" + quote_from_bytes(v.encode(codec, errors))
            for k, v in fields.items()
        ).encode("ascii")
    xml = "<result>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items()) + "</result>"
    return xml.encode(codec, errors)


def unique(kind: str) -> dict[str, str]:
    """SAMPLES[kind] with a key no other request of the run has."""
    n = next(_serial)
    if kind == "status":
        return {**SAMPLES["status"], "id": str(10**15 + n)}
    if kind == "incoming":
        return {**SAMPLES["incoming"], "id": str(10**17 + n), "mes": f"{SAMPLES['incoming']['mes']} {n}"}
    return {**SAMPLES["call"], "ts": str(1_600_000_000 + n)}


@st.composite
def poisons(draw: st.DrawFn) -> Poison:
    """A callback signed over its covered fields as they are, with arbitrary uncovered fields, extra
    parameters and Content-Type; or arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=300))
        return Poison(http(Request(body, f"charset=utf-8&md5={SECRET}", "")), body)
    kind, fmt, charset = (
        draw(st.sampled_from(KINDS)),
        draw(st.sampled_from(FORMATS)),
        draw(st.sampled_from(CHARSETS)),
    )
    codec = PY_CODEC[charset]
    fields = unique(kind)
    for name in draw(st.lists(st.sampled_from(UNCOVERED[kind]), min_size=1, max_size=3, unique=True)):
        fields[name] = draw(VALUES)
    fields.update(draw(st.dictionaries(NAMES, VALUES, max_size=2)))
    url = {"charset": charset, **({"fmt": "2" if fmt == "xml" else "3"} if fmt != "form" else {})}
    fields.update(url)
    fields["md5"] = sign(kind, fields, "md5", codec=codec)
    query = "&".join(f"{k}={v}" for k, v in {**url, "md5": SECRET}.items())
    body = serialize(fmt, codec, fields)
    request = Request(body, query, "application/octet-stream")
    content_type = draw(st.none() | CONTENT_TYPES)
    return Poison(http(request, content_type), body)


@st.composite
def goods(draw: st.DrawFn) -> Request:
    """A valid event of any kind, format and charset, with a key of its own."""
    kind, fmt = draw(st.sampled_from(KINDS)), draw(st.sampled_from(FORMATS))
    charset = draw(st.sampled_from([c for c in CHARSETS if fmt == "form" or c != "koi8-r"]))
    return build(kind, fmt, charset, params=unique(kind))


@pytest_asyncio.fixture
async def pipeline(
    throwaway_redis: ThrowawayRedis, db: Any
) -> AsyncIterator[tuple[Settings, TestClient[Any, Any]]]:
    """A real ingress on a Redis of our own (paused to batch), and its settings for the worker."""
    settings = Settings.from_env(service_env(REDIS_URL=throwaway_redis.url))
    async with TestClient(TestServer(create_app(settings))) as client:
        yield settings, client


@PROPERTY
@given(good=st.lists(goods(), min_size=1, max_size=8), bad=st.lists(poisons(), min_size=1, max_size=8))
async def test_poisoned_requests_cost_only_themselves(
    good: list[Request],
    bad: list[Poison],
    pipeline: tuple[Settings, TestClient[Any, Any]],
    throwaway_redis: ThrowawayRedis,
    db: Any,
) -> None:
    """In one job with arbitrary requests, every valid event is stored; every request answered 200 ends
    as exactly one row of its kind or exactly one dead letter; the job finishes (no retry waits, nothing
    is in RQ's failed registry)."""
    settings, client = pipeline
    Redis.from_url(settings.redis_url).flushall()
    db.execute(f"TRUNCATE {', '.join(TABLES)}")
    wires = [http(r) for r in good] + [p.wire for p in bad]
    first, codes = await post_as_one_job(
        client, throwaway_redis, http(build("call", params=unique("call"))), wires
    )
    assert first == 200
    assert codes[: len(good)] == [200] * len(good)
    jobs = queued(settings)
    assert sorted(len(job) for job in jobs) == [1, codes.count(200)]
    run(settings, burst=True)
    assert jobs_left(settings) == 0
    for r in good:
        assert fate(db, rid_of(jobs, r.body)) in (
            ["status_events"],
            ["incoming_messages"],
            ["call_confirmations"],
        )
    accepted = [p for p, code in zip(bad, codes[len(good) :], strict=True) if code == 200]
    hypothesis.event(f"dead letters: {db.execute('SELECT count(*) FROM dead_letters').fetchone()[0]}")
    for p in accepted:
        assert len(fate(db, rid_of(jobs, p.body))) == 1, p
    stored = sum(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES if t != "messages")
    assert stored == 1 + len(good) + len(accepted)
