"""structlog, configured once per process: JSON lines in production, readable on a terminal.

The standard library's loggers (aiohttp, RQ, asyncio) go through the same renderer, so that every
line of a process is one JSON object. The configured secret is replaced in every rendered line:
the last resort should anything ever put it in an event. Phone numbers are personal data: unless
configured otherwise, a line shows only their last 4 characters (the tables keep them in full).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Final

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.typing import EventDict, Processor, WrappedLogger

from smsc import jsondump
from smsc.constants import REDACTED

Renderer = Callable[[WrappedLogger, str, EventDict], str]


# Keys of our lines whose values are phones, or what stands in their place (an alphanumeric sender,
# an e-mail address, a Telegram @name: smsc/protocol/fields.py PHONE_RULES).
PHONE_KEYS: Final = frozenset({"phone", "to", "to_phone"})
# Enough to tell two numbers apart in a log, not enough to call one.
PHONE_SHOWN: Final = 4


def mask_phone(value: str) -> str:
    """`value` with all but its last 4 characters as `*`, its length kept (`*******7766`)."""
    hidden = max(len(value) - PHONE_SHOWN, 0)
    return "*" * hidden + value[hidden:]


def configure(level: int = logging.INFO, secrets: Iterable[str] = (), *, mask_phones: bool = True) -> None:
    """One event per line on stderr, with a UTC timestamp and the bound ids; no one of `secrets`
    ever shows, and phones show only their last 4 characters unless `mask_phones` is False."""
    global _redacting
    renderer: Renderer = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else _json_line
    renderer = _redacting = _Redacting(renderer, secrets)
    stamp = _Stamp()
    masking: list[Processor] = [_masked_phones] if mask_phones else []
    structlog.configure(
        # No context variables: a request's fields are passed with its line (ingress/app.py), a job's
        # with its own; merging them cost each line a copy of the task's context.
        processors=[
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            *masking,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line: processes sharing stderr (serve --workers N) never interleave a line.
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.processors.add_log_level, stamp, _library_record],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    # aiohttp logs a request with a bad method at debug level, other malformed requests as errors:
    # each of them gets its one line here.
    logging.getLogger("aiohttp.server").setLevel(logging.DEBUG)


# A phone quoted in a reason after its field's name: `implausible 'phone': '...'` (a refused request),
# `to_phone stored '...', here '...'` (a conflict: both versions).
_QUOTED_PHONE: Final = re.compile(r"\b(?:phone|to|to_phone)'?(?::| stored) '([^']*)'(?:, here '([^']*)')?")


def _json_line(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    """The line as one JSON object (a JSON body's `\\ud800` escape can put a lone surrogate in a
    reason: smsc.jsondump writes it escaped, as it always was)."""
    return jsondump.dumps(event_dict, default=repr).decode()


def _masked_phones(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Phones masked: the values of the phone keys, the same values wherever another field of the
    line repeats them, and the phones a reason quotes."""
    repeated: dict[str, str] = {}
    for key in PHONE_KEYS:
        value = event_dict.get(key)
        if value is not None:
            phone = str(value)
            event_dict[key] = masked = mask_phone(phone)
            if len(phone) > PHONE_SHOWN:
                repeated[phone] = masked
    # Most lines repeat no phone and quote none: one search of all their other text tells, where
    # looking value by value cost more than the rest of the line.
    # The masked phone fields are in it too: at worst a false alarm, and the line goes value by value.
    texts = "\x00".join([v for v in event_dict.values() if isinstance(v, str)])
    if "'" not in texts and all(phone not in texts for phone in repeated):
        return event_dict
    for key, value in event_dict.items():
        if key not in PHONE_KEYS and isinstance(value, str):
            for phone, masked in repeated.items():
                if phone in value:
                    value = value.replace(phone, masked)
            # A quoted phone needs a quote: most values (ids, names) have none, and skip the regex.
            if "'" in value:
                value = _QUOTED_PHONE.sub(_mask_quoted, value)
            event_dict[key] = value
    return event_dict


def _mask_quoted(match: re.Match[str]) -> str:
    text, start = match.group(0), match.start(0)
    for group in (2, 1):  # from the end, so that the earlier offsets still hold
        if match.group(group) is not None:
            begin, end = match.start(group) - start, match.end(group) - start
            text = text[:begin] + mask_phone(match.group(group)) + text[end:]
    return text


class _Stamp:
    """The line's UTC time to the microsecond, `2026-11-30T06:46:40.235952Z`: the date and second
    formatted once a second, where structlog's TimeStamper builds a datetime for every line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def _library_record(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A standard library record: named by its logger; a malformed HTTP request only by its class.

    aiohttp's text and traceback of a parse error quote the raw request line (query string, hence
    the secret, included) and fragments of the body: neither is kept.
    """
    event_dict["logger"] = event_dict["_record"].name
    exc_info = event_dict.get("exc_info")
    error = exc_info[1] if isinstance(exc_info, tuple) else None
    if isinstance(error, HttpProcessingError):
        del event_dict["exc_info"]
        event_dict.update(
            event="request_malformed", level="warning", code=error.code, error=type(error).__name__
        )
    return event_dict


def hide(secrets: Iterable[str]) -> None:
    """From now on, no line shows any of `secrets` either (new secrets of a reloaded accounts file)."""
    if _redacting is not None:
        _redacting.hide(secrets)


class _Redacting:
    """A renderer whose lines never hold one of the secrets, in any letter case."""

    def __init__(self, renderer: Renderer, secrets: Iterable[str]) -> None:
        self._renderer = renderer
        self._secrets: set[str] = set()
        self._lowered: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None
        self.hide(secrets)

    def hide(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s)
        # The longest first: a secret inside another one must not leave the rest of that one.
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._lowered = tuple(secret.lower() for secret in ordered)
        self._pattern = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        line = self._renderer(logger, method_name, event_dict)
        if self._pattern is None:
            return line
        # A plain search of the lowered line is several times cheaper than the regex, and nearly
        # every line holds no secret. It is exact only for ASCII lines: IGNORECASE also matches a
        # few non-ASCII letters (U+017F, U+212A) to ASCII ones, so any other line takes the regex.
        if line.isascii():
            lowered = line.lower()
            if not any(secret in lowered for secret in self._lowered):
                return line
        return self._pattern.sub(REDACTED, line)


# The renderer of the last `configure`, for `hide`.
_redacting: _Redacting | None = None
