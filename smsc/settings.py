"""Configuration: read once from the environment into one frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from smsc.constants import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from smsc.exceptions import ConfigError
from smsc.protocol.fields import HashAlgorithm, UnknownCharset, codec_for
from smsc.redisconn import check_url

# The gateway only takes these characters in the handler URL's secret.
SECRET_CHARACTERS: Final = r"[A-Za-z0-9_-]+"  # noqa: S105 - a pattern, not a secret


class LogPhones(StrEnum):
    """What log lines show of a phone (SMSC_LOG_PHONES): its last 4 characters, or all of it."""

    MASKED = "masked"
    FULL = "full"


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service; see the README for each variable."""

    secret: str
    hash_algorithm: HashAlgorithm
    allow_unsigned: bool
    default_charset: str
    tz: ZoneInfo
    max_body: int
    queue: str
    redis_url: str
    redis_min_replicas: int
    database_url: str
    max_queue: int
    read_timeout: float
    job_timeout: int
    retry_intervals: tuple[int, ...]
    dead_letter_days: int
    log_phones: LogPhones
    metrics: bool
    # The TOML file of the accounts besides `default` (smsc/accounts.py); "" for none.
    accounts_file: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from `env` (the process environment by default)."""
        e = os.environ if env is None else env
        try:
            algorithm = HashAlgorithm(e.get("SMSC_HASH", "md5").strip().lower())
        except ValueError:
            raise ConfigError("SMSC_HASH must be one of md5, sha1, crc32") from None
        charset = e.get("SMSC_CHARSET", "windows-1251")
        try:
            codec_for(charset)
        except UnknownCharset:
            raise ConfigError(f"SMSC_CHARSET {charset!r} is not utf-8, koi8-r or windows-1251") from None
        tz_name = e.get("SMSC_TZ", "Europe/Moscow")
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"SMSC_TZ {tz_name!r} is not a known time zone") from None
        max_body = _positive_int(e, "SMSC_MAX_BODY", 64 * 1024)
        secret = e.get("SMSC_SECRET", "")
        if secret and not re.fullmatch(SECRET_CHARACTERS, secret):
            raise ConfigError("SMSC_SECRET may hold only latin letters, digits, '-' and '_'")
        phones = e.get("SMSC_LOG_PHONES", "") or LogPhones.MASKED.value
        try:
            log_phones = LogPhones(phones)
        except ValueError:
            raise ConfigError(f"SMSC_LOG_PHONES must be masked or full, not {phones!r}") from None
        redis_url = e.get("REDIS_URL", DEFAULT_REDIS_URL)
        check_url(redis_url)
        return cls(
            secret=secret,
            hash_algorithm=algorithm,
            allow_unsigned=e.get("SMSC_ALLOW_UNSIGNED", "") == "1",
            default_charset=charset,
            tz=tz,
            max_body=max_body,
            queue=e.get("SMSC_QUEUE", "smsc"),
            redis_url=redis_url,
            redis_min_replicas=_count(e, "SMSC_REDIS_MIN_REPLICAS", 0),
            database_url=e.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            max_queue=_positive_int(e, "SMSC_MAX_QUEUE", 100_000),
            read_timeout=_positive_int(e, "SMSC_READ_TIMEOUT", 10),
            job_timeout=_positive_int(e, "SMSC_JOB_TIMEOUT", 30),
            retry_intervals=_intervals(e.get("SMSC_RETRY_INTERVALS", "15,30,60,120,240,480")),
            dead_letter_days=_positive_int(e, "SMSC_DEAD_LETTER_DAYS", 30),
            log_phones=log_phones,
            metrics=_on_off(e, "SMSC_METRICS"),
            accounts_file=e.get("SMSC_ACCOUNTS_FILE", ""),
        )

    def require_secret(self) -> None:
        """Refuse to receive unsigned callbacks unless the operator asked for it."""
        if not self.secret and not self.allow_unsigned:
            raise ConfigError(
                "SMSC_SECRET is not set: anyone could post fake statuses and messages. "
                "Set SMSC_SECRET to the secret of the handler URL, "
                "or SMSC_ALLOW_UNSIGNED=1 to accept unsigned callbacks on purpose."
            )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,12}", raw):
        raise ConfigError(f"{name} must be a whole number, not {raw!r}")
    value = int(raw)
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,3}", raw):
        raise ConfigError(f"{name} must be a whole number from 0, not {raw!r}")
    return int(raw)


def _on_off(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in ("", "on", "off"):
        raise ConfigError(f"{name} must be on or off, not {raw!r}")
    return raw != "off"


def _intervals(raw: str) -> tuple[int, ...]:
    """Seconds before each retry of a transiently failed job, e.g. `15,30,60`."""
    parts = [p.strip() for p in raw.split(",")]
    if not parts or not all(re.fullmatch(r"[0-9]{1,6}", p) for p in parts):
        raise ConfigError(f"SMSC_RETRY_INTERVALS must be seconds separated by commas, not {raw!r}")
    return tuple(int(p) for p in parts)
