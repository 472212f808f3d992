"""The embedded servers (smsc/devservers.py) as real processes, and the decisions of `smsc-ingest dev`."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from redis import Redis

from cli.dev import choose, servers, stop_servers
from smsc import devservers
from smsc.exceptions import ConfigError
from tests.integration.procs import COMMAND, environment, post_all, spawn
from tests.integration.servers import free_port, port_open, wait_until
from tests.payloads import build


def dead_url(scheme: str) -> str:
    """A URL on a loopback port nothing listens on."""
    if scheme == "postgresql":
        return f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    return f"redis://127.0.0.1:{free_port()}/0"


def gone(pid: int) -> bool:
    """The process exited (a zombie not yet reaped by its parent has an empty command line)."""
    try:
        return not Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True


@pytest.fixture
def valkey() -> Path:
    """The embedded valkey-server; without the extra the test is skipped saying what to install."""
    try:
        return devservers.redis_server(system=False)
    except ConfigError:
        pytest.skip(f"needs the embedded servers: {devservers.INSTALL}")


@pytest.fixture
def pg_bin() -> Path:
    """The embedded PostgreSQL's bin directory; without the extra the test is skipped."""
    try:
        return devservers.postgres_bindir(system=False)
    except ConfigError:
        pytest.skip(f"needs the embedded servers: {devservers.INSTALL}")


@pytest.fixture
def folder() -> Iterator[Path]:
    """A temp dir that any account may traverse (pytest's tmp_path is root's alone), so that as root
    PostgreSQL's account reaches the data folder inside it."""
    directory = Path(tempfile.mkdtemp(prefix="smsc-devservers-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def started() -> Iterator[list[devservers.Server]]:
    """Servers a test starts; whatever it left running is stopped after it."""
    servers_: list[devservers.Server] = []
    yield servers_
    for server in servers_:
        devservers.stop(server)


def process_uid(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgresql://app:pw@db.example:5432/smsc", "postgresql://app:***@db.example:5432/smsc"),
        ("postgresql://postgres@127.0.0.1:5432/smsc", "postgresql://postgres@127.0.0.1:5432/smsc"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_a_shown_url_hides_its_password(url: str, expected: str) -> None:
    """A URL in a message keeps everything but its password."""
    assert devservers.shown(url) == expected


def test_answers_tells_live_from_dead_servers(database: str) -> None:
    """The session's servers answer (PostgreSQL even for a database that does not exist); closed
    ports do not."""
    missing_db = database.rsplit("/", 1)[0] + "/no_such_database_here"
    assert devservers.answers(os.environ["TEST_REDIS_URL"])
    assert devservers.answers(database)
    assert devservers.answers(missing_db)
    assert not devservers.answers(dead_url("redis"))
    assert not devservers.answers(dead_url("postgresql"))


def test_redis_runs_with_aof_keeps_data_and_port_across_restarts(
    tmp_path: Path, valkey: Path, started: list[devservers.Server]
) -> None:
    """An embedded Redis answers on loopback with AOF everysec; stopped and started again, it has
    its data and the same URL."""
    server = devservers.start_redis(tmp_path / "redis", valkey)
    started.append(server)
    client = Redis.from_url(server.url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    client.set("kept", "1")
    client.close()
    devservers.stop(server)
    assert not devservers.answers(server.url)
    again = devservers.start_redis(tmp_path / "redis", valkey)
    started.append(again)
    assert (again.url, again.reused) == (server.url, False)
    client = Redis.from_url(again.url)
    assert client.get("kept") == b"1"
    client.close()


def test_a_leftover_redis_that_answers_is_reused(
    tmp_path: Path, valkey: Path, started: list[devservers.Server]
) -> None:
    """A server of a run killed before it could stop it is found by its state file and reused."""
    first = devservers.start_redis(tmp_path / "redis", valkey)
    started.append(first)
    second = devservers.start_redis(tmp_path / "redis", valkey)
    assert (second.reused, second.pid, second.url) == (True, first.pid, first.url)


def test_a_leftover_redis_that_does_not_answer_is_stopped(
    tmp_path: Path, valkey: Path, started: list[devservers.Server]
) -> None:
    """A stalled leftover is stopped, and a new server takes its place."""
    stalled = devservers.start_redis(tmp_path / "redis", valkey)
    os.kill(stalled.pid, signal.SIGSTOP)
    fresh = devservers.start_redis(tmp_path / "redis", valkey)
    started.append(fresh)
    assert not fresh.reused
    assert fresh.pid != stalled.pid
    assert gone(stalled.pid)
    assert devservers.answers(fresh.url)


def test_a_state_file_naming_another_process_leaves_it_alone(
    tmp_path: Path, valkey: Path, started: list[devservers.Server]
) -> None:
    """A state file whose pid is now another process (here: this test) never gets that process killed."""
    directory = tmp_path / "redis"
    directory.mkdir()
    (directory / "server.json").write_text(json.dumps({"pid": os.getpid(), "port": free_port()}))
    server = devservers.start_redis(directory, valkey)
    started.append(server)
    assert not server.reused
    assert devservers.answers(server.url)


def test_postgres_is_made_once_answers_on_tcp_and_is_reused(
    folder: Path, pg_bin: Path, started: list[devservers.Server]
) -> None:
    """initdb once, TCP on loopback only, data kept across a stop, a leftover reused; as root the
    cluster runs as an unprivileged account."""
    directory = folder / "pg"
    server = devservers.start_postgres(directory, pg_bin, "postgres")
    started.append(server)
    with psycopg.connect(server.url, autocommit=True) as conn:
        settings = conn.execute(
            "SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories')"
        ).fetchone()
        assert settings == ("127.0.0.1", "")
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    expected_uid = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert process_uid(server.pid) == expected_uid
    assert devservers.start_postgres(directory, pg_bin, "postgres").reused
    devservers.stop(server)
    assert not devservers.answers(server.url)
    again = devservers.start_postgres(directory, pg_bin, "postgres")
    started.append(again)
    assert (again.reused, again.url) == (False, server.url)
    with psycopg.connect(again.url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(7,)]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another account")
def test_as_root_an_unreadable_folder_is_one_clear_error(tmp_path: Path, pg_bin: Path) -> None:
    """As root, a data folder the unprivileged account cannot reach fails in one line saying why."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(ConfigError) as error:
        devservers.start_postgres(locked / "pg", pg_bin, "postgres")
    assert "\n" not in error.value.reason
    assert error.value.reason.startswith("PostgreSQL's initdb failed: initdb: error: could not ")
    assert error.value.reason.endswith(
        f"Permission denied (PostgreSQL refuses root, so it runs as 'postgres', which must be able "
        f"to read {pg_bin} and write the data folder)"
    )


@pytest.mark.parametrize(("variable", "scheme"), [("REDIS_URL", "redis"), ("DATABASE_URL", "postgresql")])
def test_a_set_url_that_does_not_answer_is_refused_by_name(variable: str, scheme: str) -> None:
    """`dev` never replaces a URL the user set: it fails naming it."""
    url = dead_url(scheme)
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{variable}={url} does not answer')}"):
        choose(variable, os.environ["TEST_REDIS_URL"], {variable: url})


def test_unset_urls_take_the_default_only_if_it_answers() -> None:
    """Unset: the default address when it answers, else None (an embedded server is needed)."""
    live = os.environ["TEST_REDIS_URL"]
    dead = dead_url("redis")
    assert choose("REDIS_URL", live, {}) == live
    assert choose("REDIS_URL", dead, {"REDIS_URL": ""}) is None
    assert choose("REDIS_URL", dead, {"REDIS_URL": live}) == live


def test_nothing_answering_starts_embedded_servers(folder: Path, valkey: Path, pg_bin: Path) -> None:
    """URLs unset and nothing at the default addresses: both embedded servers start, with their data
    in the given folder, and stop again."""
    found = servers({}, folder / "dev", dead_url("redis"), dead_url("postgresql"))
    try:
        assert [s.kind for s in found.started] == ["redis", "postgres"]
        assert [s.url for s in found.started] == [found.redis_url, found.database_url]
        assert found.database_url.endswith("/smsc")
        assert devservers.answers(found.redis_url)
        assert devservers.answers(found.database_url)
        assert sorted(p.name for p in (folder / "dev").iterdir()) == ["postgres", "redis"]
    finally:
        stop_servers(found.started)
    assert not devservers.answers(found.redis_url)
    assert not devservers.answers(found.database_url)


def test_dev_with_a_dead_url_starts_nothing_and_names_it(tmp_path: Path) -> None:
    """`smsc-ingest dev` with DATABASE_URL on a closed port exits 2 naming it, starting nothing."""
    url = dead_url("postgresql")
    done = subprocess.run(
        [COMMAND, "dev", "--data", str(tmp_path / "dev"), "--port", str(free_port())],
        env={**os.environ, "DATABASE_URL": url, "SMSC_SECRET": "x"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"smsc-ingest: DATABASE_URL={url} does not answer" in done.stderr.decode()
    assert not (tmp_path / "dev").exists()


async def test_dev_serves_stores_and_stops_on_sigterm(tmp_path: Path, db: Any, redis_db: Redis) -> None:
    """`smsc-ingest dev` on set URLs migrates, answers a signed callback with 200, its worker stores
    the row, and SIGTERM stops it with exit code 0, leaving the port free."""
    port = free_port()
    env = environment()  # REDIS_URL and DATABASE_URL: the session's servers
    proc = spawn([COMMAND, "dev", "--data", str(tmp_path / "dev"), "--port", str(port)], env)
    wait_until(lambda: port_open(port), 60, "the ingress of `dev`")
    assert await post_all(f"http://127.0.0.1:{port}", [build("call")]) == [200]
    wait_until(
        lambda: db.execute("SELECT count(*) FROM call_confirmations").fetchone()[0] == 1, 60, "the row"
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    assert not (tmp_path / "dev").exists()
    with pytest.raises(OSError):  # noqa: PT011 - refused connection: nothing listens any more
        port_open(port)
