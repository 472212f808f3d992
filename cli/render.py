"""What the operator reads: dead letters as text that cannot act on a terminal.

Every field comes from a request someone sent us, so each is escaped before it is printed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smsc.protocol.raw import RawRequest
    from workers.deadletter import DeadLetter

# How much of a raw body `show` prints.
BODY_CHARS = 2000


def printable(text: str) -> str:
    """`text` with each character that is not printable written as a Python escape (`\\x1b`).

    That is C0 and C1 controls, DEL, bidi and other format characters (U+202E), line and paragraph
    separators, lone surrogates, unassigned code points, and spaces other than U+0020.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def summary(letter: DeadLetter) -> str:
    """One line: id, where, when, attempts, error, reason and what could be read of the request."""
    when = letter.failed_at.isoformat(timespec="seconds") if letter.failed_at else "-"
    what = "; ".join(_request(raw, ids) for raw, ids in zip(letter.requests, letter.ids, strict=True))
    what = what or "unreadable"
    head = f"{letter.id} [{letter.where}] {when} x{letter.attempts}"
    return printable(f"{head} {letter.error_class}: {letter.reason} ({what})")


def details(letter: DeadLetter) -> list[str]:
    """One dead letter in full, its raw requests included, one field a line."""
    first = letter.first_failed_at.isoformat() if letter.first_failed_at else "-"
    last = letter.failed_at.isoformat() if letter.failed_at else "-"
    lines = [
        f"dead letter {letter.id} (in {letter.where}, job {letter.job_id})",
        f"  error:      {letter.error_class}: {letter.reason}",
        f"  attempts:   {letter.attempts}",
        f"  first/last: {first} / {last}",
        f"  replayed:   {letter.replayed_at or 'no'}",
    ]
    for raw, ids in zip(letter.requests, letter.ids, strict=True):
        received = datetime.fromtimestamp(raw.received_at, UTC).isoformat()
        body = raw.body.decode("utf-8", "backslashreplace")
        cut = f" … ({len(raw.body)} bytes in all)" if len(body) > BODY_CHARS else ""
        lines += [
            f"  request {raw.rid} received {received}: {_request(raw, ids)}",
            f"    content-type: {raw.content_type}",
            f"    query:        {raw.query}",
            f"    body:         {body[:BODY_CHARS]}{cut}",
        ]
    return [printable(line) for line in lines]


def _request(raw: RawRequest, ids: dict[str, str]) -> str:
    return f"account={raw.account} {_ids(ids)}"


def _ids(ids: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in ids.items()) or "unreadable"
