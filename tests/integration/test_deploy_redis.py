"""deploy/redis.conf, deploy/redis-replica.conf and deploy/sentinel.conf as shipped run together: the
replica follows the primary and the Sentinels see both. Only addresses, ports and paths are changed
(everything on loopback, in a temp dir)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from smsc import devservers
from smsc.devservers import free_port
from smsc.exceptions import ConfigError
from tests.integration.servers import wait_until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PASSWORD = "CHANGE_ME"  # the shipped placeholder, kept: the test checks that the files agree on it


def shipped(name: str, changes: dict[str, str], directory: Path) -> Path:
    """deploy/`name` with each line matching a key (a regex) replaced, written into `directory`."""
    text = (DEPLOY / name).read_text(encoding="utf-8")
    for pattern, line in changes.items():
        text, found = re.subn(pattern, line, text, flags=re.MULTILINE)
        assert found == 1, f"{name}: no line {pattern!r}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def binary() -> Path:
    """The redis-server that runs the shipped files (Sentinel is the same binary with --sentinel)."""
    try:
        return devservers.redis_server(system=True)
    except ConfigError:
        pytest.skip(f"needs redis-server on PATH: {devservers.INSTALL}")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The servers a test starts, killed after it."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(timeout=20)


def test_shipped_primary_replica_and_sentinels(
    tmp_path: Path, binary: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """The shipped files start a primary, a replica in sync with it, and three Sentinels that agree."""
    primary_port, replica_port = free_port(), free_port()
    primary = shipped(
        "redis.conf",
        {
            r"^bind .*$": "bind 127.0.0.1",
            r"^port .*$": f"port {primary_port}",
            r"^dir .*$": f"dir {tmp_path}/p",
        },
        tmp_path / "p",
    )
    replica = shipped(
        "redis-replica.conf",
        {
            r"^include .*$": f"include {primary}\nport {replica_port}\ndir {tmp_path}/r",
            r"^bind .*$": "bind 127.0.0.1",
            r"^replicaof .*$": f"replicaof 127.0.0.1 {primary_port}",
        },
        tmp_path / "r",
    )
    started.append(subprocess.Popen([str(binary), str(primary)], stdout=subprocess.DEVNULL))
    started.append(subprocess.Popen([str(binary), str(replica)], stdout=subprocess.DEVNULL))
    client = Redis(port=primary_port, password=PASSWORD, socket_timeout=1)
    wait_until(lambda: client.info("replication")["connected_slaves"] == 1, 30, "the replica to connect")
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    replica_client = Redis(port=replica_port, password=PASSWORD, socket_timeout=1)
    assert replica_client.config_get("appendonly") == {"appendonly": "yes"}
    assert replica_client.info("replication")["role"] == "slave"

    sentinel_ports = [free_port() for _ in range(3)]
    for n, port in enumerate(sentinel_ports):
        conf = shipped(
            "sentinel.conf",
            {
                r"^bind .*$": "bind 127.0.0.1",
                r"^port .*$": f"port {port}",
                r"^dir .*$": f"dir {tmp_path}/s{n}",
                r"^sentinel monitor smsc .*$": f"sentinel monitor smsc 127.0.0.1 {primary_port} 2",
            },
            tmp_path / f"s{n}",
        )
        started.append(subprocess.Popen([str(binary), str(conf), "--sentinel"], stdout=subprocess.DEVNULL))

    def agreed() -> bool:
        for port in sentinel_ports:
            sentinel = Redis(port=port, socket_timeout=1)
            try:
                master = sentinel.sentinel_master("smsc")
            finally:
                sentinel.close()
            if master["num-slaves"] != 1 or master["num-other-sentinels"] != 2 or master["quorum"] != 2:
                return False
        return True

    wait_until(agreed, 60, "three Sentinels to see the primary, its replica and each other")
    client.close()
    replica_client.close()
