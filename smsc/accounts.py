"""The accounts a deployment receives callbacks for: `default` from the environment, the others
from the TOML file SMSC_ACCOUNTS_FILE.

A callback names its account in the handler URL (`/smsc/{account}`); each account has its own
secrets (two during a rotation), hash algorithm, charset and time zone. The file is read at start
and again on SIGHUP: every mistake in it is a ConfigError naming its line, and no error text ever
quotes a secret.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from smsc import logs
from smsc.constants import ACCOUNT_NAME, DEFAULT_ACCOUNT, UNKNOWN_ACCOUNT
from smsc.exceptions import ConfigError
from smsc.protocol.fields import HashAlgorithm, UnknownCharset, codec_for
from smsc.settings import SECRET_CHARACTERS, Settings

log = structlog.get_logger("smsc")

_KEYS: Final = ("secret", "secrets", "hash", "charset", "tz")


@dataclass(frozen=True)
class Account:
    """One account: what its callbacks are verified, decoded and normalized with.

    No secrets only for `default` with SMSC_ALLOW_UNSIGNED=1: its callbacks are not verified.
    """

    name: str
    secrets: tuple[str, ...]
    hash_algorithm: HashAlgorithm
    charset: str
    tz: ZoneInfo


@dataclass(frozen=True)
class Accounts:
    """Every account of a deployment, by name."""

    by_name: Mapping[str, Account]

    def get(self, name: str) -> Account | None:
        """The account called `name`, or None for one the deployment does not know."""
        return self.by_name.get(name)

    def label(self, name: str) -> str:
        """`name` as a metrics label value: the names are few, anything unknown is one value."""
        return name if name in self.by_name else UNKNOWN_ACCOUNT

    @property
    def secrets(self) -> frozenset[str]:
        """Every secret of every account: what log lines must never show."""
        return frozenset(s for account in self.by_name.values() for s in account.secrets)


def default_account(settings: Settings) -> Account:
    """The account of `POST /smsc`: the environment's settings, as before there were accounts."""
    return Account(
        name=DEFAULT_ACCOUNT,
        secrets=(settings.secret,) if settings.secret else (),
        hash_algorithm=settings.hash_algorithm,
        charset=settings.default_charset,
        tz=settings.tz,
    )


def load(settings: Settings) -> Accounts:
    """`default` and the accounts of SMSC_ACCOUNTS_FILE, if set; ConfigError if it cannot be used."""
    default = default_account(settings)
    path = settings.accounts_file
    if not path:
        return Accounts({default.name: default})
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"SMSC_ACCOUNTS_FILE {path}: cannot read it: {e.strerror or e}") from e
    return parse(data, path, default)


def reload(settings: Settings, current: Accounts) -> Accounts:
    """The file read again; if it cannot be used, `current`, and a line saying why."""
    try:
        accounts = load(settings)
    except ConfigError as e:
        # The reason names the file and the line, never a secret.
        log.error("accounts_reload_failed", reason=e.reason, kept=sorted(current.by_name))
        return current
    logs.hide(accounts.secrets)
    log.info("accounts_reloaded", accounts=sorted(accounts.by_name))
    return accounts


def parse(data: bytes, source: str, default: Account) -> Accounts:
    """The accounts of the TOML text `data` beside `default`; `source` names the file in errors."""
    try:
        text = data.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{source}, line {line}: not UTF-8 (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        # tomllib's message names the line and column, and quotes no value.
        raise ConfigError(f"{source}: {e}") from None
    where = _Lines(source, text.splitlines())
    for key in document:
        if key != "accounts":
            raise ConfigError(where.top(key, f"unknown key {key[:64]!r}: only [accounts.NAME] tables"))
    tables = document.get("accounts", {})
    if not isinstance(tables, dict):
        raise ConfigError(where.top("accounts", "accounts must be tables: [accounts.NAME]"))
    accounts = {default.name: default}
    for name, table in tables.items():
        # [accounts.default] replaces the environment's settings of POST /smsc with its own, so
        # that its secret too can be rotated by a reload; what it does not set stays the environment's.
        accounts[name] = _account(name, table, where, default if name == DEFAULT_ACCOUNT else _STANDARD)
    return Accounts(accounts)


# What an account of the file has where it sets nothing.
_STANDARD: Final = Account("", (), HashAlgorithm.MD5, "windows-1251", ZoneInfo("Europe/Moscow"))


def _account(name: str, table: Any, where: _Lines, unset: Account) -> Account:
    if not ACCOUNT_NAME.fullmatch(name):
        raise ConfigError(
            where.of(name, None, "an account name has 1 to 64 latin letters, digits, '-' and '_'")
        )
    if name == UNKNOWN_ACCOUNT:
        raise ConfigError(
            where.of(name, None, f"{name!r} is reserved: the metrics label of any account not in the file")
        )
    if not isinstance(table, dict):
        raise ConfigError(where.of(name, None, "must be a table: [accounts.NAME] with its keys"))
    for key in table:
        if key not in _KEYS:
            raise ConfigError(
                where.of(name, key, f"unknown key {key[:64]!r}, expected one of {', '.join(_KEYS)}")
            )
    secrets = _secrets(name, table, where)
    hash_name = _text(name, "hash", table.get("hash", unset.hash_algorithm.value), where)
    try:
        algorithm = HashAlgorithm(hash_name.strip().lower())
    except ValueError:
        raise ConfigError(where.of(name, "hash", "hash must be md5, sha1 or crc32")) from None
    charset = table.get("charset", unset.charset)
    try:
        codec_for(_text(name, "charset", charset, where))
    except UnknownCharset:
        raise ConfigError(
            where.of(name, "charset", "charset must be utf-8, koi8-r or windows-1251")
        ) from None
    tz_name = _text(name, "tz", table.get("tz", unset.tz.key), where)
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(where.of(name, "tz", f"tz {tz_name[:64]!r} is not a known time zone")) from None
    return Account(name=name, secrets=secrets, hash_algorithm=algorithm, charset=charset, tz=tz)


def _secrets(name: str, table: dict[str, Any], where: _Lines) -> tuple[str, ...]:
    if "secret" in table and "secrets" in table:
        raise ConfigError(where.of(name, "secrets", "either secret or secrets, not both"))
    if "secret" in table:
        values = [table["secret"]]
        key = "secret"
    elif "secrets" in table:
        values = table["secrets"]
        key = "secrets"
        if not isinstance(values, list) or not values:
            raise ConfigError(where.of(name, key, "secrets must be a list of secrets, the new one first"))
    else:
        raise ConfigError(where.of(name, None, 'no secret: set secret = "..." (or secrets = [...])'))
    # Never quoted: an error is logged, and a secret never is.
    for value in values:
        if not isinstance(value, str) or not re.fullmatch(SECRET_CHARACTERS, value):
            raise ConfigError(
                where.of(name, key, "a secret is a string of latin letters, digits, '-' and '_' only")
            )
    if len(set(values)) != len(values):
        raise ConfigError(where.of(name, key, "the same secret twice"))
    return tuple(values)


def _text(name: str, key: str, value: Any, where: _Lines) -> str:
    if not isinstance(value, str):
        raise ConfigError(where.of(name, key, f"{key} must be a string"))
    return value


class _Lines:
    """Where in the file a table or key is, for an error that names its line.

    tomllib gives no positions for what it parsed: the line is found again in the text (a table
    header `[accounts.NAME]`, then `key =` below it), else the error names the account only.
    """

    def __init__(self, source: str, lines: list[str]) -> None:
        self._source = source
        self._lines = lines

    def top(self, key: str, problem: str) -> str:
        """An error about a key of the document itself."""
        pattern = re.compile(rf"\s*\[*\s*\"?{re.escape(key)}\"?\s*[\]=.]")
        return self._at(self._find(pattern, 0, len(self._lines)), problem)

    def of(self, name: str, key: str | None, problem: str) -> str:
        """An error about account `name`, or one of its keys."""
        header = re.compile(rf"\s*\[\s*accounts\s*\.\s*[\"']?{re.escape(name)}[\"']?\s*\]")
        start = self._find(header, 0, len(self._lines))
        if start is None:
            # Not a table of its own: `name = ...` in [accounts], or a dotted key.
            start = self._find(
                re.compile(rf"\s*(accounts\s*\.\s*)?[\"']?{re.escape(name)}[\"']?\s*[=.]"),
                0,
                len(self._lines),
            )
        index = start
        if start is not None and key is not None:
            end = self._find(re.compile(r"\s*\["), start + 1, len(self._lines))
            assignment = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
            index = self._find(assignment, start + 1, len(self._lines) if end is None else end)
            index = start if index is None else index
        return self._at(index, f"account {name[:64]!r}: {problem}")

    def _find(self, pattern: re.Pattern[str], start: int, end: int) -> int | None:
        """The index of the first line from `start` up to `end` that `pattern` matches."""
        return next((i for i in range(start, end) if pattern.match(self._lines[i])), None)

    def _at(self, index: int | None, problem: str) -> str:
        if index is None:
            return f"{self._source}: {problem}"
        return f"{self._source}, line {index + 1}: {problem}"
