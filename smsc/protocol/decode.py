"""Turn a raw handler request (body bytes, query string, Content-Type) into named parameters.

The body decides the format: a JSON object starts with `{`, an XML document with `<`, anything
else is a form. `fmt` and the Content-Type only name what the gateway meant; where they disagree
with the body, the body wins, so that a signed event is never refused over a label.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import defusedxml
import defusedxml.ElementTree as SafeET

from smsc.exceptions import BadRequest
from smsc.protocol.fields import (
    CHARSETS,
    DEFAULT_CHARSET,
    Format,
    Kind,
    check_required,
    codec_for,
    event_ids,
    kind_of,
)

_CT_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)
_JSON_CHARSET = re.compile(r'"charset"\s*:\s*"([^"]{1,40})"')
_XML_CHARSET = re.compile(r"<charset>\s*([^<\s]{1,40})\s*</charset>")
_XML_DECLARATION = re.compile(r"^\s*<\?xml([^>]*)\?>")
_XML_ENCODING = re.compile(r"""encoding\s*=\s*["']([^"']+)["']""")
_BOM = "\ufeff"


@dataclass(frozen=True)
class Decoded:
    """A request read as an SMSC event: its kind, how it came, and every parameter as text."""

    kind: Kind
    fmt: Format
    charset: str
    params: dict[str, str]


def decode(body: bytes, query: str, content_type: str, default_charset: str) -> Decoded:
    """Read a handler request; raise BadRequest (with the reason) if it is not a usable event.

    Parameters of the query string (the handler URL's own) are kept; the body wins on a clash.
    """
    fmt = _sniff(body)
    forms = _Forms(body, query, fmt)
    codec = codec_for(_charset_name(body, fmt, forms, content_type) or default_charset)
    if fmt is not Format.FORM and codec == CHARSETS["koi8-r"]:
        # The vendor: "with fmt, the koi8-r encoding is not used"; its default applies instead.
        codec = CHARSETS[DEFAULT_CHARSET]
    params = _read(body, forms, fmt, codec)
    kind = kind_of(params)
    check_required(kind, params)
    return Decoded(kind=kind, fmt=fmt, charset=codec, params=params)


def peek(body: bytes, query: str, content_type: str, default_charset: str) -> dict[str, str]:
    """Best-effort identifiers (kind, id, phone) of a request that may not decode, for people."""
    try:
        params = decode(body, query, content_type, default_charset).params
    except BadRequest:
        try:
            # Latin-1 reads any bytes: the ASCII ids survive even where the charset is wrong.
            fmt = _sniff(body)
            params = _read(body, _Forms(body, query, fmt), fmt, "latin-1")
        except BadRequest:
            return {}
    return event_ids(params)


class _Forms:
    """The query string and a form body parsed once, as Latin-1 text: one character per byte, so
    the charset can be looked up first and every name and value decoded with it afterwards."""

    def __init__(self, body: bytes, query: str, fmt: Format) -> None:
        # A query string off the wire is ASCII; anything else is taken as its UTF-8 bytes.
        self.query = _latin_form(query.encode("utf-8", "surrogatepass").decode("latin-1"))
        if fmt is Format.FORM:
            self.body = _latin_form(body.removeprefix(b"\xef\xbb\xbf").decode("latin-1"))
        else:
            self.body = {}


def _read(body: bytes, forms: _Forms, fmt: Format, codec: str) -> dict[str, str]:
    params = _recode(forms.query, codec, "query string")
    if fmt is Format.JSON:
        params.update(_parse_json(_text(body, codec)))
    elif fmt is Format.XML:
        params.update(_parse_xml(_text(body, codec)))
    else:
        params.update(_recode(forms.body, codec, "body"))
    return params


def _sniff(body: bytes) -> Format:
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return Format.JSON
    if head.startswith(b"<"):
        return Format.XML
    return Format.FORM


def _charset_name(body: bytes, fmt: Format, forms: _Forms, content_type: str) -> str | None:
    """The transmission charset: query string, then body, then Content-Type, then XML declaration.

    Charset names are ASCII and all three charsets extend ASCII, so a Latin-1 look finds the name
    before the body's real charset is known.
    """
    found = forms.query.get("charset")
    if found:
        return found
    latin = body.decode("latin-1")
    if fmt is Format.FORM:
        found = forms.body.get("charset")
    else:
        match = (_JSON_CHARSET if fmt is Format.JSON else _XML_CHARSET).search(latin)
        found = match.group(1) if match else None
    if found:
        return found
    match = _CT_CHARSET.search(content_type)
    if match:
        return match.group(1)
    if fmt is Format.XML:
        declaration = _XML_DECLARATION.match(latin)
        encoding = _XML_ENCODING.search(declaration.group(1)) if declaration else None
        if encoding:
            return encoding.group(1)
    return None


def _latin_form(text: str) -> dict[str, str]:
    return dict(parse_qsl(text, keep_blank_values=True, encoding="latin-1"))


def _text(body: bytes, codec: str) -> str:
    try:
        return body.decode(codec).lstrip(_BOM)
    except UnicodeDecodeError as e:
        raise BadRequest(f"body is not valid {codec} at byte {e.start}") from None


def _recode(form: dict[str, str], codec: str, where: str) -> dict[str, str]:
    try:
        return {k.encode("latin-1").decode(codec): v.encode("latin-1").decode(codec) for k, v in form.items()}
    except UnicodeDecodeError as e:
        raise BadRequest(f"{where} is not valid {codec}: {e.reason}") from None


class _Number(str):
    """A JSON number kept as its literal text, so `1.25` is never rounded through a float."""


def _parse_json(text: str) -> dict[str, str]:
    try:
        data = json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant)
        if not isinstance(data, dict):
            raise BadRequest("JSON body is not an object")
        # An undocumented wrapper ({"result": {...}}) is unwrapped; a flat object is the norm.
        if len(data) == 1:
            (inner,) = data.values()
            if isinstance(inner, dict):
                data = inner
        return {str(k): _json_text(v) for k, v in data.items()}
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"body is not valid JSON: {str(e)[:80]}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    return _json_dump(value)


def _json_dump(value: Any) -> str:
    """Nested values back to JSON text, numbers as they came."""
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_json_dump(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_json_dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _parse_xml(text: str) -> dict[str, str]:
    declaration = _XML_DECLARATION.match(text)
    if declaration:
        text = text[declaration.end() :]
    try:
        if "\r" in text:
            # An XML parser turns CR and CRLF into LF, and the hash was taken over the text as sent:
            # a character reference keeps the CR. Where that breaks the document (a CR inside a
            # tag), the document is read as it is.
            try:
                return _xml_params(SafeET.fromstring(text.replace("\r", "&#13;"), forbid_dtd=True))
            except ET.ParseError:
                pass
        return _xml_params(SafeET.fromstring(text, forbid_dtd=True))
    except (ET.ParseError, defusedxml.DefusedXmlException, ValueError, RecursionError) as e:
        raise BadRequest(f"body is not acceptable XML: {str(e)[:80]}") from None


def _xml_params(root: ET.Element) -> dict[str, str]:
    record = root
    # Descend through single wrapper elements: <result><status>...</status></result>, <r><s id=".."/></r>.
    while (
        len(record) == 1
        and (len(record[0]) > 0 or record[0].attrib)
        and not record.attrib
        and not (record.text or "").strip()
    ):
        record = record[0]
    params = {_local(k): v for k, v in record.attrib.items()}
    for child in record:
        name = _local(child.tag)
        if len(child):
            params[name] = ET.tostring(child, encoding="unicode")
        else:
            params[name] = child.text or ""
        for attr, value in child.attrib.items():
            params[f"{name}.{_local(attr)}"] = value
    return params


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
