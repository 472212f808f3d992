"""decode(): from body bytes, query string and Content-Type to a kind and named text parameters."""

from __future__ import annotations

import codecs
import json
import random
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import pytest

from smsc.exceptions import BadRequest
from smsc.protocol.decode import decode
from smsc.protocol.fields import UnknownCharset
from tests.payloads import CHARSETS, FORMATS, KINDS, PY_CODEC, SAMPLES, SECRET, build, sign

FMT_QUERY = {"form": "", "xml": "fmt=2", "json": "fmt=3"}
CONTENT_TYPE = {
    "form": "application/x-www-form-urlencoded",
    "xml": "application/xml",
    "json": "application/json",
}
MATRIX = [(k, f, c) for k in KINDS for f in FORMATS for c in CHARSETS if c != "koi8-r" or f == "form"]
MATRIX_IDS = [f"{k}-{f}-{c}" for k, f, c in MATRIX]
FORMAT_CHARSETS = [(f, c) for f in FORMATS for c in CHARSETS if c != "koi8-r" or f == "form"]
FORMAT_CHARSET_IDS = [f"{f}-{c}" for f, c in FORMAT_CHARSETS]
STATUS = {"id": "1001", "phone": "79998887766", "status": "1"}
CYRILLIC = "Съешь же ещё этих мягких французских булок"


def encode(fmt: str, params: dict[str, str], codec: str) -> bytes:
    """A body of `fmt` carrying `params`, written here without the product code."""
    if fmt == "form":
        return urlencode(params, encoding=codec).encode("ascii")
    if fmt == "json":
        return json.dumps(params, ensure_ascii=False).encode(codec)
    return ("<result>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in params.items()) + "</result>").encode(
        codec
    )


def same_codec(a: str, b: str) -> bool:
    """Whether two codec names denote the same codec."""
    return codecs.lookup(a).name == codecs.lookup(b).name


@pytest.mark.parametrize(("kind", "fmt", "charset"), MATRIX, ids=MATRIX_IDS)
def test_every_kind_format_and_charset_decodes_to_the_sent_parameters(
    kind: str, fmt: str, charset: str
) -> None:
    """A gateway request of every kind, format and charset decodes to exactly the parameters sent."""
    req = build(kind, fmt, charset)
    decoded = decode(req.body, req.query, req.content_type, "windows-1251")
    assert decoded.kind == kind
    assert decoded.fmt == fmt
    assert same_codec(decoded.charset, PY_CODEC[charset])
    assert {name: decoded.params.get(name) for name in SAMPLES[kind]} == SAMPLES[kind]
    assert decoded.params["charset"] == charset
    assert decoded.params["md5"] == sign(kind, SAMPLES[kind], "md5", codec=PY_CODEC[charset])


@pytest.mark.parametrize(
    "text",
    [
        "Привет, мир!",
        CYRILLIC,
        "Ёжик & <ёлка> = 100% + \"кавычки\" 'и' ;?#",
        "  пробелы по краям  ",
        "строка 1\nстрока 2",
        "ЁЖЗИЙ ёжзий ъЪ ьЬ ЭЮЯ эюя",
        "",
    ],
    ids=["greeting", "pangram", "specials", "edge-spaces", "newline", "rare-letters", "empty"],
)
@pytest.mark.parametrize(("fmt", "charset"), FORMAT_CHARSETS, ids=FORMAT_CHARSET_IDS)
def test_cyrillic_mes_round_trips_exactly(fmt: str, charset: str, text: str) -> None:
    """An incoming SMS text comes out of decode() character for character as it was sent."""
    req = build("incoming", fmt, charset, params={**SAMPLES["incoming"], "mes": text})
    decoded = decode(req.body, req.query, req.content_type, "windows-1251")
    assert decoded.kind == "incoming"
    assert decoded.params["mes"] == text


# Rows: format, query, charset named in the body, Content-Type charset, default, codec of the bytes.
PRECEDENCE = [
    pytest.param(
        "form", "charset=utf-8", "UTF8", "koi8-r", "koi8-r", "utf-8", id="form-query-and-body-agree"
    ),
    pytest.param("form", "", "koi8-r", "utf-8", "utf-8", "koi8_r", id="form-body-before-header"),
    pytest.param("form", "", None, "utf-8", "windows-1251", "utf-8", id="form-header-before-default"),
    pytest.param("form", "", None, None, "utf-8", "utf-8", id="form-default-utf-8"),
    pytest.param("form", "", None, None, "koi8-r", "koi8_r", id="form-default-koi8-r"),
    pytest.param("form", "", None, None, "windows-1251", "cp1251", id="form-default-windows-1251"),
    pytest.param(
        "json",
        "charset=utf8",
        "utf-8",
        "windows-1251",
        "windows-1251",
        "utf-8",
        id="json-query-and-body-agree",
    ),
    pytest.param("json", "", "utf-8", "windows-1251", "windows-1251", "utf-8", id="json-body-before-header"),
    pytest.param("json", "", None, "utf-8", "windows-1251", "utf-8", id="json-header-before-default"),
    pytest.param("json", "", None, None, "utf-8", "utf-8", id="json-default-utf-8"),
    pytest.param("json", "", None, None, "windows-1251", "cp1251", id="json-default-windows-1251"),
    pytest.param(
        "xml", "charset=windows-1251", "cp1251", "utf-8", "utf-8", "cp1251", id="xml-query-and-body-agree"
    ),
    pytest.param("xml", "", "utf-8", "windows-1251", "windows-1251", "utf-8", id="xml-body-before-header"),
    pytest.param("xml", "", None, "utf-8", "windows-1251", "utf-8", id="xml-header-before-default"),
    pytest.param("xml", "", None, None, "utf-8", "utf-8", id="xml-default-utf-8"),
    pytest.param("xml", "", None, None, "windows-1251", "cp1251", id="xml-default-windows-1251"),
]


@pytest.mark.parametrize(("fmt", "query", "body_charset", "header_charset", "default", "codec"), PRECEDENCE)
def test_charset_comes_from_query_then_body_then_content_type_then_default(
    fmt: str, query: str, body_charset: str | None, header_charset: str | None, default: str, codec: str
) -> None:
    """The transmission charset is the query's (which the body's must match), else the body's, else the
    Content-Type's, else the default."""
    params = dict(SAMPLES["incoming"], mes=CYRILLIC)
    if body_charset is not None:
        params["charset"] = body_charset
    content_type = CONTENT_TYPE[fmt] + (f"; charset={header_charset}" if header_charset else "")
    query = "&".join(q for q in (query, FMT_QUERY[fmt]) if q)
    decoded = decode(encode(fmt, params, codec), query, content_type, default)
    assert same_codec(decoded.charset, codec)
    assert decoded.params["mes"] == CYRILLIC


@pytest.mark.parametrize(
    ("query", "content_type", "codec"),
    [
        pytest.param("charset=cp1251", "", "cp1251", id="query-cp1251"),
        pytest.param("charset=CP1251", "", "cp1251", id="query-CP1251"),
        pytest.param("charset=Windows-1251", "", "cp1251", id="query-Windows-1251"),
        pytest.param("charset=utf8", "", "utf-8", id="query-utf8"),
        pytest.param("charset=UTF-8", "", "utf-8", id="query-UTF-8"),
        pytest.param("charset=KOI8-R", "", "koi8_r", id="query-KOI8-R"),
        pytest.param("charset=koi8_r", "", "koi8_r", id="query-koi8_r"),
        pytest.param(
            "", 'application/x-www-form-urlencoded; charset="utf8"', "utf-8", id="header-quoted-utf8"
        ),
        pytest.param("", "application/x-www-form-urlencoded;charset=cp1251", "cp1251", id="header-cp1251"),
    ],
)
def test_charset_aliases_are_accepted(query: str, content_type: str, codec: str) -> None:
    """Common aliases of the three gateway charsets name the same charset."""
    params = dict(SAMPLES["incoming"], mes=CYRILLIC)
    decoded = decode(encode("form", params, codec), query, content_type, "windows-1251")
    assert same_codec(decoded.charset, codec)
    assert decoded.params["mes"] == CYRILLIC


@pytest.mark.parametrize(
    ("body", "query", "content_type", "default"),
    [
        pytest.param(b"id=1&phone=7&status=1", "charset=latin-1", "", "windows-1251", id="query-latin-1"),
        pytest.param(b"id=1&phone=7&status=1", "charset=bogus", "", "windows-1251", id="query-bogus"),
        pytest.param(
            b"id=1&phone=7&status=1", "charset=", "text/plain; charset=rot13", "utf-8", id="header-rot13"
        ),
        pytest.param(b"id=1&phone=7&status=1&charset=cp866", "", "", "utf-8", id="form-body-cp866"),
        pytest.param(
            b'{"id": 1, "phone": "7", "status": 1, "charset": "ascii"}', "", "", "utf-8", id="json-ascii"
        ),
        pytest.param(
            b"<r><id>1</id><phone>7</phone><status>1</status><charset>cp500</charset></r>",
            "",
            "",
            "utf-8",
            id="xml-cp500",
        ),
        pytest.param(b"id=1&phone=7&status=1", "", "text/plain; charset=base64", "utf-8", id="header-base64"),
        pytest.param(b"id=1&phone=7&status=1", "", "", "iso-8859-5", id="default-iso-8859-5"),
        pytest.param(b"id=1&phone=7&status=1", "charset=%00", "", "utf-8", id="query-nul"),
    ],
)
def test_unknown_charset_is_a_bad_request(body: bytes, query: str, content_type: str, default: str) -> None:
    """A charset other than utf-8, koi8-r or windows-1251 (or an alias) is refused as UnknownCharset."""
    with pytest.raises(BadRequest) as excinfo:
        decode(body, query, content_type, default)
    assert isinstance(excinfo.value, UnknownCharset)


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("where", ["query", "body", "content-type", "default"])
def test_koi8_r_with_a_json_or_xml_body_is_read_as_windows_1251(fmt: str, where: str) -> None:
    """koi8-r named for a JSON or XML body is read as windows-1251, since the gateway never uses it there."""
    params = dict(SAMPLES["incoming"], mes=CYRILLIC)
    if where == "body":
        params["charset"] = "koi8-r"
    query = FMT_QUERY[fmt] + ("&charset=koi8-r" if where == "query" else "")
    content_type = CONTENT_TYPE[fmt] + ("; charset=koi8-r" if where == "content-type" else "")
    default = "koi8-r" if where == "default" else "utf-8"
    decoded = decode(encode(fmt, params, "cp1251"), query, content_type, default)
    assert same_codec(decoded.charset, "cp1251")
    assert decoded.params["mes"] == CYRILLIC


@pytest.mark.parametrize("fmt", FORMATS)
def test_url_parameters_are_kept_and_the_body_wins_on_a_clash(fmt: str) -> None:
    """Query parameters absent from the body are kept; a name in both takes the body's value."""
    req = build("status", fmt, "utf-8")
    query = f"shop=42&id=999&status=7&{req.query}&ref=a%20b"
    decoded = decode(req.body, query, req.content_type, "windows-1251")
    assert decoded.params["shop"] == "42"
    assert decoded.params["ref"] == "a b"
    assert decoded.params["id"] == "1001"
    assert decoded.params["status"] == "1"
    assert decoded.params["md5"] == sign("status", SAMPLES["status"], "md5")
    assert decoded.params["md5"] != SECRET


@pytest.mark.parametrize(
    ("params", "kind"),
    [
        pytest.param(
            {"id": "5", "phone": "79998887766", "mes": "hi", "to": "79001234567"}, "incoming", id="mes"
        ),
        pytest.param(
            {"id": "5", "phone": "79998887766", "mes": "", "to": "79001234567"}, "incoming", id="empty-mes"
        ),
        pytest.param(
            {"id": "5", "phone": "79998887766", "mes": "hi", "to": "79001234567", "waitcall": "1", "ts": "1"},
            "incoming",
            id="mes-and-waitcall",
        ),
        pytest.param({"waitcall": "1", "phone": "79998887766", "ts": "1700000200"}, "call", id="waitcall"),
        pytest.param(
            {"waitcall": "", "phone": "79998887766", "ts": "1700000200"}, "call", id="empty-waitcall"
        ),
        pytest.param(
            {"waitcall": "1", "phone": "79998887766", "ts": "1", "id": "1", "status": "1"},
            "call",
            id="waitcall-with-status-fields",
        ),
        pytest.param({"id": "1", "phone": "79998887766", "status": "1"}, "status", id="neither"),
    ],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_kind_is_told_by_mes_then_waitcall(fmt: str, params: dict[str, str], kind: str) -> None:
    """`mes` (even empty) makes an incoming SMS, else `waitcall` a call confirmation, else a status."""
    req = build(kind, fmt, "utf-8", algorithm=None, params=params)
    assert decode(req.body, req.query, req.content_type, "windows-1251").kind == kind


# The `mes` of an incoming SMS is not in this table: without `mes` the request is no incoming SMS.
REQUIRED = [
    ("status", "id"),
    ("status", "phone"),
    ("status", "status"),
    ("incoming", "id"),
    ("incoming", "phone"),
    ("incoming", "to"),
    ("call", "phone"),
    ("call", "ts"),
]


@pytest.mark.parametrize("how", ["missing", "empty", "blank"])
@pytest.mark.parametrize(("kind", "field"), REQUIRED, ids=[f"{k}-{f}" for k, f in REQUIRED])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_or_empty_required_field_is_a_bad_request_naming_it(
    fmt: str, kind: str, field: str, how: str
) -> None:
    """An event without one of its kind's required fields (or with it empty) is refused, naming the field."""
    params = dict(SAMPLES[kind])
    if how == "missing":
        del params[field]
    else:
        params[field] = "" if how == "empty" else "  "
    req = build(kind, fmt, "utf-8", algorithm=None, params=params)
    with pytest.raises(BadRequest, match=rf"[\"']{field}[\"']"):
        decode(req.body, req.query, req.content_type, "windows-1251")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_incoming_sms_without_mes_is_no_incoming_sms(fmt: str) -> None:
    """Without `mes` an incoming SMS's fields read as a status, which then lacks its `status`."""
    params = {k: v for k, v in SAMPLES["incoming"].items() if k != "mes"}
    req = build("incoming", fmt, "utf-8", algorithm=None, params=params)
    with pytest.raises(BadRequest, match="'status'"):
        decode(req.body, req.query, req.content_type, "windows-1251")


@pytest.mark.parametrize(
    ("literal", "text"),
    [
        pytest.param("1001", "1001", id="int"),
        pytest.param("-1", "-1", id="negative"),
        pytest.param("1.50", "1.50", id="trailing-zero"),
        pytest.param("1e3", "1e3", id="exponent"),
        pytest.param(
            "0.1000000000000000055511151231257827", "0.1000000000000000055511151231257827", id="long-float"
        ),
        pytest.param("123456789012345678901234567890", "123456789012345678901234567890", id="huge-int"),
        pytest.param('"1.25"', "1.25", id="string"),
    ],
)
def test_json_numbers_keep_their_literal_text(literal: str, text: str) -> None:
    """A JSON number becomes exactly the text it was written as, never a float's repr."""
    body = f'{{"id": 1001, "phone": 79998887766, "status": 1, "x": {literal}}}'.encode()
    decoded = decode(body, "charset=utf-8&fmt=3", "application/json", "windows-1251")
    assert decoded.params["x"] == text
    assert (decoded.params["id"], decoded.params["phone"], decoded.params["status"]) == (
        "1001",
        "79998887766",
        "1",
    )


@pytest.mark.parametrize("wrapper", ["result", "status", "data"])
def test_a_json_object_wrapping_the_parameters_is_unwrapped(wrapper: str) -> None:
    """An object whose single member is an object of parameters reads as those parameters."""
    body = json.dumps({wrapper: {"id": 1001, "phone": "79998887766", "status": 1, "mes_x": "Ёж"}}).encode()
    decoded = decode(body, "fmt=3", "application/json; charset=utf-8", "windows-1251")
    assert decoded.kind == "status"
    assert {k: decoded.params[k] for k in ("id", "phone", "status", "mes_x")} == {
        "id": "1001",
        "phone": "79998887766",
        "status": "1",
        "mes_x": "Ёж",
    }


def test_a_nested_json_value_is_kept_as_its_json_text() -> None:
    """A nested JSON value is kept as JSON text that reads back to the same value (numbers stay numbers)."""
    body = b'{"id": 1001, "phone": "79998887766", "status": 1, "extra": {"a": 1, "b": [1.5, "x"]}}'
    decoded = decode(body, "fmt=3", "application/json; charset=utf-8", "windows-1251")
    assert json.loads(decoded.params["extra"]) == {"a": 1, "b": [1.5, "x"]}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[]", id="empty-array"),
        pytest.param(b'[{"id": 1001, "phone": "79998887766", "status": 1}]', id="array-of-object"),
        pytest.param(b'"id=1001&phone=79998887766&status=1"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="true"),
        pytest.param(b'{"id": 1001, "phone": "7", "status": NaN}', id="nan-constant"),
        pytest.param(b'{"id": 1001, "phone": "7", "status": Infinity}', id="infinity-constant"),
    ],
)
def test_json_that_is_not_an_object_of_parameters_is_a_bad_request(body: bytes) -> None:
    """A JSON body that is not an object (or uses non-standard constants) is refused."""
    with pytest.raises(BadRequest):
        decode(body, "charset=utf-8&fmt=3", "application/json", "windows-1251")


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        pytest.param(
            '<result id="1001" phone="79998887766" status="1" ts="1700000000"/>',
            {"id": "1001", "phone": "79998887766", "status": "1", "ts": "1700000000"},
            id="root-attributes",
        ),
        pytest.param(
            "<result><id>1001</id><phone>79998887766</phone><status>1</status></result>",
            {"id": "1001", "phone": "79998887766", "status": "1"},
            id="child-text",
        ),
        pytest.param(
            '<result id="1001"><phone>79998887766</phone><status>1</status></result>',
            {"id": "1001", "phone": "79998887766", "status": "1"},
            id="attributes-and-children",
        ),
        pytest.param(
            "<result><id>1001</id><phone>79998887766</phone><status>1</status>"
            '<cost currency="RUB">1.25</cost>'
            '<sender name="SMSC"/></result>',
            {"id": "1001", "cost": "1.25", "cost.currency": "RUB", "sender": "", "sender.name": "SMSC"},
            id="child-attributes",
        ),
        pytest.param(
            "<response><result><id>1001</id><phone>79998887766</phone><status>1</status></result></response>",
            {"id": "1001", "phone": "79998887766", "status": "1"},
            id="one-wrapper",
        ),
        pytest.param(
            "<a><b><c><id>1001</id><phone>79998887766</phone><status>1</status></c></b></a>",
            {"id": "1001", "phone": "79998887766", "status": "1"},
            id="two-wrappers",
        ),
        pytest.param(
            '<result xmlns="urn:x"><id>1001</id><phone>79998887766</phone><status>1</status></result>',
            {"id": "1001", "phone": "79998887766", "status": "1"},
            id="namespace",
        ),
        pytest.param(
            "<result>\n  <id>1001</id>\n  <phone>79998887766</phone>\n  <status>1</status>\n</result>\n",
            {"id": "1001", "phone": "79998887766", "status": "1"},
            id="indented",
        ),
    ],
)
def test_xml_parameters_come_from_root_attributes_child_text_and_child_attributes(
    xml: str, expected: dict[str, str]
) -> None:
    """XML parameters are the root's attributes, children's text, and children's attributes as `tag.attr`."""
    decoded = decode(xml.encode(), "charset=utf-8&fmt=2", "application/xml", "windows-1251")
    assert decoded.kind == "status"
    assert {k: decoded.params.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("declaration", "query", "content_type", "codec"),
    [
        pytest.param(
            '<?xml version="1.0" encoding="windows-1251"?>',
            "charset=windows-1251",
            "",
            "cp1251",
            id="cp1251-named-twice",
        ),
        pytest.param(
            '<?xml version="1.0" encoding="UTF-8"?>\n', "charset=utf-8", "", "utf-8", id="utf-8-named-twice"
        ),
        pytest.param(
            "<?xml version='1.0' encoding='utf-8' standalone='yes'?>",
            "",
            "text/xml; charset=utf-8",
            "utf-8",
            id="single-quotes-standalone",
        ),
        pytest.param(
            '<?xml version="1.0" encoding="utf-8"?>',
            "charset=windows-1251",
            "",
            "cp1251",
            id="declaration-disagrees-query-wins",
        ),
        pytest.param('<?xml version="1.0"?>', "charset=utf-8", "", "utf-8", id="no-encoding"),
        pytest.param('\ufeff<?xml version="1.0" encoding="utf-8"?>', "charset=utf-8", "", "utf-8", id="bom"),
        pytest.param(
            '<?xml version="1.0" encoding="utf-8"?>',
            "",
            "application/xml",
            "utf-8",
            id="declaration-only-utf-8",
        ),
        pytest.param(
            '<?xml version="1.0" encoding="windows-1251"?>',
            "",
            "application/xml",
            "cp1251",
            id="declaration-only-cp1251",
        ),
    ],
)
def test_an_xml_declaration_with_an_encoding_is_handled(
    declaration: str, query: str, content_type: str, codec: str
) -> None:
    """An XML declaration does not stop parsing, and its encoding names the charset if nothing else does."""
    params = dict(SAMPLES["incoming"], mes=CYRILLIC)
    xml = (
        declaration + "<result>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in params.items()) + "</result>"
    )
    # The default is the other charset, so that only the declaration can name the right one.
    default = "utf-8" if codec == "cp1251" else "windows-1251"
    decoded = decode(xml.encode(codec), "&".join(q for q in (query, "fmt=2") if q), content_type, default)
    assert decoded.params["mes"] == CYRILLIC
    assert decoded.params["to"] == SAMPLES["incoming"]["to"]


FIELDS_XML = "<id>1001</id><phone>79998887766</phone><status>1</status>"


@pytest.mark.parametrize(
    "xml",
    [
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
            f"<result>{FIELDS_XML}<mes>&lol3;</mes><to>7</to></result>",
            id="billion-laughs",
        ),
        pytest.param(
            '<!DOCTYPE result [<!ENTITY e "1001">]>'
            "<result><id>&e;</id><phone>7</phone><status>1</status></result>",
            id="internal-entity",
        ),
        pytest.param(
            '<!DOCTYPE result [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            f"<result>{FIELDS_XML}<cmt>&xxe;</cmt></result>",
            id="external-entity-file",
        ),
        pytest.param(
            '<!DOCTYPE result [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/x">]>'
            f"<result>{FIELDS_XML}<cmt>&xxe;</cmt></result>",
            id="external-entity-http",
        ),
        pytest.param(
            '<!DOCTYPE result [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>'
            f"<result>{FIELDS_XML}</result>",
            id="parameter-entity",
        ),
        pytest.param(
            f'<!DOCTYPE result SYSTEM "http://127.0.0.1:9/x.dtd"><result>{FIELDS_XML}</result>',
            id="external-dtd",
        ),
        pytest.param(f"<!DOCTYPE result><result>{FIELDS_XML}</result>", id="plain-doctype"),
        pytest.param(
            f'<?xml version="1.0"?>\n<!DOCTYPE result []>\n<result>{FIELDS_XML}</result>',
            id="empty-internal-subset",
        ),
        pytest.param(f"<result>{FIELDS_XML}<cmt>&undefined;</cmt></result>", id="undefined-entity"),
    ],
)
def test_xml_with_a_doctype_or_entities_is_refused(xml: str) -> None:
    """Entity expansion, external entities and any DOCTYPE are refused as a bad request."""
    with pytest.raises(BadRequest):
        decode(xml.encode(), "charset=utf-8&fmt=2", "application/xml", "windows-1251")


@pytest.mark.parametrize("charset", ["utf-8", "windows-1251", "koi8-r", None])
@pytest.mark.parametrize("prefix", [b"", b"{", b"<", b"id=1&"], ids=["bare", "brace", "angle", "form"])
def test_random_bytes_are_a_bad_request(prefix: bytes, charset: str | None) -> None:
    """Random bytes in the body are refused as BadRequest and never raise anything else."""
    rng = random.Random(f"{prefix!r}{charset}")
    query = f"charset={charset}" if charset else ""
    for _ in range(200):
        body = prefix + rng.randbytes(rng.randrange(1, 300))
        with pytest.raises(BadRequest):
            decode(body, query, "application/octet-stream", "windows-1251")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_a_truncated_json_or_xml_body_is_a_bad_request(fmt: str, kind: str) -> None:
    """Every proper prefix of a valid JSON or XML body is refused as BadRequest."""
    req = build(kind, fmt, "utf-8")
    decode(req.body, req.query, req.content_type, "windows-1251")
    for cut in range(1, len(req.body)):
        with pytest.raises(BadRequest):
            decode(req.body[:cut], req.query, req.content_type, "windows-1251")


@pytest.mark.parametrize(
    ("body", "query"),
    [
        pytest.param(b"id=1&phone=7&status=1&cmt=\xff", "charset=utf-8", id="form-raw-ff"),
        pytest.param(b"id=1&phone=7&status=1&cmt=%FF", "charset=utf-8", id="form-percent-ff"),
        pytest.param(b"id=1&phone=7&status=1&cmt=%C0%AF", "charset=utf-8", id="form-overlong"),
        pytest.param(b"id=1&phone=7&status=1&cmt=%ED%A0%80", "charset=utf-8", id="form-surrogate"),
        pytest.param(b"id=1&phone=7&status=1&cmt=%D0", "charset=utf-8", id="form-cut-sequence"),
        pytest.param(b"id=1&phone=7&status=1", "charset=utf-8&cmt=%FF", id="query-percent-ff"),
        pytest.param(b"id=1&phone=7&status=1&cmt=%98", "charset=windows-1251", id="form-cp1251-undefined"),
        pytest.param(
            b'{"id": 1, "phone": "7", "status": 1, "cmt": "\x80"}', "charset=utf-8&fmt=3", id="json-80"
        ),
        pytest.param(
            b'{"id": 1, "phone": "7", "status": 1, "cmt": "\xd0"}', "charset=utf-8&fmt=3", id="json-cut"
        ),
        pytest.param(
            b"<r><id>1</id><phone>7</phone><status>1</status><cmt>\xfe</cmt></r>",
            "charset=utf-8&fmt=2",
            id="xml-fe",
        ),
    ],
)
def test_bytes_invalid_in_the_charset_are_a_bad_request(body: bytes, query: str) -> None:
    """Bytes that are not valid in the transmission charset are refused, not replaced."""
    with pytest.raises(BadRequest):
        decode(body, query, "", "windows-1251")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\r\n\t ", id="whitespace"),
        pytest.param(b"\xef\xbb\xbf", id="bom-only"),
        pytest.param(
            b'--x\r\nContent-Disposition: form-data; name="id"\r\n\r\n1\r\n--x--\r\n', id="multipart"
        ),
        pytest.param(b"{" * 50_000 + b"}" * 50_000, id="deep-json"),
        pytest.param(
            b'{"id": 1, "phone": "7", "status": 1, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            id="deep-json-value",
        ),
        pytest.param(b"<" * 1000, id="angles"),
        pytest.param(b"<result><id>1</id><phone>7</phone></result><status>1</status>", id="two-xml-roots"),
        pytest.param(b'{"id": 1, "phone": "7", "status": 1}{"id": 2}', id="two-json-objects"),
        pytest.param(
            b"<r><id>1</id><phone>7</phone><status>1</status><x>"
            + b"<y>" * 5000
            + b"</y>" * 5000
            + b"</x></r>",
            id="deep-xml-value",
        ),
    ],
)
def test_garbage_bodies_are_a_bad_request(body: bytes) -> None:
    """Bodies that are no event (empty, multipart, deeply nested, several documents) raise only BadRequest."""
    with pytest.raises(BadRequest):
        decode(body, "charset=utf-8", "", "windows-1251")


def test_an_xml_record_of_attributes_inside_a_wrapper_is_read() -> None:
    """<response><result id=".." phone=".." status=".."/></response>: the attributes are the parameters."""
    body = b'<response><result id="1" phone="79990000000" status="1"/></response>'
    decoded = decode(body, "", "text/xml", "utf-8")
    assert (decoded.params["id"], decoded.params["phone"], decoded.params["status"]) == (
        "1",
        "79990000000",
        "1",
    )


STATUS_FORM = b"id=1001&phone=79998887766&status=1"
STATUS_JSON = '"id": 1001, "phone": "79998887766", "status": 1'
STATUS_XML = "<id>1001</id><phone>79998887766</phone><status>1</status>"


@pytest.mark.parametrize(
    ("body", "query"),
    [
        pytest.param(STATUS_FORM + b"&id=1002", "", id="form-body"),
        pytest.param(STATUS_FORM + b"&mes=a&to=79001234567&mes=b", "", id="form-body-mes"),
        pytest.param(STATUS_FORM, "shop=1&shop=2", id="query"),
        pytest.param(f'{{{STATUS_JSON}, "id": 1002}}'.encode(), "fmt=3", id="json"),
        pytest.param(f'{{"result": {{{STATUS_JSON}, "status": 2}}}}'.encode(), "fmt=3", id="json-wrapped"),
        pytest.param(f'{{{STATUS_JSON}, "x": {{"a": 1, "a": 2}}}}'.encode(), "fmt=3", id="json-nested"),
        pytest.param(f"<r>{STATUS_XML}<id>1002</id></r>".encode(), "fmt=2", id="xml-element"),
        pytest.param(f'<r id="1002">{STATUS_XML}</r>'.encode(), "fmt=2", id="xml-attribute-and-element"),
        pytest.param(
            f'<r>{STATUS_XML}<cost currency="RUB">1</cost><cost.currency>USD</cost.currency></r>'.encode(),
            "fmt=2",
            id="xml-child-attribute-and-element",
        ),
        pytest.param(
            b'<r xmlns:a="urn:a" xmlns:b="urn:b"><a:id>1001</a:id><b:id>1002</b:id>'
            b"<phone>79998887766</phone><status>1</status></r>",
            "fmt=2",
            id="xml-namespaces",
        ),
    ],
)
def test_a_name_given_twice_with_different_values_is_a_bad_request(body: bytes, query: str) -> None:
    """A name given twice in one source (form, query string, JSON object, XML record) with different
    values is refused, not resolved by a guess."""
    with pytest.raises(BadRequest, match="twice"):
        decode(body, query, "", "utf-8")


@pytest.mark.parametrize(
    ("body", "query"),
    [
        pytest.param(STATUS_FORM + b"&id=1001", "", id="form-body"),
        pytest.param(STATUS_FORM, "shop=1&shop=1", id="query"),
        pytest.param(f'{{{STATUS_JSON}, "id": 1001}}'.encode(), "fmt=3", id="json"),
        pytest.param(f'{{{STATUS_JSON}, "id": "1001"}}'.encode(), "fmt=3", id="json-number-and-string"),
        pytest.param(f"<r>{STATUS_XML}<id>1001</id></r>".encode(), "fmt=2", id="xml-element"),
        pytest.param(f'<r id="1001">{STATUS_XML}</r>'.encode(), "fmt=2", id="xml-attribute-and-element"),
    ],
)
def test_a_name_repeated_with_the_same_value_is_read(body: bytes, query: str) -> None:
    """A name repeated with the same value is no ambiguity: the request decodes to that value."""
    decoded = decode(body, query, "", "utf-8")
    assert (decoded.params["id"], decoded.params["status"]) == ("1001", "1")


@pytest.mark.parametrize(
    ("body", "query"),
    [
        pytest.param(
            f'{{{STATUS_JSON}, "id\\u0000": "1", "id\\ud800": "2"}}'.encode(), "fmt=3", id="json-issue"
        ),
        pytest.param(
            f'{{{STATUS_JSON}, "x\\u0000": "1", "x\\ufffd": "2"}}'.encode(), "fmt=3", id="json-nul-fffd"
        ),
        pytest.param(
            f'{{{STATUS_JSON}, "x\\udfff": "1", "x\\ud800": "2"}}'.encode(), "fmt=3", id="json-surrogates"
        ),
        pytest.param(STATUS_FORM + b"&x%00=1&x%EF%BF%BD=2", "charset=utf-8", id="form-nul-fffd"),
        pytest.param(STATUS_FORM + b"&x%EF%BF%BD=2", "charset=utf-8&x%00=1", id="query-and-body"),
    ],
)
def test_names_that_collide_once_made_storable_are_a_bad_request(body: bytes, query: str) -> None:
    """Names that become one name once NUL and lone surrogates are replaced by U+FFFD, with different
    values, are refused rather than merged."""
    with pytest.raises(BadRequest, match="collide"):
        decode(body, query, "", "utf-8")


def test_names_that_collide_with_values_that_collide_too_are_read() -> None:
    """Two names and values that are stored identically once cleaned leave nothing ambiguous."""
    body = f'{{{STATUS_JSON}, "x\\u0000": "a\\u0000", "x\\ud800": "a\\ud800"}}'.encode()
    decoded = decode(body, "fmt=3", "", "utf-8")
    assert decoded.params["x\x00"] == "a\x00"
    assert decoded.params["x\ud800"] == "a\ud800"


@pytest.mark.parametrize(
    ("body", "query"),
    [
        pytest.param(STATUS_FORM + b"&charset=windows-1251", "charset=utf-8", id="form-query-vs-body"),
        pytest.param(
            f'{{{STATUS_JSON}, "charset": "windows-1251"}}'.encode(),
            "fmt=3&charset=utf-8",
            id="json-query-vs-body",
        ),
        pytest.param(
            f"<r>{STATUS_XML}<charset>windows-1251</charset></r>".encode(),
            "fmt=2&charset=utf-8",
            id="xml-query-vs-body",
        ),
        pytest.param(
            f'<r charset="windows-1251">{STATUS_XML}</r>'.encode(),
            "fmt=2&charset=utf-8",
            id="xml-query-vs-attribute",
        ),
        pytest.param(STATUS_FORM, "charset=utf-8&charset=windows-1251", id="query-twice"),
        pytest.param(STATUS_FORM + b"&charset=utf-8&charset=koi8-r", "", id="form-body-twice"),
        pytest.param(
            f'{{"charset": "utf-8", {STATUS_JSON}, "charset": "windows-1251"}}'.encode(),
            "fmt=3",
            id="json-twice",
        ),
        pytest.param(
            f'<r charset="utf-8">{STATUS_XML}<charset>windows-1251</charset></r>'.encode(),
            "fmt=2",
            id="xml-attribute-and-element",
        ),
    ],
)
def test_two_charsets_that_disagree_are_a_bad_request(body: bytes, query: str) -> None:
    """Two `charset` parameters naming different charsets (query and body, or twice in one) are refused."""
    with pytest.raises(BadRequest, match=r"charset|twice"):
        decode(body, query, "", "utf-8")


@pytest.mark.parametrize(
    ("body", "query"),
    [
        pytest.param(STATUS_FORM + b"&charset=utf-8", "charset=utf8", id="form-query-vs-body"),
        pytest.param(STATUS_FORM, "charset=utf-8&charset=UTF8", id="query-twice"),
        pytest.param(STATUS_FORM + b"&charset=utf8&charset=Utf-8", "", id="form-body-twice"),
        pytest.param(
            f'{{"charset": "utf8", {STATUS_JSON}, "charset": "utf-8"}}'.encode(), "fmt=3", id="json-twice"
        ),
        pytest.param(
            f'<r charset="utf8">{STATUS_XML}<charset>UTF-8</charset></r>'.encode(), "fmt=2", id="xml-twice"
        ),
    ],
)
def test_charsets_that_are_aliases_of_one_another_agree(body: bytes, query: str) -> None:
    """`utf8` and `utf-8` name the same charset, so giving both is no disagreement."""
    assert decode(body, query, "", "windows-1251").charset == "utf-8"


def test_content_type_and_xml_declaration_never_refuse_a_request() -> None:
    """A Content-Type charset and an XML declaration that disagree with `charset` are only ignored labels."""
    xml = f'<?xml version="1.0" encoding="koi8-r"?><r>{STATUS_XML}<cmt>{CYRILLIC}</cmt></r>'
    decoded = decode(xml.encode("utf-8"), "charset=utf-8&fmt=2", "text/xml; charset=windows-1251", "koi8-r")
    assert decoded.params["cmt"] == CYRILLIC


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        pytest.param(
            "json", f'{{{STATUS_JSON}, "cmt": "{{}}", "x": {{"charset": "windows-1251"}}}}', id="json-object"
        ),
        pytest.param(
            "json", f'{{{STATUS_JSON}, "cmt": "{{}}", "x": [{{"charset": "koi8-r"}}]}}', id="json-array"
        ),
        pytest.param(
            "json", f'{{{STATUS_JSON}, "cmt": "{{}}", "x": "\\"charset\\": \\"cp1251\\""}}', id="json-text"
        ),
        pytest.param(
            "xml",
            f"<r>{STATUS_XML}<cmt>{{}}</cmt><x><charset>windows-1251</charset></x></r>",
            id="xml-nested",
        ),
        pytest.param(
            "xml",
            f"<r>{STATUS_XML}<cmt>{{}}</cmt><x><![CDATA[<charset>cp1251</charset>]]></x></r>",
            id="xml-cdata",
        ),
        pytest.param(
            "xml", f'<r>{STATUS_XML}<cmt>{{}}</cmt><x charset="windows-1251"/></r>', id="xml-child-attribute"
        ),
    ],
)
def test_a_nested_charset_does_not_decide_the_body(fmt: str, text: str) -> None:
    """Only the record's own `charset` counts: one inside a nested value, CDATA or a child is text."""
    body = text.replace("{}", CYRILLIC).encode("utf-8")
    decoded = decode(body, "", "", "utf-8")
    assert decoded.charset == "utf-8"
    assert decoded.params["cmt"] == CYRILLIC


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        pytest.param(
            "json", f'{{"result": {{{STATUS_JSON}, "charset": "windows-1251", "cmt": "{{}}"}}}}', id="json"
        ),
        pytest.param(
            "xml",
            f"<response><result>{STATUS_XML}<charset>windows-1251</charset><cmt>{{}}</cmt></result></response>",
            id="xml",
        ),
    ],
)
def test_the_charset_of_a_wrapped_record_decides(fmt: str, text: str) -> None:
    """The `charset` of the record inside a single wrapper is the record's own, and decides the body."""
    body = text.replace("{}", CYRILLIC).encode("cp1251")
    decoded = decode(body, "", "", "utf-8")
    assert decoded.charset == "cp1251"
    assert decoded.params["cmt"] == CYRILLIC


@pytest.mark.parametrize(("codec", "default"), [("utf-8", "windows-1251"), ("cp1251", "windows-1251")])
def test_xml_with_non_ascii_element_names_is_read_in_its_own_charset(codec: str, default: str) -> None:
    """Element names that are not ASCII are read in the charset the record names."""
    name = "windows-1251" if codec == "cp1251" else "utf-8"
    text = f"<r>{STATUS_XML}<charset>{name}</charset><имя>{CYRILLIC}</имя></r>"
    decoded = decode(text.encode(codec), "fmt=2", "", default)
    assert decoded.params["имя"] == CYRILLIC


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=x",
        "Multipart/Mixed; boundary=x",
        " multipart/form-data",
        "multipart/related",
    ],
)
@pytest.mark.parametrize(
    "body", [b"", b'--x\r\nContent-Disposition: form-data; name="cmt"\r\n\r\nhi\r\n--x--\r\n']
)
def test_a_multipart_content_type_is_a_bad_request_even_with_the_fields_in_the_query(
    content_type: str, body: bytes
) -> None:
    """A multipart request is refused, even when its query string holds every field of an event."""
    query = "id=1001&phone=79998887766&status=1&charset=utf-8"
    assert decode(b"", query, "application/x-www-form-urlencoded", "utf-8").kind == "status"
    with pytest.raises(BadRequest, match="multipart"):
        decode(body, query, content_type, "utf-8")


XML_INCOMING = "<result><id>5001</id><phone>79998887766</phone>{}<to>79001234567</to></result>"


@pytest.mark.parametrize(
    ("mes_xml", "mes"),
    [
        pytest.param("<mes><![CDATA[Привет,\r\nмир]]></mes>", "Привет,\r\nмир", id="cdata-crlf"),
        pytest.param("<mes><![CDATA[\r]]></mes>", "\r", id="cdata-cr-only"),
        pytest.param("<mes><![CDATA[a\rb\r\rc]]></mes>", "a\rb\r\rc", id="cdata-several"),
        pytest.param("<mes>x<![CDATA[<b>\r\n</b>]]>y\r\n</mes>", "x<b>\r\n</b>y\r\n", id="cdata-and-text"),
        pytest.param("<mes><![CDATA[]]]]><![CDATA[>\r]]></mes>", "]]>\r", id="cdata-split-by-sender"),
        pytest.param("<mes>a\r\nb\rc</mes>", "a\r\nb\rc", id="text"),
        pytest.param("<mes>a&#13;&#10;b</mes>", "a\r\nb", id="text-references"),
        pytest.param('<mes a="1"\r\n>a\r\nb</mes>', "a\r\nb", id="cr-in-a-tag"),
        pytest.param("<!-- \r\n --><mes>a\r\nb</mes>", "a\r\nb", id="comment"),
    ],
)
def test_a_carriage_return_in_xml_text_or_cdata_is_kept(mes_xml: str, mes: str) -> None:
    """A CR in element text or in CDATA reaches `mes` as sent, not turned into LF or `&#13;`."""
    text = '<?xml version="1.0"?>\r\n' + XML_INCOMING.format(mes_xml) + "\r\n"
    assert decode(text.encode(), "fmt=2", "", "utf-8").params["mes"] == mes


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        pytest.param("a\r\nb", "a b", id="crlf-is-one-space"),
        pytest.param("a\rb\nc\td", "a b c d", id="cr-lf-tab-are-spaces"),
        pytest.param("a&#13;&#10;b&#9;", "a\r\nb\t", id="references-stay"),
    ],
)
def test_xml_attribute_values_get_what_xml_allows(attribute: str, value: str) -> None:
    """Literal CR, LF and TAB in an attribute value become spaces (XML's rule); references stay."""
    text = f'<result id="5001" phone="79998887766" to="79001234567" mes="{attribute}"/>'
    assert decode(text.encode(), "fmt=2", "", "utf-8").params["mes"] == value


# kind, field, value, accepted. A phone-like field is joined by ':' into the hashed string.
PHONE_ROWS = [
    ("status", "phone", "79998887766", True),
    ("status", "phone", "+79998887766", True),
    ("status", "phone", "900", True),
    ("status", "phone", "123456789012345", True),
    ("status", "phone", "user@example.com", True),
    ("status", "phone", "ivan.petrov+sms@почта.рф", True),
    ("status", "phone", "@smsc_bot", True),
    ("status", "phone", "#123456789", True),
    ("status", "phone", "7999:8887766", False),
    ("status", "phone", "Привет, мир!", False),
    ("status", "phone", "SMSC.RU", False),
    ("status", "phone", "12", False),
    ("status", "phone", "1234567890123456", False),
    ("status", "phone", "7" * 5000, False),
    ("status", "phone", "user@localhost", False),
    ("status", "phone", "a@b.ru:1", False),
    ("status", "phone", "++79998887766", False),
    ("incoming", "phone", "79998887766", True),
    ("incoming", "phone", "SMSC.RU", True),
    ("incoming", "phone", "Sber Bank", True),
    ("incoming", "phone", "МТС", True),
    ("incoming", "phone", "Tele2-info", True),
    ("incoming", "phone", "900", True),
    ("incoming", "phone", "a:b", False),
    ("incoming", "phone", "Привет, мир!", False),
    ("incoming", "phone", "x" * 33, False),
    ("incoming", "phone", "line\nbreak", False),
    ("incoming", "to", "79001234567", True),
    ("incoming", "to", "+79001234567", True),
    ("incoming", "to", "7522", True),
    ("incoming", "to", "1", False),
    ("incoming", "to", "-1", False),
    ("incoming", "to", "SMSC", False),
    ("incoming", "to", "7900:1", False),
    ("call", "phone", "79998887766", True),
    ("call", "phone", "+442071234567", True),
    ("call", "phone", "79998887766:1700000200", False),
    ("call", "phone", "anonymous", False),
    ("call", "phone", "7" * 16, False),
]


@pytest.mark.parametrize(
    ("kind", "field", "value", "accepted"),
    PHONE_ROWS,
    ids=[f"{k}-{f}-{v[:20]}-{'ok' if a else 'no'}" for k, f, v, a in PHONE_ROWS],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_only_plausible_phones_are_read(fmt: str, kind: str, field: str, value: str, accepted: bool) -> None:
    """A phone-like field holds a number (or what the kind may carry there), else the request is refused."""
    req = build(kind, fmt, "utf-8", algorithm=None, params={**SAMPLES[kind], field: value})
    if accepted:
        assert decode(req.body, req.query, req.content_type, "windows-1251").params[field] == value
    else:
        with pytest.raises(BadRequest, match=rf"'{field}'"):
            decode(req.body, req.query, req.content_type, "windows-1251")
