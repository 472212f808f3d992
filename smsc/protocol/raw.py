"""The raw request as the ingress stores it: what the worker decodes, and what a replay resends."""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from smsc.constants import ACCOUNT_NAME, DEFAULT_ACCOUNT, REDACTED
from smsc.exceptions import PermanentError
from smsc.protocol.fields import HASH_PARAMS

# Year 9999: past it, datetime cannot hold a receipt time.
_LATEST = 253_402_300_800


@dataclass(frozen=True)
class RawRequest:
    """One POST to the handler, before any interpretation (the hash parameters of the query
    string are redacted, since the handler URL carries the secret there, and so is the secret
    wherever else it appears)."""

    rid: str
    received_at: float
    query: str
    content_type: str
    body: bytes
    # The {account} of the handler URL; `default` for POST /smsc and for jobs of earlier releases.
    account: str = DEFAULT_ACCOUNT

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form: RQ's JSON serializer carries it, and bytes travel as base64."""
        return {
            "rid": self.rid,
            "received_at": self.received_at,
            "query": self.query,
            "content_type": self.content_type,
            "body": base64.b64encode(self.body).decode("ascii"),
            "account": self.account,
        }

    @classmethod
    def from_json(cls, data: Any) -> RawRequest:
        """Rebuild a raw request from `to_json` output; anything else is a permanent error.

        A job queued before there were accounts has none: it came to `POST /smsc`, `default`.
        """
        try:
            text = {name: data[name] for name in ("rid", "query", "content_type", "body")}
            received_at = data["received_at"]
            account = data.get("account", DEFAULT_ACCOUNT)
            if not isinstance(account, str) or not ACCOUNT_NAME.fullmatch(account):
                raise ValueError(f"account {str(account)[:80]!r} is no account name")
            if not all(isinstance(v, str) for v in text.values()):
                raise TypeError("rid, query, content_type and body must be strings")
            if isinstance(received_at, bool) or not isinstance(received_at, int | float):
                raise TypeError("received_at must be a number")
            # A unix time a datetime can hold: every later step turns it into one.
            if not 0 <= received_at < _LATEST:
                raise ValueError(f"received_at {received_at!r} is no time")
            return cls(
                rid=text["rid"],
                received_at=float(received_at),
                query=text["query"],
                content_type=text["content_type"],
                body=base64.b64decode(text["body"], validate=True),
                account=account,
            )
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as e:
            raise PermanentError(f"malformed raw request: {e}") from e


def redact_query(query: str) -> str:
    """Replace the values of hash parameters in a raw query string, keeping the rest as it came.

    The handler URL holds the secret itself in `md5=`/`sha1=`/`crc32=`; it must never be stored.
    """
    parts = []
    for part in query.split("&"):
        name = part.partition("=")[0]
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        name = name.strip().lower()
        parts.append(f"{name}={REDACTED}" if name in HASH_PARAMS else part)
    return "&".join(parts)


def redact_secret(data: bytes, secret: str) -> bytes:
    """`data` with the secret's bytes, in any letter case, replaced by `redacted`.

    Used on the body and the query string before they are stored: a parameter holding the secret
    (`sha1=<secret>` in a form, JSON or XML body) must never be. The secret is ASCII, as are its
    bytes in every charset the gateway uses.
    """
    # bytes.lower() folds ASCII letters only, as IGNORECASE does in a bytes pattern: the same test,
    # and the regex pass is paid only by the rare request that holds the secret.
    if not secret or secret.lower().encode("ascii") not in data.lower():
        return data
    return _pattern(secret).sub(REDACTED.encode("ascii"), data)


@functools.lru_cache(maxsize=4)
def _pattern(secret: str) -> re.Pattern[bytes]:
    return re.compile(re.escape(secret.encode("ascii")), re.IGNORECASE)
