"""structlog, configured once per process: JSON lines in production, readable on a terminal.

The standard library's loggers (aiohttp, RQ, asyncio) go through the same renderer, so that every
line of a process is one JSON object. The configured secret is replaced in every rendered line:
the last resort should anything ever put it in an event.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import cast

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.typing import EventDict, WrappedLogger

from smsc.constants import REDACTED

Renderer = Callable[[WrappedLogger, str, EventDict], str]


def configure(level: int = logging.INFO, secret: str = "") -> None:
    """One event per line on stderr, with a UTC timestamp and the bound ids; `secret` never shows."""
    renderer: Renderer = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        # json.dumps gives text: the renderer's `str | bytes` is only ever str here.
        else cast(Renderer, structlog.processors.JSONRenderer())
    )
    if secret:
        renderer = _Redacting(renderer, secret)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
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


class _Redacting:
    """A renderer whose lines never hold the secret, in any letter case."""

    def __init__(self, renderer: Renderer, secret: str) -> None:
        self._renderer = renderer
        self._secret = re.compile(re.escape(secret), re.IGNORECASE)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        return self._secret.sub(REDACTED, self._renderer(logger, method_name, event_dict))
