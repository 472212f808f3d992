"""What of deploy/compose.yaml runs without a container engine: each command of our services, started
on this machine as the compose file writes it (loopback and free ports in place of 0.0.0.0 and the
fixed ports), passes the healthcheck the compose file gives it; the Redis service's command loads the
shipped redis.conf with AOF on; and each healthcheck fails where the compose file expects it to."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from smsc import devservers
from smsc.exceptions import ConfigError
from tests.integration.procs import COMMAND, environment, spawn
from tests.integration.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The port each of our commands listens on, by its flag, and the port its healthcheck asks.
PORT_FLAGS = ("--port", "--metrics-port")


def on_loopback(argv: list[str], port: int) -> list[str]:
    """The command with 0.0.0.0 made 127.0.0.1 and its listening port made `port`."""
    out = ["127.0.0.1" if a == "0.0.0.0" else a for a in argv]  # noqa: S104 - what the compose file binds
    for i, arg in enumerate(out[:-1]):
        if arg in PORT_FLAGS:
            out[i + 1] = str(port)
    return out


def healthcheck(service: dict[str, Any], port: int) -> subprocess.CompletedProcess[bytes]:
    """The service's healthcheck (`CMD python -c ...`), asking `port` instead of its fixed one."""
    kind, program, flag, code = service["healthcheck"]["test"]
    assert (kind, program, flag) == ("CMD", "python", "-c")
    code = code.replace(f":{listening(service['command'])}/", f":{port}/")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)


def listening(argv: list[str]) -> str:
    """The port a command of ours listens on."""
    (port,) = (argv[i + 1] for i, a in enumerate(argv[:-1]) if a in PORT_FLAGS)
    return port


def service_environment(service: dict[str, Any], **overrides: str) -> dict[str, str]:
    """The test deployment's settings plus the compose file's `environment:`, on loopback."""
    given = {k: "127.0.0.1" if v == "0.0.0.0" else str(v) for k, v in service.get("environment", {}).items()}  # noqa: S104
    return environment(**given, **overrides)


LONG_RUNNING = sorted(
    name for name, s in SERVICES.items() if s.get("command", [""])[0] in ("serve", "worker", "exporter")
)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_each_service_runs_here_and_passes_its_healthcheck(name: str) -> None:
    """The service's own command, with this session's Redis and PostgreSQL, becomes healthy by the
    compose file's own healthcheck, and exits 0 on SIGTERM, the image's STOPSIGNAL."""
    service, port = SERVICES[name], free_port()
    proc = spawn([COMMAND, *on_loopback(service["command"], port)], service_environment(service))
    wait_until(lambda: healthcheck(service, port).returncode == 0, 30, f"{name} to pass its healthcheck")
    # The image's STOPSIGNAL: each command ends cleanly on it.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0


def test_the_readiness_check_fails_while_redis_does_not_answer() -> None:
    """An ingress whose Redis does not answer fails the compose file's /readyz healthcheck (a 503)."""
    service, port = SERVICES["ingress1"], free_port()
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    spawn(
        [COMMAND, *on_loopback(service["command"], port)], service_environment(service, REDIS_URL=unreachable)
    )
    wait_until(
        lambda: b"503" in healthcheck(service, port).stderr, 30, "the ingress to answer /readyz with 503"
    )
    assert healthcheck(service, port).returncode != 0


def test_the_migrate_service_runs_to_completion() -> None:
    """`migrate`, which the ingress and workers wait for, exits 0 (against this session's database)."""
    command = SERVICES["migrate"]["command"]
    done = subprocess.run([COMMAND, *command], env=environment(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def redis_command(directory: Path, port: int) -> list[str]:
    """The Redis service's command with the volumes' host paths and this test's port, on loopback."""
    service = SERVICES["redis"]
    mounts = {target: source for source, target, *_ in (v.split(":") for v in service["volumes"])}
    try:
        binary = devservers.redis_server(system=True)
    except ConfigError:
        pytest.fail(f"needs redis-server on PATH, or the embedded servers: {devservers.INSTALL}")
    argv = [str(binary), *service["command"][1:]]
    argv = [str(ROOT / "deploy" / mounts[a]) if a in mounts and a.endswith(".conf") else a for a in argv]
    argv = [str(directory) if a == "/data" else a for a in argv]
    argv = ["127.0.0.1" if a == "0.0.0.0" else a for a in argv]  # noqa: S104 - what the compose file binds
    return [*argv, "--port", str(port)]


def test_the_redis_service_loads_the_shipped_redis_conf_with_aof(tmp_path: Path) -> None:
    """The compose file's Redis command starts with the shipped redis.conf: AOF on, fsync every
    second, no eviction, its data in the volume; its healthcheck passes, and fails with no server."""
    port = free_port()
    spawn(redis_command(tmp_path, port), environment())
    password = next(
        line.split()[1]
        for line in (ROOT / "deploy" / "redis.conf").read_text().splitlines()
        if line.startswith("requirepass ")
    )
    client = redis.Redis(host="127.0.0.1", port=port, password=password, decode_responses=True)
    wait_until(client.ping, 20, "the compose file's Redis to answer")
    settings = {
        key: client.config_get(key)[key] for key in ("appendonly", "appendfsync", "maxmemory-policy", "dir")
    }
    assert settings == {
        "appendonly": "yes",
        "appendfsync": "everysec",
        "maxmemory-policy": "noeviction",
        "dir": str(tmp_path),
    }
    kind, check = SERVICES["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    assert shutil.which("redis-cli"), "the healthcheck needs redis-cli on PATH (Debian's redis-tools)"
    for server, healthy in ((port, True), (free_port(), False)):
        done = subprocess.run(["sh", "-c", check.replace("redis-cli", f"redis-cli -p {server}")], timeout=30)
        assert (done.returncode == 0) is healthy, server
    client.shutdown(nosave=True)
