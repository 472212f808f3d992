"""What the SMSC handler protocol names: kinds, fields, charsets, formats, hash algorithms."""

from __future__ import annotations

import codecs
import functools
import re
from enum import StrEnum
from typing import Final

from smsc.exceptions import BadRequest


class Kind(StrEnum):
    """The three events one handler URL receives."""

    STATUS = "status"
    INCOMING = "incoming"
    CALL = "call"


class Format(StrEnum):
    """How the parameters travel: form POST (no fmt), XML (fmt=2), JSON (fmt=3)."""

    FORM = "form"
    XML = "xml"
    JSON = "json"


class HashAlgorithm(StrEnum):
    """The URL parameter that names the algorithm also carries the hash back."""

    MD5 = "md5"
    SHA1 = "sha1"
    CRC32 = "crc32"


HASH_PARAMS: Final = frozenset(a.value for a in HashAlgorithm)

# Fields a kind cannot be stored without; `mes` may be empty (an empty SMS is still an SMS).
REQUIRED: Final[dict[Kind, tuple[str, ...]]] = {
    Kind.STATUS: ("id", "phone", "status"),
    Kind.INCOMING: ("id", "phone", "mes", "to"),
    Kind.CALL: ("phone", "ts"),
}
MAY_BE_EMPTY: Final = frozenset({"mes"})

# The values joined by ':' (then ':<secret>') into the string that is hashed.
CONTROL_FIELDS: Final[dict[Kind, tuple[str, ...]]] = {
    Kind.STATUS: ("id", "phone", "status"),
    Kind.INCOMING: ("phone", "mes", "to"),
    Kind.CALL: ("phone", "ts"),
}

# Delivery status codes (`status`) that end a message's story: delivered (1), then possibly read (2)
# and link clicked (4), which imply delivery; or a failure: expired (3), cannot be delivered (20),
# wrong number (22), prohibited (23), not enough money (24), unreachable number (25).
DELIVERED_STATUSES: Final = frozenset({1, 2, 4})
FAILED_STATUSES: Final = frozenset({3, 20, 22, 23, 24, 25})

# Charset names the gateway uses, mapped to Python codec names.
CHARSETS: Final[dict[str, str]] = {
    "utf-8": "utf-8",
    "koi8-r": "koi8_r",
    "windows-1251": "cp1251",
}
DEFAULT_CHARSET: Final = "windows-1251"
# When a non-ASCII `mes` does not verify in the transmission charset, these are tried too.
FALLBACK_HASH_CODECS: Final = ("utf-8", "cp1251")


class UnknownCharset(BadRequest):
    """A charset name that is not one of the three the gateway sends."""


def codec_for(name: str) -> str:
    """Return the Python codec for a gateway charset name or one of its aliases (cp1251, utf8...)."""
    return _codec_of(name.strip())


# Every request names its charset, often twice; only supported names are cached, at most 64 of them.
@functools.lru_cache(maxsize=64)
def _codec_of(name: str) -> str:
    try:
        canonical = codecs.lookup(name).name
    except (LookupError, ValueError):
        raise UnknownCharset(f"unknown charset {name[:40]!r}") from None
    for codec in CHARSETS.values():
        if codecs.lookup(codec).name == canonical:
            return codec
    raise UnknownCharset(f"unsupported charset {name[:40]!r}")


def kind_of(params: dict[str, str]) -> Kind:
    """Tell the kind the way the vendor's sample handler does: `mes`, then `waitcall`."""
    if "mes" in params:
        return Kind.INCOMING
    if "waitcall" in params:
        return Kind.CALL
    return Kind.STATUS


def check_required(kind: Kind, params: dict[str, str]) -> None:
    """Raise BadRequest naming the first field the kind needs and does not have."""
    for name in REQUIRED[kind]:
        value = params.get(name)
        if value is None or (value.strip() == "" and name not in MAY_BE_EMPTY):
            raise BadRequest(f"{kind} without {name!r}")


# The hash covers phone-like fields joined by ':' and does not say which kind it signs: a value holding
# ':' or shaped like another kind's field (an SMS text as a status's phone, a status code as an SMS's
# `to`) would let a hash captured for one kind verify as another. So each field accepts only what the
# gateway sends there (values are compared without surrounding blanks, as they are stored).
_NUMBER = r"\+?[0-9]{3,15}"  # international digits (E.164 has at most 15), `+` optional; short numbers
_EMAIL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?:[^\W_](?:[^\W_]|-){0,62}\.){1,8}[^\W_]{2,63}"
_TELEGRAM = r"@[A-Za-z0-9_]{3,32}|#[0-9]{1,20}"  # a Telegram recipient: @username or #user-id
_SENDER_ID = r"[\w .&'!+@#-]{1,32}"  # alphanumeric sender ids: letters of any script, a few marks
PHONE_RULES: Final[dict[Kind, dict[str, re.Pattern[str]]]] = {
    # The recipient of a message we sent: a number, an e-mail address (an e-mail message), a Telegram user.
    Kind.STATUS: {"phone": re.compile(f"{_NUMBER}|{_EMAIL}|{_TELEGRAM}")},
    # An SMS may come from an alphanumeric sender, but always to one of our numbers.
    Kind.INCOMING: {"phone": re.compile(f"{_NUMBER}|{_SENDER_ID}"), "to": re.compile(_NUMBER)},
    Kind.CALL: {"phone": re.compile(_NUMBER)},
}


def check_phones(kind: Kind, params: dict[str, str]) -> None:
    """Raise BadRequest naming the first phone-like field of the kind that no sender could send."""
    for name, rule in PHONE_RULES[kind].items():
        value = params.get(name, "")
        if not rule.fullmatch(value.strip()):
            raise BadRequest(f"{kind} with an implausible {name!r}: {value[:40]!r}")


# Parameters that identify an event in a log line; cut short, since they come from the network.
LOG_FIELDS: Final = ("id", "phone", "status", "ts")
LOG_VALUE_MAX: Final = 64


def log_ids(params: dict[str, str]) -> dict[str, str]:
    """The identifying parameters present in `params`, ready to bind to a log line."""
    return {name: params[name][:LOG_VALUE_MAX] for name in LOG_FIELDS if params.get(name)}


def event_ids(params: dict[str, str]) -> dict[str, str]:
    """The kind, `id` and `phone` of an event, for log lines and dead letters."""
    return {
        "kind": kind_of(params).value,
        **{k: params[k][:LOG_VALUE_MAX] for k in ("id", "phone") if params.get(k)},
    }
