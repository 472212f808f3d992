"""The test session's servers, decided once in pytest_configure: TEST_REDIS_URL and TEST_DATABASE_URL
if set (they must answer), else the local servers at the default addresses if they answer, else
embedded ones started for the session in a temp dir and stopped at its end. The chosen URLs are put in
the environment, where tests/integration/conftest.py and the processes tests start read them.

`python -m tests.conftest` (`make test`) exits 1 when the embedded servers must be installed first.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from cli.dev import choose
from smsc import devservers
from smsc.exceptions import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/smsc_test"

# What this session started, for pytest_unconfigure, and what it says in the report header.
_started: list[devservers.Server] = []
_directories: list[Path] = []
_header: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Choose the session's servers and put their URLs in TEST_REDIS_URL and TEST_DATABASE_URL."""
    try:
        redis_url = choose("TEST_REDIS_URL", DEFAULT_REDIS_URL, os.environ)
        database_url = choose("TEST_DATABASE_URL", DEFAULT_DATABASE_URL, os.environ)
        if redis_url is None:
            directory = _directory()
            _started.append(
                devservers.start_redis(directory / "redis", devservers.redis_server(system=False))
            )
            redis_url = _started[-1].url
        if database_url is None:
            directory, bindir = _directory(), devservers.postgres_bindir(system=False)
            _started.append(devservers.start_postgres(directory / "pg", bindir, "smsc_test", durable=False))
            database_url = _started[-1].url
    except ConfigError as e:
        pytest_unconfigure(config)
        raise pytest.UsageError(e.reason) from None
    os.environ["TEST_REDIS_URL"] = redis_url
    os.environ["TEST_DATABASE_URL"] = database_url
    embedded = {server.url for server in _started}
    for name, url in (("Redis", redis_url), ("PostgreSQL", database_url)):
        where = "embedded, for this session" if url in embedded else "TEST_* or the default address"
        _header.append(f"{name}: {devservers.shown(url)} ({where})")


def _directory() -> Path:
    """The session's temp dir for embedded servers' data, made when first needed."""
    if not _directories:
        directory = Path(tempfile.mkdtemp(prefix="smsc-test-servers-"))
        directory.chmod(0o755)  # as root, PostgreSQL's own account must reach its folder inside
        _directories.append(directory)
    return _directories[0]


def pytest_report_header() -> list[str]:
    """Which servers the session runs on."""
    return _header


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the servers this session started and remove their data."""
    while _started:
        devservers.stop(_started.pop())
    while _directories:
        shutil.rmtree(_directories.pop(), ignore_errors=True)


def needs_embedded() -> bool:
    """Whether the session would need the embedded servers (a default address that does not answer,
    or no system binaries for the fault tests' throwaway servers) and they are not installed."""
    if devservers.embedded_installed():
        return False
    try:
        needed = [
            choose("TEST_REDIS_URL", DEFAULT_REDIS_URL, os.environ),
            choose("TEST_DATABASE_URL", DEFAULT_DATABASE_URL, os.environ),
        ]
    except ConfigError:
        return False  # a set URL that does not answer: the session refuses it, nothing to install
    try:
        devservers.redis_server(system=True)
        devservers.postgres_bindir(system=True)
    except ConfigError:
        return True
    return None in needed


if __name__ == "__main__":
    sys.exit(1 if needs_embedded() else 0)
