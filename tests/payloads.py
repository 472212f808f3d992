"""Build SMSC callbacks the way the gateway sends them, signed independently of the product code.

The hash is computed here with hashlib/zlib from the vendor's recipe, never with smsc.protocol.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from urllib.parse import urlencode
from xml.sax.saxutils import escape

SECRET = "test-Secret_42"
KINDS = ("status", "incoming", "call")
FORMATS = ("form", "xml", "json")
CHARSETS = ("utf-8", "koi8-r", "windows-1251")
ALGORITHMS = ("md5", "sha1", "crc32")
PY_CODEC = {"utf-8": "utf-8", "koi8-r": "koi8_r", "windows-1251": "cp1251"}
CONTROL = {"status": ("id", "phone", "status"), "incoming": ("phone", "mes", "to"), "call": ("phone", "ts")}

# One realistic event of each kind; `mes` is Cyrillic on purpose.
SAMPLES: dict[str, dict[str, str]] = {
    "status": {
        "id": "1001",
        "phone": "79998887766",
        "status": "1",
        "ts": "1700000000",
        "time": "14.11.23 22:13:20",
        "cnt": "1",
        "type": "0",
        "cost": "1.25",
        "flag": "0",
        "sender": "SMSC.RU",
    },
    "incoming": {
        "id": "5001",
        "sms_id": "1001",
        "phone": "79998887766",
        "mes": "Привет, мир!",
        "to": "79001234567",
        "smsc": "79168999100",
        "sent": "1700000100",
        "time": "1700000101",
    },
    "call": {"waitcall": "1", "phone": "79998887766", "ts": "1700000200"},
}


def digest(algorithm: str, data: bytes, crc_form: str = "unsigned") -> str:
    """The hash as the gateway would print it: lower-case hex, or crc32 in `crc_form`."""
    if algorithm == "md5":
        return hashlib.md5(data).hexdigest()
    if algorithm == "sha1":
        return hashlib.sha1(data).hexdigest()
    value = zlib.crc32(data) & 0xFFFFFFFF
    if crc_form == "unsigned":
        return str(value)
    if crc_form == "signed":
        return str(value - (1 << 32) if value >= 1 << 31 else value)
    return f"{value:08x}"


def sign(
    kind: str,
    params: dict[str, str],
    algorithm: str,
    secret: str = SECRET,
    codec: str = "utf-8",
    crc_form: str = "unsigned",
) -> str:
    """Hash `<control fields joined by ':'>:<secret>` encoded with `codec`."""
    text = ":".join([*(params.get(f, "") for f in CONTROL[kind]), secret])
    return digest(algorithm, text.encode(codec), crc_form)


@dataclass(frozen=True)
class Request:
    """What goes over the wire: body bytes, the query string of the handler URL, Content-Type."""

    body: bytes
    query: str
    content_type: str


def build(
    kind: str,
    fmt: str = "form",
    charset: str = "utf-8",
    algorithm: str | None = "md5",
    params: dict[str, str] | None = None,
    *,
    secret: str = SECRET,
    url_params: dict[str, str] | None = None,
    hash_codec: str | None = None,
    crc_form: str = "unsigned",
    cdata: bool = False,
) -> Request:
    """A callback of `kind` as the gateway posts it to `?charset=..&fmt=..&<algorithm>=<secret>`.

    The URL's own parameters come back in the body too, the hash parameter carrying the hash. With
    `cdata`, XML element text is written as CDATA sections.
    """
    codec = PY_CODEC[charset]
    fields = dict(SAMPLES[kind] if params is None else params)
    url: dict[str, str] = {"charset": charset}
    if fmt != "form":
        url["fmt"] = "2" if fmt == "xml" else "3"
    url.update(url_params or {})
    fields.update(url)
    if algorithm is not None:
        url[algorithm] = secret
        fields[algorithm] = sign(kind, fields, algorithm, secret, hash_codec or codec, crc_form)
    query = urlencode(url)
    if fmt == "form":
        return Request(
            urlencode(fields, encoding=codec).encode("ascii"), query, "application/x-www-form-urlencoded"
        )
    if fmt == "json":
        return Request(
            json.dumps(fields, ensure_ascii=False).encode(codec),
            query,
            f"application/json; charset={charset}",
        )
    text = cdata_section if cdata else escape
    xml = "<result>" + "".join(f"<{k}>{text(v)}</{k}>" for k, v in fields.items()) + "</result>"
    return Request(xml.encode(codec), query, f"application/xml; charset={charset}")


def cdata_section(text: str) -> str:
    """`text` as XML CDATA; a `]]>` inside is split across two sections, as XML requires."""
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
