"""1b. What SMSC_REDIS_MIN_REPLICAS=1 costs the ingress: the same `smsc-ingest serve` with and without
WAIT, against a throwaway primary with one replica, both redis-server processes on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from bench.config import HOST, INGRESS_PAYLOADS, SMSC_INGEST, WRK_CONNECTIONS, WRK_WINDOW_MS, product_env
from bench.ingress import FIRST_EVENT, INGRESS_COLUMNS, Server, measure
from bench.payloads import MIX, write_wrk_file
from bench.procs import BenchError, Processes, free_port, wait_until
from bench.report import Ratio, Results, Section


def run(procs: Processes, results: Results, workdir: Path) -> None:
    """Start the primary and its replica, then measure the two servers in turns, as section 1 does."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not on PATH: apt-get install -y redis-server")
    section = Section(
        "replicas",
        f"1b. Ingress waiting for a replica: wrk -t1 -c{WRK_CONNECTIONS}, {WRK_WINDOW_MS / 1000:g} s per run",
        INGRESS_COLUMNS,
    )
    results.sections.append(section)
    section.notes.append(
        "a throwaway redis-server primary (AOF, appendfsync everysec) and one replica on loopback; "
        f"the same {INGRESS_PAYLOADS} callbacks as section 1: {MIX}"
    )
    primary_port = free_port()
    primary = _redis(procs, binary, workdir / "primary", primary_port, None)
    _redis(procs, binary, workdir / "replica", free_port(), primary_port)
    wait_until(lambda: _replicas(primary) == 1, 30, "the bench replica to be in sync")
    url = f"redis://{HOST}:{primary_port}/0"
    payloads = write_wrk_file(workdir / "replicas.tsv", FIRST_EVENT, INGRESS_PAYLOADS)
    ports = (free_port(), free_port())
    while ports[1] == ports[0]:
        ports = (ports[0], free_port())
    group = [
        Server(
            f"wait{n}",
            f"SMSC_REDIS_MIN_REPLICAS={n} smsc-ingest serve",
            f"min replicas {n}",
            [SMSC_INGEST, "serve", "--host", HOST, "--port", str(port)],
            product_env(REDIS_URL=url, SMSC_REDIS_MIN_REPLICAS=str(n)),
            True,
            port,
        )
        for n, port in zip((0, 1), ports, strict=True)
    ]
    print(f"  {' / '.join(server.label for server in group)} ...", flush=True)
    measure(group, payloads, procs, section, results, primary)
    section.ratios += [Ratio("wait1", "wait0", "rps"), Ratio("wait1", "wait0", "p99_ms")]
    primary.close()


def _redis(procs: Processes, binary: str, directory: Path, port: int, primary: int | None) -> Redis:
    directory.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", HOST, "--dir", str(directory), "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
    if primary is not None:
        argv += ["--replicaof", HOST, str(primary)]
    procs.start(argv, product_env(), f"redis-{directory.name}")
    client = Redis(host=HOST, port=port, socket_timeout=2)
    wait_until(lambda: _answers(client), 20, f"the bench {directory.name} to answer")
    return client


def _answers(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except RedisError:
        return False


def _replicas(primary: Redis) -> int:
    info = primary.info("replication")
    return sum(1 for k, v in info.items() if k.startswith("slave") and v.get("state") == "online")
