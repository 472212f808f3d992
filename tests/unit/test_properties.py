"""Properties of the pure protocol core on generated input: which exceptions may leave it, and when."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from smsc.exceptions import BadRequest, InvalidSignature, PermanentError

# _form and _local_time are written out for speed: checked against the standard library's parsers.
from smsc.protocol.decode import Decoded, _form, _merge, decode, peek
from smsc.protocol.fields import HashAlgorithm
from smsc.protocol.normalize import IncomingMessage, _local_time, normalize
from smsc.protocol.signature import verify
from tests.fuzz import examples
from tests.payloads import ALGORITHMS, CHARSETS, CONTROL, FORMATS, KINDS, PY_CODEC, SAMPLES, SECRET, build

MOSCOW = ZoneInfo("Europe/Moscow")
RECEIVED = datetime(2025, 1, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Charset names as a sender might spell them: ours, aliases, Python's text and bytes transforms, junk.
CHARSET_NAMES = st.one_of(
    st.sampled_from(CHARSETS),
    st.sampled_from(["UTF8", "cp1251", "KOI8_R", "latin-1", "utf-16", "utf-8-sig", "idna", "rot13"]),
    st.sampled_from(["base64", "hex", "zlib", "punycode", "mbcs", "", " ", "\x00", "utf-8\x00", "..."]),
    st.text(max_size=12),
)
QUERY_PIECES = st.one_of(
    st.sampled_from(["&", "=", "%", "%D0%9F", "%ff", "%00", "%2", "%%", "+", "fmt=2", "fmt=3", "waitcall=1"]),
    st.sampled_from(["id=1", "phone=7", "status=1", "mes=", "to=1", "ts=1", "md5=", "sha1=", "crc32="]),
    CHARSET_NAMES.map(lambda name: f"charset={name}"),
    st.text(max_size=8),
)
QUERIES = st.lists(QUERY_PIECES, max_size=12).map("".join)
BODY_PIECES = st.one_of(
    st.sampled_from([b"{", b"}", b"[", b"]", b'"', b":", b",", b"<", b">", b"</", b"/>", b"\xef\xbb\xbf"]),
    st.sampled_from([b'"charset": "', b"<charset>", b"</charset>", b"<?xml version='1.0' encoding='", b"?>"]),
    st.sampled_from([b"<!DOCTYPE r [<!ENTITY a 'x'>]>", b"&a;", b"&#0;", b"<![CDATA[", b"]]>", b"1e999"]),
    # Names given twice, names that collide once made storable, CRs where XML treats them apart.
    st.sampled_from(
        [b'"id": 1, "id": 2', b'"x\\u0000": 1, "x\\ud800": 2', b"<id>1</id><id>2</id>", b"&id=1&id=2"]
    ),
    st.sampled_from([b"\r", b"<![CDATA[\r\n]]>", b'<x a="\r"/>', b"<!--\r-->", b'"charset": "utf8"']),
    QUERY_PIECES.map(lambda piece: piece.encode("utf-8", "surrogatepass")),
    st.binary(max_size=8),
)
# The first bytes pick the format: most bodies start as JSON or XML would, the rest as anything.
BODIES = st.builds(
    bytes.__add__,
    st.sampled_from([b"", b"{", b"<", b" \xef\xbb\xbf{", b"\n<?xml version='1.0'?>"]),
    st.binary(max_size=300) | st.lists(BODY_PIECES, max_size=24).map(b"".join),
)
CONTENT_TYPES = st.one_of(
    st.text(max_size=40),
    st.builds(
        "{}; {}={}{}{}".format,
        st.sampled_from(["application/json", "text/xml", "application/x-www-form-urlencoded", ""]),
        st.sampled_from(["charset", "CHARSET", "Charset ", "charset\t"]),
        st.sampled_from(["", '"', "'"]),
        CHARSET_NAMES,
        st.sampled_from(["", '"', "'", ";", "; boundary=x"]),
    ),
)
DEFAULT_CHARSETS = st.sampled_from(CHARSETS)


@PROPERTY
@given(body=BODIES, query=QUERIES, content_type=CONTENT_TYPES, default_charset=DEFAULT_CHARSETS)
def test_decode_of_anything_returns_or_raises_bad_request(
    body: bytes, query: str, content_type: str, default_charset: str
) -> None:
    """Any bytes, query string and Content-Type decode to an event or raise BadRequest, nothing else."""
    try:
        decoded = decode(body, query, content_type, default_charset)
    except BadRequest:
        return
    assert isinstance(decoded, Decoded)
    assert decoded.charset in set(PY_CODEC.values())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in decoded.params.items())


@PROPERTY
@given(body=BODIES, query=QUERIES, content_type=CONTENT_TYPES, default_charset=DEFAULT_CHARSETS)
def test_peek_of_anything_never_raises(
    body: bytes, query: str, content_type: str, default_charset: str
) -> None:
    """peek() returns a dict of text for any request at all, and never raises."""
    ids = peek(body, query, content_type, default_charset)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in ids.items())


PROTOCOL_NAMES = (
    *("id", "phone", "status", "mes", "to", "ts", "waitcall", "time", "sent", "sms_id", "smsc", "cnt"),
    *("type", "cost", "flag", "err", "syserr", "sender", "dtmf", "cmt", "imsi", "msc", "mcc", "mnc"),
    *("cn", "net", "rcn", "rnet", "calltime", "callmenu", "ringtime", "charset", "fmt", *ALGORITHMS),
)
KEYS = st.one_of(
    st.sampled_from(PROTOCOL_NAMES),
    st.from_regex(r"[a-z_][a-z0-9_.-]{0,8}", fullmatch=True),
    st.text(max_size=8),
)
DIGITS = st.from_regex(r"[+-]?[0-9]{1,12}", fullmatch=True)
ODD_VALUES = [
    *("", " ", "\x00", "1\x002", "\U0001f600", "1.5", "1,25", "NaN", "-Infinity", "1e999999999", "1_000"),
    *(
        "14.11.23 22:13:20",
        "31.02.2023 25:61:61",
        "01:02:03",
        "99999999:59:59",
        "overtime: 01:30\nhi",
        "0x10",
    ),
    *("65536", "-1", "9" * 40, "9" * 5000, "١٢٣", "\r\n", " 7 ", "1700000000.123456789", "<x>&amp;</x>"),
]
# Unix times around the ends of what datetime holds, and past them.
UNIX_TIMES = st.one_of(
    st.from_regex(r"[0-9]{1,15}(\.[0-9]{1,9})?", fullmatch=True),
    st.sampled_from(["253402300799", "253402300800", "999999999999999", "-62135596800", "0.000000001"]),
)
VALUES = st.one_of(
    DIGITS,
    st.sampled_from(ODD_VALUES),
    st.from_regex(r"[0-9]{1,400}", fullmatch=True),
    st.text(alphabet="Съешь же ещё этих мягких булок ЁЙъ\x00\U0001f4e8\n\t", max_size=30),
    st.text(max_size=30),
)
# JSON may carry nested values, numbers and literals where the protocol has text.
JSON_VALUES = st.one_of(
    VALUES,
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | VALUES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
        max_leaves=8,
    ),
)


@st.composite
def records(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> dict[str, Any]:
    """Parameters of an event: often the control fields of a kind, plus random names and values."""
    record = draw(st.dictionaries(KEYS, values, max_size=10))
    kind = draw(st.sampled_from((*KINDS, None)))
    if kind is not None:
        fields = {name: draw(st.one_of(DIGITS, values)) for name in (*CONTROL[kind], "id")}
        if kind == "call":
            fields["waitcall"] = "1"
        times = st.dictionaries(st.sampled_from(["ts", "sent", "time"]), UNIX_TIMES, max_size=3)
        fields.update(draw(times))
        record = {**record, **fields} if draw(st.booleans()) else {**fields, **record}
    return record


def xml_document(record: dict[str, Any], shape: str) -> str:
    """An XML body of `record` written here: elements, attributes, or wrapped in an outer element."""
    if shape == "attributes":
        attributes = "".join(f" {k}={quoteattr(str(v))}" for k, v in record.items())
        return f"<r><s{attributes}/></r>"
    elements = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in record.items())
    return (
        f"<result><status>{elements}</status></result>"
        if shape == "wrapped"
        else f"<result>{elements}</result>"
    )


@st.composite
def structured_requests(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """Body, query and Content-Type of a form, JSON or XML request of a random record, in a random
    charset declared in one place or none (characters the charset lacks become `?`)."""
    fmt = draw(st.sampled_from(FORMATS))
    charset = draw(st.sampled_from(CHARSETS))
    codec = PY_CODEC[charset]
    record = draw(records(JSON_VALUES if fmt == "json" else VALUES))
    declared = draw(st.sampled_from(["query", "content-type", "xml-declaration", "nowhere"]))
    query = {"fmt": {"form": "", "xml": "2", "json": "3"}[fmt]} if draw(st.booleans()) else {}
    content_type = draw(
        st.sampled_from(["", "application/json", "text/xml", "application/x-www-form-urlencoded"])
    )
    if declared == "query":
        query["charset"] = charset
    elif declared == "content-type":
        content_type = f"{content_type or 'text/plain'}; charset={charset}"
    if fmt == "form":
        text = urlencode({str(k): str(v) for k, v in record.items()}, encoding=codec, errors="replace")
    elif fmt == "json":
        body: Any = {"result": record} if draw(st.booleans()) else record
        text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    else:
        text = xml_document(record, draw(st.sampled_from(["elements", "attributes", "wrapped"])))
        if declared == "xml-declaration":
            text = f'<?xml version="1.0" encoding="{charset}"?>{text}'
    return text.encode(codec, errors="replace"), urlencode(query), content_type


@PROPERTY
@given(request=structured_requests(), default_charset=DEFAULT_CHARSETS, secret=st.text(max_size=12))
def test_structured_request_decodes_normalizes_and_verifies_or_fails_cleanly(
    request: tuple[bytes, str, str], default_charset: str, secret: str
) -> None:
    """A built form, JSON or XML request decodes or raises BadRequest; then normalize raises at most
    PermanentError and verify at most InvalidSignature."""
    body, query, content_type = request
    try:
        decoded = decode(body, query, content_type, default_charset)
    except BadRequest:
        return
    for algorithm in HashAlgorithm:
        with contextlib.suppress(InvalidSignature):
            verify(decoded, algorithm, secret)
    with contextlib.suppress(PermanentError):
        normalize(decoded, MOSCOW, RECEIVED)


# Names the protocol gives no meaning to, so normalize has nothing to refuse in them.
NEUTRAL_KEYS = KEYS.filter(lambda name: name not in PROTOCOL_NAMES)
MESSAGES = st.one_of(
    st.text(),
    st.text(alphabet='Съешь же ещё этих мягких булок ЁЙъ\x00\U0001f4e8\r\n\t"\\{}<>&', max_size=60),
    st.sampled_from(ODD_VALUES),
)


@PROPERTY
@given(
    mes=MESSAGES,
    extra=st.dictionaries(NEUTRAL_KEYS, VALUES, max_size=6),
    declared=st.sampled_from(["query", "body", "content-type", "default"]),
    wrapped=st.booleans(),
    ensure_ascii=st.booleans(),
    default_charset=DEFAULT_CHARSETS,
)
def test_utf8_json_mes_survives_decode_and_normalize_exactly(
    mes: str, extra: dict[str, str], declared: str, wrapped: bool, ensure_ascii: bool, default_charset: str
) -> None:
    """The `mes` of an incoming SMS in utf-8 JSON comes out of decode exactly as sent, and out of
    normalize with only NUL replaced by U+FFFD."""
    record = {**extra, "id": "5001", "phone": "79998887766", "mes": mes, "to": "79001234567"}
    query, content_type = "fmt=3", "application/json"
    if declared == "query":
        query += "&charset=utf-8"
    elif declared == "body":
        record["charset"] = "utf-8"
    elif declared == "content-type":
        content_type += "; charset=utf-8"
    else:
        default_charset = "utf-8"
    body = json.dumps({"result": record} if wrapped else record, ensure_ascii=ensure_ascii).encode("utf-8")
    decoded = decode(body, query, content_type, default_charset)
    assert decoded.kind == "incoming"
    assert decoded.params["mes"] == mes
    event = normalize(decoded, MOSCOW, RECEIVED)
    assert isinstance(event, IncomingMessage)
    assert event.text == mes.replace("\x00", "\ufffd")


SECRETS = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
PHONES = st.from_regex(r"\+?[0-9]{5,15}", fullmatch=True)
# Alphanumeric senders of an incoming SMS.
SENDERS = st.from_regex(r"[A-Za-zА-Яа-яЁё0-9][A-Za-zА-Яа-яЁё0-9 .&'!+@#_-]{0,30}", fullmatch=True)


def texts(fmt: str, charset: str) -> st.SearchStrategy[str]:
    """Text the charset can carry; XML cannot carry most control characters, nor a bare CR (below)."""
    codec = PY_CODEC[charset]
    if fmt == "xml":
        letters = st.characters(codec=codec, exclude_categories=["Cc", "Cs"]) | st.sampled_from("\t\n")
    else:
        letters = st.characters(codec=codec, exclude_categories=["Cs"])
    return st.text(letters, max_size=40)


@st.composite
def signed_requests(draw: st.DrawFn) -> tuple[str, str, str, str, dict[str, str]]:
    """Kind, format, charset, algorithm and valid-ish parameters of a request the gateway would sign."""
    kind = draw(st.sampled_from(KINDS))
    fmt = draw(st.sampled_from(FORMATS))
    # The vendor: with fmt, koi8-r is not used.
    charset = draw(st.sampled_from(CHARSETS if fmt == "form" else ("utf-8", "windows-1251")))
    # Mostly what the gateway sends; sometimes any text the required-field check lets through.
    odd = texts(fmt, charset).filter(str.strip)
    params = {
        "phone": draw(PHONES | SENDERS if kind == "incoming" else PHONES),
        "id": draw(st.integers(min_value=1, max_value=2**63 - 1).map(str) | odd),
    }
    if kind == "status":
        params["status"] = draw(st.integers(min_value=-3, max_value=100).map(str) | odd)
    elif kind == "incoming":
        params.update(mes=draw(texts(fmt, charset)), to=draw(PHONES))
    else:
        params.update(waitcall="1", ts=draw(st.integers(min_value=0, max_value=2**34).map(str) | odd))
    extra = st.dictionaries(st.sampled_from(["sms_id", "time", "cnt", "cost", "sender", "account"]), DIGITS)
    return kind, fmt, charset, draw(st.sampled_from(ALGORITHMS)), {**draw(extra), **params}


@PROPERTY
@given(request=signed_requests(), secret=SECRETS, other=SECRETS, default_charset=DEFAULT_CHARSETS)
def test_signed_request_verifies_only_with_its_secret(
    request: tuple[str, str, str, str, dict[str, str]], secret: str, other: str, default_charset: str
) -> None:
    """A request signed as the gateway signs it verifies with its secret and algorithm, and md5 or sha1
    never verify with another secret."""
    kind, fmt, charset, algorithm, params = request
    r = build(kind, fmt, charset, algorithm, params, secret=secret)
    decoded = decode(r.body, r.query, r.content_type, default_charset)
    assert decoded.kind == kind
    verify(decoded, HashAlgorithm(algorithm), secret)
    if algorithm != "crc32" and other != secret:
        with pytest.raises(InvalidSignature):
            verify(decoded, HashAlgorithm(algorithm), other)


@PROPERTY
@example(hash_value="\ud800", algorithm="md5")
@given(
    hash_value=st.tuples(st.text(max_size=4), st.characters(categories=["Cs"]), st.text(max_size=4)).map(
        "".join
    ),
    algorithm=st.sampled_from(ALGORITHMS),
)
def test_hash_with_a_lone_surrogate_is_an_invalid_signature(hash_value: str, algorithm: str) -> None:
    """A JSON hash parameter holding a lone surrogate escape is refused with InvalidSignature."""
    record = {"id": "1001", "phone": "79998887766", "status": "1", algorithm: hash_value}
    decoded = decode(json.dumps(record).encode("ascii"), "fmt=3&charset=utf-8", "application/json", "utf-8")
    with pytest.raises(InvalidSignature):
        verify(decoded, HashAlgorithm(algorithm), SECRET)


# Text both utf-8 and windows-1251 carry, which XML can hold.
XML_1251_TEXT = texts("xml", "windows-1251")


@PROPERTY
@example(mes="Привет,\r\nмир", charset="utf-8", cdata=True)
@given(
    mes=st.builds("{}{}{}".format, XML_1251_TEXT, st.sampled_from(["\r", "\r\n"]), XML_1251_TEXT),
    charset=st.sampled_from(["utf-8", "windows-1251"]),
    cdata=st.booleans(),
)
def test_xml_sms_with_a_carriage_return_verifies(mes: str, charset: str, cdata: bool) -> None:
    """An incoming SMS whose text holds a CR, sent as XML text or CDATA and signed by the gateway,
    verifies and keeps its text as sent."""
    params = {"id": "5001", "phone": "79998887766", "mes": mes, "to": "79001234567"}
    r = build("incoming", "xml", charset, "md5", params, cdata=cdata)
    decoded = decode(r.body, r.query, r.content_type, "windows-1251")
    verify(decoded, HashAlgorithm.MD5, SECRET)
    assert decoded.params["mes"] == mes


NAMES = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
PLAIN_VALUES = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


def body_with_pairs(fmt: str, pairs: list[tuple[str, str]]) -> bytes:
    """A body carrying `pairs` in order, repeated names included, written without the product code."""
    if fmt == "form":
        return urlencode(pairs).encode("ascii")
    if fmt == "json":
        return ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}").encode()
    return ("<r>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in pairs) + "</r>").encode()


@PROPERTY
@given(
    fmt=st.sampled_from(FORMATS),
    record=st.dictionaries(NAMES, PLAIN_VALUES, max_size=6),
    name=NAMES.filter(lambda name: name != "charset"),
    values=st.lists(PLAIN_VALUES, min_size=2, max_size=2, unique=True),
    where=st.integers(min_value=0, max_value=6),
)
def test_a_name_given_twice_with_different_values_never_decodes(
    fmt: str, record: dict[str, str], name: str, values: list[str], where: int
) -> None:
    """Whatever else a body holds, a name it gives twice with different values makes it a BadRequest."""
    pairs = [(k, v) for k, v in record.items() if k != name]
    pairs[where:where] = [(name, values[0])]
    pairs.append((name, values[1]))
    with pytest.raises(BadRequest):
        decode(body_with_pairs(fmt, pairs), "", "", "utf-8")


@PROPERTY
@given(
    fmt=st.sampled_from(["form", "json"]),
    stem=st.tuples(NAMES, NAMES),
    marks=st.lists(
        st.sampled_from(["\x00", "\ufffd", "\ud800", "\udfff"]), min_size=2, max_size=2, unique=True
    ),
    values=st.lists(PLAIN_VALUES, min_size=2, max_size=2, unique=True),
)
def test_names_colliding_once_made_storable_never_decode(
    fmt: str, stem: tuple[str, str], marks: list[str], values: list[str]
) -> None:
    """Two names equal once NUL and lone surrogates become U+FFFD, with different values, are a BadRequest."""
    if fmt == "form":
        # A url-encoded body carries no lone surrogate in utf-8.
        assume("\ud800" not in marks and "\udfff" not in marks)
    head, tail = stem
    pairs = [
        *SAMPLES["status"].items(),
        (head + marks[0] + tail, values[0]),
        (head + marks[1] + tail, values[1]),
    ]
    if fmt == "form":
        body = urlencode(pairs).encode("ascii")
    else:
        body = ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}").encode()
    with pytest.raises(BadRequest):
        decode(body, "charset=utf-8", "", "utf-8")


# A form's text as a sender may spell it: separators, escapes (valid, broken, non-ASCII), plus signs,
# names given twice, Latin-1 letters (the body's bytes as decode reads them).
FORM_PIECES = st.one_of(
    st.sampled_from(["&", "=", "+", "%", "%2", "%zz", "%41", "%d0%9F", "%D0%9f%D1%80", "%00", "%26", "%3D"]),
    st.sampled_from(["id=1", "id=2", "phone=7", "charset=utf-8", "charset=UTF8", "mes=a+b", "\xe9", "\xff"]),
    st.text(alphabet=st.characters(max_codepoint=255), max_size=6),
)


@PROPERTY
@given(st.lists(FORM_PIECES, max_size=12).map("".join))
def test_a_form_reads_as_parse_qsl_reads_it(text: str) -> None:
    """The form parser written out for speed gives parse_qsl's fields, merged by the same rule, or
    refuses the same names given twice."""
    try:
        expected: dict[str, str] | str = _merge(
            parse_qsl(text, keep_blank_values=True, encoding="latin-1"), "body"
        )
    except BadRequest as e:
        expected = e.reason
    try:
        got: dict[str, str] | str = _form(text, "body")
    except BadRequest as e:
        got = e.reason
    assert got == expected


def _two_digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map("{:02d}".format)


# Mostly in range, with the edges just past it (day 32, month 13, hour 24, second 60, year 0000).
LOCAL_TIMES = st.builds(
    "{}.{}.{} {}:{}:{}".format,
    _two_digits(0, 32),
    _two_digits(0, 13),
    st.one_of(_two_digits(0, 99), st.integers(0, 9999).map("{:04d}".format)),
    _two_digits(0, 24),
    _two_digits(0, 60),
    _two_digits(0, 60),
)


@PROPERTY
@example("01.01.69 00:00:00", MOSCOW)
@example("31.12.68 23:59:59", MOSCOW)
@example("29.02.00 12:00:00", MOSCOW)
@given(LOCAL_TIMES, st.sampled_from([MOSCOW, ZoneInfo("UTC"), ZoneInfo("America/New_York")]))
def test_a_gateway_time_reads_as_strptime_reads_it(value: str, tz: ZoneInfo) -> None:
    """The status time read without strptime is strptime's, or refused where strptime refuses it."""
    expected: datetime | None = None
    for fmt in ("%d.%m.%y %H:%M:%S", "%d.%m.%Y %H:%M:%S"):
        with contextlib.suppress(ValueError):
            expected = datetime.strptime(value, fmt).replace(tzinfo=tz)
            break
    try:
        got: datetime | None = _local_time({"time": value}, "time", tz)
    except PermanentError:
        got = None
    assert got == expected
    assert got is None or got.tzinfo is tz
