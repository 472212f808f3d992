"""Settings.from_env(): defaults, accepted values, refused values, and the unsigned-mode guard."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from smsc.exceptions import ConfigError
from smsc.protocol.fields import HashAlgorithm
from smsc.settings import LogPhones, Settings


def test_defaults() -> None:
    """An empty environment gives the documented defaults."""
    s = Settings.from_env({})
    assert s.hash_algorithm is HashAlgorithm.MD5
    assert s.default_charset == "windows-1251"
    assert s.tz == ZoneInfo("Europe/Moscow")
    assert s.max_body == 65536
    assert s.queue == "smsc"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/smsc"
    assert s.secret == ""
    assert s.allow_unsigned is False
    assert s.log_phones is LogPhones.MASKED
    assert s.metrics is True


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        ({"SMSC_HASH": "sha1"}, "hash_algorithm", HashAlgorithm.SHA1),
        ({"SMSC_HASH": "crc32"}, "hash_algorithm", HashAlgorithm.CRC32),
        ({"SMSC_HASH": " MD5 "}, "hash_algorithm", HashAlgorithm.MD5),
        ({"SMSC_CHARSET": "utf-8"}, "default_charset", "utf-8"),
        ({"SMSC_CHARSET": "koi8-r"}, "default_charset", "koi8-r"),
        ({"SMSC_TZ": "Asia/Vladivostok"}, "tz", ZoneInfo("Asia/Vladivostok")),
        ({"SMSC_TZ": "UTC"}, "tz", ZoneInfo("UTC")),
        ({"SMSC_MAX_BODY": "1024"}, "max_body", 1024),
        ({"SMSC_MAX_BODY": ""}, "max_body", 65536),
        ({"SMSC_QUEUE": "smsc-test"}, "queue", "smsc-test"),
        ({"REDIS_URL": "redis://redis:6379/3"}, "redis_url", "redis://redis:6379/3"),
        ({"DATABASE_URL": "postgresql://u@db/x"}, "database_url", "postgresql://u@db/x"),
        ({"SMSC_SECRET": "abc-DEF_123"}, "secret", "abc-DEF_123"),
        ({"SMSC_ALLOW_UNSIGNED": "1"}, "allow_unsigned", True),
        ({"SMSC_ALLOW_UNSIGNED": "0"}, "allow_unsigned", False),
        ({"SMSC_LOG_PHONES": "full"}, "log_phones", LogPhones.FULL),
        ({"SMSC_LOG_PHONES": "masked"}, "log_phones", LogPhones.MASKED),
        ({"SMSC_LOG_PHONES": ""}, "log_phones", LogPhones.MASKED),
        ({"SMSC_METRICS": "off"}, "metrics", False),
        ({"SMSC_METRICS": " OFF "}, "metrics", False),
        ({"SMSC_METRICS": "on"}, "metrics", True),
        ({"SMSC_METRICS": ""}, "metrics", True),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else next(iter(v)),
)
def test_values_from_the_environment(env: dict[str, str], attribute: str, expected: Any) -> None:
    """Each variable sets its setting."""
    assert getattr(Settings.from_env(env), attribute) == expected


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"SMSC_HASH": "sha256"}, id="hash-sha256"),
        pytest.param({"SMSC_HASH": ""}, id="hash-empty"),
        pytest.param({"SMSC_HASH": "md5,sha1"}, id="hash-list"),
        pytest.param({"SMSC_CHARSET": "latin-1"}, id="charset-latin-1"),
        pytest.param({"SMSC_CHARSET": "nonsense"}, id="charset-nonsense"),
        pytest.param({"SMSC_CHARSET": ""}, id="charset-empty"),
        pytest.param({"SMSC_TZ": "Mars/Olympus_Mons"}, id="tz-unknown"),
        pytest.param({"SMSC_TZ": ""}, id="tz-empty"),
        pytest.param({"SMSC_TZ": "../../etc/passwd"}, id="tz-path"),
        pytest.param({"SMSC_MAX_BODY": "abc"}, id="max-body-text"),
        pytest.param({"SMSC_MAX_BODY": "0"}, id="max-body-zero"),
        pytest.param({"SMSC_MAX_BODY": "-5"}, id="max-body-negative"),
        pytest.param({"SMSC_MAX_BODY": "1.5"}, id="max-body-fraction"),
        pytest.param({"SMSC_SECRET": "has space"}, id="secret-space"),
        pytest.param({"SMSC_SECRET": "a&md5=b"}, id="secret-url-chars"),
        pytest.param({"SMSC_SECRET": "пароль"}, id="secret-cyrillic"),
        pytest.param({"SMSC_SECRET": "abc\n"}, id="secret-newline"),
        pytest.param({"SMSC_SECRET": "a.b"}, id="secret-dot"),
        pytest.param({"SMSC_SECRET": "a+b"}, id="secret-plus"),
        pytest.param({"SMSC_LOG_PHONES": "FULL"}, id="log-phones-upper-case"),
        pytest.param({"SMSC_LOG_PHONES": "1"}, id="log-phones-1"),
        pytest.param({"SMSC_LOG_PHONES": "none"}, id="log-phones-none"),
        pytest.param({"SMSC_LOG_PHONES": "full "}, id="log-phones-trailing-space"),
        pytest.param({"SMSC_METRICS": "0"}, id="metrics-0"),
        pytest.param({"SMSC_METRICS": "no"}, id="metrics-no"),
    ],
)
def test_bad_values_are_a_config_error(env: dict[str, str]) -> None:
    """An unknown algorithm, charset or zone, a bad body limit, a secret outside [A-Za-z0-9_-], a phone
    logging other than masked or full is refused."""
    with pytest.raises(ConfigError):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        pytest.param({}, True, id="nothing"),
        pytest.param({"SMSC_ALLOW_UNSIGNED": "0"}, True, id="allow-0"),
        pytest.param({"SMSC_ALLOW_UNSIGNED": ""}, True, id="allow-empty"),
        pytest.param({"SMSC_ALLOW_UNSIGNED": "yes"}, True, id="allow-yes-is-not-1"),
        pytest.param({"SMSC_SECRET": ""}, True, id="empty-secret"),
        pytest.param({"SMSC_ALLOW_UNSIGNED": "1"}, False, id="allow-1"),
        pytest.param({"SMSC_SECRET": "s3cret"}, False, id="secret"),
        pytest.param({"SMSC_SECRET": "s3cret", "SMSC_ALLOW_UNSIGNED": "1"}, False, id="secret-and-allow"),
    ],
)
def test_require_secret_refuses_to_run_unsigned_unless_asked(env: dict[str, str], refused: bool) -> None:
    """require_secret() raises ConfigError without SMSC_SECRET, unless SMSC_ALLOW_UNSIGNED=1."""
    settings = Settings.from_env(env)
    if refused:
        with pytest.raises(ConfigError):
            settings.require_secret()
    else:
        settings.require_secret()
