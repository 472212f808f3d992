"""Reading the command line: each argument checked where it is parsed, with a one-line error."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

from cli.render import printable
from smsc.constants import ACCOUNT_NAME
from smsc.exceptions import ConfigError

T = TypeVar("T")

# An RQ job id: RQ's own rule for job ids (its ids are uuid4 strings), with a length bound.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {printable(message)} (see {self.prog} -h)\n")


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def port_or_off(text: str) -> int:
    """A TCP port, or 0 for none."""
    return 0 if text == "0" else port(text)


def processes(text: str) -> int:
    """A number of processes, at least 1."""
    if not re.fullmatch(r"[0-9]{1,4}", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (1 or more)")
    return int(text)


def retention_days(text: str) -> int:
    """Days of events to keep: a whole number, 1 or more (at most about 270 years)."""
    if not re.fullmatch(r"[0-9]{1,5}", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of days (a whole number, 1 or more; e.g. 400)"
        )
    return int(text)


def dead_letter_id(text: str) -> str:
    """A dead letter's id as `list` prints it: a number (PostgreSQL) or an RQ job id (Redis)."""
    from workers.deadletter import row_id

    if re.fullmatch(r"[0-9]+", text):
        if row_id(text) is None:
            raise argparse.ArgumentTypeError(f"{text} is out of range for a dead letter number")
        return text
    if not _JOB_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is neither a dead letter number nor an RQ job id")
    return text


def job_id(text: str) -> str:
    """An RQ job id."""
    if not _JOB_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an RQ job id")
    return text


def account(text: str) -> str:
    """An account name, as in the handler URL `/smsc/{account}`."""
    if not ACCOUNT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not an account name (latin letters, digits, - and _)"
        )
    return text


def search_text(value: str) -> str:
    """Free text to search for; bytes that are not UTF-8 cannot match anything we store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{value!r} is not valid UTF-8") from None
    return value


def timestamp(value: str) -> datetime:
    """An ISO 8601 time; UTC if it names no zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-01-31 or 2026-01-31T14:00+03:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_env(given: T | None, name: str, default: str, convert: Callable[[str], T]) -> T:
    """The flag's value if given, else the environment variable `name`, checked like the flag.

    Read only for the command that uses it, so that a bad variable never breaks the others.
    """
    if given is not None:
        return given
    raw = os.environ.get(name) or default
    try:
        return convert(raw)
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"{name}: {e}") from None
