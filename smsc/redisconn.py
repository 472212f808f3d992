"""The one place that turns REDIS_URL into Redis clients, plain or found through Redis Sentinel.

`redis://`, `rediss://` and `unix://` URLs go to redis-py's `from_url` as they are. A URL
`redis+sentinel://[:password@]host:port,host:port,.../service[/db]` names the Sentinels and the
service (Sentinel's "master name"): a client asks the Sentinels for the service's primary before each
new connection, so it follows a failover without a restart. The password, if any, is the Redis
servers' (primary and replicas, `requirepass`/`masterauth`); the Sentinels are asked without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
from redis import Redis
from redis.sentinel import Sentinel

from smsc.exceptions import ConfigError

SENTINEL_SCHEME: Final = "redis+sentinel"
PLAIN_SCHEMES: Final = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT: Final = 26379
# A host name, an IPv4 address, or an IPv6 address in brackets; then an optional port.
_HOST = re.compile(
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
)
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


def check_url(url: str) -> None:
    """Raise ConfigError unless `url` is a Redis URL this service can connect with."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == SENTINEL_SCHEME:
        parse_sentinel_url(url)
    elif scheme not in PLAIN_SCHEMES:
        raise ConfigError(
            f"REDIS_URL must start with redis://, rediss://, unix:// or {SENTINEL_SCHEME}://, "
            f"not {_shown(url)!r}"
        )


def parse_sentinel_url(url: str) -> SentinelURL:
    """The Sentinels, service, database and credentials of a `redis+sentinel://` URL.

    Raises ConfigError when it is malformed.
    """
    problem = (
        f"REDIS_URL {_shown(url)!r} is not {SENTINEL_SCHEME}://[:password@]host:port,host:port/service[/db]"
    )
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != SENTINEL_SCHEME or not sep:
        raise ConfigError(problem)
    netloc, slash, path = rest.partition("/")
    if not slash or "?" in path or "#" in path:
        raise ConfigError(problem)
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not password:
            # A user without a password cannot authenticate: more likely a typo than meant.
            raise ConfigError(problem)
    sentinels: list[tuple[str, int]] = []
    for part in hosts.split(","):
        match = _HOST.fullmatch(part)
        if match is None:
            raise ConfigError(problem)
        port = int(match["port"]) if match["port"] else DEFAULT_SENTINEL_PORT
        if not 0 < port < 65536:
            raise ConfigError(problem)
        sentinels.append((match["host"].strip("[]"), port))
    service, _, db_text = path.partition("/")
    if not _SERVICE.fullmatch(service):
        raise ConfigError(problem)
    if db_text and not re.fullmatch(r"[0-9]{1,2}", db_text):
        raise ConfigError(problem)
    return SentinelURL(tuple(sentinels), service, int(db_text or 0), username, password)


def sync_client(url: str, **options: Any) -> Redis:
    """A redis-py client for `url`; `options` (socket_timeout, ...) apply to every Redis connection."""
    if not _is_sentinel(url):
        return Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_options(options))  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service, db=target.db, username=target.username, password=target.password, **options
    )
    return client


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """The redis.asyncio client for `url`, as `sync_client`."""
    if not _is_sentinel(url):
        return aioredis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = aiosentinel.Sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_options(options))  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(
        target.service, db=target.db, username=target.username, password=target.password, **options
    )
    return client


def close(client: Redis) -> None:
    """Close `client`'s connections, and those to its Sentinels if it has any."""
    client.close()
    for sentinel in _sentinels_of(client):
        sentinel.close()


async def aclose(client: aioredis.Redis) -> None:
    """Close `client`'s connections, and those to its Sentinels if it has any."""
    await client.aclose()
    for sentinel in _sentinels_of(client):
        await sentinel.aclose()


def _is_sentinel(url: str) -> bool:
    return url.partition("://")[0].lower() == SENTINEL_SCHEME


def _sentinel_options(options: dict[str, Any]) -> dict[str, Any]:
    # The Sentinels get the same time limits and retries, not the servers' password or pool settings.
    return {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout", "retry")}


def _sentinels_of(client: Any) -> list[Any]:
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    return list(manager.sentinels) if manager is not None else []


def _shown(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{hosts}{slash}{path}"
