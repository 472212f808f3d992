"""`make test-scale`: smsc-ingest scaled out over hosts that fail one by one (issue 11).

Hosts are network namespaces on a bridge of their own (tests/scale/lab.py): lb, ingress1-2, redis1-3,
worker1-2 (two workers each) and pg. The load balancer runs deploy/haproxy.cfg as shipped, then
deploy/nginx.conf; a gateway-like sender (tests/scale/sender.py) sends through it while a fault is
made and healed. After each scenario every event answered 200 must be stored exactly once and no
dead letter may exist. A table, then `N passed, M failed`; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from tests.scale import servers
from tests.scale.lab import Failure, Lab, Process, address, remove_leftovers, sh, wait_until
from tests.scale.servers import INGRESS_PORT, SECRET, http_code

ROOT: Final = Path(__file__).resolve().parents[2]
LB_URL: Final = f"https://{address('lb')}/smsc"
SENDER_SLACK_SECONDS: Final = 60.0  # past its deadline and verification, a sender is stopped
FAULT_AT: Final = 4.0  # seconds into the load
LOGS: Final = Path("/tmp/smsc-scale-last-failed-run")
DELAY_PORT: Final = 6380
DELAY_SECONDS: Final = 0.020


@dataclass
class Checks:
    """What a scenario found besides the rows: (what, held) in order."""

    items: list[tuple[str, bool]] = field(default_factory=list)
    fault_at: float | None = None  # wall clock

    def check(self, what: str, held: bool) -> None:
        self.items.append((what, held))
        print(f"    {'ok  ' if held else 'FAIL'} {what}", flush=True)


@dataclass(frozen=True)
class Scenario:
    name: str
    events: int
    deadline: float  # seconds of sending
    rate: float | None  # requests per second, resends included
    fault: Callable[[Stack, Checks, float], None] | None  # (stack, checks, the sender's start)
    before: Callable[[Stack], None] | None = None  # set-up of the scenario, before the load
    after: Callable[[Stack], None] | None = None  # and its undoing, after the checks


@dataclass
class Stack:
    lab: Lab
    ingress: dict[str, Process]
    workers: dict[str, Process]
    redis: dict[str, Process]
    relays: list[Process] = field(default_factory=list)


@dataclass
class Row:
    scenario: str
    events: int = 0
    ok_answers: int = 0
    refusals: int = 0
    rows: int = 0
    duplicates: int = 0
    lost: int = 0
    recovery: str = "-"
    speed: str = "-"  # requests per second and the p99 of 200 answers
    passed: bool = False
    why: str = ""


# --- observations ------------------------------------------------------------------------------------


def answered_200(stack: Stack, host: str) -> int | None:
    """The ingress's count of 200 answers (its /metrics), None if it does not answer."""
    out = sh(
        stack.lab.inside(
            "lb",
            "curl",
            "-s",
            "--noproxy",
            "*",
            "--max-time",
            "3",
            f"http://{address(host)}:{INGRESS_PORT}/metrics",
        ),
        check=False,
        timeout=10,
    )
    if not out:
        return None
    total = 0.0
    for line in out.splitlines():
        if line.startswith("smsc_ingress_requests_total{") and 'code="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def probe(stack: Stack, url: str) -> str:
    """One new signed event POSTed from the load balancer's host: the answer's code."""
    env = [f"{k}={v}" for k, v in sender_env(stack.lab).items()]
    return sh(
        stack.lab.inside("lb", "env", "-i", *env, *sender_command(stack.lab), "probe", url), timeout=30
    ).strip()


def sender_command(lab: Lab) -> list[str]:
    return [str(lab.root / ".venv" / "bin" / "python"), "-m", "tests.scale.sender"]


def sender_env(lab: Lab) -> dict[str, str]:
    return servers.app_env(lab, SSL_CERT_FILE=str(lab.work / "lb.crt"))


# --- faults --------------------------------------------------------------------------------------------


def kill_ingress(stack: Stack, checks: Checks, start: float) -> None:
    """Scenario 1: ingress1's process SIGKILLed, restarted 6 s later."""
    lab = stack.lab
    sleep_until(start + FAULT_AT)
    before = {h: answered_200(stack, h) for h in ("ingress1", "ingress2")}
    checks.check(f"both ingress hosts took traffic before the kill: {before}", all(before.values()))
    checks.fault_at = time.time()
    stack.ingress["ingress1"].kill(signal.SIGKILL)
    time.sleep(6)
    lab.restart(stack.ingress["ingress1"])
    servers.wait_ready(lab, "ingress1")
    # haproxy's checks see it again (rise 2, downinter 5 s), then it takes new requests
    servers.wait_up(lab, "ingress1")
    ingress2_then = answered_200(stack, "ingress2") or 0
    time.sleep(4)
    after = {h: answered_200(stack, h) for h in ("ingress1", "ingress2")}
    checks.check(f"the restarted ingress1 took traffic: {after['ingress1']} × 200", bool(after["ingress1"]))
    checks.check(
        f"ingress2 took traffic after the restart: {ingress2_then} -> {after['ingress2']} × 200",
        (after["ingress2"] or 0) > ingress2_then,
    )


def kill_worker(stack: Stack, checks: Checks, start: float) -> None:
    """Scenario 2: a worker SIGKILLed while RQ reports it busy with a job; restarted 3 s later."""
    lab = stack.lab
    sleep_until(start + FAULT_AT)
    pids = {p.pid: name for name, p in stack.workers.items()}
    victim: list[str] = []

    def busy() -> bool:
        out = sh(
            lab.inside("redis1", "redis-cli", "-h", address("redis1"), "smembers", "rq:workers"), check=False
        )
        for key in out.split():
            fields = lab.inside("redis1", "redis-cli", "-h", address("redis1"), "hmget", key, "state", "pid")
            state, pid, *_ = [*sh(fields, check=False).split("\n"), "", ""]
            if state == "busy" and pid.isdigit() and int(pid) in pids:
                stack.workers[pids[int(pid)]].kill(signal.SIGKILL)
                victim.append(pids[int(pid)])
                return True
        return False

    wait_until("a worker busy with a job", busy, 15, pause=0.05)
    checks.fault_at = time.time()
    checks.check(f"{victim[0]} SIGKILLed while busy with a job", True)
    time.sleep(3)
    lab.restart(stack.workers[victim[0]])


def cut_worker_from_postgres(stack: Stack, checks: Checks, start: float) -> None:
    """Scenario 4: worker1's host gets no route to the PostgreSQL host for 30 s."""
    lab = stack.lab
    sleep_until(start + FAULT_AT)
    route = ["ip", "route", "add", "prohibit", f"{address('pg')}/32"]
    sh(lab.inside("worker1", *route))
    checks.fault_at = time.time()
    connect = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('{address('pg')}', {servers.PG_PORT}), timeout=2)\n"
        "    print('reached')\nexcept OSError:\n    print('cut')"
    )
    reached = sh(lab.inside("worker1", "python3", "-c", connect), check=False).strip()
    checks.check(f"worker1 cannot reach PostgreSQL: {reached}", reached == "cut")
    time.sleep(30)
    sh(lab.inside("worker1", "ip", "route", "del", "prohibit", f"{address('pg')}/32"))
    checks.check(
        "every worker still running after the outage", all(p.running() for p in stack.workers.values())
    )


def cut_ingress_from_redis(stack: Stack, checks: Checks, start: float) -> None:
    """Scenario 5: ingress1's host gets no route to any Redis host, then again one."""
    lab = stack.lab
    sleep_until(start + FAULT_AT)
    redis_hosts = ("redis1", "redis2", "redis3")
    for host in redis_hosts:
        sh(lab.inside("ingress1", "ip", "route", "add", "prohibit", f"{address(host)}/32"))
    checks.fault_at = time.time()
    readyz = f"http://{address('ingress1')}:{INGRESS_PORT}/readyz"
    wait_until("ingress1's /readyz failing", lambda: http_code(lab, "lb", readyz) != "200", 15)
    checks.check("ingress1's /readyz fails", True)
    direct = probe(stack, f"http://{address('ingress1')}:{INGRESS_PORT}/smsc")
    checks.check(f"ingress1 answers 503 to a callback sent to it directly: {direct}", direct == "503")
    wait_until("haproxy: ingress1 DOWN", lambda: servers.haproxy_states(lab).get("ingress1") == "DOWN", 15)
    before = {h: answered_200(stack, h) or 0 for h in ("ingress1", "ingress2")}
    time.sleep(4)
    after = {h: answered_200(stack, h) or 0 for h in ("ingress1", "ingress2")}
    checks.check(
        f"meanwhile only ingress2 answered 200: ingress1 {before['ingress1']} -> {after['ingress1']}, "
        f"ingress2 {before['ingress2']} -> {after['ingress2']}",
        after["ingress1"] == before["ingress1"] and after["ingress2"] > before["ingress2"],
    )
    for host in redis_hosts:
        sh(lab.inside("ingress1", "ip", "route", "del", "prohibit", f"{address(host)}/32"))
    servers.wait_ready(lab, "ingress1")
    servers.wait_up(lab, "ingress1")
    healed = answered_200(stack, "ingress1") or 0
    time.sleep(3)
    checks.check(
        f"ingress1 takes traffic again once healed: {healed} -> {answered_200(stack, 'ingress1')}",
        (answered_200(stack, "ingress1") or 0) > healed,
    )


def kill_primary(stack: Stack, checks: Checks, start: float) -> None:
    """Scenario 3: the Redis primary SIGKILLed; Sentinel promotes the replica; the old primary, started
    again, becomes the new one's replica (with SMSC_REDIS_MIN_REPLICAS=1 the ingress needs one)."""
    lab = stack.lab
    sleep_until(start + FAULT_AT)
    checks.check(f"the primary is redis1: {servers.primary(lab)}", servers.primary(lab) == address("redis1"))
    stack.redis["redis1"].kill(signal.SIGKILL)
    checks.fault_at = time.time()
    took = wait_until("Sentinel promotes redis2", lambda: servers.primary(lab) == address("redis2"), 30)
    checks.check(f"Sentinel promoted redis2 {took:.1f} s after the kill", True)
    lab.restart(stack.redis["redis1"])
    role = lab.inside("redis1", "redis-cli", "-h", address("redis1"), "role")
    wait_until(
        "redis1 again, as redis2's replica",
        lambda: sh(role, check=False, timeout=5).startswith("slave\n" + address("redis2")),
        30,
    )
    checks.check("redis1, started again, is redis2's replica", True)


def delayed_redis(stack: Stack) -> None:
    """Scenario 6: each ingress talks to Redis through a relay on its host that adds 20 ms one way."""
    lab = stack.lab
    for host, proc in stack.ingress.items():
        relay = [sender_command(lab)[0], "-m", "tests.scale.delay", "127.0.0.1", str(DELAY_PORT)]
        relay += [address("redis1"), str(servers.REDIS_PORT), str(DELAY_SECONDS)]
        stack.relays.append(lab.start(f"delay-{host}", host, relay, servers.app_env(lab)))
        proc.env["REDIS_URL"] = f"redis://127.0.0.1:{DELAY_PORT}/0"
    restart_ingress(stack)


def direct_redis(stack: Stack) -> None:
    for proc in stack.ingress.values():
        proc.env["REDIS_URL"] = servers.redis_url()
    restart_ingress(stack)
    for relay in stack.relays:
        relay.kill(signal.SIGTERM)
    stack.relays.clear()


def restart_ingress(stack: Stack) -> None:
    """One at a time, each back in haproxy's pool before the next goes (no load runs meanwhile)."""
    for host, proc in stack.ingress.items():
        proc.kill(signal.SIGTERM)
        stack.lab.restart(proc)
        servers.wait_ready(stack.lab, host)
        if servers.haproxy_socket(stack.lab).exists():
            servers.wait_up(stack.lab, host)


# --- one scenario ----------------------------------------------------------------------------------


def run_scenario(stack: Stack, scenario: Scenario) -> Row:
    lab = stack.lab
    print(f"==> {scenario.name}: {scenario.events} events", flush=True)
    row = Row(scenario.name)
    out = lab.work / f"{scenario.name.replace(' ', '-')}.json"
    argv = [
        *sender_command(lab),
        "send",
        LB_URL,
        str(out),
        *("--events", str(scenario.events), "--deadline", str(scenario.deadline)),
    ]
    if scenario.rate:
        argv += ["--rate", str(scenario.rate)]
    checks = Checks()
    if scenario.before is not None:
        try:
            scenario.before(stack)
        except Failure as e:
            row.why = f"set-up: {e}"
            return row
    try:
        return _measure(stack, scenario, row, out, argv, checks)
    finally:
        if scenario.after is not None:
            scenario.after(stack)


def _measure(stack: Stack, scenario: Scenario, row: Row, out: Path, argv: list[str], checks: Checks) -> Row:
    lab = stack.lab
    start = time.time()
    sender = lab.start(f"sender-{scenario.name.replace(' ', '-')}", "lb", argv, sender_env(lab))
    try:
        if scenario.fault is not None:
            scenario.fault(stack, checks, start)
        limit = scenario.deadline + 120 + SENDER_SLACK_SECONDS
        assert sender.popen is not None
        code = sender.popen.wait(max(1.0, start + limit - time.time()))
    except Failure as e:
        checks.check(f"the fault's steps: {e}", False)
        code = None
    except subprocess.TimeoutExpired:
        checks.check("the sender ends by itself", False)
        code = None
    finally:
        sender.kill(signal.SIGTERM)
    if code != 0 or not out.exists():
        row.why = f"the sender failed (exit code {code}): see {sender.log.name}"
        print("    " + "\n    ".join(sender.log.read_text(errors="replace").splitlines()[-15:]))
        return row
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    answers = result["answers"]
    row.events = result["events"]
    row.ok_answers = answers.get("200", 0)
    row.refusals = answers.get("503", 0)
    row.rows = result["stored_once"] + result["duplicated"]
    row.duplicates = result["duplicated"]
    row.lost = result["missing"] + result["dead_lettered"]
    if checks.fault_at is not None:
        row.recovery = f"{longest_gap(result, checks.fault_at):.1f} s"
    dead = dead_letters(stack)
    checks.check(
        f"every event answered 200 at least once: {result['acknowledged']} of {row.events}",
        result["acknowledged"] == row.events,
    )
    checks.check(
        f"each acknowledged event stored exactly once: {result['stored_once']} of {result['acknowledged']}",
        result["stored_once"] == result["acknowledged"],
    )
    checks.check(f"no dead letter (PostgreSQL and Redis): {dead}", dead == 0)
    checks.check(
        "every process still running",
        all(p.running() for p in [*stack.ingress.values(), *stack.workers.values()]),
    )
    other = {k: v for k, v in answers.items() if k not in ("200", "503")}
    if other:
        print(f"    other answers: {other}")
    row.speed = f"{throughput(result):.0f} req/s, p99 {p99(result) * 1000:.0f} ms"
    print(f"    {row.speed}", flush=True)
    failed = [what for what, held in checks.items if not held]
    row.passed = not failed
    row.why = "; ".join(failed)
    return row


def longest_gap(result: dict[str, Any], fault_at: float) -> float:
    """The longest time without a 200 from the fault on, while the sender was sending."""
    times = sorted(t for t, code, _ in result["timeline"] if code == "200" and t >= fault_at)
    marks = [fault_at, *times]
    return float(max((b - a for a, b in itertools.pairwise(marks)), default=result["sent_until"] - fault_at))


def throughput(result: dict[str, Any]) -> float:
    return len(result["timeline"]) / max(0.001, float(result["sent_until"] - result["started"]))


def p99(result: dict[str, Any]) -> float:
    durations = sorted(seconds for _, code, seconds in result["timeline"] if code == "200")
    return durations[int(0.99 * (len(durations) - 1))] if durations else 0.0


def dead_letters(stack: Stack) -> int:
    out = sh(
        stack.lab.inside(
            "worker2",
            "env",
            "-i",
            *[f"{k}={v}" for k, v in servers.app_env(stack.lab).items()],
            servers.smsc(stack.lab),
            "dead-letter",
            "list",
        ),
        check=False,
    )
    last = out.strip().splitlines()[-1] if out.strip() else ""
    count = last.split(" ", 1)[0]
    return int(count) if count.isdigit() else -1


# --- the whole run -----------------------------------------------------------------------------------


SCENARIOS: Final = (
    Scenario("baseline haproxy", 3000, 60, None, None),
    Scenario("1 ingress killed", 2000, 75, 160, kill_ingress),
    Scenario("2 worker killed", 2000, 75, 200, kill_worker),
    Scenario("4 worker cut from pg", 2000, 75, 120, cut_worker_from_postgres),
    Scenario("5 ingress cut from redis", 2000, 75, 150, cut_ingress_from_redis),
    Scenario("6 20 ms to redis", 3000, 60, None, None, delayed_redis, direct_redis),
    # Last: after it the primary is redis2.
    Scenario("3 redis primary killed", 2000, 75, 150, kill_primary),
)
NGINX_SCENARIOS: Final = (Scenario("baseline nginx", 1500, 45, None, None),)


def preflight() -> None:
    if os.geteuid() != 0:
        raise Failure("needs root: it makes network namespaces (ip netns add) and runs servers in them")
    if (
        shutil.which("ip") is None
        or subprocess.run(["ip", "netns", "list"], capture_output=True, check=False).returncode != 0
    ):
        raise Failure("needs `ip netns` (iproute2): not found or not working here")
    for program in ("haproxy", "nginx", "redis-server", "redis-cli", "openssl", "curl", "runuser"):
        if shutil.which(program) is None:
            raise Failure(f"needs {program} on PATH (Debian's package of that name)")
    if not (ROOT / ".venv" / "bin" / "smsc-ingest").exists():
        raise Failure("needs the checkout installed: make install")


def keep_logs(lab: Lab) -> None:
    """The failed run's logs and the senders' results, kept (only the last failed run's) to read."""
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir()
    for path in [*lab.work.glob("*.log"), *lab.work.glob("*.json"), *lab.work.glob("*/server.log")]:
        shutil.copy(path, LOGS / path.name if path.parent == lab.work else LOGS / f"{path.parent.name}.log")
    print(f"the logs of this failed run: {LOGS}")


def table(rows: list[Row]) -> str:
    head = (
        "scenario",
        "events",
        "200s",
        "503s",
        "rows",
        "duplicates",
        "lost",
        "recovery",
        "throughput",
        "result",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = (
            r.scenario,
            r.events,
            r.ok_answers,
            r.refusals,
            r.rows,
            r.duplicates,
            r.lost,
            r.recovery,
            r.speed,
            "passed" if r.passed else "FAILED",
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.scale.run", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only the scenarios whose name contains this text (repeatable; `none`: the set-up only)",
    )
    only = parser.parse_args(argv).only

    def chosen(scenarios: tuple[Scenario, ...]) -> list[Scenario]:
        return [s for s in scenarios if not only or any(word in s.name for word in only)]

    began = time.monotonic()

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    rows: list[Row] = []
    lab: Lab | None = None
    setup_error = ""
    try:
        preflight()
        removed = remove_leftovers(os.getpid())
        if removed:
            print(f"removed leftovers of an earlier run: {', '.join(removed)}")
        lab = Lab.create(ROOT)
        print(f"==> hosts (run {lab.run}, files in {lab.work})", flush=True)
        lab.build()
        servers.start_postgres(lab)
        redis = servers.start_redis(lab)
        redis |= servers.start_sentinels(lab)
        servers.migrate(lab)
        ingress = {h: servers.start_ingress(lab, h) for h in ("ingress1", "ingress2")}
        for host in ingress:
            servers.wait_ready(lab, host)
        workers = servers.start_workers(lab)
        stack = Stack(lab, ingress, workers, redis)
        print(f"==> haproxy, deploy/haproxy.cfg as shipped ({time.monotonic() - began:.0f} s)", flush=True)
        lb = servers.start_haproxy(lab)
        rows += [run_scenario(stack, s) for s in chosen(SCENARIOS)]
        secret_logged = SECRET in lb.log.read_text(errors="replace")
        lb.kill(signal.SIGTERM)
        print(f"==> nginx, deploy/nginx.conf as shipped ({time.monotonic() - began:.0f} s)", flush=True)
        servers.start_nginx(lab)
        rows += [run_scenario(stack, s) for s in chosen(NGINX_SCENARIOS)]
        access = (lab.work / "nginx-access.log").read_text(errors="replace")
        secret_logged = secret_logged or SECRET in access
        rows.append(
            Row(
                "no secret in lb logs",
                passed=not secret_logged,
                recovery="-",
                why="the secret is in a log" if secret_logged else "",
            )
        )
    except Failure as e:
        setup_error = str(e)
    finally:
        if lab is not None:
            if setup_error or not all(r.passed for r in rows):
                with contextlib.suppress(OSError):
                    keep_logs(lab)
            else:
                shutil.rmtree(LOGS, ignore_errors=True)  # an earlier failed run's, out of date now
            lab.destroy()
    print()
    print(table(rows))
    for r in rows:
        if not r.passed:
            print(f"FAILED {r.scenario}: {r.why}")
    failed = sum(not r.passed for r in rows) + (1 if setup_error else 0)
    if setup_error:
        print(f"FAILED set-up: {setup_error}")
    print(f"run took {time.monotonic() - began:.0f} s")
    print(f"{sum(r.passed for r in rows)} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
