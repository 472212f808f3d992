"""RawRequest's JSON form, and the redaction of the secret from a stored query string."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import unquote_plus

import pytest

from smsc.constants import REDACTED
from smsc.exceptions import PermanentError
from smsc.protocol.raw import RawRequest, redact_query

SECRET = "s3cret-Key_1"


def raw(body: bytes, query: str = "charset=utf-8&md5=redacted") -> RawRequest:
    """A raw request with `body` and ordinary other fields."""
    return RawRequest(
        rid="0f3a9c2e",
        received_at=1700000000.123456,
        query=query,
        content_type="application/x-www-form-urlencoded; charset=windows-1251",
        body=body,
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"id=1001&phone=79998887766&status=1", id="ascii-form"),
        pytest.param("mes=Привет".encode("cp1251"), id="cp1251"),
        pytest.param("mes=Привет".encode("koi8_r"), id="koi8-r"),
        pytest.param(b"\x00\xff\xfe\x80\xc0\xaf", id="invalid-utf-8"),
        pytest.param(bytes(range(256)), id="every-byte"),
        pytest.param(b"\n" * 3 + b"=" * 2, id="padding-like"),
    ],
)
def test_a_raw_request_survives_a_json_round_trip(body: bytes) -> None:
    """to_json, through real JSON text, then from_json gives back the same request, bytes included."""
    original = raw(body, query="charset=koi8-r&fmt=3&x=%D0%9F&md5=redacted")
    data = original.to_json()
    assert data["body"] == base64.b64encode(body).decode("ascii")
    assert RawRequest.from_json(json.loads(json.dumps(data))) == original


def _valid() -> dict[str, Any]:
    return {
        "rid": "r1",
        "received_at": 1700000000.5,
        "query": "",
        "content_type": "",
        "body": base64.b64encode(b"id=1").decode(),
    }


def _without(name: str) -> dict[str, Any]:
    data = _valid()
    del data[name]
    return data


def _with(**changes: Any) -> dict[str, Any]:
    return {**_valid(), **changes}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="none"),
        pytest.param([], id="list"),
        pytest.param("not a request", id="string"),
        pytest.param(42, id="number"),
        pytest.param({}, id="empty-object"),
        *[pytest.param(_without(name), id=f"no-{name}") for name in _valid()],
        pytest.param(_with(body="not base64!"), id="body-not-base64"),
        pytest.param(_with(body="YQ"), id="body-bad-padding"),
        pytest.param(_with(body="aGk=\n"), id="body-with-newline"),
        pytest.param(_with(body="é"), id="body-non-ascii"),
        pytest.param(_with(body=123), id="body-number"),
        pytest.param(_with(body=None), id="body-none"),
        pytest.param(_with(received_at="soon"), id="received-at-text"),
        pytest.param(_with(received_at=None), id="received-at-none"),
        pytest.param(_with(received_at=[1]), id="received-at-list"),
        pytest.param(_with(received_at=-1), id="received-at-negative"),
        pytest.param(_with(received_at=1e20), id="received-at-past-year-9999"),
        pytest.param(_with(received_at=float("nan")), id="received-at-nan"),
        pytest.param(_with(received_at=float("inf")), id="received-at-inf"),
        pytest.param(_with(account=None), id="account-none"),
        pytest.param(_with(account=7), id="account-number"),
        pytest.param(_with(account=""), id="account-empty"),
        pytest.param(_with(account="shop/1"), id="account-slash"),
        pytest.param(_with(account="магазин"), id="account-cyrillic"),
        pytest.param(_with(account="a" * 65), id="account-65-characters"),
    ],
)
def test_malformed_raw_json_is_a_permanent_error(data: Any) -> None:
    """Anything but the output of to_json is refused as a PermanentError."""
    with pytest.raises(PermanentError):
        RawRequest.from_json(data)


HASH_NAMES = {"md5", "sha1", "crc32"}


@pytest.mark.parametrize(
    ("query", "redacted"),
    [
        pytest.param(f"md5={SECRET}", [0], id="md5-alone"),
        pytest.param(f"charset=utf-8&md5={SECRET}&fmt=3", [1], id="md5-middle"),
        pytest.param(f"sha1={SECRET}&charset=koi8-r", [0], id="sha1"),
        pytest.param(f"crc32={SECRET}", [0], id="crc32"),
        pytest.param(f"MD5={SECRET}", [0], id="upper-case"),
        pytest.param(f"Sha1={SECRET}", [0], id="mixed-case"),
        pytest.param(f"%6D%645={SECRET}", [0], id="percent-encoded-md5"),
        pytest.param(f"%43RC32={SECRET}", [0], id="percent-encoded-upper-crc32"),
        pytest.param(f"md5={SECRET}&md5={SECRET}2", [0, 1], id="twice"),
        pytest.param(f"md5={SECRET}&sha1={SECRET}&crc32={SECRET}", [0, 1, 2], id="all-three"),
        pytest.param(f"md5={SECRET}=x", [0], id="equals-in-value"),
        pytest.param("md5=", [0], id="empty-value"),
    ],
)
def test_redact_query_replaces_the_hash_values(query: str, redacted: list[int]) -> None:
    """The value of every md5/sha1/crc32 parameter (any case, percent-encoded name) is replaced."""
    result = redact_query(query)
    assert SECRET not in result
    parts = result.split("&")
    assert len(parts) == len(query.split("&"))
    for i in redacted:
        name, value = parts[i].split("=", 1)
        assert unquote_plus(name).lower() in HASH_NAMES
        assert value == REDACTED


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="empty"),
        pytest.param("charset=utf-8&fmt=3", id="plain"),
        pytest.param("shop=%D0%9F%D1%80+x&empty=&flag&a=b=c", id="encoded-empty-flag"),
        pytest.param("md5x=1&my_md5=2&x=md5&sha=3&crc=4", id="hash-like-names"),
        pytest.param("A=%2b%2B&b=%zz&c=%&&d=;e", id="odd-escapes-and-empties"),
    ],
)
def test_redact_query_leaves_other_parameters_byte_identical(query: str) -> None:
    """A query string without hash parameters comes back byte for byte, and around one, so do the others."""
    assert redact_query(query) == query
    assert redact_query(f"{query}&md5={SECRET}&{query}") == f"{query}&md5={REDACTED}&{query}"


@pytest.mark.parametrize(
    ("field", "value"),
    [("query", None), ("rid", 5), ("content_type", ["x"]), ("received_at", "soon"), ("received_at", True)],
    ids=["query-null", "rid-number", "content-type-list", "received-at-text", "received-at-bool"],
)
def test_wrongly_typed_fields_are_a_permanent_error(field: str, value: object) -> None:
    """A raw request whose fields have the wrong JSON types is refused, not coerced with str()."""
    data = RawRequest(rid="r", received_at=1.0, query="", content_type="", body=b"x").to_json()
    data[field] = value
    with pytest.raises(PermanentError):
        RawRequest.from_json(data)


@pytest.mark.parametrize("account", ["default", "shop", "Sub-client_2", "a" * 64])
def test_the_account_survives_a_json_round_trip(account: str) -> None:
    """The job carries the account the request came to, and a replay keeps it."""
    data = json.loads(json.dumps(_with(account=account)))
    assert data["account"] == account
    request = RawRequest.from_json(data)
    assert request.account == account
    assert request.to_json()["account"] == account


def test_a_job_of_the_previous_release_is_the_default_account() -> None:
    """A raw request queued before there were accounts has none: it came to POST /smsc."""
    assert "account" not in _valid()
    assert RawRequest.from_json(_valid()).account == "default"
