"""The hardened protocol rules end to end (ingress, job, worker, PostgreSQL): what is refused at the
door, what waits in the dead letter, and what is stored exactly as it was sent."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.test_ingress import post
from tests.integration.test_pipeline import Drain
from tests.payloads import SAMPLES, SECRET, Request, build, sign

NOW = int(time.time())


def json_request(kind: str, body: str, url: str = "charset=utf-8&fmt=3") -> Request:
    """A JSON body written by hand (keys twice, escapes), on the handler URL `url` plus the secret."""
    return Request(body.encode("utf-8"), f"{url}&md5={SECRET}", "application/json")


def status_json(extra: str, url: str = "charset=utf-8&fmt=3") -> Request:
    """A correctly signed status as JSON, `extra` members written in as they are."""
    h = sign("status", SAMPLES["status"], "md5")
    body = '{"id": "1001", "phone": "79998887766", "status": "1", ' + extra + f'"md5": "{h}"}}'
    return json_request("status", body, url)


AMBIGUOUS = {
    "json-key-twice": status_json('"status": "2", '),
    "json-keys-collide-once-stored": status_json('"x\\u0000": "1", "x\\ud800": "2", '),
    "form-name-twice": Request(
        build("status").body + b"&cost=1&cost=2", build("status").query, "application/x-www-form-urlencoded"
    ),
    "charsets-disagree": status_json('"charset": "windows-1251", '),
    "multipart-with-fields-in-query": Request(
        b"--x\r\n\r\n--x--\r\n",
        "id=1001&phone=79998887766&status=1&md5=" + sign("status", SAMPLES["status"], "md5"),
        "multipart/form-data; boundary=x",
    ),
    "status-phone-with-colon": build("status", params={**SAMPLES["status"], "phone": "7999:1"}),
    "status-phone-of-words": build("status", params={**SAMPLES["status"], "phone": "Привет, мир!"}),
    "incoming-to-short": build("incoming", params={**SAMPLES["incoming"], "to": "1"}),
    "call-phone-letters": build("call", params={**SAMPLES["call"], "phone": "SMSC"}),
}


@pytest.mark.parametrize("request_", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
async def test_ambiguous_or_implausible_input_is_refused_at_the_door(
    client: TestClient[Any, Any], drain: Drain, db: Any, request_: Request
) -> None:
    """Input that could be read two ways, or whose phone cannot be a phone, gets 400 and reaches nothing."""
    status, text = await post(client, request_)
    assert (status, text.startswith("bad request: ")) == (400, True)
    drain()
    assert db.execute("SELECT count(*) FROM status_events").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


async def test_a_nested_charset_decides_nothing(client: TestClient[Any, Any], drain: Drain, db: Any) -> None:
    """A `charset` inside a nested value neither refuses the request nor changes how it is read."""
    r = status_json('"extra": {"charset": "koi8-r"}, "cmt": "Привет", ')
    assert (await post(client, r))[0] == 200
    drain()
    assert db.execute("SELECT cmt FROM status_events").fetchall() == [("Привет",)]


async def test_crlf_in_cdata_verifies_and_is_stored_as_sent(
    client: TestClient[Any, Any], drain: Drain, db: Any
) -> None:
    """A signed SMS whose text holds CR LF in a CDATA section is accepted and stored byte for byte."""
    text = "line one\r\nline two\r\n"
    r = build("incoming", "xml", params={**SAMPLES["incoming"], "mes": text}, cdata=True)
    assert b"<![CDATA[" in r.body
    assert b"\r\n" in r.body
    assert (await post(client, r))[0] == 200
    drain()
    assert db.execute("SELECT text FROM incoming_messages").fetchall() == [(text,)]


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("status", "ts", str(NOW + 2 * 86400)),
        ("status", "ts", "946684799"),
        ("status", "time", "01.01.99 00:00:00"),
        ("incoming", "sent", str(NOW + 2 * 86400)),
        ("incoming", "time", "0"),
    ],
)
async def test_an_implausible_time_is_dead_lettered_and_moves_nothing(
    client: TestClient[Any, Any], drain: Drain, db: Any, kind: str, field: str, value: str
) -> None:
    """A time before 2000 or more than a day after receipt is never stored as the event's time: the
    request waits in the dead letter with its reason, and `messages` keeps its newest real status."""
    await post(client, build("status"))
    drain()
    forged = {**SAMPLES[kind], field: value}
    if kind == "status":
        forged = {**forged, "status": "20"}  # a failure that would overwrite "delivered"
        forged.pop("time" if field == "ts" else "ts")
    assert (await post(client, build(kind, params=forged)))[0] == 200
    drain()
    ((reason,),) = db.execute("SELECT reason FROM dead_letters").fetchall()
    assert field in reason
    assert db.execute("SELECT status FROM messages").fetchall() == [(1,)]
    assert db.execute("SELECT count(*) FROM status_events").fetchone() == (1,)


async def test_a_captured_incoming_sms_is_not_a_status(
    client: TestClient[Any, Any], drain: Drain, db: Any
) -> None:
    """An incoming SMS's hash (phone:mes:to) re-sent as a status (id:phone:status) is refused: the text
    is no phone and the receiving number no status code."""
    sms = {**SAMPLES["incoming"], "mes": "hello"}
    h = sign("incoming", sms, "md5")
    as_status = {"id": sms["phone"], "phone": sms["mes"], "status": sms["to"], "md5": h}
    assert sign("status", as_status, "md5") == h
    r = json_request("status", json.dumps(as_status))
    assert (await post(client, r))[0] == 400
    drain()
    assert db.execute("SELECT count(*) FROM status_events").fetchone() == (0,)
