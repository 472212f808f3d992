"""What came over the wire, read faithfully into what the ingress verifies and stores.

A raw request's text must always be storable by PostgreSQL (no NUL, no lone surrogate): its dead
letter would otherwise fail, and its neighbours with it. The ingress decodes and verifies from
exactly the strings it stores, so that a worker reads what was verified.
"""

from __future__ import annotations

import re

from aiohttp import web

from smsc.constants import DEFAULT_ACCOUNT

HANDLER_PATH = "/smsc"

_NOT_PRINTABLE = re.compile(rb"[^\x21-\x7e]")


def query_text(request: web.Request) -> str:
    """The raw query string, every byte that is not printable ASCII percent-encoded: `parse_qsl`
    reads the same parameters from it as from the bytes that came."""
    query = request.rel_url.raw_query_string
    # Printable ASCII but the space, as the gateway's query strings are: nothing to encode.
    if query.isascii() and query.isprintable() and " " not in query:
        return query
    # aiohttp reads the request target as UTF-8 with surrogateescape: this gives its bytes back.
    raw = query.encode("utf-8", "surrogateescape")
    return _NOT_PRINTABLE.sub(_percent, raw).decode("ascii")


def _percent(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]


def content_type_text(request: web.Request) -> str:
    """The first Content-Type header, its bytes read as Latin-1 (one character per byte), NUL as U+FFFD."""
    for name, value in request.raw_headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").replace("\x00", "\ufffd")
    return ""


def compression(request: web.Request) -> str | None:
    """The Content-Encoding, if it names anything but identity: a compressed body."""
    values = request.headers.getall("Content-Encoding", ())
    if not values:
        return None
    if all(coding.strip().lower() in ("", "identity") for value in values for coding in value.split(",")):
        return None
    return ", ".join(values)


def target_path(request: web.Request) -> str:
    """The path the client meant: slashes collapsed, `.` and `..` resolved, no trailing slash.

    A CONNECT (authority form) or an absolute target without a path has no path of its own: its
    target, up to any query, stands in for it.
    """
    path = request.path or request.raw_path.partition("?")[0].partition("#")[0]
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def account_of(path: str) -> str | None:
    """The account a handler path names (`/smsc/{account}`; `/smsc` is `default`), None for any
    other path. Any name at all: whether the deployment knows it is for the handler to say."""
    if path == HANDLER_PATH:
        return DEFAULT_ACCOUNT
    prefix, _, name = path.partition(f"{HANDLER_PATH}/")
    return name if not prefix and name and "/" not in name else None
