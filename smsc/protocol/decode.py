"""Turn a raw handler request (body bytes, query string, Content-Type) into named parameters.

The body decides the format: a JSON object starts with `{`, an XML document with `<`, anything
else is a form. `fmt` and the Content-Type only name what the gateway meant; where they disagree
with the body, the body wins, so that a signed event is never refused over a label.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import defusedxml
import defusedxml.ElementTree as SafeET

from smsc.exceptions import BadRequest
from smsc.protocol.fields import (
    CHARSETS,
    DEFAULT_CHARSET,
    Format,
    Kind,
    check_phones,
    check_required,
    codec_for,
    event_ids,
    kind_of,
)
from smsc.text import storable

_MULTIPART = re.compile(r"\s*multipart/", re.IGNORECASE)
_CT_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml([^>]*)\?>")
_XML_ENCODING = re.compile(r"""encoding\s*=\s*["']([^"']+)["']""")
# CDATA, comment, processing instruction, tag (a quoted attribute value may hold '>'), or text.
_XML_TOKEN = re.compile(
    r"<!\[CDATA\[.*?(?:\]\]>|\Z)|<!--.*?(?:-->|\Z)|<\?.*?(?:\?>|\Z)"
    r"""|<(?:[^>"']|"[^"]*"?|'[^']*'?)*>?|[^<]+""",
    re.DOTALL,
)
_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_BOM = "\ufeff"
_UTF8_BOM = b"\xef\xbb\xbf"
T = TypeVar("T")


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
    Whatever could be read two ways is refused rather than guessed: a name given twice with
    different values, two charsets that disagree, names that collide once made storable.
    """
    if _MULTIPART.match(content_type):
        # Never read, so its fields are not taken from the query string alone either.
        raise BadRequest("multipart bodies are not read")
    fmt = _sniff(body)
    # Latin-1 first: one character per byte, ASCII as itself. The three charsets extend ASCII and
    # charset names are ASCII, so this look finds the record's own `charset` before the real one is
    # known. A JSON or XML body needs it only when the query string names no charset.
    query_params = _form(_latin_query(query), "query string")
    latin: dict[str, str] | None = None
    if fmt is Format.FORM or not _charset_value(query_params):
        latin = _latin_body(body, fmt)
    named = _named_charset(query_params, latin)
    codec = _codec(named or _fallback_charset(body, fmt, content_type) or default_charset, fmt)
    if fmt is Format.FORM and latin is not None:
        body_params = _recode(latin, codec, "body")
    elif latin is not None and body.isascii():
        body_params = latin  # ASCII reads the same in every charset
    else:
        body_params = _parse(fmt, _text(body, codec))
        own = _named_charset(query_params, body_params) if latin is None else None
        if own and _codec(own, fmt) != codec:
            # The Latin-1 look could not read the body (non-ASCII XML names): its own charset decides.
            codec = _codec(own, fmt)
            body_params = _parse(fmt, _text(body, codec))
    params = {**_recode(query_params, codec, "query string"), **body_params}
    _check_storable_names(params)
    kind = kind_of(params)
    check_required(kind, params)
    check_phones(kind, params)
    return Decoded(kind=kind, fmt=fmt, charset=codec, params=params)


def peek(body: bytes, query: str, content_type: str, default_charset: str) -> dict[str, str]:
    """Best-effort identifiers (kind, id, phone) of a request that may not decode, for people."""
    try:
        params = decode(body, query, content_type, default_charset).params
    except BadRequest:
        try:
            # Latin-1 reads any bytes: the ASCII ids survive even where the charset is wrong.
            params = {**_form(_latin_query(query), "query string"), **(_latin_body(body, _sniff(body)) or {})}
        except BadRequest:
            return {}
    return event_ids(params)


def _latin_query(query: str) -> str:
    # A query string off the wire is ASCII; anything else is taken as its UTF-8 bytes.
    return query.encode("utf-8", "surrogatepass").decode("latin-1")


def _latin_body(body: bytes, fmt: Format) -> dict[str, str] | None:
    """The body's parameters read as Latin-1; None where only its real charset can read it."""
    text = body.removeprefix(_UTF8_BOM).decode("latin-1")
    if fmt is Format.FORM:
        return _form(text, "body")
    try:
        return _parse(fmt, text)
    except BadRequest:
        if body.isascii():
            raise
        # Non-ASCII bytes in Latin-1 are no XML name characters; the real charset may read them.
        return None


def _parse(fmt: Format, text: str) -> dict[str, str]:
    return _parse_json(text) if fmt is Format.JSON else _parse_xml(text)


def _sniff(body: bytes) -> Format:
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return Format.JSON
    if head.startswith(b"<"):
        return Format.XML
    return Format.FORM


def _codec(name: str, fmt: Format) -> str:
    codec = codec_for(name)
    if fmt is not Format.FORM and codec == CHARSETS["koi8-r"]:
        # The vendor: "with fmt, the koi8-r encoding is not used"; its default applies instead.
        return CHARSETS[DEFAULT_CHARSET]
    return codec


def _named_charset(query: dict[str, str], body: dict[str, str] | None) -> str | None:
    """The `charset` parameter: the query string's and the record's must name the same codec."""
    in_query = _charset_value(query)
    in_body = _charset_value(body or {})
    if in_query and in_body and codec_for(in_query) != codec_for(in_body):
        raise BadRequest(f"charset {in_query[:40]!r} of the query string disagrees with {in_body[:40]!r}")
    return in_query or in_body


def _charset_value(params: dict[str, str]) -> str | None:
    value = params.get("charset", "")
    return value if value.strip() else None


def _fallback_charset(body: bytes, fmt: Format, content_type: str) -> str | None:
    """The Content-Type's charset, else an XML declaration's encoding: labels, never a reason to refuse."""
    match = _CT_CHARSET.search(content_type)
    if match:
        return match.group(1)
    if fmt is Format.XML:
        declaration = _XML_DECLARATION.match(body.removeprefix(_UTF8_BOM).decode("latin-1"))
        encoding = _XML_ENCODING.search(declaration.group(1)) if declaration else None
        if encoding:
            return encoding.group(1)
    return None


def _form(text: str, where: str) -> dict[str, str]:
    """`parse_qsl(text, keep_blank_values=True, encoding="latin-1")`, merged."""
    return _merge(_form_pairs(text), where)


def _form_pairs(text: str) -> Iterator[tuple[str, str]]:
    # Written out because it runs on every request, and most of a callback's fields need neither
    # `+` nor `%` undone: parse_qsl pays two calls per field for them all the same.
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in field:
            name, value = name.replace("+", " "), value.replace("+", " ")
        if "%" in field:
            name, value = _PERCENT_RUN.sub(_unquoted, name), _PERCENT_RUN.sub(_unquoted, value)
        yield name, value


def _unquoted(run: re.Match[str]) -> str:
    # What unquote(encoding="latin-1") makes of a run of %XX, one call a run rather than a loop
    # step a byte: a Cyrillic text is mostly such runs (half the cost of an incoming SMS's decode).
    return bytes.fromhex(run[0].replace("%", "")).decode("latin-1")


def _merge(pairs: Iterable[tuple[str, T]], where: str) -> dict[str, T]:
    """Named values as a dict; a name given twice with different values is ambiguous."""
    merged: dict[str, T] = {}
    for name, value in pairs:
        if name in merged and not _same(name, merged[name], value):
            raise BadRequest(f"{name[:40]!r} is given twice in the {where}, with different values")
        merged[name] = value
    return merged


def _same(name: str, a: object, b: object) -> bool:
    if a == b:
        return True
    # `utf8` and `utf-8` name the same charset.
    return name == "charset" and isinstance(a, str) and isinstance(b, str) and codec_for(a) == codec_for(b)


def _check_storable_names(params: dict[str, str]) -> None:
    """Refuse names that become one once NUL and lone surrogates are replaced, as they are stored."""
    names = "".join(params)
    if storable(names) == names:
        return  # only a name holding such a character can collide with another
    stored: dict[str, str] = {}
    for name, value in params.items():
        text = storable(value)
        if stored.setdefault(storable(name), text) != text:
            raise BadRequest(f"parameter names collide once made storable: {storable(name)[:40]!r}")


def _text(body: bytes, codec: str) -> str:
    try:
        return body.decode(codec).lstrip(_BOM)
    except UnicodeDecodeError as e:
        raise BadRequest(f"body is not valid {codec} at byte {e.start}") from None


def _recode(form: dict[str, str], codec: str, where: str) -> dict[str, str]:
    if "".join(form).isascii() and "".join(form.values()).isascii():
        return form  # ASCII reads the same in every charset
    try:
        # ASCII reads the same in every charset: only the other texts are decoded again.
        return {
            k if k.isascii() else k.encode("latin-1").decode(codec): v
            if v.isascii()
            else v.encode("latin-1").decode(codec)
            for k, v in form.items()
        }
    except UnicodeDecodeError as e:
        raise BadRequest(f"{where} is not valid {codec}: {e.reason}") from None


class _Number(str):
    """A JSON number kept as its literal text, so `1.25` is never rounded through a float."""


def _parse_json(text: str) -> dict[str, str]:
    try:
        data = _JSON.decode(text)
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


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return _merge(pairs, "JSON body")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_JSON = json.JSONDecoder(
    parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant, object_pairs_hook=_json_object
)


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
    if "\r" in text:
        text = _keep_carriage_returns(text)
    try:
        return _xml_params(SafeET.fromstring(text, forbid_dtd=True))
    except (ET.ParseError, defusedxml.DefusedXmlException, ValueError, RecursionError) as e:
        raise BadRequest(f"body is not acceptable XML: {str(e)[:80]}") from None


def _keep_carriage_returns(text: str) -> str:
    """Protect the CRs of element text from the parser, which turns CR and CRLF into LF.

    The hash was taken over the text as sent. A character reference keeps a CR in text, and CDATA is
    split around one. Tags are left alone (XML turns a CR in an attribute value into a space, and
    keeps a `&#13;`), and so is the text outside the root element, where a reference is not allowed.
    """
    parts = []
    depth = 0
    for match in _XML_TOKEN.finditer(text):
        token = match.group()
        if token.startswith("<![CDATA["):
            token = token.replace("\r", "]]>&#13;<![CDATA[")
        elif token.startswith("</"):
            depth -= 1
        elif token.startswith("<") and not token.startswith(("<!", "<?")):
            depth += not token.endswith("/>")
        elif not token.startswith("<") and depth > 0:
            token = token.replace("\r", "&#13;")
        parts.append(token)
    return "".join(parts)


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
    pairs = [(_local(k), v) for k, v in record.attrib.items()]
    for child in record:
        name = _local(child.tag)
        pairs.append((name, ET.tostring(child, encoding="unicode") if len(child) else child.text or ""))
        pairs.extend((f"{name}.{_local(attr)}", value) for attr, value in child.attrib.items())
    return _merge(pairs, "XML body")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
