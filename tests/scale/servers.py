"""What runs on the scale-out test's hosts: a throwaway PostgreSQL cluster, Redis, the ingress and the
workers, and the load balancer from deploy/ as shipped, only its addresses, ports, certificate and
paths replaced by an explicit table (a placeholder not found fails the run)."""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from typing import Final

from smsc.devservers import own_directory, postgres_bindir, postgres_tool
from tests.scale.lab import SUBNET, Failure, Lab, Process, address, sh, wait_until

SECRET: Final = "scale-test-secret"
INGRESS_PORT: Final = 8080
REDIS_PORT: Final = 6379
PG_PORT: Final = 5432
START_SECONDS: Final = 60.0
# The worker settings the test shortens, so that a killed worker's job (found abandoned after the job
# timeout and 5 s) and a job retried through a 30 s PostgreSQL outage both finish within the run.
WORKER_TUNING: Final = {"SMSC_JOB_TIMEOUT": "10", "SMSC_RETRY_INTERVALS": "1,2,4,8,16,32"}


SENTINEL_PORT: Final = 26379
SERVICE: Final = "smsc"
SENTINEL_HOSTS: Final = ("redis1", "redis2", "redis3")


def redis_url() -> str:
    """Every program finds the primary through the three Sentinels, as in production."""
    sentinels = ",".join(f"{address(h)}:{SENTINEL_PORT}" for h in SENTINEL_HOSTS)
    return f"redis+sentinel://{sentinels}/{SERVICE}/0"


def database_url() -> str:
    return f"postgresql://postgres@{address('pg')}:{PG_PORT}/smsc"


def app_env(lab: Lab, **extra: str) -> dict[str, str]:
    """Only what the programs need: nothing of the caller's REDIS_URL, DATABASE_URL or TEST_*."""
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(lab.work),
        "LANG": "C.UTF-8",
        "SMSC_SECRET": SECRET,
        "REDIS_URL": redis_url(),
        "DATABASE_URL": database_url(),
        **WORKER_TUNING,
        # A 200 only once the replica has the job too: losing the primary loses no acknowledged job.
        "SMSC_REDIS_MIN_REPLICAS": "1",
        **extra,
    }


def smsc(lab: Lab) -> str:
    return str(lab.root / ".venv" / "bin" / "smsc-ingest")


def http_code(lab: Lab, host: str, url: str) -> str:
    """The code of a GET from `host`, or 000 when nothing answered."""
    out = sh(
        lab.inside(
            host,
            "curl",
            "-sk",
            "--noproxy",
            "*",
            "--max-time",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            url,
        ),
        check=False,
        timeout=10,
    )
    return out.strip() or "000"


def start_postgres(lab: Lab) -> None:
    bindir = postgres_bindir(system=True)
    folder = lab.work / "pg"
    own_directory(folder)
    data = folder / "data"
    postgres_tool(bindir, "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    with (data / "pg_hba.conf").open("a", encoding="utf-8") as hba:
        hba.write(f"host all all {SUBNET}.0/24 trust\n")
    # fsync off: the test loses no PostgreSQL host, so its durability is not what is measured.
    options = (
        f"-p {PG_PORT} -c listen_addresses={address('pg')} -c unix_socket_directories='' -c fsync=off "
        "-c max_connections=200"
    )
    sh(
        lab.inside(
            "pg",
            "runuser",
            "-u",
            "postgres",
            "--",
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        ),
        timeout=START_SECONDS + 10,
    )


def start_redis(lab: Lab) -> dict[str, Process]:
    """The primary on redis1 (AOF, appendfsync everysec as deploy/redis.conf), a replica on redis2."""
    started = {}
    for host in ("redis1", "redis2"):
        folder = lab.work / host
        folder.mkdir()
        argv = [
            "redis-server",
            *("--bind", address(host), "--port", str(REDIS_PORT), "--protected-mode", "no"),
            *("--dir", str(folder), "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
            *("--maxmemory-policy", "noeviction"),
        ]
        if host == "redis2":
            argv += ["--replicaof", address("redis1"), str(REDIS_PORT)]
        started[host] = lab.start(host, host, argv, app_env(lab))
    for host in started:
        wait_until(f"Redis on {host}", functools.partial(_pong, lab, host), START_SECONDS)
    wait_until(
        "the replica on redis2 in sync",
        lambda: (
            "master_link_status:up"
            in sh(
                lab.inside("redis2", "redis-cli", "-h", address("redis2"), "info", "replication"), check=False
            )
        ),
        START_SECONDS,
    )
    return started


def start_sentinels(lab: Lab) -> dict[str, Process]:
    """A Sentinel on each Redis host, quorum 2; a primary unreachable for 2 s is failed over."""
    started = {}
    for host in SENTINEL_HOSTS:
        folder = lab.work / host
        folder.mkdir(exist_ok=True)
        conf = folder / "sentinel.conf"  # Sentinel rewrites its file: one per Sentinel
        conf.write_text(
            f"port {SENTINEL_PORT}\nbind {address(host)}\nprotected-mode no\ndir {folder}\n"
            f"sentinel monitor {SERVICE} {address('redis1')} {REDIS_PORT} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 2000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n",
            encoding="utf-8",
        )
        started[f"sentinel-{host}"] = lab.start(
            f"sentinel-{host}", host, ["redis-server", str(conf), "--sentinel"], app_env(lab)
        )
    for host in SENTINEL_HOSTS:
        wait_until(
            f"the Sentinel on {host} knows the replica and the other Sentinels",
            functools.partial(_sentinel_ready, lab, host),
            START_SECONDS,
        )
    return started


def sentinel(lab: Lab, host: str, *command: str) -> str:
    return sh(
        lab.inside(host, "redis-cli", "-h", address(host), "-p", str(SENTINEL_PORT), "sentinel", *command),
        check=False,
        timeout=5,
    )


def primary(lab: Lab, asked: str = "redis3") -> str:
    """The primary's address as a Sentinel names it."""
    return sentinel(lab, asked, "get-master-addr-by-name", SERVICE).split("\n")[0].strip()


def _sentinel_ready(lab: Lab, host: str) -> bool:
    return sentinel(lab, host, "ckquorum", SERVICE).startswith("OK 3 usable") and address(
        "redis2"
    ) in sentinel(lab, host, "replicas", SERVICE)


def _pong(lab: Lab, host: str) -> bool:
    return (
        sh(lab.inside(host, "redis-cli", "-h", address(host), "ping"), check=False, timeout=5).strip()
        == "PONG"
    )


def migrate(lab: Lab) -> None:
    sh(
        lab.inside("worker1", "env", "-i", *_env_args(app_env(lab)), smsc(lab), "migrate"),
        timeout=START_SECONDS,
    )


def _env_args(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def start_ingress(lab: Lab, host: str) -> Process:
    argv = [smsc(lab), "serve", "--host", address(host), "--port", str(INGRESS_PORT)]
    return lab.start(host, host, argv, app_env(lab))


def wait_ready(lab: Lab, host: str) -> None:
    wait_until(
        f"GET /readyz on {host}",
        lambda: http_code(lab, "lb", f"http://{address(host)}:{INGRESS_PORT}/readyz") == "200",
        START_SECONDS,
    )


def start_workers(lab: Lab) -> dict[str, Process]:
    started = {}
    for host in ("worker1", "worker2"):
        for n in ("a", "b"):
            started[f"{host}{n}"] = lab.start(f"{host}{n}", host, [smsc(lab), "worker"], app_env(lab))
    return started


# --- the load balancer: the shipped file, with only these replaced -------------------------------------


def certificate(lab: Lab) -> tuple[Path, Path, Path]:
    """A self-signed certificate for the load balancer's address: (certificate, key, both in one PEM)."""
    crt, key, pem = lab.work / "lb.crt", lab.work / "lb.key", lab.work / "lb.pem"
    sh(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=smsc-scale",
            "-addext",
            f"subjectAltName=IP:{address('lb')}",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ]
    )
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return crt, key, pem


def substitute(shipped: Path, replacements: list[tuple[str, str]]) -> str:
    """The shipped file with each (placeholder, value) replaced; Failure if a placeholder is missing,
    so that an edit of the shipped file cannot leave the test running something else."""
    text = shipped.read_text(encoding="utf-8")
    for old, new in replacements:
        if old not in text:
            raise Failure(f"{shipped.name}: the placeholder {old!r} is not in the shipped file any more")
        text = text.replace(old, new)
    return text


def haproxy_replacements(lab: Lab, pem: Path) -> list[tuple[str, str]]:
    chroot = lab.work / "haproxy-chroot"
    chroot.mkdir(exist_ok=True)
    return [
        # The log target: haproxy's own output (its log file), to check that no query is logged.
        ("log /dev/log local0", "log stdout format raw local0"),
        ("chroot /var/lib/haproxy", f"chroot {chroot}"),
        ("stats socket /run/haproxy/admin.sock", f"stats socket {haproxy_socket(lab)}"),
        ("bind :443 ssl crt /etc/haproxy/certs/smsc-ingest.pem", f"bind {address('lb')}:443 ssl crt {pem}"),
        ("bind :80", f"bind {address('lb')}:80"),
        ("server ingress1 10.0.1.11:8080", f"server ingress1 {address('ingress1')}:{INGRESS_PORT}"),
        ("server ingress2 10.0.1.12:8080", f"server ingress2 {address('ingress2')}:{INGRESS_PORT}"),
        # Two ingress hosts here: the third line goes.
        ("    server ingress3 10.0.1.13:8080\n", ""),
    ]


def haproxy_socket(lab: Lab) -> Path:
    return lab.work / "haproxy.sock"


def start_haproxy(lab: Lab) -> Process:
    _, _, pem = certificate(lab)
    cfg = lab.work / "haproxy.cfg"
    cfg.write_text(
        substitute(lab.root / "deploy" / "haproxy.cfg", haproxy_replacements(lab, pem)), encoding="utf-8"
    )
    sh(lab.inside("lb", "haproxy", "-c", "-q", "-f", str(cfg)))
    proc = lab.start("haproxy", "lb", ["haproxy", "-db", "-f", str(cfg)], app_env(lab))
    wait_until(
        "haproxy: both ingress servers UP",
        lambda: haproxy_states(lab) == {"ingress1": "UP", "ingress2": "UP"},
        START_SECONDS,
    )
    return proc


def haproxy_states(lab: Lab) -> dict[str, str]:
    """Each ingress server's status in haproxy (UP, DOWN, ...), read on its admin socket (a Unix socket:
    reachable from this namespace)."""
    path = haproxy_socket(lab)
    if not path.exists():
        return {}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(str(path))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return {}
    lines = data.decode().splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    states = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "be_ingress" and row.get("svname", "").startswith("ingress"):
            states[row["svname"]] = row.get("status", "").split(" ")[0]
    return states


def wait_up(lab: Lab, host: str) -> None:
    """Until haproxy counts the ingress host in again (its checks: rise 2, downinter 5 s)."""
    wait_until(f"haproxy: {host} UP", lambda: haproxy_states(lab).get(host) == "UP", START_SECONDS)


def nginx_replacements(lab: Lab, crt: Path, key: Path) -> list[tuple[str, str]]:
    return [
        ("server 10.0.1.11:8080", f"server {address('ingress1')}:{INGRESS_PORT}"),
        ("server 10.0.1.12:8080", f"server {address('ingress2')}:{INGRESS_PORT}"),
        ("    server 10.0.1.13:8080 max_fails=1 fail_timeout=10s;\n", ""),
        ("listen 443 ssl;", f"listen {address('lb')}:443 ssl;"),
        ("listen 80;", f"listen {address('lb')}:80;"),
        ("/etc/nginx/certs/smsc-ingest.crt", str(crt)),
        ("/etc/nginx/certs/smsc-ingest.key", str(key)),
        ("/var/log/nginx/smsc-ingest.access.log", str(lab.work / "nginx-access.log")),
        ("/var/log/nginx/smsc-ingest.error.log", str(lab.work / "nginx-error.log")),
    ]


def start_nginx(lab: Lab) -> Process:
    """nginx.conf goes in the http{} context: the test's own main file around it holds only paths."""
    crt, key, _ = certificate(lab)
    site = lab.work / "smsc-ingest.conf"
    site.write_text(
        substitute(lab.root / "deploy" / "nginx.conf", nginx_replacements(lab, crt, key)), encoding="utf-8"
    )
    temp = lab.work / "nginx-temp"
    temp.mkdir(exist_ok=True)
    main = lab.work / "nginx.conf"
    paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {lab.work / 'nginx.pid'};\n"
        f"error_log {lab.work / 'nginx-main-error.log'};\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n{paths}\n    include {site};\n}}\n",
        encoding="utf-8",
    )
    sh(lab.inside("lb", "nginx", "-t", "-q", "-c", str(main)))
    proc = lab.start("nginx", "lb", ["nginx", "-c", str(main)], app_env(lab))
    wait_until(
        "nginx answers on 443",
        lambda: http_code(lab, "lb", f"https://{address('lb')}/") == "403",
        START_SECONDS,
    )
    return proc
