"""REDIS_URL: the Sentinel form is parsed strictly, the plain forms pass, anything else is refused."""

from __future__ import annotations

import pytest

from smsc.exceptions import ConfigError
from smsc.redisconn import SentinelURL, check_url, parse_sentinel_url
from smsc.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://h1:26379,h2:26379,h3:26379/smsc/0",
            SentinelURL((("h1", 26379), ("h2", 26379), ("h3", 26379)), "smsc", 0, None, None),
        ),
        (
            "redis+sentinel://10.0.0.1:5000,10.0.0.2/mymaster/3",
            SentinelURL((("10.0.0.1", 5000), ("10.0.0.2", 26379)), "mymaster", 3, None, None),
        ),
        ("redis+sentinel://h1/smsc", SentinelURL((("h1", 26379),), "smsc", 0, None, None)),
        (
            "redis+sentinel://[::1]:26380,[fd00::2]/smsc/1",
            SentinelURL((("::1", 26380), ("fd00::2", 26379)), "smsc", 1, None, None),
        ),
        (
            "redis+sentinel://:s%40cret@h1:26379/smsc/0",
            SentinelURL((("h1", 26379),), "smsc", 0, None, "s@cret"),
        ),
        (
            "redis+sentinel://app:pw@h1:26379,h2:26379/smsc/2",
            SentinelURL((("h1", 26379), ("h2", 26379)), "smsc", 2, "app", "pw"),
        ),
        ("REDIS+SENTINEL://h1/smsc/0", SentinelURL((("h1", 26379),), "smsc", 0, None, None)),
    ],
)
def test_sentinel_urls_parse(url: str, expected: SentinelURL) -> None:
    """Each well-formed Sentinel URL gives its Sentinels (26379 by default), service, db and credentials."""
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",  # no service
        "redis+sentinel://h1:26379/",  # empty service
        "redis+sentinel:///smsc/0",  # no Sentinel
        "redis+sentinel://h1,,h2/smsc/0",  # an empty host
        "redis+sentinel://h1:0/smsc/0",  # port 0
        "redis+sentinel://h1:65536/smsc/0",
        "redis+sentinel://h1:port/smsc/0",
        "redis+sentinel://h1/smsc/x",  # db not a number
        "redis+sentinel://h1/smsc/0/extra",
        "redis+sentinel://h1/smsc/0?socket_timeout=1",  # options are not taken
        "redis+sentinel://user@h1/smsc/0",  # a user without a password
        "redis+sentinel://:@h1/smsc/0",  # an empty password
        "redis+sentinel://h_1/smsc/0",
        "redis+sentinel://h1/sm sc/0",
        "redis+sentinel:h1/smsc/0",
    ],
)
def test_malformed_sentinel_urls_are_refused(url: str) -> None:
    """A malformed Sentinel URL is a ConfigError at start, not a failure at the first request."""
    with pytest.raises(ConfigError):
        parse_sentinel_url(url)
    with pytest.raises(ConfigError):
        Settings.from_env({"REDIS_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://:pw@redis.example:6380/1",
        "unix:///run/redis/redis.sock?db=2",
        "redis+sentinel://h1:26379,h2:26379,h3:26379/smsc/0",
    ],
)
def test_known_schemes_pass(url: str) -> None:
    """The plain schemes go to redis-py as they are; the Sentinel scheme parses."""
    check_url(url)
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("url", ["http://h1/0", "sentinel://h1/smsc", "127.0.0.1:6379", ""])
def test_other_schemes_are_refused(url: str) -> None:
    """Any other scheme is a ConfigError."""
    with pytest.raises(ConfigError):
        check_url(url)


def test_the_password_is_not_in_the_message() -> None:
    """The refusal names the URL without its password."""
    with pytest.raises(ConfigError) as refused:
        parse_sentinel_url("redis+sentinel://:hunter2@h1/smsc/0/x")
    assert "hunter2" not in str(refused.value)
    assert "h1" in str(refused.value)


@pytest.mark.parametrize(("raw", "expected"), [("", 0), ("0", 0), ("1", 1), ("2", 2)])
def test_min_replicas(raw: str, expected: int) -> None:
    """SMSC_REDIS_MIN_REPLICAS is 0 (no WAIT) unless set."""
    assert Settings.from_env({"SMSC_REDIS_MIN_REPLICAS": raw}).redis_min_replicas == expected


@pytest.mark.parametrize("raw", ["-1", "one", "1.5", " 1"])
def test_min_replicas_refused(raw: str) -> None:
    """Anything but a whole number is a ConfigError."""
    with pytest.raises(ConfigError):
        Settings.from_env({"SMSC_REDIS_MIN_REPLICAS": raw})
